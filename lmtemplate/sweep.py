"""Sweeps: a config's ``sweep:`` section run as an Optuna study of ordinary runs (docs/experiments.md).

    python -m lmtemplate sweep -c configs/sweeps/shakespeare-positions.yaml [--dry-run] [key=value ...]

A configuration is one point of ``sweep.parameters``; Optuna's trial n is configuration n. It runs once per seed,
each time as ``python -m lmtemplate fit -c <sweep dir>/base.yaml <its values> run.seed=S`` in
``<run.root>/<sweep.name>/trial-<n>-seed<S>/version_0``, and its value is the mean over its seeds of the metric in
their metrics.json. Workers (the ``parallel`` threads of each ``sweep`` process, on one machine or several) take
configurations under a lock file in the sweep directory, so the study holds exactly ``trials`` of them; a
configuration whose worker died is taken over and its runs resume from their last.ckpt.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import lightning as L
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtemplate import config as C
from lmtemplate import run
from lmtemplate.config import flatten

SECTION = "sweep"
TRIAL_ENV = "LMTEMPLATE_SWEEP_TRIAL"  # set for a trial's first seed: where it reports its validation metric
WORKER = f"{socket.gethostname()}:{os.getpid()}"
HEARTBEAT_S = 30.0  # a worker on another machine whose heartbeat is 3 of these old is dead
FORMS = "a list of values, loguniform(low, high), uniform(low, high), int(low, high) or choice(a, b, ...)"


@dataclass
class SweepConfig:
    """The ``sweep:`` section: which settings to try, with which seeds, how to search and where the study lives."""

    parameters: dict[str, Any] = field(default_factory=dict)  # dotlist key -> a list of values or a distribution
    seeds: Optional[list[int]] = None  # each configuration runs once per seed; None: [run.seed]
    method: str = "grid"  # grid, random or tpe
    trials: Optional[int] = None  # configurations to try (random, tpe); grid tries every point
    metric: Optional[str] = None  # None: the task's best.metric
    mode: Optional[str] = None  # min or max; None: the task's for the metric
    prune: str = "none"  # none or median
    storage: Optional[str] = None  # a SQLAlchemy URL or a journal file; None: <sweep dir>/study.journal
    parallel: int = 1  # trials at once on this machine
    name: Optional[str] = None  # the sweep's folder under run.root and the study's name; None: run.name

    def __post_init__(self) -> None:
        for key, choices in (("method", ("grid", "random", "tpe")), ("prune", ("none", "median")),
                             ("mode", (None, "min", "max"))):
            if getattr(self, key) not in choices:
                raise C.ConfigError(f"sweep.{key}: '{getattr(self, key)}' is not one of "
                                    f"{', '.join(c for c in choices if c)}")
        C.require_positive("sweep", self, "trials", "parallel")
        if self.method == "grid" and self.trials is not None:
            raise C.ConfigError("sweep.trials: grid tries every point of sweep.parameters; trials is for method "
                                "random or tpe")
        if self.method != "grid" and self.trials is None:
            raise C.ConfigError(f"sweep.trials: method {self.method} needs the number of configurations to try")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) < len(self.seeds)):
            raise C.ConfigError(f"sweep.seeds: expected one or more different seeds, got {self.seeds}")


@dataclass
class _Sections:
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class Sweep:
    """A checked sweep: its section, the base config every trial starts from, and the search space."""

    cfg: SweepConfig
    base: run.Loaded
    space: dict[str, Any]  # key -> an Optuna distribution
    dir: Path
    seeds: list[int]
    metric: str
    mode: str
    claimed: set[int] = field(default_factory=set)  # trials this process took: another with its pid is a dead one's

    @property
    def grid(self) -> list[dict[str, Any]]:
        keys = list(self.space)
        return [dict(zip(keys, point)) for point in itertools.product(*(self.space[k].choices for k in keys))]

    @property
    def size(self) -> int:
        return len(self.grid) if self.cfg.method == "grid" else self.cfg.trials

    @property
    def base_point(self) -> Optional[dict[str, Any]]:
        """The base config's own values of the parameters, if they lie in the space."""
        point = {k: OmegaConf.select(self.base.data, k) for k in self.space}
        return point if all(contains(self.space[k], v) for k, v in point.items()) else None

    @property
    def storage(self) -> str:
        return self.cfg.storage or str(self.dir / "study.journal")


