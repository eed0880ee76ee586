"""Helpers shared by the benchmarks: interleaved timing, medians, a table printer, the JSON result file.

Every benchmark writes ``outputs/benchmarks/<name>.json`` (or the path its ``--out`` names) with
:func:`write_json`, and records the machine it ran on with :func:`environment`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "outputs" / "benchmarks"


def default_out(name: str) -> Path:
    """Where benchmark ``name`` writes its results by default: outputs/benchmarks/<name>.json."""
    return OUT_DIR / f"{name}.json"


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``path``, creating its folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def environment() -> dict:
    """The software and machine a result was measured on."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def interleave(fns: dict[str, Callable[[int], object]], steps: int, warmup: int = 0,
               before_round: Callable[[int], object] | None = None) -> dict[str, list[float]]:
    """Time ``steps`` calls of each function, alternating between them; return seconds per call by name.

    Round ``i`` calls ``before_round(i)`` (untimed, e.g. to draw the round's shared input), then each
    function once as ``fn(i)``, timed with ``time.perf_counter``. The order rotates every round (AB, BA,
    ...) so neither function always runs first after the untimed work. The first ``warmup`` rounds are
    run but not recorded.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + steps):
        if before_round is not None:
            before_round(i)
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name](i)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    return times


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str], file=None) -> None:
    """Print rows as a Markdown table with columns padded to their widest cell."""
    file = file or sys.stdout
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    print(line(cells[0]), file=file)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=file)
    for r in cells[1:]:
        print(line(r), file=file)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:,.3f}" if abs(c) < 10 else f"{c:,.1f}"
    return str(c)



class StepTimer(L.Callback):
    """Seconds from one training batch's start to the next one's, after ``warmup`` batches.

    That interval holds every per-step cost of a run (data, forward, backward,
    optimizer, logging, callbacks, progress bar); steps that also validate or
    checkpoint show up as outliers, which a median ignores. Time spent in
    ``excluded`` (seconds a subclass adds, e.g. for work it runs between steps)
    is taken out of the interval it falls in.
    """

    def __init__(self, warmup: int = 0):
        self.warmup, self.times = warmup, []
        self.excluded = 0.0
        self._last, self._seen = None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None and self._seen > self.warmup:
            self.times.append(now - self._last - self.excluded)
        self._last, self._seen, self.excluded = now, self._seen + 1, 0.0


def max_time(minutes: float) -> str:
    """A wall-time budget as Lightning's ``trainer.max_time``, ``DD:HH:MM:SS``."""
    seconds = round(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def head(source: Path, target: Path, lines: int) -> None:
    """The first ``lines`` lines of ``source`` into ``target`` (a --quick run's small copy of a data file)."""
    target.write_text("".join(source.read_text(encoding="utf-8").splitlines(True)[:lines]), encoding="utf-8")


def learning_curve(run_dir: Path, start: float, tags: dict[str, str]) -> list[dict]:
    """Validation scores against minutes since ``start`` (a ``time.time()``), from the run's TensorBoard events:
    a row per logged value of the first tag, ``{"minutes", "step", name: value of tag ...}`` for ``tags``
    (name -> tag)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(run_dir.glob("events.out.tfevents.*"))), size_guidance={"scalars": 0})
    events.Reload()
    (first, tag), *others = tags.items()
    values = {name: {e.step: e.value for e in events.Scalars(t)} for name, t in others}
    return [{"minutes": (e.wall_time - start) / 60, "step": e.step, first: e.value,
             **{name: by_step.get(e.step) for name, by_step in values.items()}} for e in events.Scalars(tag)]


def pyplot():
    """matplotlib's pyplot, drawing to files; None (said on stdout) without matplotlib (the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart drawn")
        return None
    return plt


def save_chart(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curves(curves: dict[str, list[dict]], y: str, y_label: str, title: str, path: Path) -> Path | None:
    """``y`` against minutes of training, one line per labelled ``learning_curve``; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, rows in curves.items():
        ax.plot([r["minutes"] for r in rows], [r[y] for r in rows], marker="o", markersize=3, label=label)
    ax.set_xlabel("minutes of training (validations included)")
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_chart(plt, fig, path)
