"""ROUGE equals the rouge-score package to 1e-6: per example and over a corpus, stemming on and off, one and
several references, ROUGE-Lsum on sentences split here (never by nltk's downloaded punkt)."""

import random

import pytest
import torch
from rouge_score import rouge_scorer

from lmtemplate.tasks.rouge import KEYS, ROUGE, rouge_scores, sentence_lines

FIXTURES = [  # (hypothesis, references): punctuation, case, digits, stems, repeats, empty sides
    ("The cats were running to the museum on Monday.", ["the cat ran to a museum on monday ."]),
    ("#Person1# asks about the X-ray. It costs 30 dollars!", ["Person1 asks about an x-ray; it's $30.",
                                                            "The x-ray costs thirty dollars. Person1 pays."]),
    ("the the the the", ["the cat sat on the mat", "the the"]),
    ("a b c. d e f. a b c.", ["a b c d. e f a.", "c b a. f e d."]),
    ("", ["nothing was said"]),
    ("something was said", [""]),
    ("café naïve résumé", ["cafe naive resume"]),
    ("He goes happily. She went happier!", ["he is going happily? she goes happy", "they go"]),
]


def reference(hypothesis: str, references: list[str], stem: bool) -> dict[str, float]:
    scorer = rouge_scorer.RougeScorer(list(KEYS), use_stemmer=stem, split_summaries=False)
    scores = scorer.score_multi([sentence_lines(r) for r in references], sentence_lines(hypothesis))
    return {key: scores[key].fmeasure for key in KEYS}


@pytest.mark.parametrize("stem", [False, True])
@pytest.mark.parametrize("hypothesis, references", FIXTURES)
def test_each_example_equals_rouge_score_against_its_best_reference(hypothesis, references, stem):
    assert rouge_scores(hypothesis, references, stem) == pytest.approx(reference(hypothesis, references, stem), abs=1e-12)
    if len(references) > 1:  # the best per key: the max of the single-reference scores
        alone = [rouge_scores(hypothesis, [r], stem) for r in references]
        assert rouge_scores(hypothesis, references, stem) == {k: max(a[k] for a in alone) for k in KEYS}


@pytest.mark.parametrize("stem", [False, True])
def test_the_corpus_score_is_the_mean_in_float64_on_0_to_100(stem):
    rng = random.Random(0)
    words = "The cats cat running runs ran went going to a museum, happily on Monday. Friday! it's 3 x-ray".split()
    text = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))  # noqa: E731
    examples = [(text(), [text() for _ in range(rng.randint(1, 3))]) for _ in range(200)]
    metric = ROUGE(stem=stem)
    for start in range(0, 200, 32):  # batch by batch, as evaluation updates it
        batch = examples[start: start + 32]
        metric.update([h for h, _ in batch], [r for _, r in batch])
    scores = metric.compute()
    for key in KEYS:
        expected = 100 * sum(reference(h, r, stem)[key] for h, r in examples) / len(examples)
        assert scores[key].dtype == torch.float64
        assert float(scores[key]) == pytest.approx(expected, abs=1e-6)
    assert 5 < float(scores["rouge2"]) < float(scores["rouge1"]) < 90


def test_sentences_are_split_here_one_per_line():
    assert sentence_lines("It rained. Was it cold? Yes!  Very.\nA new line") == "It rained.\nWas it cold?\nYes!\nVery.\nA new line"
    assert sentence_lines("3.5 kg, e.g.x") == "3.5 kg, e.g.x"
