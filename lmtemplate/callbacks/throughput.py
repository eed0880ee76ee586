"""Tokens per second, FLOP/s and MFU, through Lightning's ThroughputMonitor."""

from __future__ import annotations

from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor


class TokenThroughput(ThroughputMonitor):
    """ThroughputMonitor for batches of token windows: "items" are tokens.

    Logs ``train/device/items_per_sec`` (tokens/s per device),
    ``train/device/flops_per_sec`` (from the module's ``flops_per_batch``) and
    ``train/device/mfu`` when the device's peak FLOP/s is known: Lightning
    knows common GPUs; ``peak_flops`` (``run.peak_flops``) sets it for others.
    """

    def __init__(self, window_size: int, peak_flops: Optional[float] = None):
        super().__init__(batch_size_fn=len, length_fn=len, window_size=window_size)  # the task's own, in setup
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.batch_size_fn, self.length_fn = pl_module.batch_size, pl_module.batch_tokens
        if self.peak_flops:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops
