"""Task ``translation``: an encoder-decoder trained by teacher forcing, scored by BLEU and chrF of its decoded outputs.

BLEU is sacreBLEU's corpus BLEU (13a tokenization, no smoothing) and chrF is
sacreBLEU's chrF (character 6-grams, beta 2), both on detokenized text and
reported on a 0-100 scale, as papers do, equal to sacreBLEU's in float64 (see
``text_metrics.py``). The validation loss is plain cross-entropy per target
token; the training loss is label-smoothed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmtemplate.config import ConfigError
from lmtemplate.data.translation import (
    IGNORE, SOURCE_TOKENIZER, TranslationDataConfig, TranslationDataModule, TranslationTokenizerConfig,
)
from lmtemplate.models.beam_search import beam_search, greedy
from lmtemplate.models.gpt import Block
from lmtemplate.models.seq2seq import DecoderBlock, Seq2Seq, Seq2SeqConfig
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, Task, configure_adamw
from lmtemplate.tasks.text_metrics import BLEU, ChrF, corpus_scores
from lmtemplate.tokenization import save_tokenizer


@dataclass
class DecodeConfig:
    """How outputs are generated: at each validation (on a subset), for ``test`` and for ``predict``."""

    beam_size: int = 4  # test and predict; 1: greedy
    val_beam_size: int = 1  # at each validation
    length_penalty: float = 1.0  # beam search ranks ended hypotheses by log-probability / length ** length_penalty
    max_len_a: float = 1.5  # outputs stop at max_len_a * source tokens + max_len_b tokens (within model.block_size)
    max_len_b: int = 10
    val_sentences: int = 500  # BLEU and chrF at each validation on the first N validation pairs
    samples: int = 4  # (source, reference, hypothesis) triples logged to TensorBoard at each validation

    def __post_init__(self) -> None:
        for key in ("beam_size", "val_beam_size", "val_sentences", "max_len_b"):
            if getattr(self, key) < 1:
                raise ConfigError(f"decode.{key}: expected a positive integer, got {getattr(self, key)}")
        if self.max_len_a < 0 or self.samples < 0:
            raise ConfigError(f"decode.max_len_a and decode.samples: expected >= 0, got {self.max_len_a}, {self.samples}")


@dataclass
class TranslationOptimConfig(OptimConfig):
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.01
    warmup_steps: int = 100
    label_smoothing: float = 0.1  # of the training loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"optim.label_smoothing: expected a number in [0, 1), got {self.label_smoothing}")


@dataclass
class TranslationConfig:
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    data: TranslationDataConfig = field(default_factory=TranslationDataConfig)
    tokenizer: TranslationTokenizerConfig = field(default_factory=TranslationTokenizerConfig)
    optim: TranslationOptimConfig = field(default_factory=TranslationOptimConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


@register_task("translation", config=TranslationConfig, datamodule=TranslationDataModule)
class Translation(Task):
    monitor = ("val/bleu", "max")
    blocks = (Block, DecoderBlock)
    flops_per_batch = None  # padded batches vary in length: the throughput logs tokens/s only
    predictions_file = "translations.txt"
    text_sample_columns = ("source", "reference", "hypothesis")

    def __init__(self, cfg: TranslationConfig, datamodule: TranslationDataModule):
        super().__init__()
        self.cfg = cfg
        m, dm = cfg.model, datamodule
        if m.shared_embeddings and not cfg.tokenizer.joint:
            raise ConfigError("model.shared_embeddings: one embedding table needs one vocabulary (tokenizer.joint=true); "
                              "set model.shared_embeddings=false to use a tokenizer per side")
        sizes = {"vocab_size": dm.tokenizer.get_vocab_size(), "src_vocab_size": dm.source_tokenizer.get_vocab_size()}
        for key, size in sizes.items():
            if 0 < getattr(m, key) < size:
                raise ConfigError(f"model.{key}: {getattr(m, key)} is smaller than the tokenizer's vocabulary ({size})")
        self.model = Seq2Seq(dataclasses.replace(m, **{k: getattr(m, k) or v for k, v in sizes.items()}))
        if m.compile:
            self.model.compile()
        self.tokenizer, self.source_tokenizer = dm.tokenizer, dm.source_tokenizer
        self.bos_id, self.eos_id = dm.bos_id, dm.eos_id
        self.bleu = nn.ModuleDict({s: BLEU() for s in ("val", "test")})
        self.chrf = nn.ModuleDict({s: ChrF() for s in ("val", "test")})
        self.samples: list[tuple[str, str, str]] = []
        self.save_hyperparameters(dataclasses.asdict(cfg))

    def setup(self, stage: str) -> None:
        """A run with a tokenizer per side keeps the source's beside tokenizer.json (which run.py writes)."""
        if stage == "fit" and not self.cfg.tokenizer.joint and self.trainer.is_global_zero:
            save_tokenizer(self.source_tokenizer, Path(self.trainer.default_root_dir) / SOURCE_TOKENIZER)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])

    def _loss(self, batch: dict, smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(self(batch).flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE,
                               label_smoothing=smoothing)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, self.cfg.optim.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    @torch.no_grad()
    def translate(self, src: torch.Tensor, src_mask: torch.Tensor, beam_size: int) -> list[str]:
        """Detokenized translations of a padded batch of sources; greedy when ``beam_size`` is 1."""
        d = self.cfg.decode
        max_lengths = (d.max_len_a * src_mask.sum(1) + d.max_len_b).long().clamp(1, self.model.cfg.block_size)
        step = self.model.stepper(src, src_mask, copies=beam_size)
        if beam_size == 1:
            ids = greedy(step, self.bos_id, self.eos_id, max_lengths)
        else:
            ids, _ = beam_search(step, self.bos_id, self.eos_id, max_lengths, beam_size, d.length_penalty)
        return [text.strip() for text in self.tokenizer.decode_batch(ids, skip_special_tokens=True)]

    def _eval_step(self, batch: dict, stage: str) -> None:
        labels = batch["labels"]
        self.log(f"{stage}/loss", self._loss(batch), prog_bar=True, sync_dist=True, batch_size=int((labels != IGNORE).sum()))
        d = self.cfg.decode
        keep = [i for i, n in enumerate(batch["index"].tolist()) if stage == "test" or n < d.val_sentences]
        if not keep:
            return
        rows = torch.tensor(keep, device=labels.device)
        hypotheses = self.translate(batch["input_ids"][rows], batch["attention_mask"][rows],
                                    d.beam_size if stage == "test" else d.val_beam_size)
        sources, references = [batch["sources"][i] for i in keep], [batch["references"][i] for i in keep]
        self.bleu[stage].update(hypotheses, [[r] for r in references])
        self.chrf[stage].update(hypotheses, [[r] for r in references])
        if stage == "val":
            self.samples += list(zip(sources, references, hypotheses))[: d.samples - len(self.samples)]

    def _log_scores(self, stage: str) -> None:
        bleu, chrf = self.bleu[stage], self.chrf[stage]
        if bleu.update_called:
            for name, value in corpus_scores(bleu, chrf).items():
                self.log(f"{stage}/{name}", torch.tensor(value, dtype=torch.float64), prog_bar=name == "bleu")
        bleu.reset()
        chrf.reset()

    def on_validation_epoch_start(self) -> None:
        self.samples = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def text_samples(self) -> list[tuple[str, str, str]]:
        """(source, reference, hypothesis) triples of the last validation, logged to TensorBoard."""
        return self.samples

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        hypotheses = self.translate(batch["input_ids"], batch["attention_mask"], self.cfg.decode.beam_size)
        return [{"index": i, "source": s, "translation": h if s.strip() else ""}
                for i, s, h in zip(batch["index"].tolist(), batch["sources"], hypotheses)]

    def format_predictions(self, rows: list[dict]) -> str:
        """One translation per line, in the input's order (a blank input line gives a blank line)."""
        return "".join(" ".join(r["translation"].splitlines()) + "\n" for r in sorted(rows, key=lambda r: r["index"]))

    def configure_optimizers(self):
        return configure_adamw(self, self.model.param_groups(self.cfg.optim.weight_decay), self.cfg.optim)
