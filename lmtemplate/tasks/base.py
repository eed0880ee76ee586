"""What tasks share: the optimizer and its learning-rate schedule, and gradient-norm logging."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import lightning as L
import torch

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


def log_grad_norm(module: L.LightningModule) -> None:
    """Log the total gradient norm (before clipping) on the steps the trainer logs."""
    trainer = module.trainer
    if trainer.global_step % trainer.log_every_n_steps != 0:
        return
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    if norms:
        module.log("train/grad_norm", torch.stack(norms).norm())
