"""Task ``classification``: a label for each text or text pair, on an encoder or a GPT backbone."""

from __future__ import annotations

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
from lmtemplate.models.backbone import BackboneConfig, build_backbone, hidden_states
from lmtemplate.models.gpt import Block
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, Task, configure_adamw, per_stage
from lmtemplate.files import atomic_write_text
from lmtemplate.tokenization import EncoderTokenizerConfig

POOLINGS = ("auto", "cls", "last", "mean")


@dataclass
class ClassifierModelConfig(BackboneConfig):
    """The backbone's shape (as the pretraining run's, with init_from), plus the head and what to freeze."""

    pooling: str = "auto"  # auto: cls for an encoder, last for a decoder; or cls / last (last real token) / mean
    freeze_backbone: bool = False
    freeze_layers: int = 0  # freeze the embeddings and this many of the lowest blocks
    head_dropout: float = 0.1
    pooler: bool = False  # BERT's pooler before the head: dense + tanh (imported from a BERT checkpoint that has one)
    head_bias: bool = True  # false: a head without bias, as GPT2ForSequenceClassification's (to export a decoder's)

    def __post_init__(self):
        super().__post_init__()
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
class ClassificationConfig:
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    tokenizer: EncoderTokenizerConfig = field(default_factory=EncoderTokenizerConfig)
    optim: ClassifierOptimConfig = field(default_factory=ClassifierOptimConfig)


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
    metrics = {"val/accuracy": "max", "val/f1": "max", "val/mcc": "max", "val/loss": "min"}
    blocks = (Block,)

    def __init__(self, cfg: ClassificationConfig, datamodule: ClassificationDataModule):
        super().__init__(cfg)
        self.labels = datamodule.labels
        m, n = cfg.model, len(self.labels)
        self.model = build_backbone(m, datamodule.tokenizer.get_vocab_size())
        self.pooling = m.pooling if m.pooling != "auto" else ("cls" if m.arch == "encoder" else "last")
        self.pooler = nn.Sequential(nn.Linear(m.n_embd, m.n_embd), nn.Tanh()) if m.pooler else None
        self.head = nn.Sequential(nn.Dropout(m.head_dropout), nn.Linear(m.n_embd, n, bias=m.head_bias))
        self.scorers = per_stage(MetricCollection({
            "accuracy": MulticlassAccuracy(n, average="micro"),
            "f1": MulticlassF1Score(n, average="macro"),
            "mcc": MulticlassMatthewsCorrCoef(n),
        }))

    def setup(self, stage: str) -> None:
        """Before training (and before a resumed run's checkpoint is restored): the pretrained backbone, frozen parts."""
        super().setup(stage)
        if stage != "fit":
            return
        m = self.cfg.model
        frozen = list(self.model.blocks[: m.freeze_layers]) if m.freeze_layers else []
        if m.freeze_layers:
            embeddings = (self.model.tok_emb, self.model.pos_emb, getattr(self.model, "type_emb", None), self.model.emb_ln)
            frozen += [e for e in embeddings if e is not None]
        for module in [self.model] if m.freeze_backbone else frozen:
            module.requires_grad_(False)
        if self.trainer.is_global_zero:
            atomic_write_text(Path(self.trainer.default_root_dir) / "labels.json", json.dumps(self.labels) + "\n")

    def forward(self, batch: dict) -> torch.Tensor:
        pooled = pool(hidden_states(self.model, batch), batch["attention_mask"], self.pooling)
        return self.head(pooled if self.pooler is None else self.pooler(pooled))

    def loss(self, batch: dict, logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.cross_entropy(self(batch) if logits is None else logits, batch["labels"])

    def evaluate(self, batch: dict, batch_idx: int, stage: str) -> None:
        logits = self(batch)
        self.log(f"{stage}/loss", self.loss(batch, logits), prog_bar=True, sync_dist=True, batch_size=len(logits))
        self.log_metrics(stage, self.scorers, logits, batch["labels"])

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        probs = self(batch).float().softmax(-1)
        return [{"input": text, "label": self.labels[i], "probabilities": dict(zip(self.labels, p))}
                for text, i, p in zip(batch["inputs"], probs.argmax(-1).tolist(), probs.tolist())]

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
        head = [p for name, p in self.named_parameters() if not name.startswith("model.")]  # the pooler and head
        return configure_adamw(self, [g for g in groups if g["params"]] + [{"params": head, "weight_decay": 0.0}], o)
