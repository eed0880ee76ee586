"""Task ``classification``: a label for each text or text pair, on an encoder or a GPT backbone.

``model.init_from`` starts the backbone from a ``masked_lm`` run (``model.arch:
encoder``) or a ``causal_lm`` run (``model.arch: decoder``), with that run's
tokenizer; the head always starts fresh.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

from lmtemplate.config import ConfigError
from lmtemplate.data.classification import ClassificationDataConfig, ClassificationDataModule
from lmtemplate.models.encoder import Encoder, EncoderConfig
from lmtemplate.models.gpt import GPT, Block, GPTConfig
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, Task, configure_adamw, load_backbone
from lmtemplate.tasks.masked_lm import EncoderTokenizerConfig
from lmtemplate.tokenization import atomic_write_text

ARCHS = ("encoder", "decoder")
POOLINGS = ("auto", "cls", "last", "mean")
METRICS = {"val/accuracy": "max", "val/f1": "max", "val/mcc": "max", "val/loss": "min"}


@dataclass
class ClassifierModelConfig(EncoderConfig):
    """The backbone's shape (as the pretraining run's, with init_from), plus the head and what to freeze."""

    arch: str = "encoder"  # encoder (a masked_lm backbone) or decoder (a causal_lm GPT)
    pooling: str = "auto"  # auto: cls for an encoder, last for a decoder; or cls / last (last real token) / mean
    init_from: Optional[str] = None  # a pretraining run directory (its last.ckpt) or checkpoint file
    freeze_backbone: bool = False
    freeze_layers: int = 0  # freeze the embeddings and this many of the lowest blocks
    head_dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch: '{self.arch}' is not one of {', '.join(ARCHS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling: '{self.pooling}' is not one of {', '.join(POOLINGS)}")
        if self.arch == "decoder" and self.pooling == "cls":
            raise ValueError("model.pooling: a decoder's first token has seen nothing else; use last or mean")
        if not 0 <= self.freeze_layers <= self.n_layer:
            raise ValueError(f"model.freeze_layers: expected 0..model.n_layer ({self.n_layer}), got {self.freeze_layers}")


@dataclass
class ClassifierOptimConfig(OptimConfig):
    lr: float = 1e-3
    backbone_lr: Optional[float] = None  # the backbone's peak learning rate; None: optim.lr
    warmup_steps: int = 50


@dataclass
class BestConfig:
    metric: str = "val/accuracy"  # picks the best checkpoint: val/accuracy, val/f1, val/mcc or val/loss

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"best.metric: '{self.metric}' is not one of {', '.join(METRICS)}")

    @property
    def mode(self) -> str:
        return METRICS[self.metric]


@dataclass
class ClassificationConfig:
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    tokenizer: EncoderTokenizerConfig = field(default_factory=EncoderTokenizerConfig)
    optim: ClassifierOptimConfig = field(default_factory=ClassifierOptimConfig)
    best: BestConfig = field(default_factory=BestConfig)


def build_backbone(cfg: ClassifierModelConfig, vocab_size: int) -> nn.Module:
    if cfg.arch == "decoder":
        shape = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(GPTConfig)}
        return GPT(GPTConfig(**{**shape, "vocab_size": vocab_size}))
    shape = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(EncoderConfig)}
    return Encoder(EncoderConfig(**{**shape, "vocab_size": vocab_size}))


def pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, C) hidden states -> (B, C): the first token, the last real token, or the mean of real tokens."""
    if how == "cls":
        return h[:, 0]
    if how == "last":
        return h[torch.arange(h.size(0), device=h.device), mask.sum(1) - 1]
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


@register_task("classification", config=ClassificationConfig, datamodule=ClassificationDataModule)
class Classification(Task):
    monitor = ("val/accuracy", "max")  # the default; best.metric chooses
    blocks = (Block,)
    flops_per_batch = None  # padded batches vary in length: the throughput logs tokens/s only

    def __init__(self, cfg: ClassificationConfig, datamodule: ClassificationDataModule):
        super().__init__()
        self.cfg = cfg
        self.labels = datamodule.labels
        m = cfg.model
        self.model = build_backbone(m, m.vocab_size or datamodule.tokenizer.get_vocab_size())
        self.pooling = m.pooling if m.pooling != "auto" else ("cls" if m.arch == "encoder" else "last")
        self.head = nn.Sequential(nn.Dropout(m.head_dropout), nn.Linear(m.n_embd, len(self.labels)))
        if m.compile:
            self.model.compile()
        n = len(self.labels)
        metrics = MetricCollection({
            "accuracy": MulticlassAccuracy(n, average="micro"),
            "f1": MulticlassF1Score(n, average="macro"),
            "mcc": MulticlassMatthewsCorrCoef(n),
        })
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")
        self.save_hyperparameters(dataclasses.asdict(cfg))

    def setup(self, stage: str) -> None:
        """Before training (and before a resumed run's checkpoint is restored): the pretrained backbone, frozen parts."""
        if stage != "fit":
            return
        m = self.cfg.model
        if m.init_from:
            load_backbone(self.model, m.init_from, m.arch)
        frozen = list(self.model.blocks[: m.freeze_layers]) if m.freeze_layers else []
        if m.freeze_layers:
            frozen += [e for e in (self.model.tok_emb, self.model.pos_emb, getattr(self.model, "type_emb", None)) if e is not None]
        for module in [self.model] if m.freeze_backbone else frozen:
            module.requires_grad_(False)
        if self.trainer.is_global_zero:
            atomic_write_text(Path(self.trainer.default_root_dir) / "labels.json", json.dumps(self.labels) + "\n")

    def forward(self, batch: dict) -> torch.Tensor:
        m = self.model
        if isinstance(m, Encoder):
            h = m.features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        else:
            h = m.features(batch["input_ids"])  # right padding: causal attention never lets real tokens see it
        return self.head(pool(h, batch["attention_mask"], self.pooling))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict, stage: str, metrics: MetricCollection) -> None:
        logits = self(batch)
        self.log(f"{stage}/loss", F.cross_entropy(logits, batch["labels"]), prog_bar=True, sync_dist=True,
                 batch_size=len(logits))
        metrics.update(logits, batch["labels"])
        self.log_dict(metrics, prog_bar=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        probs = self(batch).float().softmax(-1).tolist()
        return [
            {"input": text, "label": self.labels[max(range(len(p)), key=p.__getitem__)],
             "probabilities": dict(zip(self.labels, p))}
            for text, p in zip(batch["inputs"], probs)
        ]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["labels"] = self.labels

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("labels", self.labels) != self.labels:
            raise ConfigError(
                f"the checkpoint was trained with labels {checkpoint['labels']}, but the training file now gives "
                f"{self.labels}: its class indices would mean other labels"
            )

    def configure_optimizers(self):
        o = self.cfg.optim
        groups = self.model.param_groups(o.weight_decay)
        if o.backbone_lr is not None:
            groups = [{**g, "lr": o.backbone_lr} for g in groups]
        head = [p for p in self.head.parameters() if p.requires_grad]
        return configure_adamw(self, [g for g in groups if g["params"]] + [{"params": head, "weight_decay": 0.0}], o)
