"""Decoding settings and the one call that picks greedy, beam search or sampling; shared by the generation
tasks (``translation``, ``summarization``) so that they decode alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from lmtemplate.config import ConfigError
from lmtemplate.models.beam_search import Rules, beam_search, greedy
from lmtemplate.models.gpt import _sample
from lmtemplate.models.seq2seq import Step


@dataclass
class DecodeConfig:
    """How outputs are generated: at each validation (on a subset), for ``test`` and for ``predict``."""

    beam_size: int = 4  # test and predict; 1: greedy
    val_beam_size: int = 1  # at each validation
    length_penalty: float = 1.0  # beam search ranks ended hypotheses by log-probability / length ** length_penalty
    max_len_a: float = 1.5  # outputs stop at max_len_a * source tokens + max_len_b tokens (within model.block_size)
    max_len_b: int = 10
    min_len: int = 0  # at least this many tokens before the end (unless the maximum comes first)
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this many tokens twice in an output
    temperature: float = 0.0  # > 0: sample (top_k, top_p) instead of greedy or beam search
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: int = 0  # of sampling, per decoded batch
    val_sentences: int = 500  # scores at each validation on the first N validation examples
    samples: int = 4  # (source, reference, hypothesis) triples logged to TensorBoard at each validation

    def __post_init__(self) -> None:
        for key in ("beam_size", "val_beam_size", "val_sentences", "max_len_b"):
            if getattr(self, key) < 1:
                raise ConfigError(f"decode.{key}: expected a positive integer, got {getattr(self, key)}")
        if self.max_len_a < 0 or self.samples < 0:
            raise ConfigError(f"decode.max_len_a and decode.samples: expected >= 0, got {self.max_len_a}, {self.samples}")
        for key in ("min_len", "no_repeat_ngram_size", "temperature"):
            if getattr(self, key) < 0:
                raise ConfigError(f"decode.{key}: expected >= 0 (0: off), got {getattr(self, key)}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"decode.top_p: expected a number in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"decode.top_k: expected a positive integer, got {self.top_k}")

    def max_lengths(self, source_lengths: torch.Tensor, room: int | torch.Tensor) -> torch.Tensor:
        """Tokens each output may have (EOS included): ``max_len_a * source + max_len_b``, at most ``room``."""
        return (self.max_len_a * source_lengths + self.max_len_b).long().clamp(max=room).clamp(min=1)


def generate(stepper: Callable[[int], Step], bos_id: int, eos_id: int, max_lengths: torch.Tensor, d: DecodeConfig,
             beam_size: int) -> list[list[int]]:
    """The output ids of each row: sampled when ``decode.temperature`` > 0, else greedy (``beam_size`` 1) or beam
    search; ``stepper(copies)`` makes the step function with ``copies`` rows per source."""
    rules = Rules(d.min_len, d.no_repeat_ngram_size)
    if d.temperature > 0:
        generator = torch.Generator(device=max_lengths.device).manual_seed(d.seed)
        choose = lambda logits: _sample(logits, d.temperature, d.top_k, d.top_p, generator)[:, 0]  # noqa: E731
        return greedy(stepper(1), bos_id, eos_id, max_lengths, rules, choose)
    if beam_size == 1:
        return greedy(stepper(1), bos_id, eos_id, max_lengths, rules)
    return beam_search(stepper(beam_size), bos_id, eos_id, max_lengths, beam_size, d.length_penalty, rules)[0]


def pass_rows(batch: dict, stage: str, d: DecodeConfig) -> tuple[list[int], int]:
    """The rows of an evaluation batch to decode, with the beam size: every row in test with ``decode.beam_size``;
    in validation the first ``decode.val_sentences`` of the set (by ``index``) with ``decode.val_beam_size``."""
    rows = [i for i, n in enumerate(batch["index"].tolist()) if stage == "test" or n < d.val_sentences]
    return rows, d.beam_size if stage == "test" else d.val_beam_size


def log_target_loss(task, batch: dict, stage: str, ignore: int) -> None:
    """``{stage}/loss``, weighted by the batch's target tokens (labels other than ``ignore``): the pass's mean
    is per token, whatever the batches hold."""
    target_tokens = int((batch["labels"] != ignore).sum())
    task.log(f"{stage}/loss", task.loss(batch), prog_bar=True, sync_dist=True, batch_size=target_tokens)
