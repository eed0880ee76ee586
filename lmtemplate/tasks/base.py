"""What tasks share: the optimizer and its learning-rate schedule, gradient clipping and its logged norm."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy

from lmtemplate.config import ConfigError


@dataclass
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 1e-4  # the cosine decay ends here
    weight_decay: float = 0.1  # on weight matrices only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 50
    decay_steps: Optional[int] = None  # end of the cosine decay; None: trainer.max_steps

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: expected two numbers, got {self.betas}")
        if self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr ({self.min_lr}) is larger than optim.lr ({self.lr})")


def warmup_cosine(step: int, cfg: OptimConfig, decay_steps: int) -> float:
    """The learning rate at ``step``: linear warmup, cosine decay to ``min_lr``, then flat."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= decay_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def configure_adamw(module: L.LightningModule, param_groups: list[dict], cfg: OptimConfig):
    """AdamW over ``param_groups`` with the warmup + cosine schedule, stepped every optimizer step."""
    decay_steps = cfg.decay_steps or module.trainer.max_steps
    if decay_steps is None or decay_steps < 0:
        decay_steps = int(module.trainer.estimated_stepping_batches)
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, cfg, decay_steps) / cfg.lr)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Task(L.LightningModule):
    """The LightningModule every built-in task extends: gradient clipping that also works under FSDP.

    Lightning's FSDP precision plugin refuses ``gradient_clip_algorithm='norm'``;
    here FSDP's own ``clip_grad_norm_`` (which combines the norms of every rank's
    shards) clips instead, and every other strategy uses
    ``torch.nn.utils.clip_grad_norm_`` as Lightning would. Either returns the total
    norm before clipping, logged as ``train/grad_norm`` on the steps the trainer logs.
    """

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_algorithm == "value":
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        log = self.trainer.global_step % self.trainer.log_every_n_steps == 0
        if not gradient_clip_val and not log:
            return
        max_norm = gradient_clip_val or float("inf")
        if isinstance(self.trainer.strategy, FSDPStrategy):
            norm = self.trainer.strategy.model.clip_grad_norm_(max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm)
        if log:
            self.log("train/grad_norm", norm)
