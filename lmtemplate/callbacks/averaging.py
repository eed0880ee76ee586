"""What the ``ema``, ``checkpoint`` and ``best.patience`` sections add to training: an exponential moving average of
the weights (Lightning's ``WeightAveraging``), the last N checkpoints kept for ``average``, and early stopping
(Lightning's ``EarlyStopping``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, WeightAveraging

from lmtemplate.config import ConfigError, EMAConfig

PERIODIC = "step-{step}"  # checkpoints/step-<k>.ckpt, for checkpoint.keep


def training_extras(cfg, run_dir: Path, metrics: dict[str, str]) -> list[L.Callback]:
    """The callbacks that ``cfg`` switches on; ``metrics``: the task's, each metric's "min" or "max"."""
    callbacks: list[L.Callback] = []
    if cfg.ema.decay is not None:
        if cfg.trainer.get("strategy") == "fsdp":
            raise ConfigError("ema.decay: the average of the weights is kept whole on each device, which FSDP's "
                              "sharded weights do not allow; set ema.decay=null or use another trainer.strategy")
        callbacks.append(EMA(cfg.ema))
    if cfg.checkpoint.keep:
        callbacks.append(ModelCheckpoint(run_dir / "checkpoints", PERIODIC, monitor="step", mode="max",
                                         save_top_k=cfg.checkpoint.keep, auto_insert_metric_name=False,
                                         every_n_train_steps=cfg.checkpoint.every or None))
        callbacks.append(ValidationScores())
    if cfg.best.patience is not None:
        metric = cfg.best.metric
        callbacks.append(EarlyStopping(metric, cfg.best.min_delta, cfg.best.patience, mode=metrics[metric],
                                       check_on_train_epoch_end=False))
    return callbacks


class EMA(WeightAveraging):
    """An exponential moving average of the weights, updated after every optimizer step: from step ``ema.start``
    ``average = decay * average + (1 - decay) * weights``, before it a copy of the weights.

    Lightning's layout: a checkpoint's ``state_dict`` holds the average, ``current_model_state`` the trained
    weights, and resuming restores both. Validation during ``fit`` uses the average when ``ema.averaged_in`` names
    ``validate`` (so it picks the best checkpoint). Training always ends with the trained weights in the model, as
    a checkpoint saved there must have them for a resumed run to continue exactly.
    """

    def __init__(self, cfg: EMAConfig):
        super().__init__(use_buffers=False, multi_avg_fn=self._update)  # buffers are constants here (no batch norm)
        self.cfg, self._step = cfg, 0

    def should_update(self, step_idx=None, epoch_idx=None) -> bool:
        if step_idx is not None:
            self._step = step_idx
        return step_idx is not None

    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        weight = 1 - self.cfg.decay if self._step >= self.cfg.start else 1.0
        torch._foreach_lerp_(averaged, current, weight)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if "validate" in self.cfg.averaged_in:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        """The average stays in the model until validation ends, so that the text samples are its too."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if "validate" in self.cfg.averaged_in:  # before the checkpoints are saved (those callbacks run last)
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        """Lightning copies the average into the model here, before the last checkpoint is saved."""


class ValidationScores(L.Callback):
    """A checkpoint saved at a validation's step records that validation's scores (``validated``), so that
    ``average --ckpt best:N`` can rank the kept ``step-<k>.ckpt``; one saved between validations (``checkpoint.every``)
    records none: the latest scores are not its weights'."""

    def __init__(self):
        self.validated_at = -1

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validated_at = trainer.global_step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.validated_at == trainer.global_step:
            checkpoint["validated"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def weights_for(checkpoint: dict, verb: str, ema: EMAConfig) -> dict:
    """The weights ``verb`` uses from a checkpoint: the average of an EMA run unless ``ema.averaged_in`` leaves
    ``verb`` out, then the trained weights."""
    if "current_model_state" in checkpoint and verb not in ema.averaged_in:
        return checkpoint["current_model_state"]
    return checkpoint["state_dict"]
