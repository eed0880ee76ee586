"""The peak FLOP/s behind MFU: H100 and H200 known by the names CUDA gives them (tested with fake names: no GPU)."""

import pytest
import torch

from lmtemplate.callbacks import throughput
from lmtemplate.callbacks.throughput import device_peak_flops, peak_bf16_flops


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.5e12),
    ("NVIDIA H200 NVL", 835.5e12),
    ("NVIDIA H100 80GB HBM3", 989.4e12),
    ("NVIDIA H100 PCIe", 756.5e12),
    ("NVIDIA H100 NVL", 835.5e12),
    ("NVIDIA A100-SXM4-80GB", None),  # not ours: Lightning's table answers for it
])
def test_peak_by_device_name(name, peak):
    assert peak_bf16_flops(name) == peak


def test_a_fake_h200_gets_its_peak_in_bf16_only(monkeypatch):
    monkeypatch.setattr(throughput.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    cuda = torch.device("cuda", 0)
    assert device_peak_flops(cuda, "bf16-mixed") == 989.5e12
    assert device_peak_flops(cuda, "32-true") is None
    assert device_peak_flops(torch.device("cpu"), "bf16-mixed") is None


def test_the_callback_sets_mfu_peak_for_a_fake_h200(monkeypatch):
    """setup() on a (fake) H200 trainer in bf16: every stage's Throughput divides by the H200's dense peak."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ThroughputMonitor

    monkeypatch.setattr(throughput.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(ThroughputMonitor, "setup", lambda self, trainer, module, stage: setattr(
        self, "_throughputs", {"train": SimpleNamespace(available_flops=None)}))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), precision="bf16-mixed")
    module = SimpleNamespace(batch_size=len, batch_tokens=len)
    callback = throughput.TokenThroughput(window_size=2)
    callback.setup(trainer, module, "fit")
    assert callback.available_flops == 989.5e12 and callback._throughputs["train"].available_flops == 989.5e12
