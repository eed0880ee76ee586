"""One path for every verb: config -> task -> datamodule (tokenizer, data) -> module -> Trainer -> run dir.

Run directory layout (``<run.root>/<run.name>/version_<n>/``)::

    config.yaml        the resolved config, exactly what ran
    tokenizer.json
    checkpoints/       last.ckpt and best-<step>.ckpt (by the task's monitored metric)
    events.out.tfevents.*
    metrics.json       final validation / test metrics
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from lmtemplate import config as C
from lmtemplate.callbacks.averaging import training_extras, weights_for
from lmtemplate.callbacks.guards import StopOnNonFiniteLoss, StopOnSignal
from lmtemplate.callbacks.progress import ProgressBar
from lmtemplate.callbacks.tensorboard import HParams, TextSamples
from lmtemplate.callbacks.throughput import TokenThroughput
from lmtemplate.checkpointing import AtomicCheckpointIO, LastAndBest, RandomState, read_checkpoint
from lmtemplate.models import hf
from lmtemplate.registry import TaskSpec, get_task, load_tasks
from lmtemplate.tasks.base import Task
from lmtemplate.tokenization import atomic_write_text, resolve_tokenizer, save_tokenizer

RUN_DIR_ENV = "LMTEMPLATE_RUN_DIR"  # set for worker processes, so every rank uses one run directory


@dataclass
class Loaded:
    """A checked config: as YAML-able data, as dataclasses, and the task it names."""

    data: DictConfig
    cfg: Any
    task: TaskSpec
    sources: list[C.Source] = field(default_factory=list)  # the layers it was built from, to name a key's source


def load_config(files: list[str], overrides: list[str]) -> Loaded:
    sources = C.read_sources(files, overrides)
    plugins = C.peek(sources, "plugins", [])
    if not isinstance(plugins, list):
        raise C.ConfigError("plugins: expected a list of files, folders or module names")
    load_tasks(plugins)
    try:
        task = get_task(str(C.peek(sources, "task", C.CommonConfig.task)))
    except C.ConfigError as e:
        raise C.ConfigError(f"{e} (in {C.source_of('task', sources)})") from None
    schema = C.schema_for(task.config, f"task '{task.name}' ({task.source})")
    sources = hf.with_checkpoint_fields(schema, sources, task.name)  # a Hugging Face model's shape, under the rest
    data = C.compose(schema, sources)
    if "limit_val_batches" not in data.trainer:
        data.trainer.limit_val_batches = task.module.limit_val_batches
    metrics = task.module.metrics
    if data.best.metric is None:
        data.best.metric = next(iter(metrics))
    elif data.best.metric not in metrics:
        raise C.ConfigError(f"best.metric: '{data.best.metric}' is not one of {', '.join(metrics)} "
                            f"(in {C.source_of('best.metric', sources)})")
    return Loaded(data, C.to_object(data, sources), task, sources)


def load_saved_config(config: Path, overrides: list[str]) -> Loaded:
    """A run's saved config.yaml, meaning what it meant when it was written: a model section without ``gelu`` comes
    from before that option, when every model used the tanh GELU (the default is now the exact one)."""
    loaded = load_config([str(config)], overrides)
    model = OmegaConf.load(config).get("model")
    if (isinstance(model, DictConfig) and "gelu" not in model and "gelu" in loaded.data.get("model", {})
            and not any(o.split("=", 1)[0].lstrip("+") == "model.gelu" for o in overrides)):
        loaded = load_config([str(config)], ["model.gelu=tanh", *overrides])
    return loaded


def run_root(cfg) -> Path:
    return Path(cfg.run.root) / cfg.run.name


def versions(cfg) -> list[int]:
    root = run_root(cfg)
    found = [version_of(p) for p in root.iterdir()] if root.is_dir() else []
    return sorted(n for n in found if n is not None)


def version_of(run_dir: Path) -> Optional[int]:
    """n of a ``version_<n>`` folder; None for another name."""
    m = re.fullmatch(r"version_(\d+)", run_dir.name)
    return int(m.group(1)) if m else None


def find_run(cfg) -> Path:
    """The run named by ``run.name`` and ``run.version`` (default: the latest version)."""
    if cfg.run.version is not None:
        path = run_root(cfg) / f"version_{cfg.run.version}"
        if not path.is_dir():
            raise C.ConfigError(f"run.version: no run directory {path}")
        return path
    found = versions(cfg)
    if not found:
        raise C.ConfigError(f"no runs under {run_root(cfg)} (run.root / run.name); train one with `fit` first")
    return run_root(cfg) / f"version_{found[-1]}"


def resolve_checkpoint(ckpt: str, cfg) -> Path:
    """``last``, ``best`` (in the run named by the config), a run directory, or a checkpoint (file or sharded folder)."""
    if ckpt in ("last", "best"):
        run = find_run(cfg)
        found = checkpoints(run, ckpt)
        if not found:
            raise C.ConfigError(_no_checkpoint(ckpt, run, cfg))
        return found[-1]
    path = Path(ckpt)
    if path.is_dir() and path.suffix != ".ckpt":
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise C.ConfigError(f"--ckpt: checkpoint file not found: {path}")
    return path


def checkpoints(run: Path, kind: str) -> list[Path]:
    """The ``last`` or ``best`` checkpoints of a run directory (a sharded FSDP checkpoint is a folder)."""
    folder = run / "checkpoints"
    found = [folder / "last.ckpt"] if kind == "last" else sorted(folder.glob("best-*.ckpt"))
    return [p for p in found if p.exists()]


def _no_checkpoint(kind: str, run: Path, cfg) -> str:
    """Where ``--ckpt last|best`` looked, and which versions of the run do have such a checkpoint."""
    chosen = "run.version" if cfg.run.version is not None else f"the latest version of run '{cfg.run.name}'"
    others = [n for n in versions(cfg) if checkpoints(run_root(cfg) / f"version_{n}", kind)]
    if others:
        where = f"versions with one: {', '.join(f'version_{n}' for n in others)} (pick one with run.version={others[-1]})"
    else:
        where = f"no version under {run_root(cfg)} has one; train with `fit` first"
    return f"--ckpt {kind}: no {kind} checkpoint in {run / 'checkpoints'} ({chosen}); {where}"


def run_dir_of(checkpoint: Path) -> Optional[Path]:
    """The run directory a checkpoint lives in, if it lives in one."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def new_run_dir(cfg) -> Path:
    """The next free ``version_<n>`` (or ``run.version``); worker processes get the launcher's."""
    if RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV])
    n = cfg.run.version if cfg.run.version is not None else (versions(cfg) or [-1])[-1] + 1
    return run_root(cfg) / f"version_{n}"


