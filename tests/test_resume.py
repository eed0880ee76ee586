"""A run stopped anywhere and resumed from its last.ckpt ends bitwise where the uninterrupted run does.

Each test trains one run in one go and one that stops (at max_steps, max_time, a SIGTERM) and is resumed to
the same step, then compares the weights and the training loss of every step. On one CPU thread, equal
batches, optimizer and LR states and random draws give equal floats.
"""

import os
import signal
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Timer

from lmtemplate.cli import main
from lmtemplate.tasks.causal_lm import CausalLM
from test_run import TINY, scalars, weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# TINY on 30 demo lines: an epoch is 7 batches (steps 1-7, 8-14, ...), validation at steps 5, 10, 15.
CAUSAL = [*TINY, "data.demo_lines=30", "trainer.log_every_n_steps=1", "optim.decay_steps=16"]
ENCODER = ["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=32", "data.batch_size=8",
           "tokenizer.vocab_size=300", "trainer.val_check_interval=5", "trainer.limit_val_batches=2",
           "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
           "trainer.accelerator=cpu", "optim.warmup_steps=3", "optim.decay_steps=12"]
MASKED_LM = ["-c", str(CONFIGS / "pretrain/bert-tiny.yaml"), *ENCODER, "data.demo_lines=200"]
CLASSIFICATION = ["-c", str(CONFIGS / "finetune/classification-demo.yaml"), *ENCODER,
                  "data.demo_train=200", "data.demo_val=20"]
TRANSLATION = ["-c", str(CONFIGS / "finetune/translation-demo.yaml"), *ENCODER, "model.block_size=48",
               "data.demo_train=200", "data.demo_val=20", "decode.val_sentences=4", "decode.beam_size=1"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository's ./plugins
    torch.set_num_threads(1)  # bitwise-repeatable runs
    yield
    torch.set_num_threads(2)


def assert_resumes_exactly(args: list[str], steps: int, stop: list[str], stopping=nullcontext(), stopped_code: int = 0,
                           unlogged: int = 0) -> None:
    """``args`` trained for ``steps`` in one go, and stopped by ``stop`` (overrides, and ``stopping`` around the run)
    then resumed, give the same run.

    ``unlogged``: a step whose training loss the stopped run does not log (a signal stops it before Lightning
    logs the step), left out of the comparison.
    """
    total = f"trainer.max_steps={steps}"
    assert main(["fit", *args, total, "run.name=whole"]) == 0
    with stopping:
        assert main(["fit", *args, *stop, "run.name=parts"]) == stopped_code
    assert main(["fit", *args, total, "run.name=parts", "--ckpt", "last"]) == 0
    whole, parts = Path("outputs/whole/version_0"), Path("outputs/parts/version_0")
    losses = [scalars(run, "train/loss") for run in (whole, parts)]
    assert len(losses[0]) == steps
    assert {s: v for s, v in losses[0].items() if s != unlogged - 1} == losses[1]  # logged by step index
    a, b = weights(whole), weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(parts / "checkpoints/last.ckpt", weights_only=True)["global_step"] == steps


def test_stopped_at_max_steps_between_validations():
    assert_resumes_exactly(CAUSAL, 16, ["trainer.max_steps=3"])


def test_stopped_at_an_epoch_boundary():
    assert_resumes_exactly(CAUSAL, 16, ["trainer.max_steps=7"])


def test_stopped_inside_the_second_epoch():
    assert_resumes_exactly(CAUSAL, 16, ["trainer.max_steps=12"])


@pytest.mark.parametrize("stop", [3, 7, 12])
def test_stopped_with_dropout(stop):
    assert_resumes_exactly([*CAUSAL, "model.dropout=0.1"], 16, [f"trainer.max_steps={stop}"])


def test_stopped_by_max_time(monkeypatch):
    """A Timer whose clock moves on a second a training batch: max_time of 8 s stops the run after step 8.

    Lightning validates at the step it stops at, so last.ckpt is the one saved after that validation, which the
    uninterrupted run never made: with dropout the two agree only because validation draws nothing from torch's
    generator.
    """
    check = Timer.on_train_batch_end

    def tick(self, trainer, *args, **kwargs):
        self.seconds += 1
        check(self, trainer, *args, **kwargs)

    monkeypatch.setattr(Timer, "seconds", 0, raising=False)
    monkeypatch.setattr(Timer, "on_train_batch_end", tick)
    monkeypatch.setattr(Timer, "time_elapsed", lambda self, stage="train": self.seconds)
    assert_resumes_exactly([*CAUSAL, "model.dropout=0.1"], 16, ["trainer.max_steps=16", "trainer.max_time=00:00:00:08"])


def test_training_is_the_same_however_often_it_validates():
    """Validation draws no random numbers that training draws from: with dropout, validating every 2 steps or every
    6 trains the same weights (each pass over the validation loader once drew its seed from torch's generator)."""
    runs = {}
    for every in (2, 6):
        assert main(["fit", *CAUSAL, "model.dropout=0.1", "trainer.max_steps=12", f"trainer.val_check_interval={every}",
                     f"run.name=every{every}"]) == 0
        runs[every] = Path(f"outputs/every{every}/version_0")
    assert scalars(runs[2], "train/loss") == scalars(runs[6], "train/loss")
    assert len(scalars(runs[2], "val/loss")) > len(scalars(runs[6], "val/loss"))
    a, b = weights(runs[2]), weights(runs[6])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@contextmanager
def sigterm_in_step(n: int):
    train = CausalLM.training_step

    def sigterm(self, batch, batch_idx):
        if self.global_step == n - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return train(self, batch, batch_idx)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CausalLM, "training_step", sigterm)
        yield


