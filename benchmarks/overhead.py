"""What the template costs per step: `fit` as it runs by default against a plain PyTorch loop.

Both train the demo GPT shape on the same batches in one process, interleaved
step by step: a callback runs one plain-loop step after each template step.

- template: `lmtemplate.run.prepare("fit", ...)` + `run.fit`, exactly as
  `python -m lmtemplate fit` builds it (callbacks, logging, progress bar,
  checkpointing and validation at their defaults). A template step is the
  time from one `on_train_batch_start` to the next, minus the plain step run in
  between: data loading, forward, backward, clipping, optimizer, scheduler,
  logging, callbacks and progress bar are all in it.
- plain: a loop written here: its own DataLoader over the same windows in the
  same order, the same model shape and init, AdamW with the same parameter
  groups and schedule, gradient clipping at 1.0.

Reports the median ms/step of each and plain/template (>= 0.98 is issue 17's
target: the template at no less than 98% of the plain loop's speed), the
mean, which also carries the template's periodic validation and checkpoints,
and the median of each phase of a step in both loops (``PHASES``): where the
template's extra time goes.

    python benchmarks/overhead.py [--steps 300] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common import StepTimer, default_out, environment, median, print_table, write_json
from lmtemplate import run
from lmtemplate.data.corpus import TokenWindows, WindowSampler
from lmtemplate.models.gpt import GPT
from lmtemplate.tasks.base import use_fused, warmup_decay


class PlainLoop:
    """The reference: a hand-written training step over the same windows."""

    def __init__(self, session: run.Session):
        cfg, dm = session.loaded.cfg, session.datamodule
        self.model = GPT(session.module.model.cfg)
        self.model.load_state_dict(session.module.model.state_dict())
        decay_steps = cfg.optim.decay_steps or cfg.trainer["max_steps"]
        groups = self.model.param_groups(cfg.optim.weight_decay)
        self.opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=use_fused(groups, cfg.optim.fused))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: warmup_decay(s, cfg.optim, decay_steps) / cfg.optim.lr)
        sampler = WindowSampler(len(dm.train_tokens), dm.block_size, shuffle=True, seed=cfg.run.seed)
        loader = DataLoader(TokenWindows(dm.train_tokens, dm.block_size), batch_size=cfg.data.batch_size, sampler=sampler, drop_last=True)
        self.batches = iter(loader)
        self.clip = cfg.trainer.get("gradient_clip_val") or 0.0

    def step(self) -> dict[str, float]:
        """One step; seconds of each phase (``PHASES``)."""
        t0 = time.perf_counter()
        batch = next(self.batches)
        x, y = batch[:, :-1], batch[:, 1:]
        t1 = time.perf_counter()
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)))


# A step's phases, as both loops are timed: the template's from Lightning's hooks (the batch's fetch and the loop
# between steps; zero_grad, forward, loss and logging up to on_before_backward; backward; clipping, optimizer,
# scheduler and every callback's on_train_batch_end), the plain loop's around the same lines.
PHASES = ("data and loop", "forward and loss", "backward", "clip, optimizer, callbacks")


class Interleave(StepTimer):
    """Times template steps (``times``) and runs one timed plain step after each (``reference``); both per phase."""

    def __init__(self, plain: PlainLoop, warmup: int):
        super().__init__(warmup)
        self.plain = plain
        self.reference: list[float] = []
        self.phases: dict[str, dict[str, list[float]]] = {"template": {p: [] for p in PHASES}, "plain": {p: [] for p in PHASES}}
        self._marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._mark("start")

    def on_before_backward(self, trainer, pl_module, loss):
        self._mark("before_backward")

    def on_after_backward(self, trainer, pl_module):
        self._mark("after_backward")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        end = time.perf_counter()
        plain = self.plain.step()
        self.excluded = sum(plain.values())  # not the template's time
        if self._seen > self.warmup:
            self.reference.append(self.excluded)
            m, template = self._marks, self.phases["template"]
            if "plain_end" in m:
                template[PHASES[0]].append(m["start"] - m["plain_end"])
            template[PHASES[1]].append(m["before_backward"] - m["start"])
            template[PHASES[2]].append(m["after_backward"] - m["before_backward"])
            template[PHASES[3]].append(end - m["after_backward"])
            for phase, seconds in plain.items():
                self.phases["plain"][phase].append(seconds)
        self._mark("plain_end")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="a 30-step smoke run")
    p.add_argument("--out", default=str(default_out("overhead")))
    args = p.parse_args()
    steps = 30 if args.quick else args.steps
    warmup = 5
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"trainer.max_steps={steps + warmup + 1}", f"run.root={tmp}", "run.cache_dir=outputs/cache"]
        session = run.prepare("fit", [], overrides)
        timer = Interleave(PlainLoop(session), warmup)
        session.trainer.callbacks.append(timer)
        run.fit(session)
    n = min(len(timer.times), len(timer.reference))
    t, r = timer.times[:n], timer.reference[:n]
    result = {
        "shape": {k: getattr(session.module.model.cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
        "batch_size": session.loaded.cfg.data.batch_size,
        "steps": n,
        "template_ms_median": 1000 * median(t),
        "plain_ms_median": 1000 * median(r),
        "ratio_plain_over_template": median(r) / median(t),
        "template_ms_mean": 1000 * sum(t) / n,
        "plain_ms_mean": 1000 * sum(r) / n,
        "phases_ms_median": {loop: {p: 1000 * median(v) for p, v in by_phase.items()} for loop, by_phase in timer.phases.items()},
        "environment": environment(),
    }
    print_table(
        [["template (fit defaults)", result["template_ms_median"], result["template_ms_mean"]],
         ["plain PyTorch loop", result["plain_ms_median"], result["plain_ms_mean"]]],
        ["", "median ms/step", "mean ms/step"],
    )
    phases = result["phases_ms_median"]
    print_table([[p, phases["template"][p], phases["plain"][p], phases["template"][p] - phases["plain"][p]] for p in PHASES],
                ["phase (median)", "template ms", "plain ms", "difference ms"])
    print(f"speed of the template relative to the plain loop: {result['ratio_plain_over_template']:.3f} (target >= 0.98)")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