@dataclass
class Session:
    """Everything one verb needs, built along the one path."""

    loaded: Loaded
    run_dir: Path
    checkpoint: Optional[Path]
    datamodule: L.LightningDataModule
    module: L.LightningModule
    trainer: L.Trainer
    created: Optional[Path] = None  # the topmost folder this fit made for run_dir; removed if it fails before a checkpoint
    step: int = 0  # the checkpoint's global step


def prepare(verb: str, files: list[str], overrides: list[str], ckpt: Optional[str] = None) -> Session:
    loaded = load_config(files, overrides) if files else None
    checkpoint, step = None, 0
    if ckpt:
        # last / best live in the run the config names; without -c, the run.* overrides name it.
        named = None
        if ckpt in ("last", "best"):
            named = (loaded or load_config([], [o for o in overrides if o.startswith("run.")])).cfg
        checkpoint = resolve_checkpoint(ckpt, named)
        if checkpoint.is_file():  # a broken file fails now, before a run directory is made
            step = read_checkpoint(checkpoint, mmap=True).get("global_step", 0)
    run_dir = run_dir_of(checkpoint) if checkpoint else None
    if loaded is None:
        # No -c: continue with the config the run was trained with, so task keys among the overrides
        # (answer.*, decode.*) are checked against its task.
        own = run_dir / "config.yaml" if run_dir is not None else None
        loaded = load_saved_config(own, overrides) if own is not None and own.is_file() else load_config([], overrides)
    cfg = loaded.cfg
    resolve_tokenizer(cfg, run_dir)
    if run_dir is None:
        run_dir = new_run_dir(cfg) if verb == "fit" else find_run(cfg)

    # First: it checks trainer.*.
    trainer = build_trainer(cfg, run_dir, loaded.task.module, training=verb == "fit", sources=loaded.sources)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    datamodule = loaded.task.datamodule(cfg)
    module = loaded.task.module(cfg, datamodule)
    created = None
    if verb == "fit" and trainer.is_global_zero:
        created = next((p for p in reversed((run_dir, *run_dir.parents)) if not p.exists()), None)
        run_dir.mkdir(parents=True, exist_ok=True)  # only now: a config or data error leaves no empty run behind
        atomic_write_text(run_dir / "config.yaml", C.to_yaml(loaded.data))
        if isinstance(datamodule.tokenizer, Tokenizer):
            save_tokenizer(datamodule.tokenizer, run_dir / "tokenizer.json")
    return Session(loaded, run_dir, checkpoint, datamodule, module, trainer, created, step)


