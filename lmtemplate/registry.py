"""The task registry: the only place that maps task names to code.

A task is a LightningModule class registered with ``@register_task(name,
config=..., datamodule=...)``. Built-in tasks register exactly like plugins.
Tasks are found in three places, loaded in this order:

1. built-in: the modules of ``lmtemplate.tasks``;
2. files: every ``*.py`` file (or package folder) in ``./plugins``, plus the
   files, folders or importable module names listed under the config's
   ``plugins:`` key;
3. installed packages: entry points in the group ``lmtemplate.tasks``.

Two different classes under one name is an error that names both sources.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lmtemplate.config import ConfigError

ENTRY_POINT_GROUP = "lmtemplate.tasks"
PLUGIN_FOLDER = Path("plugins")
PLUGIN_PACKAGE = "lmtemplate_plugins"  # plugin files are imported as its modules
PLUGIN_PATH_ENV = "LMTEMPLATE_PLUGIN_PATH"  # its folders, for processes that unpickle plugin classes (ddp_spawn)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: type  # the LightningModule class; built as module(cfg, datamodule)
    datamodule: type  # the LightningDataModule class; built as datamodule(cfg)
    config: type  # dataclass whose fields are the task's config sections
    source: str  # where the registration came from, for `tasks` and errors


_TASKS: dict[str, TaskSpec] = {}
_loading: list[str] = []  # the source being loaded right now (a stack)
_loaded_sources: set[str] = set()


def register_task(name: str, *, config: type, datamodule: type):
    """Class decorator: register a LightningModule as the task ``name``."""

    def decorator(cls: type) -> type:
        from lmtemplate.tasks.base import Task

        builtin = cls.__module__.startswith("lmtemplate.tasks.")
        source = _loading[-1] if _loading else "built-in" if builtin else f"module {cls.__module__}"
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigError(f"register_task('{name}') in {source}: {getattr(cls, '__qualname__', cls)} must extend "
                              "lmtemplate.Task, which declares the hooks the run calls (see docs/writing-a-task.md)")
        spec = TaskSpec(name, cls, datamodule, config, source)
        old = _TASKS.get(name)
        if old is not None and not _same_class(old.module, cls):
            raise ConfigError(
                f"two tasks are registered under the name '{name}': {old.module.__qualname__} from {old.source}, "
                f"and {cls.__qualname__} from {source}. Rename one of them."
            )
        _TASKS[name] = spec
        return cls

    return decorator


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def get_task(name: str) -> TaskSpec:
    if name not in _TASKS:
        import difflib

        close = difflib.get_close_matches(name, list(_TASKS), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown task '{name}' (key 'task'). Registered tasks: {', '.join(sorted(_TASKS))}.{hint} "
            "Run `python -m lmtemplate tasks` to see where each comes from."
        )
    return _TASKS[name]


def all_tasks() -> dict[str, TaskSpec]:
    return dict(sorted(_TASKS.items()))


@contextlib.contextmanager
def _source(label: str, target: Path | str | None = None) -> Iterator[None]:
    """Load a plugin (``target``: its file or module name) as ``label``; what its import raises becomes a ConfigError.

    SystemExit and KeyboardInterrupt raised while it loads too (BaseException): a plugin that exits must not end
    the verb as if it had finished (exit 0), nor one that interrupts with a traceback. A Ctrl-C pressed while a
    plugin loads reads the same, which is no loss: the verb stops with exit 2 before any work.
    """
    _loading.append(label)
    try:
        yield
    except ConfigError:
        raise
    except BaseException as e:
        if isinstance(target, str) and _is_missing(target, e):
            raise ConfigError(
                f"plugins: '{target}' is not a file or folder (relative to {Path.cwd()}), nor a module that "
                "Python can import; list a .py file, a folder of them, or an installed module's name"
            ) from None
        frames = traceback.extract_tb(e.__traceback__)
        # The plugin's own line, not the library frame the error surfaced in.
        mine = [f for f in frames if isinstance(target, Path) and Path(f.filename).is_relative_to(target)]
        if isinstance(e, SyntaxError) and e.filename:
            filename, lineno = e.filename, e.lineno
        else:
            filename, lineno = (mine or frames)[-1].filename, (mine or frames)[-1].lineno
        what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        exits = " (a plugin must not exit or stop the program while it loads)" if not isinstance(e, Exception) else ""
        raise ConfigError(f"could not load {label}: {what} (at {filename}, line {lineno}){exits}") from None
    finally:
        _loading.pop()


def load_tasks(plugins: list[str] = (), base_dir: Path | None = None) -> dict[str, TaskSpec]:
    """Load built-in tasks, plugin files and entry points; return the registry.

    ``plugins`` entries are file or folder paths (relative to ``base_dir``) or
    importable module names. Loading is idempotent, so it is safe to call in
    every process of a distributed run.
    """
    load_builtin()
    base_dir = base_dir or Path.cwd()
    targets: list[Path | str] = []
    if (Path.cwd() / PLUGIN_FOLDER).is_dir():
        targets += _plugin_files(Path.cwd() / PLUGIN_FOLDER)
    for entry in plugins:
        path = (base_dir / entry).expanduser()
        if path.is_dir():
            targets += _plugin_files(path)
        elif path.suffix == ".py" or path.exists():
            if not path.is_file():
                raise ConfigError(f"plugins: file not found: {path} (listed under the config's 'plugins:' key)")
            targets.append(path)
        else:
            targets.append(entry)  # an importable module name
    for target in targets:
        _load_plugin(target)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
        label = f"package {dist} (entry point {ep.name} = {ep.value})"
        if label in _loaded_sources:
            continue
        with _source(label):
            ep.load()
        _loaded_sources.add(label)
    return all_tasks()


def load_builtin() -> None:
    """Import every module of ``lmtemplate.tasks``: each registers its task."""
    import lmtemplate.tasks

    for module in pkgutil.iter_modules(lmtemplate.tasks.__path__):
        importlib.import_module(f"lmtemplate.tasks.{module.name}")


def _plugin_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")]
    packages = [p for p in sorted(folder.iterdir()) if (p / "__init__.py").is_file()]
    return files + packages


def _load_plugin(target: Path | str) -> None:
    if isinstance(target, str):
        label = f"module {target}"
    else:
        target = target.resolve()
        label = f"plugin file {_relative(target)}"
    if label in _loaded_sources:
        return
    with _source(label, target):
        if isinstance(target, str):
            importlib.import_module(target)
        else:
            _import_file(target)
    _loaded_sources.add(label)


def _is_missing(module: str, error: Exception) -> bool:
    """Whether importing ``module`` failed because it (or a package above it) does not exist, not a module it imports."""
    name = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    return name is not None and (module == name or module.startswith(f"{name}."))


def _import_file(path: Path) -> None:
    """Import a plugin file or package folder under ``lmtemplate_plugins.<name>``.

    The module goes into ``sys.modules`` and its folder onto the package's path,
    so that its classes pickle and spawned worker processes can import them.
    """
    name = f"{PLUGIN_PACKAGE}.{path.stem if path.is_file() else path.name}"
    location = path if path.is_file() else path / "__init__.py"
    _add_plugin_folder(path.parent)
    if name in sys.modules:
        other = getattr(sys.modules[name], "__file__", None)
        if other is not None and Path(other).resolve() != location.resolve():
            raise ConfigError(
                f"two plugins share the module name {name}: {_relative(Path(other))} and {_relative(location)}. "
                "Rename one of them."
            )
        return
    spec = importlib.util.spec_from_file_location(name, location)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _plugin_package() -> types.ModuleType:
    """The package ``lmtemplate_plugins``: a namespace whose path holds the folders of plugin files.

    It exists from the moment lmtemplate is imported, with the folders the parent process
    passed down in PLUGIN_PATH_ENV, so a spawned process unpickles plugin classes by importing them.
    """
    package = sys.modules.get(PLUGIN_PACKAGE)
    if package is None:
        package = types.ModuleType(PLUGIN_PACKAGE, "Task plugins loaded from files (see lmtemplate.registry).")
        package.__path__ = [p for p in os.environ.get(PLUGIN_PATH_ENV, "").split(os.pathsep) if p]
        sys.modules[PLUGIN_PACKAGE] = package
    return package


def _add_plugin_folder(folder: Path) -> None:
    package = _plugin_package()
    if str(folder) not in package.__path__:
        package.__path__.append(str(folder))
        os.environ[PLUGIN_PATH_ENV] = os.pathsep.join(package.__path__)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_plugin_package()
