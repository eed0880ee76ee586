"""What tasks share: the optimizer and its schedule, gradient clipping, and ``init_from`` (a pretrained backbone)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf
from torch import nn

from lmtemplate.checkpointing import read_checkpoint
from lmtemplate.config import ConfigError

SCHEDULES = ("cosine", "inverse_sqrt")


@dataclass
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 1e-4  # the cosine decay ends here
    weight_decay: float = 0.1  # on weight matrices only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 50
    decay_steps: Optional[int] = None  # end of the cosine decay; None: trainer.max_steps
    schedule: str = "cosine"  # after the warmup: cosine (decay to min_lr), or inverse_sqrt (lr * sqrt(warmup / step))

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule: '{self.schedule}' is not one of {', '.join(SCHEDULES)}")
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


def inverse_sqrt(step: int, cfg: OptimConfig) -> float:
    """The Transformer's schedule: linear warmup to ``lr``, then decay as 1 / sqrt(step) (no end, no min_lr)."""
    warmup = max(1, cfg.warmup_steps)
    return cfg.lr * min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))


def configure_adamw(module: L.LightningModule, param_groups: list[dict], cfg: OptimConfig):
    """AdamW over ``param_groups`` with warmup and ``cfg.schedule``, stepped every optimizer step."""
    decay_steps = cfg.decay_steps or module.trainer.max_steps
    if cfg.schedule == "cosine" and (decay_steps is None or decay_steps < 0):
        if math.isinf(module.trainer.estimated_stepping_batches):
            raise ConfigError("optim.decay_steps: the cosine schedule needs an end; set trainer.max_steps or "
                              "optim.decay_steps, or use optim.schedule=inverse_sqrt (a time budget has no step count)")
        decay_steps = int(module.trainer.estimated_stepping_batches)
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    rate = (lambda step: inverse_sqrt(step, cfg)) if cfg.schedule == "inverse_sqrt" else (lambda step: warmup_cosine(step, cfg, decay_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: rate(step) / cfg.lr)
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


def init_source(init_from: str) -> tuple[Path, Optional[Path]]:
    """``model.init_from`` -> (checkpoint file, its run directory): a run directory means its last.ckpt."""
    path = Path(init_from)
    if path.is_dir() and path.suffix != ".ckpt":
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"model.init_from: no checkpoint file at {path} (give a run directory or a .ckpt file)")
    return path, path.parent.parent if path.parent.name == "checkpoints" else None


def tokenizer_of(init_from: str) -> Path:
    """The tokenizer.json of the run that ``model.init_from`` names: a backbone only reads its own token ids."""
    checkpoint, run_dir = init_source(init_from)
    found = run_dir / "tokenizer.json" if run_dir else None
    if found is None or not found.is_file():
        raise ConfigError(
            f"model.init_from: {checkpoint} is not inside a run directory with a tokenizer.json; "
            "set tokenizer.path to the tokenizer it was trained with"
        )
    return found


def load_backbone(backbone: nn.Module, init_from: str, arch: str) -> None:
    """Copy the pretraining run's ``model.*`` weights into ``backbone``; any missing, extra or reshaped
    parameter is an error that names it (the config's shape or ``model.arch`` differs from the run's)."""
    checkpoint, run_dir = init_source(init_from)
    state = read_checkpoint(checkpoint)["state_dict"]
    source = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    config = run_dir / "config.yaml" if run_dir else None
    task = OmegaConf.load(config).get("task", "?") if config and config.is_file() else "?"
    own = backbone.state_dict()
    missing, extra = [k for k in own if k not in source], [k for k in source if k not in own]
    if missing or extra:
        first = f"'{missing[0]}' is not in the checkpoint" if missing else f"the checkpoint's '{extra[0]}' is not in this model"
        raise ConfigError(
            f"model.init_from: {checkpoint} (a {task} run) does not fit this backbone (model.arch={arch}): {first} "
            f"({len(missing)} missing, {len(extra)} unexpected parameters). A masked_lm run needs model.arch=encoder, "
            "a causal_lm run model.arch=decoder, and the same model.positions / model.type_vocab_size / model.bias"
        )
    for name, tensor in own.items():
        if tensor.shape != source[name].shape:
            raise ConfigError(
                f"model.init_from: parameter '{name}' has shape {tuple(source[name].shape)} in {checkpoint} but "
                f"{tuple(tensor.shape)} in this model; set model.n_layer / n_head / n_embd / block_size to the "
                f"pretraining run's{f' (see {config})' if config else ''}"
            )
    backbone.load_state_dict(source)
