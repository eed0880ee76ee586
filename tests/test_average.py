"""average: the mean of a run's kept checkpoints, which every verb that reads weights accepts."""

from pathlib import Path

import torch

from lmtemplate.cli import main
from test_resume import CAUSAL, in_tmp  # noqa: F401 (in_tmp: each test in its own folder)

KEPT = Path("outputs/avg/version_0/checkpoints")


def kept(step: int) -> dict:
    return torch.load(KEPT / f"step-{step}.ckpt", weights_only=True)


def test_the_average_of_the_last_n_is_their_mean_and_every_verb_takes_it(capsys):
    assert main(["fit", *CAUSAL, "trainer.max_steps=16", "checkpoint.keep=3", "run.name=avg"]) == 0
    assert main(["average", "--ckpt", "last:2", "run.name=avg"]) == 0
    assert f"averaged step-10.ckpt, step-15.ckpt\nwritten to {KEPT / 'average-last-2.ckpt'}" in capsys.readouterr().out
    averaged = torch.load(KEPT / "average-last-2.ckpt", weights_only=True)
    a, b = kept(10)["state_dict"], kept(15)["state_dict"]
    assert averaged["state_dict"].keys() == a.keys() and "optimizer_states" not in averaged
    assert all(torch.equal(averaged["state_dict"][k], ((a[k].double() + b[k].double()) / 2).float()) for k in a)
    path = str(KEPT / "average-last-2.ckpt")
    for verb in (["validate"], ["test"], ["predict", "--prompt", "the"], ["export", "--output", "hf"]):
        assert main([*verb, "--ckpt", path]) == 0, verb
    assert Path("hf/config.json").is_file()


def test_best_n_are_the_kept_checkpoints_with_the_best_metric(capsys):
    assert main(["fit", *CAUSAL, "trainer.max_steps=16", "checkpoint.keep=3", "run.name=avg"]) == 0
    losses = {step: kept(step)["validated"]["val/loss"] for step in (5, 10, 15)}
    best = sorted(sorted(losses, key=losses.get)[:2])
    assert main(["average", "--ckpt", "best:2", "run.name=avg", "--output", "two.ckpt"]) == 0
    assert torch.load("two.ckpt", weights_only=True)["averaged"] == [f"step-{k}.ckpt" for k in best]
