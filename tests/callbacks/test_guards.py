"""The run guards end to end: a real SIGTERM / SIGINT sent to `python -m lmtemplate fit`, and a nan loss in process."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmtemplate.cli import main
from lmtemplate.tasks.causal_lm import CausalLM
from test_run import TINY  # 30 steps, validation (and so a checkpoint) every 5

RUN = Path("outputs/tiny/version_0")
LAST = RUN / "checkpoints" / "last.ckpt"
INTERRUPTED = re.compile(
    r"lmtemplate: interrupted at step (\d+) by (SIG\w+); checkpoint saved to (\S+); resume with: (python -m lmtemplate fit .*)"
)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)  # bitwise-repeatable runs, like the subprocesses (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights after the 30 TINY steps in one go."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("uninterrupted"))  # away from the repository's ./plugins
        torch.set_num_threads(1)
        assert main(["fit", *TINY]) == 0
        return torch.load(LAST, weights_only=True)["state_dict"]


def handlers() -> dict:
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def interrupt(signum: int, tmp_path: Path) -> tuple[int, re.Match]:
    """Start a 400-step fit, send it ``signum`` once its first checkpoint (step 5) is written; its exit code and message."""
    err = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "lmtemplate", "fit", *TINY, "trainer.max_steps=400"]
    with open(err, "w") as stderr:
        proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not LAST.exists():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    text = err.read_text()
    found = INTERRUPTED.search(text)
    assert found and "Traceback" not in text, text
    return code, found


def assert_resumes_exactly(resume_argv: list[str], uninterrupted: dict[str, torch.Tensor]) -> None:
    before = handlers()
    assert main([*resume_argv, "trainer.max_steps=30"]) == 0
    assert handlers() == before  # restored after a normal end
    resumed = torch.load(LAST, weights_only=True)
    assert resumed["global_step"] == 30
    assert all(torch.equal(resumed["state_dict"][k], w) for k, w in uninterrupted.items())


def test_sigterm_saves_last_ckpt_at_a_batch_end_and_the_resumed_run_matches(tmp_path, uninterrupted):
    code, found = interrupt(signal.SIGTERM, tmp_path)
    step = int(found[1])
    assert code == 143 and found[2] == "SIGTERM"
    assert Path(found[3]) == LAST.resolve()
    assert 5 <= step < 30 and torch.load(LAST, weights_only=True)["global_step"] == step
    assert_resumes_exactly(["fit", "--ckpt", "last", "run.name=tiny", "run.version=0"], uninterrupted)
    assert not Path("outputs/tiny/version_1").exists()


def test_ctrl_c_saves_last_ckpt_and_the_printed_command_resumes(tmp_path, uninterrupted):
    code, found = interrupt(signal.SIGINT, tmp_path)
    assert code == 130 and found[2] == "SIGINT"
    assert torch.load(LAST, weights_only=True)["global_step"] == int(found[1]) > 0
    assert_resumes_exactly(shlex.split(found[4])[3:], uninterrupted)  # after "python -m lmtemplate"


def test_a_signal_mid_accumulation_stops_after_the_optimizer_step(monkeypatch, capsys):
    train = CausalLM.training_step

    def signalled(self, batch, batch_idx):
        if batch_idx == 4:  # the 5th batch: the first half of the 3rd optimizer step
            os.kill(os.getpid(), signal.SIGTERM)
        return train(self, batch, batch_idx)

    monkeypatch.setattr(CausalLM, "training_step", signalled)
    assert main(["fit", *TINY, "trainer.accumulate_grad_batches=2"]) == 143
    assert "interrupted at step 3 by SIGTERM" in capsys.readouterr().err
    assert torch.load(LAST, weights_only=True)["global_step"] == 3


def test_a_nan_loss_stops_the_run_before_any_checkpoint_takes_its_weights(monkeypatch, capsys):
    train = CausalLM.training_step

    def poisoned(self, batch, batch_idx):
        loss = train(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 12 else loss  # the 13th step

    monkeypatch.setattr(CausalLM, "training_step", poisoned)
    before = handlers()
    assert main(["fit", *TINY]) == 3
    assert handlers() == before  # restored after an exception
    err = capsys.readouterr().err
    assert f"lmtemplate: non-finite loss (nan) at step 13; stopped. The last good checkpoint is {LAST.resolve()}." in err
    assert "Traceback" not in err
    assert torch.load(LAST, weights_only=True)["global_step"] == 10  # the checkpoint of the validation at step 10
    for path in RUN.glob("checkpoints/*"):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["global_step"] <= 10 and all(w.isfinite().all() for w in ckpt["state_dict"].values())
    assert not (RUN / "metrics.json").exists()
