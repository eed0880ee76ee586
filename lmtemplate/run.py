"""One path for every verb: config -> task -> datamodule (tokenizer, data) -> module -> Trainer -> run dir.

Run directory layout (``<run.root>/<run.name>/version_<n>/``)::

    config.yaml        the resolved config, exactly what ran
    tokenizer.json
    checkpoints/       last.ckpt and best-<step>.ckpt (by the task's monitored metric)
    events.out.tfevents.*
    metrics.json       fit's final validation; a list of blocks for validate and test, one per checkpoint scored
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from lmtemplate import config as C
from lmtemplate.callbacks.averaging import training_extras, weights_for
from lmtemplate.callbacks.console import Summary
from lmtemplate.callbacks.guards import StopOnNonFiniteLoss, StopOnSignal
from lmtemplate.callbacks.progress import ProgressBar
from lmtemplate.callbacks.tensorboard import HParams, TextSamples
from lmtemplate.callbacks.throughput import TokenThroughput
from lmtemplate.checkpointing import AtomicCheckpointIO, LastAndBest, RandomState, best_of, newest, read_checkpoint, saved
from lmtemplate.data.base import SPLITS, STAGE_SPLITS, SplitsConfig
from lmtemplate.models import hf
from lmtemplate.models.lora import merged
from lmtemplate.registry import TaskSpec, get_task, load_tasks
from lmtemplate.tasks.base import Task
from lmtemplate.files import atomic_write_text, cannot_write, stale_temporaries
from lmtemplate.tokenization import TokenizerConfig, describe_tokenizer, resolve_tokenizer, save_tokenizer

RUN_DIR_ENV = "LMTEMPLATE_RUN_DIR"  # set for worker processes, so every rank uses one run directory


@dataclass
class Loaded:
    """A checked config: as YAML-able data, as dataclasses, and the task it names."""

    data: DictConfig
    cfg: Any
    task: TaskSpec
    sources: list[C.Source] = field(default_factory=list)  # the layers it was built from, to name a key's source


def load_config(files: list[str], overrides: list[str], aside: tuple[str, ...] = (), reads=SPLITS) -> Loaded:
    """``aside``: top-level sections another verb reads and this config leaves out (``sweep``); ``reads``: the data
    splits whose files must exist (``verb_reads``)."""
    sources = C.read_sources(files, overrides)
    for s in sources:
        for key in aside:
            s.data.pop(key, None)
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
    cfg = C.to_object(data, sources)
    if isinstance(getattr(cfg, "data", None), SplitsConfig):
        try:
            cfg.data.check_files(reads)
        except C.ConfigError as e:
            raise C.located(str(e), sources) from None
    return Loaded(data, cfg, task, sources)


def verb_reads(verb: str) -> tuple[str, ...]:
    """The data splits a verb reads: fit all of them (the test file too, checked before training starts), validate
    and test theirs, predict, export and average none."""
    return SPLITS if verb == "fit" else STAGE_SPLITS.get(verb, ())


def load_saved_config(config: Path, overrides: list[str], reads=SPLITS) -> Loaded:
    """A run's saved config.yaml, meaning what it meant when it was written: a model section without ``gelu`` comes
    from before that option, when every model used the tanh GELU (the default is now the exact one)."""
    loaded = load_config([str(config)], overrides, reads=reads)
    model = OmegaConf.load(config).get("model")
    if (isinstance(model, DictConfig) and "gelu" not in model and "gelu" in loaded.data.get("model", {})
            and not any(o.split("=", 1)[0].lstrip("+") == "model.gelu" for o in overrides)):
        loaded = load_config([str(config)], ["model.gelu=tanh", *overrides], reads=reads)
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
    """``last``, ``best`` (in the run named by the config), a run directory (its last), or a checkpoint (file or
    sharded folder)."""
    if ckpt in ("last", "best"):
        run = find_run(cfg)
        found = checkpoint_of(run, ckpt)
        if found is None:
            raise C.ConfigError(_no_checkpoint(ckpt, run, cfg))
        return found
    path = Path(ckpt)
    if path.is_dir() and path.suffix != ".ckpt":
        found = checkpoint_of(path, "last")
        if found is None:
            raise C.ConfigError(f"--ckpt: no last checkpoint in {path / 'checkpoints'}")
        return found
    if not path.exists():
        raise C.ConfigError(f"--ckpt: checkpoint file not found: {path}")
    return path


def checkpoint_of(run: Path, kind: str) -> Optional[Path]:
    """A run directory's ``last`` (the latest step) or ``best`` (the best score) checkpoint, as the checkpoints'
    own records say (``checkpointing.saved``), never by their file names; None when it has none."""
    found = [saved(p) for p in sorted((run / "checkpoints").glob(f"{kind}*.ckpt"))]
    if not found:
        return None
    return (newest(found) if kind == "last" else best_of(found)).path


def _no_checkpoint(kind: str, run: Path, cfg) -> str:
    """Where ``--ckpt last|best`` looked, and which versions of the run do have such a checkpoint."""
    chosen = "run.version" if cfg.run.version is not None else f"the latest version of run '{cfg.run.name}'"
    others = [n for n in versions(cfg) if checkpoint_of(run_root(cfg) / f"version_{n}", kind)]
    if others:
        where = f"versions with one: {', '.join(f'version_{n}' for n in others)} (pick one with run.version={others[-1]})"
    else:
        where = f"no version under {run_root(cfg)} has one; train with `fit` first"
    return f"--ckpt {kind}: no {kind} checkpoint in {run / 'checkpoints'} ({chosen}); {where}"


def run_dir_of(checkpoint: Path) -> Optional[Path]:
    """The run directory a checkpoint lives in, if it lives in one."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def new_run_dir(cfg) -> tuple[Path, Optional[Path]]:
    """A new run directory and the topmost folder made for it: ``run.version`` if given, else the next free
    ``version_<n>``; worker processes get the launcher's. It is made here, by one ``mkdir`` that fails if the folder
    exists, so a fit that is not a resume never writes into an existing run, even beside another fit starting."""
    if RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV]), None
    root, fixed = run_root(cfg), cfg.run.version is not None
    n = cfg.run.version if fixed else (versions(cfg) or [-1])[-1] + 1
    created = next((p for p in reversed((root, *root.parents)) if not p.exists()), None)
    while True:
        path = root / f"version_{n}"
        try:
            path.mkdir(parents=True)
            return path, created or path
        except FileExistsError:
            if fixed:
                raise C.ConfigError(
                    f"run.version={n}: {path} exists, and a fit that is not a resume never writes into an existing "
                    f"run; resume it with `fit --ckpt last run.name={cfg.run.name} run.version={n}`, or leave "
                    "run.version unset for a new version") from None
            n += 1
        except OSError as e:
            raise C.ConfigError(f"run.root: {cannot_write(path, e)}") from None


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
    lock: Optional[IO] = None  # a fit's hold on its run directory (``hold``)


