"""EMA of the weights, kept periodic checkpoints and early stopping, through real runs of the tiny demo GPT."""

import json
from pathlib import Path

import pytest
import torch

from lmtemplate.callbacks.averaging import weights_for
from lmtemplate.cli import main
from lmtemplate.config import EMAConfig
from test_resume import CAUSAL, assert_resumes_exactly, in_tmp  # noqa: F401 (in_tmp: each test in its own folder)

EMA = [*CAUSAL, "ema.decay=0.9", "ema.start=2"]


def checkpoint(run: str, name: str = "last.ckpt") -> dict:
    return torch.load(Path("outputs") / run / "version_0/checkpoints" / name, weights_only=True)


@pytest.mark.parametrize("stop", [3, 7])  # between validations; at an epoch's end (saved when training ends)
def test_a_run_with_ema_resumes_exactly_with_both_sets_of_weights(stop):
    assert_resumes_exactly(EMA, 16, [f"trainer.max_steps={stop}"])
    whole, parts = checkpoint("whole"), checkpoint("parts")
    assert all(torch.equal(whole["current_model_state"][k], parts["current_model_state"][k]) for k in whole["state_dict"])


def test_a_run_with_ema_and_accumulation_resumes_exactly():
    assert_resumes_exactly([*EMA, "trainer.accumulate_grad_batches=2"], 8, ["trainer.max_steps=5"])


def test_the_checkpoint_holds_the_average_and_the_trained_weights():
    assert main(["fit", *EMA, "trainer.max_steps=6", "run.name=ema"]) == 0
    assert main(["fit", *CAUSAL, "ema.decay=0.0", "trainer.max_steps=6", "run.name=copy"]) == 0
    ema, copy = checkpoint("ema"), checkpoint("copy")
    average, trained = ema["state_dict"], ema["current_model_state"]
    assert average.keys() == trained.keys() and not all(torch.equal(average[k], trained[k]) for k in average)
    assert all(torch.equal(copy["state_dict"][k], copy["current_model_state"][k]) for k in average)  # decay 0: a copy


def test_each_verb_takes_the_average_unless_ema_averaged_in_leaves_it_out():
    state = {"state_dict": "average", "current_model_state": "trained"}
    assert weights_for(state, "test", EMAConfig(decay=0.9)) == "average"
    assert weights_for(state, "test", EMAConfig(decay=0.9, averaged_in=["export"])) == "trained"
    assert weights_for({"state_dict": "weights"}, "test", EMAConfig(averaged_in=[])) == "weights"  # no EMA in the run


def test_validate_uses_the_trained_weights_when_told_to():
    assert main(["fit", *EMA, "trainer.max_steps=6", "run.name=ema"]) == 0
    losses = []
    for averaged_in in ("[validate]", "[test]"):
        assert main(["validate", "--ckpt", "last", "run.name=ema", f"ema.averaged_in={averaged_in}"]) == 0
        losses.append(json.loads(Path("outputs/ema/version_0/metrics.json").read_text())["validate"][-1]["val/loss"])
    assert losses[0] != losses[1]


def test_the_best_checkpoint_holds_the_weights_that_earned_its_score():
    """Validation scored the average; the best file, weights alone, still holds it beside the trained weights."""
    assert main(["fit", *EMA, "trainer.max_steps=10", "run.name=ema"]) == 0
    (best,) = Path("outputs/ema/version_0/checkpoints").glob("best-*.ckpt")
    saved = torch.load(best, weights_only=True)
    assert "optimizer_states" not in saved and saved["state_dict"].keys() == saved["current_model_state"].keys()
    assert main(["validate", "--ckpt", "best", "run.name=ema"]) == 0
    scored = json.loads(Path("outputs/ema/version_0/metrics.json").read_text())["validate"][-1]["val/loss"]
    assert scored == pytest.approx(saved["lmtemplate"]["score"], abs=1e-6)


def test_checkpoint_keep_keeps_the_last_n_validations():
    assert main(["fit", *CAUSAL, "trainer.max_steps=16", "checkpoint.keep=2", "run.name=kept"]) == 0
    found = sorted(p.name for p in Path("outputs/kept/version_0/checkpoints").glob("step-*.ckpt"))
    assert found == ["step-10.ckpt", "step-15.ckpt"]  # validations at 5, 10, 15
    assert checkpoint("kept", "step-15.ckpt")["validated"]["val/loss"] > 0


def test_checkpoint_every_keeps_checkpoints_between_validations_which_best_n_cannot_rank():
    assert main(["fit", *CAUSAL, "trainer.max_steps=16", "checkpoint.keep=3", "checkpoint.every=2",
                 "run.name=every"]) == 0
    found = {p.name for p in Path("outputs/every/version_0/checkpoints").glob("step-*.ckpt")}
    # Lightning moves the save due at 14 to the validation at 15, the batch after (ModelCheckpoint's deferral)
    assert found == {"step-12.ckpt", "step-15.ckpt", "step-16.ckpt"}
    assert "validated" not in checkpoint("every", "step-12.ckpt")  # validations at 5, 10, 15: not its weights' scores
    assert checkpoint("every", "step-15.ckpt")["validated"]["val/loss"] > 0
    assert main(["average", "--ckpt", "last:3", "run.name=every"]) == 0
    assert main(["average", "--ckpt", "best:2", "run.name=every"]) == 2  # none of the three was validated


# Validations at steps 5, 10, 15, ...: none improves on the first by 10 nats, so patience 2 stops the run at 15.
PATIENT = [*CAUSAL, "best.patience=2", "best.min_delta=10", "optim.decay_steps=30"]


def test_early_stopping_stops_at_the_same_step_when_resumed():
    """The whole run stops at 15; one stopped at 12 (one validation without improvement so far) and resumed stops
    at 15 too, with the same weights, not at 25, where a count starting afresh would."""
    assert main(["fit", *PATIENT, "trainer.max_steps=30", "run.name=whole"]) == 0
    assert main(["fit", *PATIENT, "trainer.max_steps=12", "run.name=parts"]) == 0
    assert main(["fit", *PATIENT, "trainer.max_steps=30", "run.name=parts", "--ckpt", "last"]) == 0
    whole, parts = checkpoint("whole"), checkpoint("parts")
    assert whole["global_step"] == parts["global_step"] == 15
    assert all(torch.equal(whole["state_dict"][k], parts["state_dict"][k]) for k in whole["state_dict"])
