"""What the generation tasks share: the collapse scores (distinct outputs, repeated trigrams) and the repetition
penalty, as transformers defines it."""

import pytest
import torch

from lmtemplate.models.beam_search import Rules
from lmtemplate.tasks.decoding import DecodeConfig, Diversity
from lmtemplate.config import ConfigError


def test_diversity_counts_distinct_outputs_and_repeated_trigrams():
    metric = Diversity()
    metric.update(["traffic traffic traffic traffic", "a b c"])
    metric.update(["a b c", "x y"])
    scores = {k: v.item() for k, v in metric.compute().items()}
    # 3 distinct of 4; trigrams: (t t t) twice, one of them a repeat; (a b c) once in each of two outputs
    assert scores == {"distinct": 0.75, "repeated_trigrams": pytest.approx(1 / 4)}


def test_a_collapsed_generator_scores_one_over_n():
    metric = Diversity()
    metric.update(["the same summary"] * 8)
    assert metric.compute()["distinct"].item() == 1 / 8


def test_repetition_penalty_equals_transformers_processor():
    transformers = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(0)
    scores, tokens = torch.randn(3, 10, generator=g), torch.randint(10, (3, 5), generator=g)
    expected = transformers.RepetitionPenaltyLogitsProcessor(1.5)(tokens, scores.clone())
    torch.testing.assert_close(Rules(repetition_penalty=1.5).apply(scores, tokens, eos_id=0), expected)


def test_repetition_penalty_must_be_positive():
    with pytest.raises(ConfigError, match="decode.repetition_penalty"):
        DecodeConfig(repetition_penalty=0)
