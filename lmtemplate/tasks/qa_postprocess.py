"""SQuAD post-processing (see docs/tasks/qa.md): the start/end logits of an example's windows -> its answer, cut
from its context by the tokens' character offsets. Only context tokens are candidates, so a span never crosses into
the question; the null score of an example is the smallest ``[CLS]`` start + end logit over its windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from lmtemplate.config import require_positive


@dataclass
class AnswerConfig:
    n_best: int = 20  # start and end candidates per window
    max_answer_length: int = 30  # tokens
    allow_null: Optional[bool] = None  # may answer "no answer" (SQuAD v2.0); None: if the training data has any
    null_threshold: float = 0.0  # no answer when null score - best span score > this

    def __post_init__(self) -> None:
        require_positive("answer", self, "n_best", "max_answer_length")


@dataclass
class Answer:
    text: str
    score: float  # start + end logit of the chosen span (the null score when the answer is empty)
    null_score: float


def best_span(start: torch.Tensor, end: torch.Tensor, offsets: list, n_best: int, max_length: int):
    """(score, first char, last char) of one window's best span, or None; ``offsets`` is None outside the context."""
    context = torch.tensor([o is not None for o in offsets], device=start.device)
    start, end = (t[:len(offsets)].float().masked_fill(~context, float("-inf")) for t in (start, end))
    k = min(n_best, int(context.sum()))
    starts, ends = (list(zip(*(x.tolist() for x in t.topk(k)))) for t in (start, end))
    spans = [(a + b, s, e) for a, s in starts for b, e in ends if s <= e < s + max_length]
    if not spans:
        return None
    score, s, e = max(spans, key=lambda span: span[0])  # the first of equal scores, as the n-best order has them
    return score, offsets[s][0], offsets[e][1]


def answer(context: str, windows: list[tuple[torch.Tensor, torch.Tensor, list]], cfg: AnswerConfig,
           allow_null: bool) -> Answer:
    """The answer to one example from all of its windows' (start logits, end logits, offsets)."""
    null = min(float(s[0] + e[0]) for s, e, _ in windows)
    spans = [best_span(s, e, offsets, cfg.n_best, cfg.max_answer_length) for s, e, offsets in windows]
    best = max((x for x in spans if x is not None), default=None)
    if best is None or allow_null and null - best[0] > cfg.null_threshold:
        return Answer("", null, null)
    return Answer(context[best[1]:best[2]], best[0], null)


def oracle(examples: list, features: list) -> dict[str, str]:
    """The answers when every window's logits point exactly at its training target (``[CLS]`` where the
    answer is not inside it): the ceiling that tokenization and windowing leave to a perfect model."""
    windows: dict[int, list] = {}
    for f in features:
        start, end = torch.zeros(len(f.input_ids)), torch.zeros(len(f.input_ids))
        start[f.start], end[f.end] = 10.0, 10.0
        windows.setdefault(f.example, []).append((start, end, f.offsets))
    cfg = AnswerConfig(max_answer_length=10**6)
    return {e.id: answer(e.context, windows[i], cfg, allow_null=True).text for i, e in enumerate(examples)}