def build_trainer(cfg, run_dir: Path, task: type[Task], training: bool, sources: list[C.Source] = ()) -> L.Trainer:
    # An int version n logs to version_<n> too, and the progress bar shows v_num=n, not a string's last 4 characters.
    n = version_of(run_dir)
    logger = TensorBoardLogger(
        save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name if n is None else n,
        default_hp_metric=False,
    )
    callbacks: list[L.Callback] = [ProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    if training:
        metric = cfg.best.metric
        callbacks += [
            LastAndBest(run_dir / "checkpoints", metric, task.metrics[metric]),
            RandomState(),
            StopOnSignal(),
            StopOnNonFiniteLoss(),
            LearningRateMonitor(logging_interval="step"),
            HParams(),
            TokenThroughput(window_size=max(2, cfg.trainer.get("log_every_n_steps", 50)), peak_flops=cfg.run.peak_flops),
            TextSamples(),
        ]
        callbacks += training_extras(cfg, run_dir, task.metrics)
    settings = {**cfg.trainer, "strategy": build_strategy(cfg, task)}
    try:
        return L.Trainer(
            **settings, logger=logger, callbacks=callbacks, default_root_dir=run_dir, use_distributed_sampler=False,
            plugins=[AtomicCheckpointIO()],
        )
    except (ValueError, TypeError, RuntimeError, ImportError, MisconfigurationException) as e:
        raise C.ConfigError(_rejected(e, cfg.trainer, sources)) from None


def _rejected(error: Exception, trainer: dict, sources: list[C.Source]) -> str:
    """Why lightning.Trainer refused ``trainer.*``: an accelerator this machine lacks is named with its source."""
    accelerator = trainer.get("accelerator", "auto")
    if isinstance(error, MisconfigurationException) and accelerator not in ("auto", "cpu"):
        return (
            f"trainer.accelerator: '{accelerator}' is not available on this machine ({error}) "
            f"(in {C.source_of('trainer.accelerator', sources)}); use trainer.accelerator=cpu or auto"
        )
    return f"trainer: lightning.Trainer rejected the settings: {error}"


def build_strategy(cfg, task: type[Task]):
    """``trainer.strategy`` as given, except ``fsdp``: Lightning's FSDPStrategy set up from the ``fsdp`` section.

    FSDP wraps, and optionally checkpoints, each module class the task lists in
    ``blocks`` (its transformer block), so one block's parameters are gathered at a time.
    """
    strategy = cfg.trainer.get("strategy", "auto")
    if strategy != "fsdp":
        return strategy
    from lightning.pytorch.strategies import FSDPStrategy

    blocks = set(task.blocks)
    f = cfg.fsdp
    return FSDPStrategy(
        auto_wrap_policy=blocks or None,
        activation_checkpointing_policy=blocks if f.activation_checkpointing and blocks else None,
        sharding_strategy=f.sharding_strategy,
        state_dict_type=f.state_dict_type,
        cpu_offload=f.cpu_offload,
    )


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Merge ``metrics`` into ``run_dir/metrics.json`` (atomically)."""
    path = run_dir / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_text(path, json.dumps({**old, **metrics}, indent=2, sort_keys=True) + "\n")


def results(s: Session, logged: dict, stage: str) -> dict:
    """The pass's scalars under ``{stage}/``, with the task's full-precision scores over the logged float32 ones,
    and a note when the pass saw part of its set."""
    metrics = {k: float(v) for k, v in logged.items() if k.startswith(f"{stage}/")}
    metrics.update({k: v for k, v in s.module.scores.items() if k.startswith(f"{stage}/")})
    if stage in s.module.partial:
        metrics[f"{stage}_partial"] = s.module.partial[stage]
    return metrics


def fit(s: Session) -> dict:
    os.environ[RUN_DIR_ENV] = str(s.run_dir)
    try:
        s.trainer.fit(s.module, datamodule=s.datamodule, ckpt_path=s.checkpoint)
        if s.trainer.checkpoint_callback.validated_at == s.trainer.global_step:
            logged = s.trainer.callback_metrics  # training ended on a validation: nothing to redo
        else:
            logged = (s.trainer.validate(s.module, datamodule=s.datamodule, verbose=False) or [{}])[0]  # [] without val
    except BaseException:
        _discard_unless_checkpointed(s)
        raise
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    step, last = s.trainer.global_step, s.run_dir / "checkpoints" / "last.ckpt"
    if step == 0 and last.is_file():  # ddp_spawn trained in processes of its own: their checkpoint knows
        step = read_checkpoint(last, mmap=True)["global_step"]
    metrics = {**results(s, logged, "val"), "step": step}
    if s.trainer.is_global_zero:
        write_metrics(s.run_dir, metrics)
    return metrics


def _discard_unless_checkpointed(s: Session) -> None:
    """Remove the run directory of a failed fit that created it and wrote no checkpoint: nothing there to resume."""
    if s.created is not None and not any((s.run_dir / "checkpoints").glob("*.ckpt")):
        shutil.rmtree(s.created, ignore_errors=True)


def evaluate(s: Session, verb: str) -> dict:
    """Validate or test the checkpoint; metrics.json records them under the verb, with the checkpoint they came
    from (test metrics also at the top level, where fit's validation metrics are)."""
    s.trainer.fit_loop.epoch_loop._batches_that_stepped = s.step  # TensorBoard shows the metrics at the checkpoint's step
    run = s.trainer.validate if verb == "validate" else s.trainer.test
    logged = run(s.module, datamodule=s.datamodule, ckpt_path=s.checkpoint, verbose=False)
    metrics = results(s, logged[0] if logged else {}, "val" if verb == "validate" else "test")
    if s.trainer.is_global_zero:
        source = {"checkpoint": str(s.checkpoint), "step": s.step}
        write_metrics(s.run_dir, {verb: {**metrics, **source}, **(metrics if verb == "test" else {})})
    return metrics


def predict(s: Session, inputs: list | Path, output: Optional[Path] = None) -> tuple[list[dict], Path]:
    """Run the checkpoint on ``inputs`` (a list, or a file the task's ``read_predict_inputs`` reads) and write the
    task's ``format_predictions`` of the rows to ``output`` or ``<run dir>/<predictions_file>``."""
    s.datamodule.predict_inputs = s.module.read_predict_inputs(inputs) if isinstance(inputs, Path) else inputs
    outputs = s.trainer.predict(s.module, datamodule=s.datamodule, ckpt_path=s.checkpoint) or []
    rows = [row for out in outputs for row in (out if isinstance(out, list) else [out])]  # a batch may give several
    path = output or s.run_dir / s.module.predictions_file
    if s.trainer.is_global_zero:
        atomic_write_text(path, s.module.format_predictions(rows))
    return rows, path


def export(ckpt: str, overrides: list[str], output: Path) -> str:
    """Write the checkpoint's model as a Hugging Face model folder (``models/hf.py``); returns its architecture.

    The model is described by the run's config.yaml (its shape) and the checkpoint (its weights, vocabulary size
    and labels); the tokenizer is the run's tokenizer.json.
    """
    named = load_config([], [o for o in overrides if o.startswith("run.")]).cfg if ckpt in ("last", "best") else None
    checkpoint = resolve_checkpoint(ckpt, named)
    run_dir = run_dir_of(checkpoint)
    config, tokenizer = (run_dir / "config.yaml", run_dir / "tokenizer.json") if run_dir else (None, None)
    if run_dir is None or not config.is_file() or not tokenizer.is_file():
        raise C.ConfigError(f"export: {checkpoint} is not inside a run directory with its config.yaml and "
                            "tokenizer.json, which describe its model and its token ids")
    loaded = load_saved_config(config, [])
    state = read_checkpoint(checkpoint)
    model = dataclasses.asdict(loaded.cfg.model)
    return hf.export(loaded.task.name, model, weights_for(state, "export", loaded.cfg.ema), state.get("labels"), tokenizer,
                     output)
