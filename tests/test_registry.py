"""Tests for the task registry: plugin files and folders, entry points, and their errors."""

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmtemplate.config import ConfigError
from lmtemplate.registry import PLUGIN_PATH_ENV, load_tasks
from lmtemplate.run import load_config

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("clean_registry")


def plugin_source(task: str, cls: str = "MyTask", extra: str = "") -> str:
    """A minimal plugin, shaped like plugins/bigram_lm.py."""
    return textwrap.dedent(f"""\
        from dataclasses import dataclass, field

        from lmtemplate import Task, register_task
        from lmtemplate.data.lm import TextDataModule


        @dataclass
        class ModelConfig:
            width: int = 8


        @dataclass
        class {cls}Config:
            model: ModelConfig = field(default_factory=ModelConfig)


        @register_task("{task}", config={cls}Config, datamodule=TextDataModule)
        class {cls}(Task):
            pass
        """) + extra


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_plugin_file_in_plugins_folder_is_found(tmp_path, monkeypatch):
    write(tmp_path / "plugins/my_task.py", plugin_source("my_task"))
    write(tmp_path / "plugins/_helper.py", "raise RuntimeError('files starting with _ are not plugins')\n")
    monkeypatch.chdir(tmp_path)
    tasks = load_tasks()
    assert tasks["my_task"].source == "plugin file plugins/my_task.py"
    assert tasks["my_task"].module.__name__ == "MyTask"
    assert tasks["my_task"].module.__module__ == "lmtemplate_plugins.my_task"
    assert sys.modules["lmtemplate_plugins.my_task"].MyTask is tasks["my_task"].module  # picklable by reference
    assert tasks["causal_lm"].module.__module__ == "lmtemplate.tasks.causal_lm"  # built-ins are still there
    assert "bigram_lm" not in tasks  # the repo's ./plugins is not the cwd's


def test_loading_twice_imports_once(tmp_path, monkeypatch):
    counter = tmp_path / "imports.txt"
    extra = f"\nwith open({str(counter)!r}, 'a') as f:\n    f.write('x')\n"
    write(tmp_path / "plugins/my_task.py", plugin_source("my_task", extra=extra))
    monkeypatch.chdir(tmp_path)
    first = load_tasks()
    second = load_tasks()
    assert first == second
    assert counter.read_text() == "x"


