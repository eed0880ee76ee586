"""Char-level Tiny Shakespeare with the CPU baby-GPT recipe, through the template, for three seeds.

Config: configs/pretrain/shakespeare-char.yaml (n_layer 4, n_head 4, n_embd 128,
block 64, batch 12, lr 1e-3 -> 1e-4 cosine with 100 warmup steps over 2000
iterations, dropout 0; first 90% of the characters train, last 10% validate).
Reports, per seed and as the mean: validation loss (nats per character) over
the whole validation tenth after 2000 iterations, the median ms per iteration
(every per-step cost of `fit` included) and the wall time of the run.

    python benchmarks/shakespeare_char.py [--seeds 1337 1338 1339] [--quick] [--out PATH]

Needs ../shared/data/tinyshakespeare/input.txt (or --data PATH).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, StepTimer, default_out, environment, median, print_table, write_json

from lmtemplate import run

CONFIG = ROOT / "configs" / "pretrain" / "shakespeare-char.yaml"


def train(seed: int, data: Path, root: str, extra: list[str]) -> dict:
    overrides = [f"run.seed={seed}", f"data.train={data}", f"run.root={root}", "run.cache_dir=outputs/cache",
                 "trainer.enable_progress_bar=false", *extra]
    t0 = time.perf_counter()
    session = run.prepare("fit", [str(CONFIG)], overrides)
    timer = StepTimer(warmup=10)
    session.trainer.callbacks.append(timer)
    metrics = run.fit(session)
    return {
        "seed": seed,
        "steps": metrics["step"],
        "val_loss": metrics["val/loss"],
        "ms_per_iter_median": 1000 * median(timer.times),
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338, 1339])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"))
    p.add_argument("--quick", action="store_true", help="one seed, 40 iterations: a smoke run")
    p.add_argument("--out", default=str(default_out("shakespeare_char")))
    p.add_argument("overrides", nargs="*", help="config overrides (key=value) on top of the recipe")
    args = p.parse_args()
    data = Path(args.data)
    if not data.is_file():
        sys.exit(f"shakespeare_char: {data} not found; pass --data PATH to Tiny Shakespeare's input.txt")
    seeds = args.seeds[:1] if args.quick else args.seeds
    quick = ["trainer.max_steps=40", "optim.decay_steps=2000", "trainer.limit_val_batches=5"] if args.quick else []
    extra = [*quick, *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [train(seed, data, tmp, extra) for seed in seeds]
    mean = statistics.mean(r["val_loss"] for r in runs)
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "quick": args.quick,
        "overrides": args.overrides,
        "runs": runs,
        "mean_val_loss": mean,
        "mean_ms_per_iter": statistics.mean(r["ms_per_iter_median"] for r in runs),
        # nanoGPT's loss with this recipe on the development machine; its speed side by side: benchmarks/vs_nanogpt.py
        "reference": {"nanogpt_val_loss": 1.886, "target_mean_val_loss": 1.88},
        "environment": environment(),
    }
    print_table([[r["seed"], r["steps"], r["val_loss"], r["ms_per_iter_median"], r["wall_s"]] for r in runs],
                ["seed", "iterations", "val loss (nats/char)", "median ms/iter", "wall s"])
    print(f"mean validation loss {mean:.4f} (target <= 1.88; nanoGPT's train.py: 1.886; speed side by side: vs_nanogpt.py)")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
