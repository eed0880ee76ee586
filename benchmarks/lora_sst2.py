"""SST-2 from all-MiniLM-L6-v2 with low-rank adapters (rank 8 on q and v, plus the head) against full fine-tuning,
at equal steps: the share of trainable parameters, dev accuracy, median ms per training step, peak memory and the
size of the last checkpoint.

    python benchmarks/lora_sst2.py              # configs/finetune/sst2-minilm.yaml, then sst2-minilm-lora.yaml
    python benchmarks/lora_sst2.py --quick --checkpoint DIR --data DIR   # 6 steps on 200 sentences (the tests)

Each run is ``fit -c configs/finetune/sst2-minilm.yaml`` or ``sst2-minilm-lora.yaml`` (the same, with adapters) with the same
``trainer.max_steps``, in a process of its own, so that its peak memory is its own: CUDA's peak allocation on a GPU,
else the process's peak resident memory. The median leaves out the first 10 steps (a quarter of a short run's); validation
steps show as outliers, which a median ignores. Writes outputs/benchmarks/lora-sst2.json. Needs
``pip install -e '.[bench,pretrained]'`` and ../shared/data/sst2, as benchmarks/pretrained.py does.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import ROOT, StepTimer, default_out, environment, print_table, write_json
from pretrained import data_overrides, minilm

from lmtemplate import run

CONFIGS = {"full": ROOT / "configs/finetune/sst2-minilm.yaml", "lora": ROOT / "configs/finetune/sst2-minilm-lora.yaml"}


def measure(variant: str, overrides: list[str]) -> dict:
    """One fit (this process's only one) and what it cost."""
    session = run.prepare("fit", [str(CONFIGS[variant])], overrides)
    params = {id(p): p for p in session.module.parameters()}.values()
    timer = StepTimer(warmup=min(10, session.trainer.max_steps // 4))
    session.trainer.callbacks.append(timer)
    metrics = run.fit(session)
    cuda = torch.cuda.is_available()
    return {
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "params": sum(p.numel() for p in params),
        "accuracy": metrics["val/accuracy"], "steps": metrics["step"],
        "ms_per_step_median": 1000 * statistics.median(timer.times),
        "peak_memory_mib": (torch.cuda.max_memory_allocated() if cuda else
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20,
        "peak_memory_of": "CUDA allocation" if cuda else "resident memory of the process",
        "checkpoint_bytes": (session.run_dir / "checkpoints" / "last.ckpt").stat().st_size,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a Hugging Face BERT folder (default: all-MiniLM-L6-v2 from its package)")
    p.add_argument("--data", help="default: ../shared/data/sst2")
    p.add_argument("--steps", type=int, help="trainer.max_steps of both runs (default: the config's)")
    p.add_argument("--quick", action="store_true", help="6 steps on 200 sentences")
    p.add_argument("--out", help="default: outputs/benchmarks/lora-sst2.json")
    p.add_argument("--variant", choices=sorted(CONFIGS), help=argparse.SUPPRESS)  # a child process: one run
    args, overrides = p.parse_known_args()
    if args.variant:
        Path(args.out).write_text(json.dumps(measure(args.variant, overrides)))
        return
    checkpoint = Path(args.checkpoint) if args.checkpoint else minilm()
    data = Path(args.data or ROOT.parent / "shared" / "data" / "sst2")
    out = Path(args.out or default_out("lora-sst2"))
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*data_overrides("sst2", data, Path(tmp), args.quick), f"model.init_from={checkpoint}",
                     "trainer.enable_progress_bar=false", f"run.root={tmp}" if args.quick else "run.root=outputs"]
        overrides += [f"trainer.max_steps={args.steps}"] if args.steps else []
        if args.quick:
            overrides += [f"run.cache_dir={tmp}/cache", "trainer.max_steps=6", "trainer.val_check_interval=3",
                          "optim.warmup_steps=2", "data.batch_size=4", "model.block_size=64"]
        results = {}
        for variant in CONFIGS:
            part = Path(tmp) / f"{variant}.json"
            subprocess.run([sys.executable, __file__, "--variant", variant, "--out", str(part),
                            *overrides], check=True)
            results[variant] = json.loads(part.read_text())
    full, lora = results["full"], results["lora"]
    rows = [[v, f"{100 * r['trainable_params'] / r['params']:.2f}%", r["accuracy"], r["ms_per_step_median"],
             r["peak_memory_mib"], r["checkpoint_bytes"] / 2**20] for v, r in results.items()]
    print_table(rows, ["run", "trains", "dev accuracy", "ms/step", "peak MiB", "checkpoint MiB"])
    result = {
        "checkpoint": str(checkpoint), "quick": args.quick, "overrides": [o.replace(tmp, "<tmp>") for o in overrides],
        **results,
        "trainable_share": lora["trainable_params"] / lora["params"],
        "accuracy_difference": lora["accuracy"] - full["accuracy"],
        "step_time_ratio": lora["ms_per_step_median"] / full["ms_per_step_median"],
        "peak_memory_ratio": lora["peak_memory_mib"] / full["peak_memory_mib"],
        "checkpoint_size_ratio": lora["checkpoint_bytes"] / full["checkpoint_bytes"],
        "environment": environment(),
    }
    print(f"wrote {write_json(out, result)}")


if __name__ == "__main__":
    main()
