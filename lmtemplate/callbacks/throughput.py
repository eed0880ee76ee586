"""Tokens per second, FLOP/s and MFU, through Lightning's ThroughputMonitor, with our own table of peak FLOP/s."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor

# One GPU's dense bf16 / fp16 tensor-core peak, FLOP/s: what MFU divides by. NVIDIA's datasheets quote these
# "with sparsity" (2:4 structured), twice the dense figure: H100 datasheet (nvidia.com/en-us/data-center/h100):
# BF16 1,979 TFLOPS SXM, 1,513 PCIe, 1,671 NVL; H200 datasheet (nvidia.com/en-us/data-center/h200,
# nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446): 1,979 SXM, 1,671 NVL, each "with sparsity".
# Lightning 2.6's table names the H200 only as "h200 sxm1"/"h200 nvl1" (no device reports that name), with the
# sparse figure, so it logs no MFU on an H200. Keys are matched in order against the lower-cased device name.
PEAK_BF16_DENSE: dict[str, float] = {
    "h200 nvl": 835.5e12,
    "h200": 989.5e12,  # H200 SXM (the name CUDA reports: "NVIDIA H200")
    "h100 nvl": 835.5e12,
    "h100 pcie": 756.5e12,
    "h100": 989.4e12,  # H100 SXM ("NVIDIA H100 80GB HBM3")
}
HALF_PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "16-true", "bf16", "16")


def peak_bf16_flops(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a GPU from its CUDA name (``torch.cuda.get_device_name``), or None if not in the table."""
    name = device_name.lower()
    if "h100" in name and ("pcie" in name or "hbm2e" in name):
        name += " h100 pcie"
    return next((flops for key, flops in PEAK_BF16_DENSE.items() if all(k in name for k in key.split())), None)


def device_peak_flops(device: torch.device, precision: str) -> Optional[float]:
    """Our peak for a CUDA device training in 16-bit precision (None otherwise: Lightning's table decides)."""
    if device.type != "cuda" or str(precision) not in HALF_PRECISIONS:
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


class TokenThroughput(ThroughputMonitor):
    """ThroughputMonitor for batches of token windows: "items" are tokens.

    Logs ``train/device/items_per_sec`` (tokens/s per device),
    ``train/device/flops_per_sec`` (from the module's ``flops_per_batch``) and
    ``train/device/mfu`` when the device's peak FLOP/s is known: ``peak_flops``
    (``run.peak_flops``) if set, else :data:`PEAK_BF16_DENSE` for H100 and H200
    in 16-bit precision, else Lightning's table of common GPUs.
    """

    def __init__(self, window_size: int, peak_flops: Optional[float] = None):
        super().__init__(batch_size_fn=len, length_fn=len, window_size=window_size)  # the task's own, in setup
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.batch_size_fn, self.length_fn = pl_module.batch_size, pl_module.batch_tokens
        peak = self.peak_flops or device_peak_flops(trainer.strategy.root_device, trainer.precision)
        if peak:
            self.available_flops = peak
            for throughput in self._throughputs.values():
                throughput.available_flops = peak