@pytest.mark.parametrize("signalled, stopped", [(9, 9), (7, 8)])  # at an epoch's last batch it stops a step later
def test_stopped_by_sigterm(signalled, stopped):
    args = [*CAUSAL, "model.dropout=0.1"]
    assert_resumes_exactly(args, 16, [], sigterm_in_step(signalled), stopped_code=143, unlogged=stopped)


@pytest.mark.parametrize("packing", [
    "data.packing=true",
    "data.packing=false",
])
def test_masked_lm_stopped_between_validations(packing):
    args = [*MASKED_LM, packing] + (["data.line_documents=true"] if packing.endswith("false") else [])
    assert_resumes_exactly(args, 12, ["trainer.max_steps=7"])


def test_classification_stopped_between_validations():
    assert_resumes_exactly(CLASSIFICATION, 12, ["trainer.max_steps=7"])


@pytest.mark.parametrize("batching", ["data.batch_tokens=400", "data.batch_tokens=0"])
def test_translation_stopped_between_validations(batching):
    assert_resumes_exactly([*TRANSLATION, batching], 12, ["trainer.max_steps=7"])


def test_a_datamodule_whose_loader_is_not_resumable_is_named_when_a_run_resumes(caplog, clean_registry):
    """A plugin's own DataLoader has no state to save: resuming mid-epoch restarts its epoch, and the run says so."""
    Path("plugins").mkdir()
    Path("plugins/plain.py").write_text(
        "from torch.utils.data import DataLoader\n"
        "from lmtemplate import register_task\n"
        "from lmtemplate.data.lm import TextDataModule\n"
        "from lmtemplate.tasks.causal_lm import CausalLM, CausalLMConfig\n\n\n"
        "class PlainData(TextDataModule):\n"
        "    def train_dataloader(self):\n"
        "        return DataLoader(list(super().train_dataloader()), batch_size=None)\n\n\n"
        "@register_task('plain_lm', config=CausalLMConfig, datamodule=PlainData)\n"
        "class PlainLM(CausalLM):\n"
        "    pass\n")
    args = [*CAUSAL, "task=plain_lm", "run.name=plain"]
    assert main(["fit", *args, "trainer.max_steps=3"]) == 0
    assert "is not resumable" not in caplog.text
    assert main(["fit", *args, "trainer.max_steps=6", "--ckpt", "last"]) == 0
    assert "PlainData.train_dataloader() is not resumable" in caplog.text
