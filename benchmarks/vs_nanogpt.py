"""lmtemplate against nanoGPT's own train.py on nanoGPT's Tiny Shakespeare recipe, side by side on this machine.

    python benchmarks/vs_nanogpt.py --nanogpt PATH [--rounds 3] [--shapes baby large] [--threads N] [--quick]

For each shape, ``--rounds`` rounds alternate a run of nanoGPT's ``train.py`` (a subprocess in its checkout,
``config/train_shakespeare_char.py`` with the flags below) and a run of ``benchmarks/shakespeare_char.py``
(a subprocess too) on the same model, batch, schedule and iteration count; the order flips every round, and
both get the same ``OMP_NUM_THREADS``. Reported per shape: the median ms/iter of each run (every per-step cost
of each loop: batch, forward, backward, clipping, AdamW, logging), the median over rounds, the speed ratio
nanoGPT ms / lmtemplate ms (> 1: lmtemplate is faster), and the validation loss of both after the same number
of iterations (nanoGPT's ``estimate_loss`` over ``eval_iters`` random batches; ours over the first
``limit_val_batches`` windows of the same last tenth of the text).

Shapes (dropout 0, learned positions, no biases: nanoGPT's defaults; lr 1e-3 -> 1e-4 over 2000 iterations):

- baby: nanoGPT's CPU recipe, 4 layers x 128, 4 heads, block 64, batch 12; ``--baby-iters`` (600) a round.
- large: 6 layers x 384, 6 heads, block 256, batch 16, where arithmetic dominates; ``--large-iters`` (20).

nanoGPT is not part of this project: ``git clone https://github.com/karpathy/nanoGPT``. Its
``data/shakespeare_char/prepare.py`` downloads the text; this script instead writes the files it would write
(``train.bin``, ``val.bin``, ``meta.pkl``) from ``--data`` when they are missing. The result goes to
``outputs/benchmarks/vs_nanogpt.json`` (``--out``) and, with matplotlib (the ``bench`` extra), a bar chart of
ms/iter by shape beside it (``.png``, or ``--chart``); ``--plot-only JSON --chart PNG`` redraws it from a result.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, default_out, environment, median, print_table, pyplot, save_chart, write_json

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
NANOGPT_CONFIG = "config/train_shakespeare_char.py"
GET_NANOGPT = (
    "get a checkout with\n"
    "    git clone https://github.com/karpathy/nanoGPT /path/to/nanoGPT\n"
    "and pass --nanogpt /path/to/nanoGPT. nanoGPT's data/shakespeare_char/prepare.py downloads the text; this "
    "benchmark needs no download: it writes nanoGPT's train.bin / val.bin / meta.pkl from --data "
    "(default ../shared/data/tinyshakespeare/input.txt) when they are missing."
)

# name -> (n_layer, n_head, n_embd, block_size, batch_size)
SHAPES = {"baby": (4, 4, 128, 64, 12), "large": (6, 6, 384, 256, 16)}
TARGETS = {"baby": 1.05, "large": 1.0}  # issue 17: lmtemplate's speed / nanoGPT's, at least
DECAY_ITERS = 2000


def check_checkout(path: str | None) -> Path:
    """The nanoGPT checkout, or exit with a message that says how to get one."""
    if not path:
        sys.exit(f"vs_nanogpt: no nanoGPT checkout given (--nanogpt PATH); {GET_NANOGPT}")
    root = Path(path).expanduser().resolve()
    missing = [f for f in ("train.py", "model.py", NANOGPT_CONFIG) if not (root / f).is_file()]
    if missing:
        sys.exit(f"vs_nanogpt: {root} is not a nanoGPT checkout (no {', '.join(missing)}); {GET_NANOGPT}")
    return root


def prepare_nanogpt_data(root: Path, text_path: Path) -> Path:
    """nanoGPT's data/shakespeare_char files (what its prepare.py writes: characters sorted, ids uint16, the first
    90% train, the rest val), written from ``text_path`` unless they are there already."""
    folder = root / "data" / "shakespeare_char"
    if all((folder / f).is_file() for f in ("train.bin", "val.bin", "meta.pkl")):
        return folder
    if not text_path.is_file():
        sys.exit(f"vs_nanogpt: {text_path} not found; pass --data PATH to Tiny Shakespeare's input.txt")
    text = text_path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(len(text) * 0.9)
    folder.mkdir(parents=True, exist_ok=True)
    ids[:n].tofile(folder / "train.bin")
    ids[n:].tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return folder


def child_env(threads: int) -> dict:
    """Both sides: the same thread count; this checkout's lmtemplate first on the path."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_nanogpt(root: Path, shape: str, iters: int, eval_iters: int, threads: int, out_dir: str) -> dict:
    n_layer, n_head, n_embd, block, batch = SHAPES[shape]
    cmd = [sys.executable, "train.py", NANOGPT_CONFIG, "--device=cpu", "--compile=False", "--dtype=float32",
           f"--n_layer={n_layer}", f"--n_head={n_head}", f"--n_embd={n_embd}", f"--block_size={block}",
           f"--batch_size={batch}", "--dropout=0.0", f"--max_iters={iters}", f"--lr_decay_iters={DECAY_ITERS}",
           f"--eval_interval={iters}", f"--eval_iters={eval_iters}", "--log_interval=1", f"--out_dir={out_dir}"]
    proc = subprocess.run(cmd, cwd=root, env=child_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"vs_nanogpt: nanoGPT's train.py failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    times = [float(m) for m in re.findall(r"^iter \d+: loss [\d.naninf]+, time ([\d.]+)ms", proc.stdout, re.M)]
    vals = re.findall(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", proc.stdout, re.M)
    val = [float(v) for s, v in vals if int(s) == iters]
    if len(times) <= 10 or not val:
        sys.exit(f"vs_nanogpt: could not read nanoGPT's iteration times / val loss from its output:\n{proc.stdout[-2000:]}")
    return {"ms_per_iter_median": median(times[10:]), "val_loss": val[0], "iters": iters, "command": " ".join(cmd[1:])}


def run_ours(shape: str, iters: int, eval_batches: int | None, threads: int, data: Path, tmp: str) -> dict:
    n_layer, n_head, n_embd, block, batch = SHAPES[shape]
    out = Path(tmp) / "ours.json"
    overrides = [f"trainer.max_steps={iters}", f"optim.decay_steps={DECAY_ITERS}", "model.positions=learned",
                 "model.bias=false", "model.dropout=0.0", f"model.n_layer={n_layer}", f"model.n_head={n_head}",
                 f"model.n_embd={n_embd}", f"model.block_size={block}", f"data.batch_size={batch}"]
    if eval_batches:
        overrides.append(f"trainer.limit_val_batches={eval_batches}")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "shakespeare_char.py"), "--seeds", "1337", "--data", str(data),
           "--out", str(out), *overrides]
    proc = subprocess.run(cmd, cwd=tmp, env=child_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"vs_nanogpt: benchmarks/shakespeare_char.py failed:\n{proc.stderr[-3000:]}")
    (r,) = json.loads(out.read_text())["runs"]
    return {"ms_per_iter_median": r["ms_per_iter_median"], "val_loss": r["val_loss"], "iters": r["steps"],
            "command": "benchmarks/shakespeare_char.py --seeds 1337 " + " ".join(overrides)}


