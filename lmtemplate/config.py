"""Configs are data: load YAML files, compose them, apply overrides, check them.

A run's config is built from, in order (later wins):

1. the schema's defaults (which describe the built-in demo),
2. each ``-c`` file, after the files its ``extends:`` list names (paths are
   relative to the file that names them),
3. ``key=value`` overrides in OmegaConf dotlist syntax.

The schema is the common sections (``task``, ``plugins``, ``run``,
``trainer``) plus the sections of the chosen task's config dataclass. Every
source is checked against the schema on its own, so an error names the file
(or the command line) that caused it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import inspect
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(Exception):
    """A problem with the user's config; the CLI prints it and exits with code 2."""


def require_positive(section: str, cfg: object, *keys: str) -> None:
    """Fail on the first of ``cfg``'s ``keys`` below 1, naming it as ``section.key`` (None, unset, passes)."""
    for key in keys:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{section}.{key}: expected a positive integer, got {value}")


@contextlib.contextmanager
def utf8_file(path: Path, newline: Optional[str] = None) -> Iterator[TextIO]:
    """``path`` opened as UTF-8 text, a leading byte order mark skipped; every reader of input files uses it.

    A byte that is not UTF-8, wherever the reader meets it, raises a ConfigError naming the line and the byte.
    """
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            yield f
    except UnicodeDecodeError:
        raise ConfigError(_not_utf8(Path(path))) from None


def read_utf8(path: Path) -> str:
    """The whole of an input file that its reader parses whole (config files, SQuAD JSON, aligned text, predict inputs)."""
    with utf8_file(path) as f:
        return f.read()


def _not_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is: the file is read again line by line, so in little memory."""
    offset = 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return (
                    f"{path}, line {line_no}: not valid UTF-8 (byte 0x{line[e.start]:02x} at byte offset "
                    f"{offset + e.start} of the file); save the file as UTF-8, e.g. with iconv -f latin1 -t utf-8"
                )
            offset += len(line)
    return f"{path}: not valid UTF-8; save the file as UTF-8"


MAX_RUN_NAME = 1024  # bytes of run.name, leaving run.root and the files of a run room under Linux's 4096-byte paths


@dataclass
class RunConfig:
    """Where a run lives: ``<root>/<name>/version_<n>``."""

    name: str = "demo"
    root: str = "outputs"
    version: Optional[int] = None  # None: the next free version (fit) or the latest (other verbs)
    seed: int = 1337
    cache_dir: str = "${run.root}/cache"  # tokenizers and token files, shared by runs
    peak_flops: Optional[float] = None  # one device's peak FLOP/s, for MFU; None: Lightning's table of GPUs

    def __post_init__(self) -> None:
        """``name`` stays under ``root``: names joined by '/', each a file name the filesystem takes (at most 255 bytes)."""
        parts = self.name.split("/")
        if (any(p in ("", ".", "..") or "\0" in p or len(os.fsencode(p)) > 255 for p in parts)
                or len(os.fsencode(self.name)) > MAX_RUN_NAME):
            raise ConfigError(
                f"run.name: '{self.name[:80]}{'...' if len(self.name) > 80 else ''}' is not a run name: expected one "
                f"or more names joined by '/' (e.g. demo or sweep/trial-3), none empty, '.' or '..', each at most 255 "
                f"bytes and {MAX_RUN_NAME} in all; the run lives in run.root/run.name"
            )


TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "max_steps": 800,
    "val_check_interval": 200,  # in training batches, counted across epochs (below)
    "check_val_every_n_epoch": None,  # limit_val_batches: the task's default (Task.limit_val_batches)
    "log_every_n_steps": 25,
    "gradient_clip_val": 1.0,
}

# Trainer arguments that lmtemplate sets itself from other sections.
_OWNED_TRAINER_KEYS = {"logger", "callbacks", "default_root_dir", "use_distributed_sampler", "enable_checkpointing", "plugins"}


@dataclass
class FSDPConfig:
    """Options for ``trainer.strategy: fsdp``; each of the task's transformer blocks is one FSDP unit."""

    sharding_strategy: str = "FULL_SHARD"  # FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD
    state_dict_type: str = "sharded"  # sharded: each rank writes its shard; full: one file gathered on rank 0
    activation_checkpointing: bool = True  # recompute each block in backward
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        choices = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")
        if self.sharding_strategy not in choices:
            raise ConfigError(f"fsdp.sharding_strategy: '{self.sharding_strategy}' is not one of {', '.join(choices)}")
        if self.state_dict_type not in ("sharded", "full"):
            raise ConfigError(f"fsdp.state_dict_type: expected 'sharded' or 'full', got '{self.state_dict_type}'")