def optuna():
    try:
        import optuna
    except ImportError:
        raise C.ConfigError("sweep: needs Optuna, an optional extra: pip install -e '.[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def load(files: list[str], overrides: list[str]) -> Sweep:
    """Check the sweep section, the base config, and every parameter key and value against the task's schema."""
    sections = OmegaConf.structured(_Sections)
    sources = C.read_sources(files, overrides)
    for s in sources:
        if SECTION in s.data:
            try:
                sections = OmegaConf.merge(sections, {SECTION: s.data[SECTION]})
            except OmegaConfBaseException as e:
                raise C.ConfigError(C._describe(e, sections, s.label)) from None
    cfg = C.to_object(sections, sources).sweep
    base = run.load_config(files, overrides, aside=(SECTION,))
    metric = cfg.metric or base.cfg.best.metric
    metrics = base.task.module.metrics
    if metric not in metrics:
        raise C.ConfigError(f"sweep.metric: '{metric}' is not one of {', '.join(metrics)} "
                            f"(in {C.source_of('sweep.metric', sources)})")
    space, where = {}, C.source_of(f"{SECTION}.parameters", sources)
    for key, spec in flatten(cfg.parameters).items():  # {optim: {lr: ...}} is {optim.lr: ...}
        if key.startswith("run."):
            raise C.ConfigError(f"sweep.parameters: {key}: run.* says where a run lives; seeds go in sweep.seeds "
                                f"(in {where})")
        try:
            space[key] = distribution(key, spec, cfg.method)
        except C.ConfigError as e:
            raise C.ConfigError(f"{e} (in {where})") from None
        for value in bounds(space[key]):
            try:
                run.load_config(files, [*overrides, dotlist(key, value)], aside=(SECTION,))
            except C.ConfigError as e:
                raise C.ConfigError(f"sweep.parameters: {key}: the value {value!r} (in {where}) fails as the "
                                    f"override a trial gets: {e}") from None
    name = cfg.name or base.cfg.run.name
    seeds = cfg.seeds or [base.cfg.run.seed]
    return Sweep(cfg, base, space, Path(base.cfg.run.root) / name, seeds, metric, cfg.mode or metrics[metric])


def scalar(value: Any) -> Any:
    """A YAML value as a number where it reads as one (YAML takes ``1e-4`` for a string)."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return yaml.safe_load(value) if value.strip() else value


def distribution(key: str, spec: Any, method: str):
    """A parameter's values as an Optuna distribution; grid takes lists and choice() only."""
    d = optuna().distributions
    where = f"sweep.parameters.{key}"
    match = re.fullmatch(r"\s*(loguniform|uniform|int|choice)\((.*)\)\s*", spec) if isinstance(spec, str) else None
    if match is None and not isinstance(spec, list):
        raise C.ConfigError(f"{where}: expected {FORMS}, got {spec!r}")
    kind, args = ("choice", spec) if match is None else (match[1], [a.strip() for a in match[2].split(",")])
    values = [scalar(v) for v in args]
    if not values or values == [""]:
        raise C.ConfigError(f"{where}: no values to try; expected {FORMS}")
    if kind == "choice":
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            raise C.ConfigError(f"{where}: values are numbers, strings, booleans or null, got {values}")
        return d.CategoricalDistribution(values)
    if method == "grid":
        raise C.ConfigError(f"{where}: {spec} is a distribution; grid takes a list of values (or use method "
                            "random or tpe)")
    number = (int,) if kind == "int" else (int, float)
    if len(values) != 2 or not all(isinstance(v, number) and not isinstance(v, bool) for v in values):
        raise C.ConfigError(f"{where}: {spec}: expected two {'integers' if kind == 'int' else 'numbers'}, low and high")
    low, high = values
    if low > high or (kind == "loguniform" and low <= 0):
        raise C.ConfigError(f"{where}: {spec}: expected low <= high{' and low > 0' * (kind == 'loguniform')}")
    if kind == "int":
        return d.IntDistribution(low, high)
    return d.FloatDistribution(float(low), float(high), log=kind == "loguniform")


def contains(dist, value: Any) -> bool:
    if hasattr(dist, "choices"):
        return value in dist.choices
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high


def bounds(dist) -> list:
    """The values to check against the schema: every choice, or both ends of a range."""
    return list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]


