"""``average --ckpt last:N|best:N``: one checkpoint whose weights are the mean of N that a run kept
(``checkpoint.keep``), as fairseq's ``scripts/average_checkpoints.py`` makes for translation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

from lmtemplate.callbacks.averaging import PERIODIC
from lmtemplate.checkpointing import AtomicCheckpointIO, read_checkpoint
from lmtemplate.config import ConfigError
from lmtemplate.run import find_run, load_config, load_saved_config

WEIGHTS = ("state_dict", "current_model_state")  # an EMA run's checkpoints hold both: each is averaged
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "averaging_state")  # left out: the average is not a run to resume


def average(spec: str, overrides: list[str], output: Optional[Path] = None) -> tuple[Path, list[Path]]:
    """Average the last (by step) or best (by ``best.metric``) N kept checkpoints of the run that the ``run.*``
    overrides name; write it to ``output`` (default ``checkpoints/average-<kind>-<N>.ckpt`` in the run)."""
    match = re.fullmatch(r"(last|best):(\d+)", spec)
    if not match or int(match[2]) < 1:
        raise ConfigError(f"--ckpt {spec}: average takes last:N or best:N, N >= 1 (e.g. --ckpt last:5)")
    kind, n = match[1], int(match[2])
    run = find_run(load_config([], [o for o in overrides if o.startswith("run.")]).cfg)
    paths = chosen(run, kind, n)
    checkpoints = [read_checkpoint(p) for p in paths]
    tasks = sorted({str(c.get("hyper_parameters", {}).get("task")) for c in checkpoints})
    if len(tasks) > 1:
        raise ConfigError(f"average: the checkpoints {', '.join(map(str, paths))} are of different tasks "
                          f"({', '.join(tasks)}); only checkpoints of one model can be averaged")
    merged = {k: v for k, v in checkpoints[-1].items() if k not in TRAINING_STATE}
    for key in WEIGHTS:
        if all(key in c for c in checkpoints):
            merged[key] = mean_weights([c[key] for c in checkpoints], paths)
    merged["averaged"] = [p.name for p in paths]
    output = output or run / "checkpoints" / f"average-{kind}-{n}.ckpt"
    AtomicCheckpointIO().save_checkpoint(merged, output)
    return output, paths


def chosen(run: Path, kind: str, n: int) -> list[Path]:
    """The run's kept checkpoints to average, oldest first: the last N by step, or the best N by ``best.metric``."""
    kept = {p: read_checkpoint(p, mmap=True) for p in (run / "checkpoints").glob(PERIODIC.format(step="*") + ".ckpt")}
    if len(kept) < n:
        raise ConfigError(f"--ckpt {kind}:{n}: {run / 'checkpoints'} has {len(kept)} kept checkpoints "
                          f"(step-<k>.ckpt); train with checkpoint.keep={n} or more to average {n}")
    by_step = sorted(kept, key=lambda p: kept[p]["global_step"])
    if kind == "last":
        return by_step[-n:]
    loaded = load_saved_config(run / "config.yaml", [], reads=())
    metric = loaded.cfg.best.metric
    scored = [p for p in by_step if metric in kept[p].get("validated", {})]
    if len(scored) < n:
        raise ConfigError(f"--ckpt best:{n}: {len(scored)} of the kept checkpoints in {run / 'checkpoints'} record "
                          f"{metric} (best.metric); average --ckpt last:{n} instead")
    sign = -1 if loaded.task.module.metrics[metric] == "max" else 1
    best = sorted(scored, key=lambda p: sign * kept[p]["validated"][metric])[:n]
    return [p for p in by_step if p in best]


def mean_weights(states: list[dict[str, torch.Tensor]], paths: list[Path]) -> dict[str, torch.Tensor]:
    """The mean of each floating tensor (summed in float64) over ``states``; other tensors must be equal in all."""
    first = states[0]
    for state, path in zip(states[1:], paths[1:]):
        if state.keys() != first.keys():
            different = sorted(state.keys() ^ first.keys())[0]
            raise ConfigError(f"average: {paths[0]} and {path} hold different weights ('{different}' is in one only): "
                              "checkpoints of different tasks or models cannot be averaged")
        for key, value in state.items():
            if value.shape != first[key].shape or value.dtype != first[key].dtype:
                raise ConfigError(f"average: '{key}' is {tuple(first[key].shape)} {first[key].dtype} in {paths[0]} but "
                                  f"{tuple(value.shape)} {value.dtype} in {path}: checkpoints of different models cannot "
                                  "be averaged")
            if not value.is_floating_point() and not torch.equal(value, first[key]):
                raise ConfigError(f"average: '{key}' (not a floating-point tensor, which has no mean) differs between "
                                  f"{paths[0]} and {path}")
    return {key: (sum(s[key].double() for s in states) / len(states)).to(value.dtype) if value.is_floating_point()
            else value for key, value in first.items()}
