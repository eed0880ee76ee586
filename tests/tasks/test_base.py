import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.data import DataLoader

from lmtemplate.data.base import IGNORE
from lmtemplate.tasks.base import OptimConfig, Task, token_cross_entropy, warmup_decay


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


class TokenTask(Task):
    """A float64 task whose loss is a mean over target tokens, trained by SGD with lr 1: one step changes the
    weights by minus the step's gradient. Rank r of w trains on every w-th of ``batches``."""

    def __init__(self, batches: list[dict]):
        super().__init__(cfg=None)
        torch.manual_seed(0)
        self.embed, self.out = torch.nn.Embedding(7, 5).double(), torch.nn.Linear(5, 7).double()
        self.batches = batches

    def loss(self, batch):
        return token_cross_entropy(self.out(self.embed(batch["input_ids"])), batch["labels"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return DataLoader(self.batches[self.global_rank :: self.trainer.world_size], batch_size=None)


def token_batch(rows: int, length: int, labelled: int) -> dict:
    """``rows`` sequences of ``length`` tokens, the first ``labelled`` of them (row after row) with a label."""
    g = torch.Generator().manual_seed(100 * rows + length)
    ids, labels = torch.randint(0, 7, (2, rows, length), generator=g)
    labels.view(-1)[labelled:] = IGNORE
    return {"input_ids": ids, "labels": labels}


# Four micro-batches of 3, 10, 1 and 7 target tokens: a mean of their means weighs a token of the third 10 times
# as much as one of the second.
BATCHES = [token_batch(2, 6, 3), token_batch(3, 4, 10), token_batch(1, 5, 1), token_batch(2, 5, 7)]


def one_step(batches: list[dict], **trainer) -> dict[str, torch.Tensor]:
    """The gradient of the first optimizer step that Lightning takes over ``batches`` with ``trainer`` settings."""
    task = TokenTask(batches)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, use_distributed_sampler=False, accelerator="cpu", **trainer).fit(task)
    return {k: before[k] - v for k, v in task.state_dict().items()}


def whole_batch(batches: list[dict], mean_of_means: bool = False) -> dict[str, torch.Tensor]:
    """The gradient of the per-token mean over every batch at once (or, wrongly, of the mean of their means)."""
    task = TokenTask(batches)
    losses = [task.mean_loss(b) for b in batches]
    if mean_of_means:
        (sum(losses) / len(losses)).backward()
    else:
        length = max(b["input_ids"].shape[1] for b in batches)
        pad = lambda t, value: torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)  # noqa: E731
        task.mean_loss({"input_ids": torch.cat([pad(b["input_ids"], 0) for b in batches]),
                        "labels": torch.cat([pad(b["labels"], IGNORE) for b in batches])}).backward()
    return {name: p.grad for name, p in task.named_parameters()}


def assert_close(a: dict, b: dict, tolerance: float = 1e-6) -> None:
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=tolerance) for k in a)


def test_accumulated_micro_batches_give_the_gradient_of_one_batch_with_all_their_tokens():
    expected = whole_batch(BATCHES[:2])
    assert_close(one_step(BATCHES[:2], accumulate_grad_batches=2), expected)
    assert_close(one_step(BATCHES[:2], accumulate_grad_batches=2, gradient_clip_val=1.0), expected)  # clips after
    wrong = whole_batch(BATCHES[:2], mean_of_means=True)
    assert not all(torch.allclose(wrong[k], expected[k], rtol=0, atol=1e-3) for k in expected)  # the test can tell


def test_one_batch_per_step_gives_its_own_per_token_gradient():
    assert_close(one_step(BATCHES[1:2]), whole_batch(BATCHES[1:2]))


@pytest.mark.slow
def test_two_ddp_ranks_accumulating_give_the_gradient_of_one_batch_with_all_their_tokens(tmp_path):
    """2 CPU ranks (gloo) x 2 accumulated micro-batches, each with its own number of target tokens, take the step
    one process takes on the four batches as one."""
    out = tmp_path / "gradient.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "test_base", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close(torch.load(out), whole_batch(BATCHES))


if __name__ == "__main__":  # the DDP test's processes (Lightning starts rank 1 with this same command)
    gradient = one_step(BATCHES, strategy="ddp", devices=2, accumulate_grad_batches=2)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        torch.save(gradient, sys.argv[1])
