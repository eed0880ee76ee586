"""Corpus BLEU and chrF equal sacreBLEU's in float64: Unicode white space, empty hypotheses, short and several
references, scores near 100, batches; the real Multi30k test set (slow)."""

import random
from pathlib import Path

import pytest
import sacrebleu
from torchmetrics.text import CHRFScore

from lmtemplate.tasks.text_metrics import BLEU, ChrF

MULTI30K = Path("/work/shared/data/multi30k")
SPACES = [" ", "\t", "\xa0", "\u2009", "\u202f", "\u3000", "\u2028", "\x85", "\x1f"]


def ours(hypotheses: list[str], references: list[list[str]], batch: int = 3) -> dict[str, float]:
    """Our scores, updated a batch at a time as the task updates them."""
    bleu, chrf = BLEU(), ChrF()
    for i in range(0, len(hypotheses), batch):
        bleu.update(hypotheses[i: i + batch], references[i: i + batch])
        chrf.update(hypotheses[i: i + batch], references[i: i + batch])
    return {"bleu": bleu.compute().item(), "chrf": chrf.compute().item()}


def assert_equal_to_sacrebleu(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Equal to 1e-9 (BLEU without smoothing, as the task scores it; sacreBLEU's default smooths an order
    without matches); sacreBLEU takes one stream per reference position."""
    streams = [list(r) for r in zip(*references)]
    scores = ours(hypotheses, references)
    assert all(type(v) is float for v in scores.values())
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, streams, smooth_method="none").score, rel=0, abs=1e-9)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, streams).score, rel=0, abs=1e-9)
    return scores


REFERENCES = [
    "Ein Mann mit der Nummer\xa04 läuft über die Straße.",
    "Zwei Hunde\u2009spielen im\u3000Schnee",
    "Eine Frau\tlacht laut\u202f!",
    "ab",
    "Kinder spielen Fußball auf einer grünen Wiese neben dem Fluss.",
    "Ein älterer Herr liest\u2028eine Zeitung",
]


def test_unicode_white_space_counts_as_sacrebleu_counts_it():
    """torchmetrics' CHRFScore keeps U+00A0 and the like inside character n-grams; sacreBLEU does not."""
    hypotheses = ["Ein Mann mit der Nummer 4 läuft über die Straße.", "Zwei Hunde spielen im Schnee",
                  " Eine Frau lacht laut !", "ab", "Kinder spielen Fußball auf einer Wiese.", "Ein Herr liest"]
    scores = assert_equal_to_sacrebleu(hypotheses, [[r] for r in REFERENCES])
    torchmetrics_chrf = CHRFScore(n_word_order=0)(hypotheses, [[r] for r in REFERENCES])
    assert abs(100 * float(torchmetrics_chrf) - scores["chrf"]) > 1e-3


def test_empty_hypotheses_and_references_shorter_than_an_n_gram():
    hypotheses = ["", REFERENCES[1], "", "abc", REFERENCES[4], "x"]
    assert_equal_to_sacrebleu(hypotheses, [[r] for r in REFERENCES])
    assert ours(["", ""], [["a b"], ["c"]]) == {"bleu": 0.0, "chrf": 0.0}


def test_scores_above_32_to_1e_9():
    hypotheses = list(REFERENCES)
    hypotheses[4] = "Kinder spielen Fußball auf einer Wiese neben dem Fluss."
    scores = assert_equal_to_sacrebleu(hypotheses, [[r] for r in REFERENCES])
    assert 90 < scores["bleu"] < 100 and 90 < scores["chrf"] < 100
    assert ours(REFERENCES, [[r] for r in REFERENCES]) == pytest.approx({"bleu": 100.0, "chrf": 100.0}, abs=1e-9)


def test_several_references_per_hypothesis():
    """BLEU takes the closest reference length, chrF the counts of the reference that scores best alone."""
    references = [[r, r.split()[0] if r.split() else r] for r in REFERENCES]
    hypotheses = ["Ein Mann", "Zwei Hunde spielen", "Eine", "ab", "Kinder spielen Fußball", ""]
    assert_equal_to_sacrebleu(hypotheses, references)


def test_random_perturbations_with_unicode_white_space():
    rng = random.Random(0)
    words = "ein eine Mann Frau Hund Hunde spielt spielen im Park , . ! Straße 4 läuft".split()
    for _ in range(20):
        references, hypotheses = [], []
        for _ in range(rng.randint(1, 8)):
            ref = rng.choices(words, k=rng.randint(0, 12))
            hyp = [w for w in ref if rng.random() > 0.2] + rng.choices(words, k=rng.randint(0, 2))
            references.append("".join(w + rng.choice(SPACES) for w in ref))
            hypotheses.append(rng.choice(SPACES).join(hyp))
        assert_equal_to_sacrebleu(hypotheses, [[r] for r in references])


def test_counts_do_not_depend_on_the_batches():
    hypotheses = ["Ein Mann läuft", "", "Zwei Hunde", "ab", "Kinder spielen", "Ein Herr"]
    references = [[r] for r in REFERENCES]
    assert ours(hypotheses, references, batch=1) == ours(hypotheses, references, batch=len(hypotheses))


def test_chrf_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference lists"):
        ChrF().update(["a", "b"], [["a"]])


@pytest.mark.slow
@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"no Multi30k data at {MULTI30K}")
@pytest.mark.parametrize("split", ["test_2016_flickr", "val"])  # val.de line 76 has "120\xa0cm"
def test_multi30k_german_references_against_a_perturbed_copy(split):
    """The German references scored against themselves with every fifth word dropped."""
    references = (MULTI30K / f"{split}.de").read_text(encoding="utf-8").splitlines()
    hypotheses = [" ".join(w for i, w in enumerate(r.split()) if (i + n) % 5 != 4) for n, r in enumerate(references)]
    scores = assert_equal_to_sacrebleu(hypotheses, [[r] for r in references])
    assert scores["bleu"] > 32 and scores["chrf"] > 32
