"""Span selection from start/end logits: n-best, reversed and overlong spans, several windows, the null answer."""

import torch

from lmtemplate.tasks.qa_postprocess import AnswerConfig, answer, best_span

CONTEXT = "Anna lives in Oslo now."
# [CLS] where ? [SEP] anna lives in oslo now . [SEP]
OFFSETS = [None, None, None, None, (0, 4), (5, 10), (11, 13), (14, 18), (19, 22), (22, 23), None]


def logits(**at: float) -> torch.Tensor:
    t = torch.zeros(len(OFFSETS))
    for position, value in at.items():
        t[int(position.removeprefix("p"))] = value
    return t


def test_best_span_takes_the_highest_start_plus_end_among_context_tokens():
    start, end = logits(p7=5.0, p4=3.0), logits(p7=4.0, p8=4.5)
    assert best_span(start, end, OFFSETS, 20, 30) == (9.5, 14, 22)  # "Oslo now": 5 + 4.5


def test_question_tokens_and_cls_are_never_part_of_a_span():
    start, end = logits(p1=50.0, p0=60.0, p7=1.0), logits(p2=50.0, p0=60.0, p7=1.0)
    assert best_span(start, end, OFFSETS, 20, 30) == (2.0, 14, 18)


def test_reversed_and_overlong_spans_are_dropped():
    start, end = logits(p7=9.0, p4=-5.0), logits(p5=9.0, p8=0.5)
    assert best_span(start, end, OFFSETS, 20, 30) == (9.5, 14, 22)  # 7..5 is reversed
    assert best_span(start, end, OFFSETS, 20, 1)[1:] == (14, 18)  # 7..8 is two tokens: only 7..7 remains


def test_n_best_limits_the_candidates():
    start, end = logits(p4=3.0, p7=2.0), logits(p4=-1.0, p7=2.0, p8=3.0)
    assert best_span(start, end, OFFSETS, 20, 2)[1:] == (14, 22)  # 7..8: 2 + 3
    assert best_span(start, end, OFFSETS, 1, 30)[1:] == (0, 22)  # start 4 and end 8 only: 4..8
    assert best_span(start, end, OFFSETS, 1, 2) is None  # ... which is 5 tokens long


def test_the_best_window_wins_and_characters_come_from_the_original_context():
    weak, strong = (logits(p5=1.0), logits(p5=1.0), OFFSETS), (logits(p7=4.0), logits(p8=4.0), OFFSETS)
    got = answer(CONTEXT, [weak, strong], AnswerConfig(), allow_null=False)
    assert (got.text, got.score) == ("Oslo now", 8.0)


def test_null_answer_only_when_allowed_and_beyond_the_threshold():
    window = (logits(p0=6.0, p7=2.0), logits(p0=6.0, p7=2.0), OFFSETS)  # null 12, best span 4
    assert answer(CONTEXT, [window], AnswerConfig(), allow_null=False).text == "Oslo"
    got = answer(CONTEXT, [window], AnswerConfig(), allow_null=True)
    assert (got.text, got.score, got.null_score) == ("", 12.0, 12.0)
    assert answer(CONTEXT, [window], AnswerConfig(null_threshold=8.5), allow_null=True).text == "Oslo"


def test_null_score_is_the_smallest_over_windows():
    """A window that does not hold the answer says [CLS]; the one that holds it decides."""
    elsewhere = (logits(p0=9.0), logits(p0=9.0), OFFSETS)
    here = (logits(p0=1.0, p7=5.0), logits(p0=1.0, p7=5.0), OFFSETS)
    got = answer(CONTEXT, [elsewhere, here], AnswerConfig(), allow_null=True)
    assert (got.text, got.null_score) == ("Oslo", 2.0)
