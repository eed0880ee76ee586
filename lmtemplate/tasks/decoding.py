"""Decoding settings, the one call that picks greedy, beam search or sampling, and the evaluation and prediction
built on them; shared by the generation tasks (``translation``, ``summarization``) so that they decode alike."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lmtemplate.config import ConfigError, require_positive
from lmtemplate.models import hf
from lmtemplate.models.backbone import load_backbone
from lmtemplate.models.beam_search import Rules, beam_search, greedy
from lmtemplate.models.gpt import _sample
from lmtemplate.models.seq2seq import Seq2Seq, Step
from lmtemplate.tasks.base import Task, per_stage

log = logging.getLogger(__name__)

SANITY_SENTENCES = 2  # examples the sanity check before training decodes


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
    repetition_penalty: float = 1.0  # > 1: tokens already in an output are less likely (Hugging Face's definition)
    temperature: float = 0.0  # > 0: sample (top_k, top_p) instead of greedy or beam search
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: int = 0  # of sampling, per decoded batch
    val_sentences: int = 500  # scores at each validation on the first N validation examples
    samples: int = 4  # (source, reference, hypothesis) triples logged to TensorBoard at each validation

    def __post_init__(self) -> None:
        require_positive("decode", self, "beam_size", "val_beam_size", "val_sentences", "max_len_b")
        if self.max_len_a < 0 or self.samples < 0:
            raise ConfigError(f"decode.max_len_a and decode.samples: expected >= 0, got {self.max_len_a}, {self.samples}")
        for key in ("min_len", "no_repeat_ngram_size", "temperature"):
            if getattr(self, key) < 0:
                raise ConfigError(f"decode.{key}: expected >= 0 (0: off), got {getattr(self, key)}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"decode.top_p: expected a number in (0, 1], got {self.top_p}")
        require_positive("decode", self, "top_k")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"decode.repetition_penalty: expected a positive number (1: off, > 1: penalise "
                              f"repeated tokens), got {self.repetition_penalty}")

    def max_lengths(self, source_lengths: torch.Tensor, room: int | torch.Tensor) -> torch.Tensor:
        """Tokens each output may have (EOS included): ``max_len_a * source + max_len_b``, at most ``room``."""
        return (self.max_len_a * source_lengths + self.max_len_b).long().clamp(max=room).clamp(min=1)


def generate(stepper: Callable[[int], Step], bos_id: int, eos_id: int, max_lengths: torch.Tensor, d: DecodeConfig,
             beam_size: int) -> list[list[int]]:
    """The output ids of each row: sampled when ``decode.temperature`` > 0, else greedy (``beam_size`` 1) or beam
    search; ``stepper(copies)`` makes the step function with ``copies`` rows per source."""
    rules = Rules(d.min_len, d.no_repeat_ngram_size, d.repetition_penalty)
    if d.temperature > 0:
        generator = torch.Generator(device=max_lengths.device).manual_seed(d.seed)
        choose = lambda logits: _sample(logits, d.temperature, d.top_k, d.top_p, generator)[:, 0]  # noqa: E731
        return greedy(stepper(1), bos_id, eos_id, max_lengths, rules, choose)
    if beam_size == 1:
        return greedy(stepper(1), bos_id, eos_id, max_lengths, rules)
    return beam_search(stepper(beam_size), bos_id, eos_id, max_lengths, beam_size, d.length_penalty, rules)[0]


class Diversity(Metric):
    """What a collapsed generator shows: ``distinct``, the share of outputs that differ from every other (1: all
    differ; a model that writes one summary for every input scores 1 / N), and ``repeated_trigrams``, the share of
    the outputs' word trigrams that repeat one earlier in the same output ("traffic traffic traffic traffic": 1/2)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        # of the texts (strings cannot cross ranks): 48 bits as two exact 24-bit halves in the metric's float dtype,
        # the dtype of the empty tensor that torchmetrics gathers for a rank that decoded nothing
        self.add_state("hashes", default=[], dist_reduce_fx="cat")
        self.add_state("repeated", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("trigrams", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, outputs: list[str]) -> None:
        digests = [int.from_bytes(hashlib.blake2b(o.encode(), digest_size=6).digest(), "little") for o in outputs]
        halves = [part for d in digests for part in (d >> 24, d & 0xFFFFFF)]
        self.hashes.append(torch.tensor(halves, dtype=self.dtype, device=self.device))
        for output in outputs:
            words = output.split()
            trigrams = list(zip(words, words[1:], words[2:]))
            self.trigrams += len(trigrams)
            self.repeated += len(trigrams) - len(set(trigrams))

    def compute(self) -> dict[str, torch.Tensor]:
        hashes = (dim_zero_cat(self.hashes) if len(self.hashes) else torch.empty(0)).view(-1, 2)  # synced: a tensor
        return {"distinct": torch.tensor(hashes.unique(dim=0).size(0) / max(1, hashes.size(0))),
                "repeated_trigrams": self.repeated / self.trigrams.clamp(min=1)}


class GenerationTask(Task):
    """Evaluation and prediction by decoding: a task writes ``decode_rows`` and sets ``text_metrics`` (per stage,
    updated with the outputs and a list of references each) and ``output_key``; its config has a ``decode`` section
    (``DecodeConfig``) and its batches ``labels`` (IGNORE on padding), ``index``, ``sources`` and ``references``.
Every pass also scores the outputs' ``Diversity``, so that a collapse shows beside the scores."""

    output_key: str  # an output's key in the rows of predictions ("translation", "summary")

    def __init__(self, cfg, datamodule=None):
        super().__init__(cfg)
        self.samples: list[tuple[str, str, str]] = []  # (source, reference, output) of the last validation
        self.diversity = per_stage(Diversity())

    def setup(self, stage: str) -> None:
        """``model.init_from``: a BART or Marian checkpoint is the whole encoder-decoder; anything else starts the
        encoder (``Task.setup``), and with ``model.warm_start`` the decoder then starts as the encoder."""
        init_from = getattr(self.cfg.model, "init_from", None)
        if not (stage == "fit" and init_from and not self.resuming and isinstance(self.model, Seq2Seq)):
            return super().setup(stage)
        if hf.is_pretrained_dir(init_from) and hf.read_config(Path(init_from))["model_type"] in hf.SEQ2SEQ_FAMILIES:
            return load_backbone(self.model, init_from, "encoder_decoder")
        super().setup(stage)
        if self.cfg.model.warm_start:
            fresh = self.model.warm_start_decoder()
            log.info("model.warm_start: the decoder starts as the encoder, but for %d fresh tensors: %s", len(fresh),
                     ", ".join(fresh))

    def decode_rows(self, batch: dict, rows: list[int], beam_size: int) -> list[str]:
        """The decoded outputs of the batch's examples ``rows``."""
        raise NotImplementedError

    def evaluate(self, batch: dict, batch_idx: int, stage: str) -> None:
        """``{stage}/loss`` weighted by the batch's target tokens, so that the pass's mean is per token; then every
        example in test with ``decode.beam_size``, in validation the first ``decode.val_sentences`` of the set (by
        ``index``; ``SANITY_SENTENCES`` in the sanity check) with ``decode.val_beam_size``, decoded and scored."""
        total, target_tokens = self.summed_loss(batch)
        self.log(f"{stage}/loss", total / target_tokens, prog_bar=True, sync_dist=True, batch_size=int(target_tokens))
        d = self.cfg.decode
        # the sanity check before training only proves that decoding runs: an untrained decoder runs to the length
        # limit, which for decode.val_sentences examples took 40 s of a summarization recipe's start
        limit = SANITY_SENTENCES if self._trainer is not None and self.trainer.sanity_checking else d.val_sentences
        keep = [i for i, n in enumerate(batch["index"].tolist()) if stage == "test" or n < limit]
        if not keep:
            return
        outputs = self.decode_rows(batch, keep, d.beam_size if stage == "test" else d.val_beam_size)
        # a translation has one reference, a summary a list of them
        references = [r if isinstance(r, list) else [r] for r in (batch["references"][i] for i in keep)]
        self.text_metrics[stage].update(outputs, references)
        self.diversity[stage].update(outputs)
        if stage == "val":
            samples = [(batch["sources"][i], refs[0], out) for i, refs, out in zip(keep, references, outputs)]
            self.samples += samples[: d.samples - len(self.samples)]

    def start_pass(self, stage: str) -> None:
        self.samples = []

    def pass_scores(self, stage: str) -> dict[str, float]:
        """The scores of what the pass decoded (none when it decoded nothing); the metrics then start afresh."""
        metric = self.text_metrics[stage]
        decoded = all(m.update_called for m in metric.modules() if isinstance(m, Metric))
        if self._trainer is not None:  # compute() syncs across ranks: all compute if any decoded (val_sentences<ranks)
            decoded = self.trainer.strategy.reduce_boolean_decision(decoded, all=False)
        scores = {}
        for m in (metric, self.diversity[stage]):
            scores.update({key: value.item() for key, value in m.compute().items()} if decoded else {})
            m.reset()
        return scores

    def text_samples(self) -> list[tuple[str, str, str]]:
        return self.samples

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        outputs = self.decode_rows(batch, list(range(len(batch["index"]))), self.cfg.decode.beam_size)
        return [{"index": i, "source": s, self.output_key: out if s.strip() else ""}
                for i, s, out in zip(batch["index"].tolist(), batch["sources"], outputs)]

    def format_predictions(self, rows: list[dict]) -> str:
        """One output per line, in the input's order (a blank input line gives a blank line)."""
        return "".join(" ".join(r[self.output_key].splitlines()) + "\n" for r in sorted(rows, key=lambda r: r["index"]))