@dataclass
class BestConfig:
    """Which validation metric picks ``best-<step>.ckpt``, and when it stops the run."""

    metric: Optional[str] = None  # one of the task's metrics (see `python -m lmtemplate config`); None: its first
    patience: Optional[int] = None  # stop after this many validations without improvement; None: never
    min_delta: float = 0.0  # an improvement is by more than this

    def __post_init__(self) -> None:
        require_positive("best", self, "patience")
        if self.min_delta < 0:
            raise ConfigError(f"best.min_delta: expected >= 0, got {self.min_delta}")


VERBS_WITH_WEIGHTS = ("validate", "test", "predict", "export")


@dataclass
class EMAConfig:
    """An exponential moving average of the weights (``callbacks/averaging.py``)."""

    decay: Optional[float] = None  # e.g. 0.999; None: off
    start: int = 0  # the optimizer step the average starts from; before it, it is a copy of the weights
    averaged_in: list[str] = field(default_factory=lambda: list(VERBS_WITH_WEIGHTS))  # the verbs that use it

    def __post_init__(self) -> None:
        if self.decay is not None and not 0 <= self.decay < 1:
            raise ConfigError(f"ema.decay: expected a number in [0, 1) or null (off), got {self.decay}")
        if self.start < 0:
            raise ConfigError(f"ema.start: expected a step >= 0, got {self.start}")
        unknown = [v for v in self.averaged_in if v not in VERBS_WITH_WEIGHTS]
        if unknown:
            raise ConfigError(f"ema.averaged_in: {', '.join(unknown)} is not among {', '.join(VERBS_WITH_WEIGHTS)}")


