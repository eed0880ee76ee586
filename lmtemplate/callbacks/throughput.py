"""Tokens per second, FLOP/s and MFU, through Lightning's ThroughputMonitor."""

from __future__ import annotations

from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor


def _ids(batch):
    """Token windows are tensors; padded batches (classification, QA) are dicts with ``input_ids``."""
    return batch["input_ids"] if isinstance(batch, dict) else batch


def _tokens(batch) -> int:
    """Input tokens of a batch: a window of block_size + 1 tokens feeds block_size; padding counts as read."""
    return batch["input_ids"].numel() if isinstance(batch, dict) else batch[:, 1:].numel()


class TokenThroughput(ThroughputMonitor):
    """ThroughputMonitor for batches of token windows: "items" are tokens.

    Logs ``train/device/items_per_sec`` (tokens/s per device),
    ``train/device/flops_per_sec`` (from the module's ``flops_per_batch``) and
    ``train/device/mfu`` when the device's peak FLOP/s is known: Lightning
    knows common GPUs; ``peak_flops`` (``run.peak_flops``) sets it for others.
    """

    def __init__(self, window_size: int, peak_flops: Optional[float] = None):
        super().__init__(batch_size_fn=lambda batch: len(_ids(batch)), length_fn=_tokens, window_size=window_size)
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops
