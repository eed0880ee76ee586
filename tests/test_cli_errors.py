"""The command line turns a ConfigError into exit code 2 and a short message, without a traceback."""

import subprocess
import sys

import pytest

from lmtemplate.cli import EXIT_CONFIG, main

pytestmark = pytest.mark.usefixtures("clean_registry")

FILES = {
    "typo.yaml": "model:\n  n_layr: 2\n",
    "trainer.yaml": "trainer:\n  max_step: 5\n",
    "owned.yaml": "trainer:\n  logger: false\n",
    "orphan.yaml": "extends: gone.yaml\n",
    "a.yaml": "extends: b.yaml\n",
    "b.yaml": "extends: a.yaml\n",
    "broken.yaml": "model:\n  n_layer: [1\n  n_head: 2\n",
    "badplugin.yaml": "plugins: [nothere.py]\n",
}

CASES = {
    # id: (argv, a substring of the message)
    "unknown key in a file": (["config", "-c", "typo.yaml"], "unknown key 'model.n_layr' in typo.yaml"),
    "unknown key on the command line": (["config", "model.n_layr=3"], "unknown key 'model.n_layr' in the command line"),
    "wrong type": (["config", "model.n_layer=abc"], "model.n_layer"),
    "unknown trainer key": (["config", "-c", "trainer.yaml"], "'trainer.max_step' in trainer.yaml"),
    "owned trainer key": (["config", "-c", "owned.yaml"], "trainer.logger (in owned.yaml)"),
    "missing file": (["config", "-c", "nope.yaml"], "config file not found: nope.yaml"),
    "missing parent": (["config", "-c", "orphan.yaml"], "gone.yaml (named in extends: of"),
    "extends cycle": (["config", "-c", "a.yaml"], "extends cycle"),
    "invalid YAML": (["config", "-c", "broken.yaml"], "broken.yaml, line"),
    "glob matching nothing": (["config", "data.train=nothing/*.txt"], "data.train: no file matches"),
    "override without '='": (["config", "model.n_layer"], "expected key=value"),
    "unknown task": (["config", "task=nosuch"], "unknown task 'nosuch'"),
    "missing plugin file": (["config", "-c", "badplugin.yaml"], "nothere.py"),
    "tasks verb, missing file": (["tasks", "-c", "nope.yaml"], "config file not found: nope.yaml"),
    "predict, missing input": (["predict", "--input", "nope.txt"], "--input: file not found: nope.txt"),
}


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_config_error_exits_2_without_traceback(cwd, capsys, case):
    argv, expected = CASES[case]
    assert main(argv) == EXIT_CONFIG == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("lmtemplate: error: ")
    assert expected in err
    assert err.count("\n") == 1  # one line


def test_debug_shows_the_traceback(cwd, capsys):
    assert main(["config", "--debug", "model.n_layr=3"]) == 2
    _, err = capsys.readouterr()
    assert "Traceback (most recent call last)" in err
    assert "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("lmtemplate: error: unknown key 'model.n_layr'")


def test_config_verb_succeeds(cwd, capsys):
    assert main(["config", "run.name=ok"]) == 0
    out, err = capsys.readouterr()
    assert "name: ok" in out and err == ""


def test_subprocess_exit_code_and_stderr(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lmtemplate", "config", "model.n_layr=3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "lmtemplate: error: unknown key 'model.n_layr' in the command line. Did you mean 'n_layer'?" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
