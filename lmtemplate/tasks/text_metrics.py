"""Corpus BLEU and chrF equal to sacreBLEU's, as float64 on its 0-100 scale.

``BLEU`` keeps torchmetrics' ``SacreBLEUScore`` statistics (13a tokenization, no smoothing: matching and total
n-gram counts and the two lengths, summed across ranks, float32 and so exact up to 2**24 n-grams per order) and
computes the score from them with sacreBLEU's formula in float64; torchmetrics computes it in float32.

``ChrF`` is sacreBLEU's chrF (character 6-grams, beta 2, no word n-grams) with its own integer counts, because
torchmetrics' ``CHRFScore`` counts differently:

- white space: sacreBLEU removes every ``str.isspace`` character (tab, U+0085, U+00A0, U+2009, U+2028, U+3000, ...)
  before taking character n-grams; torchmetrics strips them at the ends but removes only U+0020 inside, so
  "120\\xa0cm" keeps n-grams with U+00A0 in them;
- a reference too short for an order: sacreBLEU counts no hypothesis n-grams of that order, torchmetrics all;
- a hypothesis without a match (an empty one among them): sacreBLEU still counts its reference's n-grams,
  torchmetrics drops them;
- the score: sacreBLEU takes the F-score of the precision and recall averaged over the orders both sides have
  n-grams of, torchmetrics averages per-order F-scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.text import SacreBLEUScore

BLEU_ORDER = 4
CHRF_ORDER = 6  # character n-grams
CHRF_BETA = 2  # recall weighs beta times as much as precision


def chrf_counts(hypothesis: str, reference: str) -> list[tuple[int, int, int]]:
    """(hypothesis, reference, matching) character n-gram counts of each order, white space removed; no
    hypothesis n-grams count for an order the reference has none of."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    counts = []
    for n in range(1, CHRF_ORDER + 1):
        h, r = (Counter(chars[i: i + n] for i in range(len(chars) - n + 1)) for chars in (hyp, ref))
        counts.append((h.total() if r else 0, r.total(), (h & r).total()))
    return counts


def chrf_from_counts(counts: Sequence[Sequence[float]]) -> float:
    """sacreBLEU's chrF from (hypothesis, reference, matching) counts per order: the F-beta score of the
    precision and recall averaged over the orders that both sides have n-grams of."""
    ratios = [(m / h, m / r) for h, r, m in counts if h > 0 and r > 0]
    precision, recall = (sum(column) / len(ratios) for column in zip(*ratios)) if ratios else (0.0, 0.0)
    if precision + recall == 0:
        return 0.0
    factor = CHRF_BETA ** 2
    return 100 * ((1 + factor) * precision * recall / (factor * precision + recall))


class BLEU(SacreBLEUScore):
    """sacreBLEU's corpus BLEU (13a tokenization, no smoothing); ``compute`` gives it as float64 on 0-100."""

    def __init__(self, **kwargs) -> None:
        super().__init__(n_gram=BLEU_ORDER, tokenize="13a", smooth=False, **kwargs)

    def compute(self) -> Tensor:
        matches, totals = self.numerator.tolist(), self.denominator.tolist()
        hyp_len, ref_len = self.preds_len.item(), self.target_len.item()
        if not all(matches):
            return torch.tensor(0.0, dtype=torch.float64)
        penalty = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
        log_precisions = [math.log(100.0 * m / t) for m, t in zip(matches, totals)]
        return torch.tensor(penalty * math.exp(sum(log_precisions) / len(log_precisions)), dtype=torch.float64)


class ChrF(Metric):
    """sacreBLEU's corpus chrF; ``update`` takes hypotheses and a list of references each, as torchmetrics' do."""

    full_state_update = False
    counts: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("counts", torch.zeros(CHRF_ORDER, 3, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[Sequence[str]]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"chrF: {len(preds)} hypotheses but {len(target)} reference lists")
        # against the reference that scores best alone (the first of equals), as sacreBLEU picks it
        rows = [max((chrf_counts(hyp, ref) for ref in refs), key=chrf_from_counts) for hyp, refs in zip(preds, target)]
        if rows:
            self.counts += torch.tensor(rows, device=self.counts.device).sum(0)

    def compute(self) -> Tensor:
        return torch.tensor(chrf_from_counts(self.counts.tolist()), dtype=torch.float64)
