"""Runs side by side: ``python -m lmtemplate runs [PATH ...]`` (docs/experiments.md).

Every folder under a PATH that holds a config.yaml is a run. The table has one row per configuration: runs whose
configs differ only in ``run.*`` (seed, name, folder) are one row, with the mean, standard deviation, n and a 95%
confidence interval (t distribution) of each metric in their metrics.json, and the mean of each metric's best
value in their TensorBoard events. Columns are the config keys that differ between rows; rows are sorted by the
metric (default: the runs' best.metric), and a row whose interval overlaps the best row's is marked ``=``: the
runs do not tell it apart from the best. Nothing is recorded beside the run directories.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lmtemplate.config import ConfigError, flatten

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; above, z + (z^3 + z) / (4 df).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: {"model.n_layer": 4, ...}
    metrics: dict[str, float]  # metrics.json's numbers (fit's final validation, test's scores)
    steps: int
    wall_s: float  # training time in the event files (a resumed run: the sum of its parts)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # validation metric -> step -> value


def t95(df: int) -> float:
    z = 1.959964
    return T95[df - 1] if df <= len(T95) else z + (z**3 + z) / (4 * df)


def summarize(values: list[float]) -> dict[str, Optional[float]]:
    """Mean, standard deviation, n and the 95% confidence interval of the mean (None where n is too small)."""
    n = len(values)
    if not n:
        return {"mean": None, "sd": None, "n": 0, "low": None, "high": None}
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else None
    half = t95(n - 1) * sd / math.sqrt(n) if sd is not None else None
    return {"mean": mean, "sd": sd, "n": n, "low": mean - half if half is not None else None,
            "high": mean + half if half is not None else None}


def find(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"runs: no such folder: {p}")
        found += sorted(c.parent for c in p.rglob("config.yaml")) if p.is_dir() else []
    if not found:
        raise ConfigError(f"runs: no runs under {', '.join(paths)} (a run directory holds config.yaml); "
                          "train one with `fit` or `sweep`")
    return found


def read(path: Path) -> Run:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = flatten(yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {})
    saved = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
    tested = saved.get("test") or [{}]  # test's blocks, one per checkpoint scored: the latest
    scores = {**saved, **(tested[-1] if isinstance(tested, list) else tested)}
    metrics = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and k != "step"}
    curves: dict[str, dict[int, float]] = {}
    wall, last = 0.0, 0
    for events in sorted(path.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        points = [e for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
        if points:
            wall += max(e.wall_time for e in points) - min(e.wall_time for e in points)
            last = max(last, max(e.step for e in points) + 1)
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("val/"):
                curves.setdefault(tag, {}).update({e.step + 1: e.value for e in acc.Scalars(tag)})
    return Run(path, config, metrics, int(saved.get("step", last)), wall, curves)


def modes(runs: list[Run]) -> dict[str, str]:
    """Each metric's direction (min or max), from the tasks the runs were trained with."""
    from lmtemplate.registry import get_task, load_tasks

    found = {}
    for r in runs:
        load_tasks(r.config.get("plugins") or [])
        found.update(get_task(str(r.config.get("task"))).module.metrics)
    return found


def table(runs: list[Run], metric: Optional[str] = None) -> tuple[list[dict[str, Any]], list[str], str]:
    """One row per configuration, best first; also the differing keys and the metric the rows are sorted by."""
    direction = modes(runs)
    metric = metric or runs[0].config.get("best.metric")
    if metric not in direction:
        raise ConfigError(f"runs --metric: '{metric}' is not one of {', '.join(direction)}")
    keys = sorted({k for r in runs for k in r.config if not k.startswith("run.")})
    differ = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1]
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(json.dumps([r.config.get(k) for k in keys], sort_keys=True), []).append(r)
    names = sorted({m for r in runs for m in r.metrics}, key=lambda m: (m != metric, m))
    rows = []
    for group in groups.values():
        steps = sorted({r.steps for r in group})
        row = {k: group[0].config.get(k) for k in differ}
        row.update({"runs": len(group), "steps": steps[0] if len(steps) == 1 else f"{steps[0]}-{steps[-1]}",
                    "wall_s": statistics.fmean(r.wall_s for r in group)})
        for m in names:
            s = summarize([r.metrics[m] for r in group if m in r.metrics])
            row.update({m: s["mean"], f"{m} sd": s["sd"], f"{m} n": s["n"], f"{m} ci95 low": s["low"],
                        f"{m} ci95 high": s["high"]})
            if m in direction:
                pick = min if direction[m] == "min" else max
                best = [pick(r.curves[m].values()) for r in group if r.curves.get(m)]
                row[f"{m} best"] = statistics.fmean(best) if best else None
        row["paths"] = [str(r.path) for r in group]
        rows.append(row)
    sign = 1 if direction[metric] == "min" else -1
    rows.sort(key=lambda row: math.inf if row.get(metric) is None else sign * row[metric])
    top = interval(rows[0], metric)
    for i, row in enumerate(rows):
        low, high = interval(row, metric)
        overlaps = None not in (low, top[0]) and low <= top[1] and high >= top[0]
        row["vs best"] = "best" if i == 0 and top[0] is not None else "=" if overlaps else ""
    return rows, differ, metric