def prepare(verb: str, files: list[str], overrides: list[str], ckpt: Optional[str] = None) -> Session:
    """Build a verb's session. Nothing in a run directory is written until the config and the checkpoint are
    known to fit each other; a fit that fails before its first checkpoint leaves no run directory behind."""
    reads = verb_reads(verb)
    loaded = load_config(files, overrides, reads=reads) if files else None
    checkpoint, state = None, None
    if ckpt:
        # last / best live in the run the config names; without -c, the run.* overrides name it.
        named = None
        if ckpt in ("last", "best"):
            named = (loaded or load_config([], [o for o in overrides if o.startswith("run.")])).cfg
        checkpoint = resolve_checkpoint(ckpt, named)
        if checkpoint.is_file():  # a broken file fails now, before a run directory is made
            state = read_checkpoint(checkpoint, mmap=True)
    run_dir = run_dir_of(checkpoint) if checkpoint else None
    if loaded is None:
        # No -c: continue with the config the run was trained with, so task keys among the overrides
        # (answer.*, decode.*) are checked against its task.
        own = run_dir / "config.yaml" if run_dir is not None else None
        loaded = (load_saved_config(own, overrides, reads) if own is not None and own.is_file()
                  else load_config([], overrides, reads=reads))
    cfg = loaded.cfg
    if verb == "fit":
        _check_trains(cfg.trainer, loaded.sources)
        if state is not None and "optimizer_states" not in state:
            raise C.ConfigError(f"--ckpt: {checkpoint} holds the weights alone, as best checkpoints do, so training "
                                "cannot continue from it; resume from the run's last.ckpt (--ckpt last), or start a new "
                                f"run from these weights with model.init_from={checkpoint}")
        if run_dir is not None:
            _place(loaded, run_dir)
    settle_tokenizer(loaded, run_dir)
    created = lock = None
    if run_dir is None:
        run_dir, created = new_run_dir(cfg) if verb == "fit" else (find_run(cfg), None)
    try:
        if verb == "fit" and RUN_DIR_ENV not in os.environ:
            lock = hold(run_dir)
        # First: it checks trainer.*.
        trainer = build_trainer(cfg, run_dir, loaded.task.module, training=verb == "fit", sources=loaded.sources)
        L.seed_everything(cfg.run.seed, workers=True, verbose=False)
        datamodule = loaded.task.datamodule(cfg)
        if state is not None and verb != "fit" and hasattr(datamodule, "recorded"):
            datamodule.recorded = state  # what the task learned from the training file (ExampleData.of_training)
        module = loaded.task.module(cfg, datamodule)
        module.resuming = verb == "fit" and checkpoint is not None
        if state is not None:
            check_fits(module, state["state_dict"], checkpoint, loaded)
        if verb == "fit" and trainer.is_global_zero:
            for stale in (*stale_temporaries(run_dir), *stale_temporaries(run_dir / "checkpoints")):
                stale.unlink(missing_ok=True)
            atomic_write_text(run_dir / "config.yaml", C.to_yaml(loaded.data))
            if isinstance(datamodule.tokenizer, Tokenizer):
                save_tokenizer(datamodule.tokenizer, run_dir / "tokenizer.json")
    except BaseException:
        if lock is not None:
            lock.close()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return Session(loaded, run_dir, checkpoint, datamodule, module, trainer, created, state["global_step"] if state else 0, lock)