def compare(root: Path, shape: str, rounds: int, iters: int, eval_iters: int, eval_batches: int | None,
            threads: int, data: Path) -> dict:
    runs = []
    for k in range(rounds):
        order = ("nanogpt", "lmtemplate") if k % 2 == 0 else ("lmtemplate", "nanogpt")
        row = {"round": k + 1, "order": list(order)}
        for side in order:
            with tempfile.TemporaryDirectory() as tmp:
                row[side] = (run_nanogpt(root, shape, iters, eval_iters, threads, tmp) if side == "nanogpt"
                             else run_ours(shape, iters, eval_batches, threads, data, tmp))
            print(f"  {shape} round {k + 1}: {side} {row[side]['ms_per_iter_median']:.1f} ms/iter, "
                  f"val loss {row[side]['val_loss']:.4f}", flush=True)
        row["ratio"] = row["nanogpt"]["ms_per_iter_median"] / row["lmtemplate"]["ms_per_iter_median"]
        runs.append(row)
    nano = median([r["nanogpt"]["ms_per_iter_median"] for r in runs])
    ours = median([r["lmtemplate"]["ms_per_iter_median"] for r in runs])
    n_layer, n_head, n_embd, block, batch = SHAPES[shape]
    return {
        "shape": {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "block_size": block, "batch_size": batch},
        "iters_per_round": iters,
        "rounds": runs,
        "nanogpt_ms_per_iter": nano,
        "lmtemplate_ms_per_iter": ours,
        "speed_ratio": nano / ours,  # lmtemplate's iterations per second over nanoGPT's
        "target": TARGETS[shape],
        "val_loss": {"nanogpt": median([r["nanogpt"]["val_loss"] for r in runs]),
                     "lmtemplate": median([r["lmtemplate"]["val_loss"] for r in runs]),
                     "nanogpt_eval_batches": eval_iters, "lmtemplate_eval_batches": eval_batches or "all"},
        "commands": {"nanogpt": runs[0]["nanogpt"]["command"], "lmtemplate": runs[0]["lmtemplate"]["command"]},
    }