@dataclass
class CheckpointConfig:
    """Periodic checkpoints, for ``average``: ``checkpoints/step-<k>.ckpt`` at each validation, or every N steps."""

    keep: int = 0  # the last N of them; 0: none
    every: int = 0  # training steps between them; 0: one at each validation (the only ones best:N can rank)

    def __post_init__(self) -> None:
        for key in ("keep", "every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"checkpoint.{key}: expected a number >= 0, got {getattr(self, key)}")


@dataclass
class LoRAConfig:
    """Low-rank adapters (``models/lora.py``): with ``rank`` set, the backbone is frozen and adapters on the
    projections ``targets`` names train with the task's head."""

    rank: Optional[int] = None  # the adapters' rank; None: no adapters, every weight trains
    alpha: float = 16.0  # an adapter's update is scaled by alpha / rank
    dropout: float = 0.0  # on an adapter's input
    targets: list[str] = field(default_factory=lambda: ["q", "v"])  # patterns of projection names (q k v o gate up down)

    def __post_init__(self) -> None:
        require_positive("lora", self, "rank")
        if not self.alpha > 0:
            raise ConfigError(f"lora.alpha: expected a positive number, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: expected a probability in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ConfigError("lora.targets: expected at least one pattern, e.g. [q, v]")


@dataclass
class CommonConfig:
    """Sections every run has, whatever its task."""

    task: str = "causal_lm"
    plugins: list[str] = field(default_factory=list)
    run: RunConfig = field(default_factory=RunConfig)
    trainer: dict[str, Any] = field(default_factory=lambda: dict(TRAINER_DEFAULTS))
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    best: BestConfig = field(default_factory=BestConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class Source:
    """One layer of config: a YAML file's own keys, or the command line's overrides."""

    label: str
    data: DictConfig


def read_sources(files: list[str | Path], overrides: list[str]) -> list[Source]:
    """Flatten ``-c`` files (with their ``extends:``) and overrides into layers, in merge order."""
    sources: list[Source] = []
    for f in files:
        sources.extend(_file_sources(Path(f), stack=()))
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' on the command line: expected key=value, e.g. trainer.max_steps=200")
        try:
            data = OmegaConf.from_dotlist(list(overrides))
        except OmegaConfBaseException as e:
            raise ConfigError(f"overrides on the command line: {_short(e)}") from None
        sources.append(Source("the command line", data))
    return sources


def _file_sources(path: Path, stack: tuple[Path, ...]) -> list[Source]:
    path = path.expanduser()
    if not path.is_file():
        where = f" (named in extends: of {stack[-1]})" if stack else ""
        raise ConfigError(f"config file not found: {path}{where}")
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(f"extends cycle: {chain}")
    try:
        raw = _load_yaml(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply for Python to read") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    extends = raw.pop("extends", [])
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list) or not all(isinstance(e, str) for e in extends):
        raise ConfigError(f"{path}: 'extends' must be a path or a list of paths relative to the file")
    sources: list[Source] = []
    for parent in extends:
        sources.extend(_file_sources(path.parent / parent, (*stack, resolved)))
    sources.append(Source(str(path), OmegaConf.create(raw)))
    return sources


MAX_NODES = 10_000  # values a config file may expand to, each use of an alias counted: a config needs hundreds


def _load_yaml(path: Path) -> Any:
    """A YAML file's contents, refusing what would load quietly wrong or not at all.

    A key twice in one mapping (YAML keeps the last silently), an alias that contains itself, or a document
    that expands past MAX_NODES values once aliases are followed (a few lines of anchors can name billions)
    is a ConfigError naming the file; the check walks the composed nodes, each once, before any is built.
    """
    loader = yaml.SafeLoader(read_utf8(path))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, path: Path) -> None:
    sizes: dict[int, Optional[int]] = {}  # id(node) -> values it expands to; None while it is being counted

    def size(node: yaml.Node, key: str) -> int:
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise ConfigError(f"{path}: '{key}' is an alias of the mapping or list at line {node.start_mark.line + 1}, "
                                  "which contains it; a config must not refer to itself")
            return sizes[id(node)]
        sizes[id(node)] = None
        if isinstance(node, yaml.MappingNode):
            children, lines = [], {}  # lines: (tag, text) of a key -> its line
            for k, v in node.value:
                scalar = isinstance(k, yaml.ScalarNode)
                name = _join(key, k.value if scalar else "?")
                if scalar and k.tag != "tag:yaml.org,2002:merge":
                    if (k.tag, k.value) in lines:
                        raise ConfigError(f"{path}: key '{name}' appears twice in one mapping, at lines "
                                          f"{lines[k.tag, k.value]} and {k.start_mark.line + 1}; YAML would silently "
                                          "keep only the second. Merge the two into one")
                    lines[k.tag, k.value] = k.start_mark.line + 1
                children += [(k, name), (v, name)]
        elif isinstance(node, yaml.SequenceNode):
            children = [(v, f"{key}[{i}]") for i, v in enumerate(node.value)]
        else:
            children = []
        total = 1 + sum(size(child, child_key) for child, child_key in children)
        if total > MAX_NODES:
            raise ConfigError(f"{path}: the document expands to more than {MAX_NODES:,} values once its aliases (*name) "
                              "are replaced by what they refer to; a config needs far fewer (anchors nested in anchors?)")
        sizes[id(node)] = total
        return total

    size(root, "")


def _join(key: str, leaf: Any) -> str:
    return f"{key}.{leaf}" if key else str(leaf)


def peek(sources: list[Source], key: str, default: Any) -> Any:
    """The value of a top-level key after merging, before any schema is known (task, plugins)."""
    value = default
    for s in sources:
        if key in s.data:
            value = OmegaConf.to_container(s.data, resolve=False)[key]
    return value


def schema_for(task_config: type | None, owner: str = "the task") -> DictConfig:
    """The structured config for the common sections plus a task's own sections.

    Building it runs the sections' checks on their defaults; ``owner`` names the task in the error.
    """
    try:
        return OmegaConf.structured(config_class(task_config))
    except (ConfigError, ValueError, OmegaConfBaseException) as e:
        raise ConfigError(
            f"{owner}: a default of its config is invalid: {_checked_message(e)}. Fix the default in the task's config class"
        ) from None


@functools.cache
def config_class(task_config: type | None) -> type:
    """The dataclass of a whole run config: the common sections plus a task's own; one class per task.

    Its instances pickle (spawned worker processes get the module that holds one) by naming
    the task's config class, from which ``config_class`` builds this class again.
    """
    fields = []
    for section in (CommonConfig, task_config) if task_config is not None else (CommonConfig,):
        hints = typing.get_type_hints(section)  # real types, also under `from __future__ import annotations`
        fields += [(f.name, hints[f.name], f) for f in dataclasses.fields(section)]
    namespace = {"task_config": task_config, "__reduce__": _reduce_config}
    cls = dataclasses.make_dataclass("Config", fields, namespace=namespace)
    cls.__module__ = __name__
    return cls


def _reduce_config(cfg) -> tuple:
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return _rebuild_config, (cfg.task_config, values)


def _rebuild_config(task_config: type | None, values: dict[str, Any]) -> Any:
    return config_class(task_config)(**values)


def compose(schema: DictConfig, sources: list[Source]) -> DictConfig:
    """Merge sources into the schema one at a time, so each error names its source; then resolve."""
    _check_required(sources)
    cfg = schema
    for s in sources:
        try:
            cfg = OmegaConf.merge(cfg, s.data)
        except OmegaConfBaseException as e:
            raise ConfigError(_describe(e, cfg, s.label)) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, cfg, "interpolation")) from None
    _check_finite(cfg, sources)
    _check_trainer(cfg.trainer, sources)
    return cfg


