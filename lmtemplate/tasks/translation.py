"""Task ``translation``: an encoder-decoder trained by teacher forcing, scored by BLEU and chrF of its decoded outputs.

BLEU and chrF are sacreBLEU's, on detokenized text and on a 0-100 scale as papers report them (``text_metrics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torchmetrics import MetricCollection

from lmtemplate.config import ConfigError
from lmtemplate.data.translation import (SOURCE_TOKENIZER, TranslationDataConfig, TranslationDataModule,
                                         TranslationTokenizerConfig)
from lmtemplate.models.backbone import build_model
from lmtemplate.models.gpt import Block
from lmtemplate.models.seq2seq import DecoderBlock, Seq2Seq, Seq2SeqConfig
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, per_stage, token_cross_entropy
from lmtemplate.tasks.decoding import DecodeConfig, GenerationTask, generate
from lmtemplate.tasks.text_metrics import BLEU, ChrF
from lmtemplate.tokenization import save_tokenizer


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
class Translation(GenerationTask):
    metrics = {"val/bleu": "max", "val/chrf": "max", "val/loss": "min"}
    blocks = (Block, DecoderBlock)
    predictions_file = "translations.txt"
    sample_columns = ("source", "reference", "hypothesis")
    output_key = "translation"

    def __init__(self, cfg: TranslationConfig, datamodule: TranslationDataModule):
        super().__init__(cfg)
        m, dm = cfg.model, datamodule
        if m.shared_embeddings and not cfg.tokenizer.joint:
            raise ConfigError("model.shared_embeddings: one embedding table needs one vocabulary (tokenizer.joint=true); "
                              "set model.shared_embeddings=false to use a tokenizer per side")
        src_vocab = dm.source_tokenizer.get_vocab_size()
        if 0 < m.src_vocab_size < src_vocab:
            raise ConfigError(f"model.src_vocab_size: {m.src_vocab_size} is smaller than the tokenizer's vocabulary ({src_vocab})")
        self.model = build_model(Seq2Seq, replace(m, src_vocab_size=m.src_vocab_size or src_vocab),
                                 dm.tokenizer.get_vocab_size())
        self.tokenizer, self.source_tokenizer = dm.tokenizer, dm.source_tokenizer
        self.bos_id, self.eos_id = dm.bos_id, dm.eos_id
        self.text_metrics = per_stage(MetricCollection({"bleu": BLEU(), "chrf": ChrF()}, compute_groups=False))

    def setup(self, stage: str) -> None:
        """A run with a tokenizer per side keeps the source's beside tokenizer.json (which run.py writes)."""
        super().setup(stage)
        if stage == "fit" and not self.cfg.tokenizer.joint and self.trainer.is_global_zero:
            save_tokenizer(self.source_tokenizer, Path(self.trainer.default_root_dir) / SOURCE_TOKENIZER)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Label-smoothed in training, plain cross-entropy per target token in evaluation."""
        return token_cross_entropy(self(batch), batch["labels"], self.cfg.optim.label_smoothing if self.training else 0.0)

    @torch.no_grad()
    def translate(self, src: torch.Tensor, src_mask: torch.Tensor, beam_size: int) -> list[str]:
        """Detokenized translations of a padded batch of sources; greedy when ``beam_size`` is 1."""
        max_lengths = self.cfg.decode.max_lengths(src_mask.sum(1), self.model.cfg.block_size)
        ids = generate(lambda copies: self.model.stepper(src, src_mask, copies), self.bos_id, self.eos_id, max_lengths,
                       self.cfg.decode, beam_size)
        return [text.strip() for text in self.tokenizer.decode_batch(ids, skip_special_tokens=True)]

    def decode_rows(self, batch: dict, rows: list[int], beam_size: int) -> list[str]:
        return self.translate(batch["input_ids"][rows], batch["attention_mask"][rows], beam_size)
