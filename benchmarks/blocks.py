"""What a training step costs with the Llama family's block against the GPT block, on the Tiny Shakespeare baby recipe.

    python benchmarks/blocks.py [--rounds 3] [--steps 300] [--quick] [--out PATH]

The GPT block is configs/pretrain/shakespeare-char.yaml as it is; the Llama block is the same recipe with the
``model`` section of configs/sweeps/shakespeare-llama.yaml on top (RMSNorm, a SwiGLU MLP, grouped-query attention,
no biases; the same parameter count). Each round runs ``fit`` of both for ``--steps`` steps, one after the other
in this process, the order flipping every round (AB, BA, ...), each with the same seed and batches. Reported: each
run's median ms per step (every per-step cost of ``fit``: batch, forward, backward, clipping, AdamW, logging;
benchmarks/common.py's StepTimer), the median over rounds, and the ratio Llama over GPT (> 1: the Llama block
costs more per step). Which block learns more in the recipe's 2000 steps is measured by the two sweeps
(docs/pretrained.md); this script times steps only. Writes outputs/benchmarks/blocks.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from common import ROOT, default_out, environment, median, print_table, write_json
from shakespeare_char import train

from lmtemplate.config import flatten

LLAMA = ROOT / "configs" / "sweeps" / "shakespeare-llama.yaml"


def llama_options() -> list[str]:
    model = OmegaConf.to_container(OmegaConf.load(LLAMA).model)
    return [f"model.{key}={value}" for key, value in flatten(model).items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300, help="training steps of each run")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"))
    p.add_argument("--quick", action="store_true", help="one round of 30 steps: a smoke run")
    p.add_argument("--out", default=str(default_out("blocks")))
    args = p.parse_args()
    data = Path(args.data)
    if not data.is_file():
        sys.exit(f"blocks: {data} not found; pass --data PATH to Tiny Shakespeare's input.txt")
    rounds, steps = (1, 30) if args.quick else (args.rounds, args.steps)
    common = [f"trainer.max_steps={steps}", "optim.decay_steps=2000", "trainer.limit_val_batches=1"]
    options = llama_options()
    variants = {"gpt": common, "llama": [*common, *options]}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for name in list(variants)[::1 if i % 2 == 0 else -1]:
                runs[name].append(train(1337, data, tmp, variants[name]))
    ms = {name: median([r["ms_per_iter_median"] for r in rs]) for name, rs in runs.items()}
    result = {
        "rounds": rounds, "steps": steps, "llama_options": options,
        "runs": runs, "ms_per_step": ms, "ratio_llama_over_gpt": ms["llama"] / ms["gpt"],
        "environment": environment(),
    }
    print_table([[name, *(f"{r['ms_per_iter_median']:.1f}" for r in rs), f"{ms[name]:.1f}"] for name, rs in runs.items()],
                ["block", *(f"round {i + 1} ms/step" for i in range(rounds)), "median"])
    print(f"Llama block / GPT block, ms per step: {result['ratio_llama_over_gpt']:.3f}")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
