"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures equal to Google's ``rouge-score`` package, as float64 on
the 0-100 scale papers report.

One example's score is ``rouge_score.rouge_scorer.RougeScorer(KEYS, use_stemmer).score_multi(references,
hypothesis)``'s F-measures: text lower-cased, every run of characters outside ``a-z0-9`` a word break, words of
more than 3 characters Porter-stemmed (nltk's ``PorterStemmer``, which needs no downloaded data) when stemming is
on, and the best reference per key. ROUGE-Lsum reads sentences one per line; ``sentence_lines`` puts them there
(after ``.``, ``!`` or ``?`` and white space), so nothing calls ``nltk.sent_tokenize`` and its punkt data is
never downloaded. The corpus score is the mean over examples (``rouge-score``'s ``BootstrapAggregator`` reports
a resampled estimate of the same mean).

torchmetrics' ``ROUGEScore`` computes the same per-example values for rouge1/2/L, but keeps them as float32
tensors (about 1e-5 off on the 0-100 scale over a corpus) and its rougeLsum runs ``nltk.sent_tokenize``, which
downloads punkt; so the counts are done here, in Python, and summed in float64 across ranks.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_BREAK = re.compile(r"[^a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@functools.lru_cache(maxsize=1)
def _porter():
    from nltk.stem import porter  # the algorithm only: no nltk data

    return porter.PorterStemmer()


@functools.lru_cache(maxsize=100_000)
def _stem(word: str) -> str:
    return _porter().stem(word)


def tokenize(text: str, stem: bool) -> list[str]:
    """rouge-score's words: lower case, ``[a-z0-9]+`` runs, those longer than 3 characters stemmed if ``stem``."""
    words = _BREAK.sub(" ", text.lower()).split()
    return [_stem(w) if stem and len(w) > 3 else w for w in words]


def sentence_lines(text: str) -> str:
    """The text with one sentence per line (a break after ``.``, ``!`` or ``?`` followed by white space), as
    ROUGE-Lsum reads it; lines already there stay."""
    return "\n".join(s for line in text.splitlines() for s in _SENTENCE_END.split(line.strip()) if s)


def f_measure(hits: int, hypothesis: int, reference: int) -> float:
    """F1 of ``hits`` out of ``hypothesis`` (precision) and ``reference`` (recall) units; 0 when either is empty."""
    precision, recall = hits / hypothesis if hypothesis else 0.0, hits / reference if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))


def rouge_n(hypothesis: list[str], reference: list[str], n: int) -> float:
    h, r = _ngrams(hypothesis, n), _ngrams(reference, n)
    return f_measure((h & r).total(), h.total(), r.total())


def _lcs_table(a: list[str], b: list[str]) -> list[list[int]]:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table


def _lcs_positions(reference: list[str], hypothesis: list[str]) -> set[int]:
    """Positions in ``reference`` of one longest common subsequence, the one rouge-score's backtracking reads."""
    table, i, j, positions = _lcs_table(reference, hypothesis), len(reference), len(hypothesis), set()
    while i > 0 and j > 0:
        if reference[i - 1] == hypothesis[j - 1]:
            positions.add(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions


def rouge_l(hypothesis: list[str], reference: list[str]) -> float:
    if not hypothesis or not reference:
        return 0.0
    return f_measure(_lcs_table(reference, hypothesis)[-1][-1], len(hypothesis), len(reference))


def rouge_lsum(hypothesis: list[list[str]], reference: list[list[str]]) -> float:
    """Summary-level LCS (ROUGE 1.5.5, as rouge-score): per reference sentence, the union of its LCS with each
    hypothesis sentence; a word counts at most as often as it occurs in both summaries."""
    left_h, left_r = Counter(w for s in hypothesis for w in s), Counter(w for s in reference for w in s)
    n_h, n_r, hits = left_h.total(), left_r.total(), 0
    if not n_h or not n_r:
        return 0.0
    for sentence in reference:
        union = sorted(set().union(*(_lcs_positions(sentence, h) for h in hypothesis)))
        for word in (sentence[i] for i in union):
            if left_h[word] > 0 and left_r[word] > 0:
                hits, left_h[word], left_r[word] = hits + 1, left_h[word] - 1, left_r[word] - 1
    return f_measure(hits, n_h, n_r)


def rouge_scores(hypothesis: str, references: Sequence[str], stem: bool = True) -> dict[str, float]:
    """F-measures (0-1) of one hypothesis, each key against its best reference (rouge-score's ``score_multi``)."""
    words = tokenize(hypothesis, stem)
    sentences = [tokenize(s, stem) for s in sentence_lines(hypothesis).split("\n")]
    best = dict.fromkeys(KEYS, 0.0)
    for reference in references:
        ref_words = tokenize(reference, stem)
        ref_sentences = [tokenize(s, stem) for s in sentence_lines(reference).split("\n")]
        scores = (rouge_n(words, ref_words, 1), rouge_n(words, ref_words, 2), rouge_l(words, ref_words),
                  rouge_lsum(sentences, ref_sentences))
        best = {key: max(best[key], score) for key, score in zip(KEYS, scores)}
    return best


class ROUGE(Metric):
    """Corpus ROUGE (the mean F-measure over examples, on 0-100, float64) of hypotheses each with a list of
    references; ``compute`` gives ``{"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}``."""

    full_state_update = False
    totals: Tensor
    examples: Tensor

    def __init__(self, stem: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stem = stem
        self.add_state("totals", torch.zeros(len(KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("examples", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[Sequence[str]]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"ROUGE: {len(preds)} hypotheses but {len(target)} reference lists")
        for hypothesis, references in zip(preds, target):
            scores = rouge_scores(hypothesis, references, self.stem)
            self.totals += torch.tensor([scores[k] for k in KEYS], dtype=torch.float64, device=self.totals.device)
        self.examples += len(preds)

    def compute(self) -> dict[str, Tensor]:
        means = 100 * self.totals / self.examples.clamp(min=1)
        return dict(zip(KEYS, means))