def settle_tokenizer(loaded: Loaded, run_dir: Optional[Path]) -> None:
    """Decide the run's tokenizer (``resolve_tokenizer``); one taken from ``model.init_from`` is also written into
    the config's tokenizer section (its kind, vocabulary size and special tokens), so that ``config`` and
    config.yaml show the tokenizer the run uses, not the settings of one it would have trained."""
    tok = getattr(loaded.cfg, "tokenizer", None)
    before = getattr(tok, "path", None)
    resolve_tokenizer(loaded.cfg, run_dir)
    if not isinstance(tok, TokenizerConfig) or tok.path in (before, str(run_dir / "tokenizer.json") if run_dir else None):
        return
    described = describe_tokenizer(Path(tok.path))
    try:
        C.to_object(OmegaConf.merge(loaded.data, {"tokenizer": described}))  # the section's checks still hold
    except C.ConfigError:
        return
    loaded.data.tokenizer.update(described)
    for key, value in described.items():
        setattr(tok, key, value)


def resolved_config(files: list[str], overrides: list[str]) -> DictConfig:
    """The config ``fit`` would run and save, tokenizer decided (``python -m lmtemplate config``)."""
    loaded = load_config(files, overrides)
    settle_tokenizer(loaded, None)
    return loaded.data


def _check_trains(trainer: dict, sources: list[C.Source]) -> None:
    """A fit that would train no step is refused: it would make a run directory with no checkpoint."""
    for key in ("max_steps", "max_epochs", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise C.ConfigError(f"trainer.{key}=0 (in {C.source_of(f'trainer.{key}', sources)}): fit would train no step; "
                                "use validate or test to score a checkpoint")


def _place(loaded: Loaded, run_dir: Path) -> None:
    """A resumed run's ``run.root`` and ``run.name`` are where its directory is now, which the saved config.yaml
    does not know when the run was moved or copied."""
    if version_of(run_dir) is not None and run_root(loaded.cfg).resolve() != run_dir.parent.resolve():
        root, name = str(run_dir.parent.parent), run_dir.parent.name
        loaded.data.run.root, loaded.data.run.name = root, name
        loaded.cfg.run.root, loaded.cfg.run.name = root, name


def hold(run_dir: Path) -> IO:
    """Hold the run directory for this fit: a second fit of the same run (a requeued job whose first copy still
    runs, two sweep workers resuming one trial) is refused. The lock is the kernel's (flock): a killed fit holds none."""
    f = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise C.ConfigError(f"{run_dir} is being trained by another fit ({holder}); wait for it to end, or stop it") from None
    f.truncate(0)
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def check_fits(module: L.LightningModule, weights: dict, checkpoint: Path, loaded: Loaded) -> None:
    """Refuse a checkpoint whose tensors the config's model does not have, in one message naming both shapes,
    before anything is written (Lightning's own refusal comes mid-run, as a traceback)."""
    ours = module.state_dict()
    wrong = [f"{k} is {_shape(v)} in the checkpoint but {_shape(ours[k])} in the config's model"
             for k, v in weights.items() if k in ours and v.shape != ours[k].shape]
    strict = getattr(module, "strict_loading", True)
    missing = [k for k in ours if k not in weights] if strict else []
    extra = [k for k in weights if k not in ours] if strict else []
    if not (wrong or missing or extra):
        return
    said = wrong[:2] + ([f"{len(wrong) - 2} more shapes differ"] if len(wrong) > 2 else [])
    if missing:
        said.append(f"the model has {len(missing)} tensors the checkpoint lacks ({', '.join(missing[:3])}"
                    f"{', ...' if len(missing) > 3 else ''})")
    if extra:
        said.append(f"the checkpoint has {len(extra)} tensors the model lacks ({', '.join(extra[:3])}"
                    f"{', ...' if len(extra) > 3 else ''})")
    raise C.ConfigError(f"--ckpt: {checkpoint} does not fit the model the config describes: {'; '.join(said)}. "
                        f"{_changed(checkpoint, loaded)}Nothing was written.")


def _shape(t) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def _changed(checkpoint: Path, loaded: Loaded) -> str:
    """The model and tokenizer keys that differ from the run's own config.yaml, in words."""
    run_dir = run_dir_of(checkpoint)
    own = run_dir / "config.yaml" if run_dir is not None else None
    if own is None or not own.is_file():
        return "The checkpoint's run has no config.yaml to compare with; give the shape it was trained with. "
    before, now = (C.flatten(OmegaConf.to_container(c)) for c in (OmegaConf.load(own), loaded.data))
    keys = [k for k in now if k.split(".")[0] in ("model", "tokenizer") and k in before and before[k] != now[k]]
    if not keys:
        return f"Its config.yaml ({own}) gives the same model keys: the checkpoint is not that run's. "
    return ("The run was trained with " + ", ".join(f"{k}={before[k]}" for k in keys) + f" ({own}); this command sets "
            + ", ".join(f"{k}={now[k]}" for k in keys) + ". ")


def build_trainer(cfg, run_dir: Path, task: type[Task], training: bool, sources: list[C.Source] = ()) -> L.Trainer:
    # An int version n logs to version_<n> too, and the progress bar shows v_num=n, not a string's last 4 characters.
    n = version_of(run_dir)
    logger = TensorBoardLogger(
        save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name if n is None else n,
        default_hp_metric=False,
    )
    callbacks: list[L.Callback] = [ProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    if cfg.trainer.get("enable_model_summary", True) and training:
        callbacks.append(Summary())
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
        from lmtemplate.sweep import trial_callbacks  # here: sweep.py imports this module

        callbacks += trial_callbacks()  # a sweep's trial reports to its study
    settings = {**cfg.trainer, "strategy": build_strategy(cfg, task), "enable_model_summary": False}  # Summary's job
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


def add_block(run_dir: Path, verb: str, block: dict) -> None:
    """Append ``block`` (a checkpoint's scores) to the verb's list in metrics.json, replacing the block of the
    same checkpoint and step: every checkpoint a verb scored keeps its own block."""
    path = run_dir / "metrics.json"
    blocks = (json.loads(path.read_text()) if path.is_file() else {}).get(verb, [])
    blocks = [blocks] if isinstance(blocks, dict) else blocks  # one block per verb, as runs before lists wrote
    same = (block["checkpoint"], block["step"])
    write_metrics(run_dir, {verb: [b for b in blocks if (b.get("checkpoint"), b.get("step")) != same] + [block]})


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
        if s.lock is not None:
            s.lock.close()
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
    """Validate or test the checkpoint; metrics.json keeps a block of its scores, with the checkpoint (relative to
    the run directory when inside it) and step they came from, in the verb's list."""
    s.trainer.fit_loop.epoch_loop._batches_that_stepped = s.step  # TensorBoard shows the metrics at the checkpoint's step
    run = s.trainer.validate if verb == "validate" else s.trainer.test
    logged = run(s.module, datamodule=s.datamodule, ckpt_path=s.checkpoint, verbose=False)
    metrics = results(s, logged[0] if logged else {}, "val" if verb == "validate" else "test")
    if s.trainer.is_global_zero:
        where = s.checkpoint.resolve()
        inside = where.is_relative_to(s.run_dir.resolve())
        add_block(s.run_dir, verb, {**metrics, "step": s.step,
                                    "checkpoint": str(where.relative_to(s.run_dir.resolve()) if inside else where)})
    return metrics


def predict(s: Session, inputs: list | Path, flag: str, output: Optional[Path] = None) -> tuple[list[dict], Path]:
    """Run the checkpoint on ``inputs`` (a list, or a file the task's ``read_predict_inputs`` reads), given by
    ``flag`` (one of the task's ``predict_flags``), and write the task's ``format_predictions`` of the rows to
    ``output`` or ``<run dir>/<predictions_file>``; an input with nothing to predict writes nothing."""
    task = s.loaded.task
    if flag not in s.module.predict_flags:
        raise C.ConfigError(f"predict {flag}: a {task.name} run reads its inputs from "
                            f"{' or '.join(s.module.predict_flags)} (see its page in docs/tasks/)")
    s.datamodule.predict_inputs = s.module.read_predict_inputs(inputs) if isinstance(inputs, Path) else inputs
    path = output or s.run_dir / s.module.predictions_file
    if not s.datamodule.predict_inputs:
        raise C.ConfigError(f"--input {inputs}: no inputs in the file; nothing was written ({path} is unchanged)")
    outputs = s.trainer.predict(s.module, datamodule=s.datamodule, ckpt_path=s.checkpoint) or []
    rows = [row for out in outputs for row in (out if isinstance(out, list) else [out])]  # a batch may give several
    if s.trainer.is_global_zero:
        atomic_write_text(path, s.module.format_predictions(rows))
    return rows, path


def export(ckpt: str, overrides: list[str], output: Path, adapter: bool = False) -> str:
    """Write the checkpoint's model as a Hugging Face model folder (``models/hf.py``); returns its architecture.

    The model is described by the run's config.yaml (its shape) and the checkpoint (its weights, vocabulary size
    and labels); the tokenizer is the run's tokenizer.json. The folder is written beside ``output`` and renamed to
    it when whole; an ``output`` that is a file or a folder with files in it is refused, so no file of another
    model is left beside the new one.
    """
    if output.is_file() or (output.is_dir() and any(output.iterdir())):
        raise C.ConfigError(f"export --output: {output} is {'a file' if output.is_file() else 'a folder with files in it'}; "
                            "name a new or empty folder (a stale file beside the new model might be loaded instead)")
    named = load_config([], [o for o in overrides if o.startswith("run.")]).cfg if ckpt in ("last", "best") else None
    checkpoint = resolve_checkpoint(ckpt, named)
    run_dir = run_dir_of(checkpoint)
    config, tokenizer = (run_dir / "config.yaml", run_dir / "tokenizer.json") if run_dir else (None, None)
    if run_dir is None or not config.is_file() or not tokenizer.is_file():
        raise C.ConfigError(f"export: {checkpoint} is not inside a run directory with its config.yaml and "
                            "tokenizer.json, which describe its model and its token ids")
    loaded = load_saved_config(config, [], reads=())
    state = read_checkpoint(checkpoint)
    model = dataclasses.asdict(loaded.cfg.model)
    staging = output.with_name(f".{output.name}.{os.getpid()}.export.tmp")
    try:
        weights = weights_for(state, "export", loaded.cfg.ema)  # an EMA run's average, unless ema.averaged_in says not
        if adapter:  # a LoRA run's adapters alone, as a PEFT folder; else the whole model, adapters merged in
            architecture = hf.export_adapter(loaded.task.name, model, weights, loaded.cfg.lora, staging)
        else:
            # the decoding settings of a run that generates, for generation_config.json
            decoding = getattr(loaded.cfg, "generate", None) or getattr(loaded.cfg, "decode", None)
            architecture = hf.export(loaded.task.name, model, merged(weights, loaded.cfg), state.get("labels"), tokenizer,
                                     staging, dataclasses.asdict(decoding) if dataclasses.is_dataclass(decoding) else None)
        if output.is_dir():
            output.rmdir()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return architecture
