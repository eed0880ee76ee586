"""GPT-2-small-shaped pretraining on one GPU through `fit`: fp32, bf16, bf16 + compile, FSDP.

Each mode trains configs/pretrain/gpt-small.yaml (12 layers, 12 heads, 768 wide,
block 1024, batch 16) on the built-in demo corpus for a few hundred steps, in a
process of its own, exactly as `python -m lmtemplate fit` runs it (callbacks,
logging, checkpoints), and reports the median ms per step (every per-step cost
included), tokens/s, model FLOPs utilisation (the model's FLOPs per token x
tokens/s over the device's peak bf16 FLOP/s as Lightning knows it) and peak GPU
memory.

    python benchmarks/gpu.py [--steps 300] [--modes fp32 bf16 compile fsdp] [--quick] [--out PATH]

Needs a CUDA GPU; on a machine without one it says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, StepTimer, default_out, environment, median, print_table, write_json

CONFIG = ROOT / "configs" / "pretrain" / "gpt-small.yaml"
MODES = {
    "fp32": ["configs/trainer/gpu.yaml", "trainer.precision=32-true"],
    "bf16": ["configs/trainer/gpu.yaml"],
    "compile": ["configs/trainer/gpu.yaml", "model.compile=true"],
    "fsdp": ["configs/trainer/fsdp.yaml", "trainer.devices=1"],
}


def train(mode: str, steps: int, root: str, quick: bool) -> dict:
    """One mode's run, in this process (the parent runs each mode in a child of its own)."""
    import torch
    from lightning.fabric.utilities.throughput import get_available_flops

    from lmtemplate import run
    from lmtemplate.callbacks.throughput import peak_bf16_flops

    files = [str(CONFIG)] + [str(ROOT / f) for f in MODES[mode] if f.endswith(".yaml")]
    overrides = [o for o in MODES[mode] if not o.endswith(".yaml")] + [
        f"run.root={root}", "run.cache_dir=outputs/cache", f"run.name={mode}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        "trainer.limit_val_batches=4", "trainer.enable_progress_bar=false", "data.demo_lines=200000",
        "data.num_workers=2",
    ]
    if quick:
        overrides += ["model.n_layer=2", "model.n_embd=128", "model.n_head=2", "model.block_size=128",
                      "data.demo_lines=5000", "tokenizer.vocab_size=512"]
    t0 = time.perf_counter()
    session = run.prepare("fit", files, overrides)
    timer = StepTimer(warmup=20 if steps > 40 else 2)
    session.trainer.callbacks.append(timer)
    metrics = run.fit(session)
    step_s = median(timer.times)
    cfg = session.loaded.cfg
    tokens = cfg.data.batch_size * cfg.model.block_size
    peak = peak_bf16_flops(torch.cuda.get_device_name()) or get_available_flops(torch.device("cuda"), torch.bfloat16)
    flops = session.module.flops_per_batch
    return {
        "mode": mode,
        "config": [str(CONFIG.relative_to(ROOT))] + MODES[mode],
        "gpu": torch.cuda.get_device_name(),
        "params": session.module.model.num_params(),
        "vocab_size": session.module.model.cfg.vocab_size,
        "tokens_per_step": tokens,
        "steps": metrics["step"],
        "val_loss": metrics["val/loss"],
        "ms_per_step_median": 1000 * step_s,
        "tokens_per_s": tokens / step_s,
        "mfu_bf16_peak": flops / step_s / peak if peak else None,
        "peak_flops": peak,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--quick", action="store_true", help="a 2-layer model for 30 steps: a smoke run")
    p.add_argument("--out", default=str(default_out("gpu")))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu: no CUDA GPU here; this benchmark measures the GPU paths (bf16, compile, FSDP)")
    steps = 30 if args.quick else args.steps
    if args.child:
        mode, out = args.child.split(":", 1)
        with tempfile.TemporaryDirectory() as tmp:
            Path(out).write_text(json.dumps(train(mode, steps, tmp, args.quick)))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            out = Path(tmp) / f"{mode}.json"
            cmd = [sys.executable, __file__, "--child", f"{mode}:{out}", "--steps", str(steps)]
            proc = subprocess.run(cmd + (["--quick"] if args.quick else []), cwd=ROOT)
            runs.append(json.loads(out.read_text()) if proc.returncode == 0 else {"mode": mode, "failed": proc.returncode})
    print_table([[r["mode"], r.get("ms_per_step_median"), r.get("tokens_per_s"), r.get("mfu_bf16_peak"),
                  r.get("max_memory_gib"), r.get("val_loss")] for r in runs],
                ["mode", "median ms/step", "tokens/s", "MFU (of bf16 peak)", "max GiB", "val loss"])
    result = {"quick": args.quick, "steps": steps, "runs": runs, "environment": environment()}
    print(f"written to {write_json(args.out, result)}")
    if any("failed" in r for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