def test_plugin_file_listed_in_config(tmp_path, monkeypatch):
    other = write(tmp_path / "elsewhere/listed_task.py", plugin_source("listed_task"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert "listed_task" not in load_tasks()
    tasks = load_tasks(["../elsewhere/listed_task.py"])
    assert Path(tasks["listed_task"].source.removeprefix("plugin file ")).resolve() == other.resolve()


def test_plugin_listed_in_config_file_selects_task_and_schema(tmp_path, monkeypatch):
    write(tmp_path / "elsewhere/listed_task.py", plugin_source("listed_task"))
    write(tmp_path / "work/exp.yaml", "plugins: [../elsewhere/listed_task.py]\ntask: listed_task\nmodel:\n  width: 3\n")
    monkeypatch.chdir(tmp_path / "work")
    loaded = load_config(["exp.yaml"], [])
    assert loaded.task.name == "listed_task"
    assert loaded.cfg.model.width == 3
    with pytest.raises(ConfigError, match="'model.widht' in the command line. Did you mean 'width'"):
        load_config(["exp.yaml"], ["model.widht=4"])


def test_plugin_folder_listed_in_config(tmp_path, monkeypatch):
    folder = tmp_path / "more"
    write(folder / "one.py", plugin_source("task_one", "One"))
    write(folder / "two.py", plugin_source("task_two", "Two"))
    write(folder / "pkgtask/__init__.py", plugin_source("task_pkg", "Pkg"))
    write(folder / "_private.py", "raise RuntimeError('not a plugin')\n")
    monkeypatch.chdir(tmp_path)
    tasks = load_tasks(["more"])
    assert tasks["task_one"].source == "plugin file more/one.py"
    assert tasks["task_two"].source == "plugin file more/two.py"
    assert tasks["task_pkg"].source == "plugin file more/pkgtask"
    assert tasks["task_pkg"].module.__module__ == "lmtemplate_plugins.pkgtask"


def test_missing_plugin_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"plugins: file not found: .*nothere\.py"):
        load_tasks(["nothere.py"])


def test_missing_plugin_file_named_in_config(tmp_path, monkeypatch):
    write(tmp_path / "exp.yaml", "plugins: [nothere.py]\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"nothere\.py.*'plugins:'"):
        load_config(["exp.yaml"], [])


def test_entry_point_of_installed_package(tmp_path, monkeypatch, request):
    write(tmp_path / "lmt_ext_pkg/__init__.py", plugin_source("ext_task", "ExtTask"))
    dist = tmp_path / "lmt_ext_pkg-0.1.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: lmt_ext_pkg\nVersion: 0.1\n")
    write(dist / "entry_points.txt", "[lmtemplate.tasks]\next_task = lmt_ext_pkg\n")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    request.addfinalizer(lambda: sys.modules.pop("lmt_ext_pkg", None))
    assert "ext_task" not in load_tasks()
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    spec = load_tasks()["ext_task"]
    assert spec.source.startswith("package lmt_ext_pkg 0.1")
    assert "entry point ext_task = lmt_ext_pkg" in spec.source
    assert spec.module.__module__ == "lmt_ext_pkg"


def test_entry_point_that_fails_to_import(tmp_path, monkeypatch, request):
    write(tmp_path / "lmt_bad_pkg/__init__.py", "raise ImportError('needs a missing dependency')\n")
    dist = tmp_path / "lmt_bad_pkg-0.2.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: lmt_bad_pkg\nVersion: 0.2\n")
    write(dist / "entry_points.txt", "[lmtemplate.tasks]\nbad = lmt_bad_pkg\n")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    request.addfinalizer(lambda: sys.modules.pop("lmt_bad_pkg", None))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(ConfigError, match=r"package lmt_bad_pkg 0\.2.*needs a missing dependency"):
        load_tasks()