def _check_required(sources: list[Source]) -> None:
    """A key a file leaves ``???`` (OmegaConf's missing value: a recipe's data paths) must be set by a later source;
    merging ``???`` keeps the value before it, so without this check the key would quietly keep its default."""
    required: dict[str, str] = {}
    for s in sources:
        for key, value in _leaves(OmegaConf.to_container(s.data), ""):
            if value == "???":
                required[key] = s.label
            else:
                required.pop(key, None)
    if required:
        key, label = next(iter(required.items()))
        raise ConfigError(f"{key}: required, and not set: {label} leaves it ??? for you to give; "
                          f"add {key}=... to the command line (or set it in a -c file after that one)")


def _check_finite(cfg: DictConfig, sources: list[Source]) -> None:
    """No number of any section is nan or infinite: no key gives them a meaning."""
    for key, value in _leaves(OmegaConf.to_container(cfg), ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value} (in {source_of(key, sources)})")


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Every value that is not a mapping or a list, with its dotted key (``optim.betas[0]``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, _join(key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, value


def _describe(e: OmegaConfBaseException, cfg: DictConfig, label: str) -> str:
    key = getattr(e, "full_key", None) or "?"
    if type(e).__name__ == "ConfigKeyError" and "not in" in str(e):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        options = list(node.keys()) if isinstance(node, DictConfig) else []
        return f"unknown key '{key}' in {label}.{_did_you_mean(leaf, options)}"
    return f"{key}: {_short(e)} (in {label})"


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=3, cutoff=0.6)
    if close:
        return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if options:
        return " Valid keys here: " + ", ".join(str(o) for o in options) + "."
    return ""


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def _check_trainer(trainer: DictConfig, sources: list[Source]) -> None:
    """Every ``trainer.*`` key must be an argument of ``lightning.Trainer``."""
    from lightning import Trainer

    valid = [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
    hints = typing.get_type_hints(Trainer.__init__)
    for key, value in OmegaConf.to_container(trainer).items():
        label = next((s.label for s in reversed(sources) if "trainer" in s.data and key in s.data.trainer), "the defaults")
        if key in _OWNED_TRAINER_KEYS:
            raise ConfigError(f"trainer.{key} (in {label}) is set by lmtemplate itself; see docs/configs.md.")
        if key not in valid:
            raise ConfigError(
                f"unknown key 'trainer.{key}' in {label}: not an argument of lightning.Trainer."
                + _did_you_mean(str(key), valid)
            )
        if key in hints and not _accepts(hints[key], value):
            raise ConfigError(f"trainer.{key}: expected {_type_name(hints[key])}, got {value!r} (in {label})"
                              + _number_hint(value, hints[key]))


def _accepts(t: Any, value: Any) -> bool:
    """Whether ``value``, as YAML or the command line gives it, has the type ``t`` (an annotation of lightning.Trainer).

    A Literal takes any value of its members' types: which of them is Lightning's to check, with its own message.
    """
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Union:
        return any(_accepts(a, value) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) for a in args)
    if t in (int, float) and isinstance(value, bool):
        return False
    if t is float:
        return isinstance(value, (int, float))
    if t is type(None):
        return value is None
    if origin is dict:
        return isinstance(value, dict) and all(_accepts(args[0], k) and _accepts(args[1], v) for k, v in value.items())
    if args and isinstance(value, list):  # list[...], Iterable[...]
        return issubclass(list, origin) and all(_accepts(args[0], v) for v in value)
    try:
        return isinstance(value, origin or t)
    except TypeError:  # an annotation that is not a class: not ours to check
        return True


def _type_name(t: Any) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Union:
        return " or ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin is typing.Literal:
        return " or ".join(dict.fromkeys(type(a).__name__ for a in args))
    if t is type(None):
        return "null"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(t, "__name__", str(t))


def _number_hint(value: Any, t: Any) -> str:
    """What to write instead of a number that YAML read as text (1e3, "5"), or a whole float where an int is expected."""
    try:
        number = float(value) if isinstance(value, (str, float)) else math.nan
    except ValueError:
        return ""
    suggestion = int(number) if number.is_integer() and _accepts(t, int(number)) else number
    if not math.isfinite(number) or not _accepts(t, suggestion):
        return ""
    if isinstance(value, str):
        return (f"; YAML reads {value!r} as text, not a number (it is quoted, or an exponent without a dot and a "
                f"sign such as 1e3): write {suggestion}")
    return f"; write {suggestion}"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: ``{"model": {"n_layer": 4}}`` -> ``{"model.n_layer": 4}``."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML, exactly as a run saves it."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_object(cfg: DictConfig, sources: list[Source] = ()) -> Any:
    """The config as dataclass instances, running each section's ``__post_init__`` checks.

    A check's error starts with the key it is about; the source that set that key is added.
    """
    try:
        return OmegaConf.to_object(cfg)
    except (ConfigError, ValueError, OmegaConfBaseException) as e:
        raise located(_checked_message(e), sources) from None


def located(message: str, sources: list[Source]) -> ConfigError:
    """A check's message, which starts with the key it is about, with the source that set that key."""
    return ConfigError(f"{message} (in {source_of(message.split(':', 1)[0], sources)})")


def _checked_message(e: Exception) -> str:
    """The message of a section's ``__post_init__`` check (ConfigError or ValueError), as the check wrote it.

    OmegaConf wraps the check's error in one of its own, or raises it again with ``full_key:`` lines added;
    the check's own error is then the one underneath.
    """
    inner = e.__cause__ or e.__context__
    rewrapped = type(inner) is type(e) and str(e).startswith(str(inner))
    check = inner if isinstance(e, OmegaConfBaseException) or rewrapped else e
    if isinstance(check, (ConfigError, ValueError)) and not isinstance(check, OmegaConfBaseException):
        return str(check)
    return f"{getattr(e, 'full_key', None) or '?'}: {_short(e)}"


def source_of(key: str, sources: list[Source]) -> str:
    """The label of the last source that set ``key`` (a dotted path), or "the defaults"."""
    for s in reversed(sources):
        if OmegaConf.select(s.data, key, default=None, throw_on_missing=False) is not None:
            return s.label
    return "the defaults"