def interval(row: dict, metric: str) -> tuple[Optional[float], Optional[float]]:
    """A row's 95% interval; a single run's is its value."""
    if row.get(f"{metric} ci95 low") is not None:
        return row[f"{metric} ci95 low"], row[f"{metric} ci95 high"]
    return row.get(metric), row.get(metric)


def text(rows: list[dict], differ: list[str], metric: str) -> str:
    others = [k for k in rows[0] if k.startswith("val/") and " " not in k and k != metric]
    columns = ["vs best", *differ, "runs", "steps", "wall_s", metric, f"{metric} sd", f"{metric} n", "95% CI",
               f"{metric} best", *others]
    cells = [[cell(row.get(c)) if c != "95% CI" else ci(row, metric) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    legend = (f"sorted by {metric} (final value, mean over the runs of a row); vs best '=': its 95% interval overlaps "
              "the best row's, the runs do not tell them apart")
    return "\n".join([*lines, legend]) + "\n"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def ci(row: dict, metric: str) -> str:
    low, high = row.get(f"{metric} ci95 low"), row.get(f"{metric} ci95 high")
    return "-" if low is None else f"[{low:.4g}, {high:.4g}]"


def report(paths: list[str], metric: Optional[str], form: str = "text", plot_file: Optional[str] = None) -> str:
    runs = [read(p) for p in find(paths)]
    rows, differ, metric = table(runs, metric)
    if plot_file:
        plot(runs, rows, differ, metric, Path(plot_file))
    if form == "json":
        return json.dumps(rows, indent=2) + "\n"
    if form == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows({**row, "paths": " ".join(row["paths"])} for row in rows)
        return out.getvalue()
    return text(rows, differ, metric)


def plot(runs: list[Run], rows: list[dict], differ: list[str], metric: str, path: Path) -> None:
    """The metric against each differing setting (mean, 95% interval), and its validation curves (mean, band)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("runs --plot: needs matplotlib, an optional extra: pip install -e '.[plot]'") from None
    by_path = {str(r.path): r for r in runs}
    fig, axes = plt.subplots(1, len(differ) + 1, figsize=(5 * (len(differ) + 1), 4), squeeze=False)
    for ax, key in zip(axes[0], differ):
        shown = [row for row in rows if row.get(metric) is not None]
        low = [row[metric] - (interval(row, metric)[0]) for row in shown]
        ax.errorbar([str(row[key]) for row in shown], [row[metric] for row in shown], yerr=low, fmt="o", capsize=4)
        ax.set(xlabel=key, ylabel=metric, title="final value (mean, 95% interval)")
    ax = axes[0][-1]
    for row in rows:
        curves = [by_path[p].curves.get(metric, {}) for p in row["paths"]]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if all(curves) else []
        if not steps:
            continue
        mean = [statistics.fmean(c[s] for c in curves) for s in steps]
        sd = [statistics.stdev(c[s] for c in curves) if len(curves) > 1 else 0.0 for s in steps]
        label = " ".join(f"{k}={row[k]}" for k in differ) or "runs"
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)], alpha=0.2)
    ax.set(xlabel="step", ylabel=metric, title="validation (mean, band: sd over seeds)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