def dotlist(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def describe(dist) -> str:
    if hasattr(dist, "choices"):
        return ", ".join(map(str, dist.choices))
    kind = "int" if isinstance(dist.low, int) else "loguniform" if dist.log else "uniform"
    return f"{kind}({dist.low}, {dist.high})"


def plan(s: Sweep) -> str:
    """What ``sweep`` would run, without running it."""
    lines = [f"sweep '{s.dir.name}': {s.size} configurations x {len(s.seeds)} seeds ({', '.join(map(str, s.seeds))}) "
             f"under {s.dir}; method {s.cfg.method}, metric {s.metric} ({s.mode}), prune {s.cfg.prune}, "
             f"parallel {s.cfg.parallel}, storage {s.storage}"]
    if s.cfg.method == "grid":
        lines += [f"  trial-{n}: {' '.join(dotlist(k, v) for k, v in point.items()) or '(the base config)'}"
                  for n, point in enumerate(s.grid)]
    else:
        lines += [f"  {key}: {describe(dist)}" for key, dist in s.space.items()]
        if s.base_point is not None:
            lines.append(f"  trial-0: the base config's {' '.join(dotlist(k, v) for k, v in s.base_point.items())}")
    lines.append(f"each run: python -m lmtemplate fit -c {s.dir / 'base.yaml'} <the trial's values> run.seed=S "
                 f"run.root={s.dir} run.name=trial-<n>-seed<S> run.version=0")
    return "\n".join(lines)


def sweep(files: list[str], overrides: list[str], dry_run: bool = False) -> int:
    s = load(files, overrides)
    print(plan(s))
    if dry_run:
        return 0
    study = open_study(s)
    s.dir.mkdir(parents=True, exist_ok=True)
    base = C.to_yaml(s.base.data)
    written = s.dir / "base.yaml"
    if written.is_file() and written.read_text(encoding="utf-8") != base:
        raise C.ConfigError(f"sweep.name: {s.dir} holds a sweep of another base config ({written} differs); "
                            "pick another sweep.name, or remove the folder")
    run.atomic_write_text(written, base)
    interrupted = threading.Event()
    workers = [threading.Thread(target=work, args=(s, study, slot, interrupted)) for slot in range(s.cfg.parallel)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    except KeyboardInterrupt:  # Ctrl-C reached the trials too: each saves its last.ckpt and exits 130
        interrupted.set()
        for w in workers:
            w.join()
    print(summary(s, study))
    return 130 if interrupted.is_set() else 0


def open_study(s: Sweep):
    o = optuna()
    storage = s.cfg.storage
    try:
        if storage is None:
            s.dir.mkdir(parents=True, exist_ok=True)
        if storage is None or "://" not in storage:
            backend = o.storages.journal.JournalFileBackend(s.storage)
            storage = o.storages.journal.JournalStorage(backend)
        study = o.create_study(storage=storage, study_name=s.dir.name, load_if_exists=True,
                               direction="minimize" if s.mode == "min" else "maximize", sampler=sampler(s))
    except Exception as e:  # each database driver fails in its own way
        raise C.ConfigError(f"sweep.storage: cannot open the study at '{s.storage}': {type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    return study


def sampler(s: Sweep):
    samplers = optuna().samplers
    if s.cfg.method == "tpe":
        return samplers.TPESampler(n_startup_trials=max(2, s.size // 3))  # Optuna's default, 10, would be all random
    return samplers.RandomSampler()  # grid: each configuration is enqueued, then asked for


@contextmanager
def locked(s: Sweep):
    """One worker at a time chooses its next configuration: a lock file in the sweep directory (NFS-safe)."""
    lock = optuna().storages.journal.JournalFileOpenLock(str(s.dir / "claim.lock"))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def claim(s: Sweep, study):
    """The next configuration to run, as a FrozenTrial or an asked Trial, or None when the study is complete: a
    running one whose worker died (taken over), else a new one while the study has fewer than ``size``."""
    o = optuna()
    with locked(s):
        trials = study.get_trials(deepcopy=False)
        orphan = next((t for t in trials if t.state == o.trial.TrialState.RUNNING and dead(s, t)), None)
        if orphan is None and len(trials) >= s.size:
            return None
        if orphan is None and s.cfg.method == "grid":
            study.enqueue_trial(s.grid[len(trials)])
        elif orphan is None and not trials and (own := s.base_point) is not None:
            study.enqueue_trial(own)  # random and tpe start from the base config's own values
        trial = study.ask(s.space) if orphan is None else orphan
        mark(study, trial, worker=WORKER, heartbeat=time.time())
        s.claimed.add(trial.number)
        return trial


def mark(study, trial, **attrs) -> None:
    """Set user attributes of a running trial, whichever process asked for it."""
    handle = optuna().trial.Trial(study, trial._trial_id)
    for key, value in attrs.items():
        handle.set_user_attr(key, value)


def dead(s: Sweep, trial) -> bool:
    """Whether the worker that runs a configuration is gone: its process (this machine) or its heartbeat (another)."""
    attrs = trial.user_attrs
    if attrs.get("worker") == WORKER:  # this process's pid: ours, or a dead worker's that had the same pid
        return trial.number not in s.claimed
    host, _, pid = str(attrs.get("worker", ":")).rpartition(":")
    if host != socket.gethostname():
        return time.time() - attrs.get("heartbeat", 0) > 3 * HEARTBEAT_S
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def work(s: Sweep, study, slot: int, interrupted: threading.Event) -> None:
    o = optuna()
    while not interrupted.is_set() and (trial := claim(s, study)) is not None:
        state, value, message = run_configuration(s, study, trial, slot)
        if state is None:  # interrupted: the configuration stays running; the next sweep resumes it
            interrupted.set()
            return
        if message:
            mark(study, trial, error=message)
        study.tell(trial.number, value, state=getattr(o.trial.TrialState, state))
        shown = f": {s.metric} {value:.4f}" if value is not None else f": {message}" if message else ""
        print(f"trial-{trial.number} {state.lower()}{shown}", flush=True)


def run_configuration(s: Sweep, study, trial, slot: int) -> tuple[Optional[str], Optional[float], str]:
    """Run (or finish) each seed of a configuration; (state, value, message), state None when interrupted."""
    values = []
    for i, seed in enumerate(s.seeds):
        run_dir = s.dir / f"trial-{trial.number}-seed{seed}" / "version_0"
        report = json.dumps({"storage": s.storage, "study": s.dir.name, "trial": trial._trial_id,
                             "metric": s.metric, "prune": s.cfg.prune}) if i == 0 else None
        code, message = run_seed(s, trial, seed, run_dir, slot, report, study)
        if code >= 128:
            return None, None, ""
        if code != 0:
            return "FAIL", None, f"seed {seed}: {message}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        if not isinstance(metrics.get(s.metric), (int, float)) or metrics[s.metric] != metrics[s.metric]:
            return "FAIL", None, f"seed {seed}: {s.metric} is {metrics.get(s.metric)} in {run_dir / 'metrics.json'}"
        values.append(metrics[s.metric])
        if "pruned_at" in optuna().trial.Trial(study, trial._trial_id).user_attrs:
            return "PRUNED", None, ""
    return "COMPLETE", sum(values) / len(values), ""


def run_seed(s: Sweep, trial, seed: int, run_dir: Path, slot: int, report: Optional[str], study) -> tuple[int, str]:
    """One seed's run as a ``fit`` subprocess: done already, resumed from its last.ckpt, or started afresh.
    Returns its exit code and the last line it wrote."""
    if (run_dir / "metrics.json").is_file():
        return 0, ""
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if not resume and run_dir.parent.exists():
        shutil.rmtree(run_dir.parent)  # an earlier try stopped before its first checkpoint: nothing to resume
    values = [dotlist(k, v) for k, v in trial.params.items()]
    argv = [sys.executable, "-m", "lmtemplate", "fit", "-c", str(s.dir / "base.yaml"), *values, f"run.seed={seed}",
            f"run.root={s.dir}", f"run.name={run_dir.parent.name}", "run.version=0"]
    argv += ["--ckpt", str(run_dir)] if resume else []
    log = s.dir / "logs" / f"{run_dir.parent.name}.log"
    log.parent.mkdir(exist_ok=True)
    print(f"trial-{trial.number} seed {seed}: {' '.join(values) or '(base config)'}"
          f"{' (resumed)' if resume else ''}; log {log}", flush=True)
    env = {**os.environ, **share(slot, s.cfg.parallel), "PYTHONUNBUFFERED": "1"}
    env.pop(TRIAL_ENV, None)
    env.update({TRIAL_ENV: report} if report else {})
    with log.open("a", encoding="utf-8") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                code = child.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                mark(study, trial, heartbeat=time.time())
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return code, f"killed by {signal.Signals(-code).name}" if code < 0 else lines[-1] if lines else ""


def share(slot: int, parallel: int) -> dict[str, str]:
    """A trial's share of this machine when ``parallel`` run at once: CPU threads, and GPUs (shared if too few)."""
    if parallel == 1:
        return {}
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel))}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[slot::parallel] or [gpus[slot % len(gpus)]])
    return env


def summary(s: Sweep, study) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    lines = [f"study '{s.dir.name}': {len(trials)} of {s.size} configurations: "
             + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
    lines += [f"  trial-{t.number} failed: {t.user_attrs['error']}" for t in trials if "error" in t.user_attrs]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if done:
        best = study.best_trial
        lines.append(f"best: trial-{best.number} {s.metric} {best.value:.4f} "
                     f"{' '.join(dotlist(k, v) for k, v in best.params.items())}")
    lines.append(f"compare: python -m lmtemplate runs {s.dir}")
    return "\n".join(lines)


class ReportToStudy(L.Callback):
    """In a trial's first seed: report the validation metric to the study after each validation, and stop the run
    (cleanly: last.ckpt, metrics.json, exit 0) when the study's pruner says so."""

    def __init__(self, spec: dict):
        self.spec = spec
        self._trial = None

    def trial(self):
        if self._trial is None:
            o = optuna()
            storage = self.spec["storage"]
            if "://" not in storage:
                storage = o.storages.journal.JournalStorage(o.storages.journal.JournalFileBackend(storage))
            median = self.spec["prune"] == "median"
            pruner = o.pruners.MedianPruner(n_startup_trials=2) if median else o.pruners.NopPruner()
            study = o.load_study(study_name=self.spec["study"], storage=storage, pruner=pruner,
                                 sampler=o.samplers.RandomSampler())
            self._trial = o.trial.Trial(study, self.spec["trial"])
        return self._trial

    @staticmethod
    def may_prune(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Not while the learning rate still warms up (``optim.warmup_steps``: a configuration with a long warmup
        is behind then, not worse), nor at the last step (stopping saves nothing)."""
        warmup = getattr(getattr(pl_module.cfg, "optim", None), "warmup_steps", 0)
        return warmup < trainer.global_step and not 0 < trainer.max_steps <= trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        value = trainer.callback_metrics.get(self.spec["metric"])
        if trainer.is_global_zero and value is not None:
            trial = self.trial()
            trial.report(float(value), trainer.global_step)
            prune = self.may_prune(trainer, pl_module) and trial.should_prune()
            if prune:
                trial.set_user_attr("pruned_at", trainer.global_step)
        if trainer.strategy.broadcast(prune):
            trainer.should_stop = True


def trial_callbacks() -> list[L.Callback]:
    """The callbacks of a sweep's trial run (none outside a sweep); ``run.build_trainer`` adds them."""
    spec = os.environ.get(TRIAL_ENV)
    return [ReportToStudy(json.loads(spec))] if spec else []