def plot(result: dict, path: Path) -> Path | None:
    """A bar chart of median ms/iter by shape, nanoGPT beside lmtemplate, drawn from the result; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    shapes = list(result["shapes"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(3.2 * len(shapes), 3.2), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        r = result["shapes"][shape]
        bars = ax.bar(["nanoGPT", "lmtemplate"], [r["nanogpt_ms_per_iter"], r["lmtemplate_ms_per_iter"]],
                      color=["#999999", "#3b75af"])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_ylim(0, 1.2 * max(r["nanogpt_ms_per_iter"], r["lmtemplate_ms_per_iter"]))
        s = r["shape"]
        ax.set_title(f"{shape}: {s['n_layer']}x{s['n_embd']}, block {s['block_size']}, batch {s['batch_size']}\n"
                     f"lmtemplate {r['speed_ratio']:.3f}x nanoGPT's speed", fontsize=8)
        ax.set_ylabel("median ms / iteration")
    fig.suptitle(f"{result['environment']['processor']}, {result['threads']} threads", fontsize=8)
    return save_chart(plt, fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", help="a nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--baby-iters", type=int, default=600)
    p.add_argument("--large-iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    p.add_argument("--data", default=str(DATA), help="Tiny Shakespeare's input.txt")
    p.add_argument("--quick", action="store_true", help="one round of the baby shape, 30 iterations: a smoke run")
    p.add_argument("--out", default=str(default_out("vs_nanogpt")))
    p.add_argument("--chart", help="where the chart goes (default: --out with .png); docs/images/vs_nanogpt.png for the docs")
    p.add_argument("--plot-only", metavar="JSON", help="only draw the chart of an earlier result")
    args = p.parse_args()
    if args.plot_only:
        result = json.loads(Path(args.plot_only).read_text())
        chart = plot(result, Path(args.chart or Path(args.plot_only).with_suffix(".png")))
        sys.exit(0 if chart else 1)
    root = check_checkout(args.nanogpt)
    data = Path(args.data).resolve()
    prepare_nanogpt_data(root, data)
    if args.quick:
        args.rounds, args.shapes, args.baby_iters = 1, ["baby"], 30
    settings = {  # shape -> (iterations, nanoGPT's eval_iters, our limit_val_batches; None: the whole val tenth)
        "baby": (args.baby_iters, 5 if args.quick else 200, 5 if args.quick else None),
        "large": (args.large_iters, 20, 20),
    }
    result = {"nanogpt": str(root), "threads": args.threads, "quick": args.quick, "shapes": {}}
    for shape in args.shapes:
        iters, eval_iters, eval_batches = settings[shape]
        result["shapes"][shape] = compare(root, shape, args.rounds, iters, eval_iters, eval_batches, args.threads, data)
    result["environment"] = environment()
    rows = [[shape, r["nanogpt_ms_per_iter"], r["lmtemplate_ms_per_iter"], r["speed_ratio"], r["target"],
             r["val_loss"]["nanogpt"], r["val_loss"]["lmtemplate"]] for shape, r in result["shapes"].items()]
    print_table(rows, ["shape", "nanoGPT ms/iter", "lmtemplate ms/iter", "speed ratio", "target",
                       "nanoGPT val loss", "lmtemplate val loss"])
    out = write_json(args.out, result)
    print(f"written to {out}")
    chart = plot(result, Path(args.chart) if args.chart else out.with_suffix(".png"))
    if chart:
        print(f"chart: {chart}")


if __name__ == "__main__":
    main()
