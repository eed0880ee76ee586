"""Checkpoint files: atomic saves, weights_only loads, and clear errors for files that are not whole checkpoints."""

import io
import os
import pickle
import re
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from lmtemplate.checkpointing import AtomicCheckpointIO
from lmtemplate.cli import main
from lmtemplate.config import ConfigError
from lmtemplate.files import atomic_write_text
from test_run import TINY


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository's ./plugins


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 5-step TINY run's root; its last.ckpt is a real Lightning checkpoint."""
    root = tmp_path_factory.mktemp("trained") / "outputs"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root.parent)
        assert main(["fit", *TINY, "trainer.max_steps=5", "optim.decay_steps=5", f"run.root={root}"]) == 0
    return root


def last(root: Path) -> Path:
    return root / "tiny/version_0/checkpoints/last.ckpt"


def test_a_crash_while_saving_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(100)}}, path)
    good = path.read_bytes()
    real_save = torch.save

    def crash_half_way(obj, f):
        data = io.BytesIO()
        real_save(obj, data)
        f.write(data.getvalue()[: len(data.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(100)}}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    """0644 under umask 022, like any file the user's tools write: not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"config.yaml": "0o644", "last.ckpt": "0o644"}


def test_a_runs_files_get_the_mode_the_umask_gives(trained):
    umask = os.umask(0)
    os.umask(umask)
    run = trained / "tiny/version_0"
    files = [run / "config.yaml", run / "tokenizer.json", run / "metrics.json", *run.glob("checkpoints/*.ckpt")]
    assert len(files) > 4
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o666 & ~umask for p in files}


def test_lightning_loads_checkpoints_with_weights_only(trained, monkeypatch, capsys):
    calls = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        calls.append((Path(f), kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert main(["validate", "run.name=tiny", f"run.root={trained}", "--ckpt", "last"]) == 0
    assert "val/loss" in capsys.readouterr().out
    # mmap reads of its record (which file is last) and of its shapes (do they fit the config), then the load
    assert len(calls) == 3 and set(calls) == {(last(trained), True)}


class Opaque:
    pass


class RunsCode:
    """A pickle that would run a shell command when loaded without weights_only."""

    def __reduce__(self):
        return os.system, ("echo this never runs",)


def write_truncated(path, checkpoint):
    path.write_bytes(checkpoint.read_bytes()[:5000])


@pytest.mark.parametrize(
    "write, problem",
    [
        (write_truncated, "the file is truncated or corrupted"),
        (lambda path, _: path.write_bytes(b""), "the file is empty"),
        (lambda path, _: path.write_text("epoch: 3\n"), "not a PyTorch checkpoint file"),
        (lambda path, _: path.write_bytes(pickle.dumps({"a": 1})), "not a PyTorch checkpoint file"),
        (lambda path, _: torch.save(OrderedDict(w=torch.ones(2)), path), "a PyTorch file but not a Lightning checkpoint"),
        (lambda path, _: torch.save({"state_dict": {}, "x": Opaque()}, path), "refuses to rebuild, as loading it could run "
         "code (Unsupported global: GLOBAL test_checkpointing.Opaque"),
        (lambda path, _: torch.save({"state_dict": {}, "x": RunsCode()}, path), "refuses to rebuild, as loading it "
         "could run code (Trying to load unsupported GLOBAL posix.system whose module posix is blocked)"),
    ],
    ids=["truncated", "empty", "text", "pickle", "state-dict", "object", "blocked-module"],
)
def test_files_that_are_not_whole_checkpoints_are_config_errors(trained, tmp_path, write, problem):
    path = tmp_path / "bad.ckpt"
    write(path, last(trained))
    with pytest.raises(ConfigError, match=re.escape(f"checkpoint {path}: ") + ".*" + re.escape(problem)):
        AtomicCheckpointIO().load_checkpoint(path)


@pytest.mark.parametrize("verb", ["fit", "validate", "test", "predict"])
def test_every_verb_reports_a_bad_checkpoint_and_exits_2(trained, tmp_path, capsys, verb):
    root = tmp_path / "outputs"
    shutil.copytree(trained, root)
    bad = last(root)
    write_truncated(bad, last(trained))
    extra = ["--prompt", "the"] if verb == "predict" else []
    assert main([verb, "run.name=tiny", f"run.root={root}", "--ckpt", str(bad), *extra]) == 2
    err = capsys.readouterr().err
    assert f"lmtemplate: error: checkpoint {bad}: the file is truncated or corrupted" in err and "Traceback" not in err


def test_last_checkpoint_is_current_when_validation_does_not_improve(tmp_path, monkeypatch):
    """Lightning's save_last alone would leave last.ckpt at the last improving validation (step 4 here)."""
    monkeypatch.chdir(tmp_path)
    frozen = ["optim.lr=1e-12", "optim.min_lr=1e-12", "trainer.max_steps=14", "trainer.val_check_interval=4"]
    assert main(["fit", *TINY, *frozen]) == 0
    folder = tmp_path / "outputs/tiny/version_0/checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 14  # after the last validation (12)
    (best,) = folder.glob("best-*.ckpt")
    assert best.name == "best-4.ckpt"  # the loss never improved after the first validation
