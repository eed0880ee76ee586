from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from lmtemplate.tasks.base import OptimConfig, Task, warmup_decay


class Linear(Task):
    def __init__(self):
        super().__init__(cfg=None)
        self.layer = torch.nn.Linear(4, 4)
        self.layer.weight.grad = torch.full((4, 4), 3.0)
        self.layer.bias.grad = torch.full((4,), 4.0)


def attach(module, strategy, step=1):
    logs = SimpleNamespace(should_update_logs=False)  # what Task.logs_now reads: a step whose logs are not written
    module._trainer = SimpleNamespace(global_step=step, log_every_n_steps=50, strategy=strategy, _logger_connector=logs)
    return torch.optim.SGD(module.parameters(), lr=0.1)


def test_clipping_scales_gradients_to_the_configured_norm():
    module = Linear()
    optimizer = attach(module, strategy=object())
    module.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    total = torch.stack([p.grad.norm() for p in module.parameters()]).norm()
    assert total == pytest.approx(1.0, rel=1e-5)


def test_under_fsdp_clipping_goes_through_fsdps_own_clip_grad_norm():
    calls = []

    class FakeFSDP(FSDPStrategy):
        model = SimpleNamespace(clip_grad_norm_=lambda max_norm: calls.append(max_norm) or torch.tensor(2.0))

        def __init__(self):
            pass

    module = Linear()
    optimizer = attach(module, strategy=FakeFSDP())
    module.configure_gradient_clipping(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    assert calls == [0.5]
    assert module.layer.weight.grad[0, 0] == 3.0  # left to FSDP: the local shards alone would give a wrong norm


def test_without_clipping_gradients_are_untouched():
    module = Linear()
    optimizer = attach(module, strategy=object())
    module.configure_gradient_clipping(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None)
    assert module.layer.bias.grad[0] == 4.0


def test_warmup_then_cosine_to_min_lr():
    cfg = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=10)
    assert warmup_decay(0, cfg, 110) == pytest.approx(0.1)
    assert warmup_decay(9, cfg, 110) == pytest.approx(1.0)
    assert warmup_decay(60, cfg, 110) == pytest.approx(0.55)
    assert warmup_decay(500, cfg, 110) == pytest.approx(0.1)


def test_warmup_then_linear_decay_to_min_lr():
    cfg = OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=10, schedule="linear")
    assert warmup_decay(9, cfg, 110) == pytest.approx(1.0)
    assert warmup_decay(35, cfg, 110) == pytest.approx(0.75)
    assert warmup_decay(60, cfg, 110) == pytest.approx(0.5)
    assert warmup_decay(110, cfg, 110) == 0.0