def test_duplicate_task_name_names_both_sources(tmp_path, monkeypatch):
    write(tmp_path / "plugins/dup_a.py", plugin_source("dup", "TaskA"))
    write(tmp_path / "plugins/dup_b.py", plugin_source("dup", "TaskB"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_tasks()
    message = str(info.value)
    assert "'dup'" in message
    assert "TaskA from plugin file plugins/dup_a.py" in message
    assert "TaskB from plugin file plugins/dup_b.py" in message


def test_duplicate_of_a_built_in_task(tmp_path, monkeypatch):
    write(tmp_path / "plugins/mine.py", plugin_source("causal_lm", "Mine"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'causal_lm'.*CausalLM from .*, and Mine from plugin file plugins/mine\.py"):
        load_tasks()


def test_two_plugin_files_with_one_module_name(tmp_path, monkeypatch):
    write(tmp_path / "plugins/clash.py", plugin_source("clash_one", "One"))
    write(tmp_path / "other/clash.py", plugin_source("clash_two", "Two"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"plugins/clash\.py.*other/clash\.py"):
        load_tasks(["other/clash.py"])  # must not be skipped silently


def test_plugin_raising_on_import_names_file_and_line(tmp_path, monkeypatch):
    write(tmp_path / "plugins/broken.py", "import os\n\n\nraise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_tasks()
    message = str(info.value)
    assert "plugin file plugins/broken.py" in message
    assert "RuntimeError: boom" in message
    assert f"{tmp_path.resolve() / 'plugins/broken.py'}, line 4" in message
    assert "lmtemplate_plugins.broken" not in sys.modules  # a failed import leaves nothing half-loaded


def test_plugin_error_inside_a_library_names_the_plugins_line(tmp_path, monkeypatch):
    write(tmp_path / "plugins/deep.py", "import json\n\nconfig = json.loads('{not json')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"JSONDecodeError.*plugins/deep\.py, line 3\)"):
        load_tasks()


def test_plugin_with_syntax_error_names_file_and_line(tmp_path, monkeypatch):
    write(tmp_path / "plugins/syn.py", "x = 1\ny = (\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"SyntaxError.*\(at .*plugins/syn\.py, line 2\)"):
        load_tasks()


@pytest.mark.parametrize("stop", ["sys.exit(0)", "raise KeyboardInterrupt", "raise SystemExit('bye')"])
@pytest.mark.parametrize("kind", ["plugins folder", "module name", "entry point"])
def test_a_plugin_that_exits_while_it_loads_is_an_error_naming_it(tmp_path, monkeypatch, request, kind, stop):
    """Not exit 0 with nothing done, nor a traceback: the verb stops with a ConfigError (exit 2) naming the plugin."""
    write(tmp_path / "lmt_quit/__init__.py" if kind != "plugins folder" else tmp_path / "work/plugins/lmt_quit.py",
          f"import sys\n\n{stop}\n")
    if kind == "entry point":
        write(tmp_path / "lmt_quit-0.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: lmt_quit\nVersion: 0.3\n")
        write(tmp_path / "lmt_quit-0.3.dist-info/entry_points.txt", "[lmtemplate.tasks]\nquit = lmt_quit\n")
    (tmp_path / "work").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    request.addfinalizer(lambda: sys.modules.pop("lmt_quit", None))
    label = {"plugins folder": "plugin file plugins/lmt_quit.py", "module name": "module lmt_quit",
             "entry point": "package lmt_quit 0.3 (entry point quit = lmt_quit)"}[kind]
    with pytest.raises(ConfigError) as info:
        load_tasks(["lmt_quit"] if kind == "module name" else [])
    what = {"sys.exit(0)": "SystemExit: 0", "raise KeyboardInterrupt": "KeyboardInterrupt (at",
            "raise SystemExit('bye')": "SystemExit: bye"}[stop]
    assert str(info.value).startswith(f"could not load {label}: {what}")
    assert "lmt_quit" in str(info.value).split("(at ")[1] and "line 3)" in str(info.value)
    assert "lmt_quit" not in sys.modules and "lmtemplate_plugins.lmt_quit" not in sys.modules


def test_tasks_verb_lists_built_in_and_repo_plugin():
    proc = subprocess.run(
        [sys.executable, "-m", "lmtemplate", "tasks"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert rows["causal_lm"].endswith("[built-in]")
    assert "lmtemplate.tasks.causal_lm.CausalLM" in rows["causal_lm"]
    assert rows["bigram_lm"].endswith("[plugin file plugins/bigram_lm.py]")
    assert "lmtemplate_plugins.bigram_lm.BigramLM" in rows["bigram_lm"]


def test_plugin_classes_and_configs_pickle_for_spawned_processes(tmp_path, monkeypatch):
    """ddp_spawn pickles the task module with its config; a fresh process unpickles both by importing the plugin."""
    monkeypatch.delenv(PLUGIN_PATH_ENV, raising=False)
    write(tmp_path / "plugins/my_task.py", plugin_source("my_task"))
    monkeypatch.chdir(tmp_path)
    loaded = load_config([], ["task=my_task", "model.width=5"])
    blob = pickle.dumps((loaded.task.module, loaded.cfg))
    assert pickle.loads(blob) == (loaded.task.module, loaded.cfg)
    code = "import lmtemplate, pickle, sys; cls, cfg = pickle.loads(sys.stdin.buffer.read()); print(cls.__module__, cfg.model.width)"
    proc = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path.parent,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["lmtemplate_plugins.my_task", "5"]
