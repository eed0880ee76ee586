"""End-to-end runs through the CLI, in process, on a tiny model and a tiny demo corpus."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lmtemplate.cli import main


def fit(*overrides: str, ckpt: str | None = None) -> None:
    argv = ["fit", *TINY, *overrides] + (["--ckpt", ckpt] if ckpt else [])
    assert main(argv) == 0


# About 3,000 tokens of demo text: an epoch is ~11 batches, so runs cross epoch boundaries.
TINY = [
    "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=32",
    "data.batch_size=8", "data.demo_lines=100", "tokenizer.vocab_size=300",
    "trainer.max_steps=30", "trainer.val_check_interval=5",
    "trainer.limit_val_batches=2", "trainer.log_every_n_steps=5", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
    "optim.decay_steps=30", "optim.warmup_steps=5", "run.name=tiny",
]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def scalars(run: Path, tag: str) -> dict[int, float]:
    """A scalar's values by step, over every event file of a run (a resumed run writes several)."""
    values = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)  # bitwise-repeatable runs
    yield
    torch.set_num_threads(2)


def test_fit_lays_out_the_run_directory(capsys):
    fit()
    run = Path("outputs/tiny/version_0")
    out = capsys.readouterr().out
    assert f"run directory: {run}" in out and "final validation (step" in out and "loss " in out and "tensorboard --logdir outputs" in out
    assert (run / "tokenizer.json").is_file() and list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and len(list(run.glob("checkpoints/best-*.ckpt"))) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 30 and metrics["val/loss"] > 0
    assert main(["config", *TINY]) == 0
    assert (run / "config.yaml").read_text() == capsys.readouterr().out  # saved config == `config` output
    fit()
    assert Path("outputs/tiny/version_1/checkpoints/last.ckpt").is_file()


def test_tensorboard_shows_losses_lr_grad_norm_throughput_samples_hparams():
    fit("run.peak_flops=1e11")  # a made-up peak, so that MFU is logged on a CPU
    events = sorted(Path("outputs/tiny/version_0").glob("events.out.tfevents.*"))[0]
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    expected = {"train/loss", "train/ppl", "val/loss", "val/ppl", "lr-AdamW/pg1", "train/grad_norm", "train/device/items_per_sec",
                "train/device/flops_per_sec", "train/device/mfu"}
    assert expected <= scalars
    samples = acc.Tensors("samples/text_summary")
    assert samples and "| prompt | completion |" in samples[-1].tensor_proto.string_val[0].decode()
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    lrs = [e.value for e in acc.Scalars("lr-AdamW/pg1")]
    assert max(lrs) > lrs[-1]  # warmup then decay


def test_resume_continues_exactly():
    """Stop at step 15 (mid-epoch), resume to 30: same batches, same weights as one uninterrupted run.

    Bitwise equal on one CPU thread: the data order, optimizer state and LR
    schedule all come back from the checkpoint, and nothing else is random
    (dropout is 0).
    """
    every_step = "trainer.log_every_n_steps=1"
    fit(every_step)  # version_0: 30 steps in one go
    fit(every_step, "trainer.max_steps=15")  # version_1: interrupted at 15
    fit(every_step, "trainer.max_steps=30", "run.version=1", ckpt="last")
    runs = Path("outputs/tiny/version_0"), Path("outputs/tiny/version_1")
    losses = [scalars(run, "train/loss") for run in runs]
    assert len(losses[0]) == 30 and losses[0] == losses[1]  # the same batches, step for step
    a, b = map(weights, runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(Path("outputs/tiny/version_1/metrics.json").read_text())["step"] == 30
    assert not Path("outputs/tiny/version_2").exists()  # resumed in its own directory


def test_validate_test_and_predict_use_the_run(capsys, tmp_path):
    fit()
    run = Path("outputs/tiny/version_0")
    capsys.readouterr()
    assert main(["validate", "run.name=tiny"]) == 0
    assert "val/loss" in capsys.readouterr().out
    assert main(["test", "run.name=tiny", "--ckpt", "last"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/loss" in metrics and {"test/loss", "test/ppl"} <= set(metrics["test"][0])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the dog\nanna says\n")
    capsys.readouterr()
    assert main(["predict", "run.name=tiny", "--input", str(prompts), "generate.temperature=0", "generate.max_new_tokens=8"]) == 0
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["the dog", "anna says"] and all(r["completion"] for r in rows)
    out = capsys.readouterr().out  # a file's rows stay in the file
    assert out.startswith("2 predictions written to ") and out.endswith(f"{run / 'predictions.jsonl'}\n")
    assert main(["predict", "run.name=tiny", "--prompt", "the dog", "generate.temperature=0", "generate.max_new_tokens=8"]) == 0
    again = json.loads((run / "predictions.jsonl").read_text())
    assert again == rows[0]  # greedy decoding is deterministic
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == again  # a prompt's answer is shown too
    assert main(["predict", "run.name=tiny", "--prompt", "the", "generate.top_k=5", "generate.top_p=0.9"]) == 0


def test_eval_verbs_without_a_run_are_config_errors(capsys):
    assert main(["validate", "run.name=nothing-here"]) == 2
    assert "no runs under outputs/nothing-here" in capsys.readouterr().err
    assert main(["predict", "--prompt", "x", "--ckpt", "missing.ckpt"]) == 2
    assert "missing.ckpt" in capsys.readouterr().err


def test_bf16_mixed_precision_runs_on_cpu():
    fit("trainer.precision=bf16-mixed", "trainer.max_steps=10", "optim.decay_steps=10")
    metrics = json.loads(Path("outputs/tiny/version_0/metrics.json").read_text())
    assert metrics["step"] == 10 and 0 < metrics["val/loss"] < 10


def test_the_progress_bar_shows_the_version_number():
    """The logger's version is the int n, so the bar shows v_num=3 (not 'on_3'), and it still logs to version_3."""
    from lightning.pytorch.callbacks.progress.progress_bar import get_standard_metrics

    from lmtemplate.run import build_trainer, load_config

    loaded = load_config([], ["trainer.accelerator=cpu"])
    run_dir = Path("outputs/demo/version_3")
    trainer = build_trainer(loaded.cfg, run_dir, loaded.task.module, training=False)
    assert get_standard_metrics(trainer)["v_num"] == 3
    assert Path(trainer.logger.log_dir) == run_dir


def test_validate_and_test_record_their_checkpoint_and_log_at_its_step():
    fit()
    run = Path("outputs/tiny/version_0")
    fitted = json.loads((run / "metrics.json").read_text())
    assert main(["test", "run.name=tiny", "--ckpt", "last"]) == 0
    assert main(["test", "run.name=tiny", "--ckpt", "last"]) == 0  # a second test adds no second point
    assert main(["validate", "run.name=tiny"]) == 0  # the best checkpoint
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/loss"] == fitted["val/loss"] and metrics["step"] == 30  # fit's own block stays as it was
    (test,) = metrics["test"]  # testing one checkpoint twice keeps one block
    assert test["checkpoint"] == "checkpoints/last.ckpt" and test["step"] == 30 and "test/loss" in test
    assert "test/loss" not in metrics  # the top level is fit's
    best = next(run.glob("checkpoints/best-*.ckpt"))
    (validated,) = metrics["validate"]
    assert validated["checkpoint"] == f"checkpoints/{best.name}" and validated["step"] == int(best.stem.removeprefix("best-"))
    assert main(["validate", "run.name=tiny", "--ckpt", "last"]) == 0  # another checkpoint: a second block
    blocks = json.loads((run / "metrics.json").read_text())["validate"]
    assert [b["checkpoint"] for b in blocks] == [f"checkpoints/{best.name}", "checkpoints/last.ckpt"]
    assert list(scalars(run, "test/loss")) == [30]


def test_a_partial_validation_says_so_in_metrics_json():
    fit("data.batch_size=1", "trainer.limit_val_batches=2", "trainer.max_steps=5", "optim.decay_steps=5")
    partial = json.loads(Path("outputs/tiny/version_0/metrics.json").read_text())
    assert partial["val_partial"].startswith("2 of ") and "trainer.limit_val_batches" in partial["val_partial"]
    fit("data.batch_size=1", "trainer.limit_val_batches=1.0", "trainer.max_steps=5", "optim.decay_steps=5")
    assert "val_partial" not in json.loads(Path("outputs/tiny/version_1/metrics.json").read_text())


def test_a_run_without_validation_trains_and_saves_its_last_checkpoint(capsys):
    """trainer.limit_val_batches=0: no validation at all (and no best checkpoint), the last one and metrics.json."""
    fit("trainer.limit_val_batches=0", "trainer.max_steps=6")
    run = Path("outputs/tiny/version_0")
    assert json.loads((run / "metrics.json").read_text()) == {"step": 6}
    assert (run / "checkpoints" / "last.ckpt").is_file() and not list(run.glob("checkpoints/best-*.ckpt"))


def test_a_saved_config_from_before_model_gelu_keeps_the_tanh_gelu(tmp_path):
    """Runs saved before model.gelu existed all used the tanh GELU: their config.yaml still means that."""
    from lmtemplate.run import load_saved_config

    old = tmp_path / "config.yaml"
    old.write_text("task: causal_lm\nmodel:\n  n_layer: 2\n")
    assert load_saved_config(old, []).cfg.model.gelu == "tanh"
    assert load_saved_config(old, ["model.gelu=exact"]).cfg.model.gelu == "exact"
    new = tmp_path / "new.yaml"
    new.write_text("task: causal_lm\nmodel:\n  n_layer: 2\n  gelu: exact\n")
    assert load_saved_config(new, []).cfg.model.gelu == "exact"


def recorded(path: Path, **record) -> None:
    """Rewrite a checkpoint's record (step, score), as a run killed at another moment would have left it."""
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["lmtemplate"].update(record)
    checkpoint["global_step"] = record.get("step", checkpoint["global_step"])
    torch.save(checkpoint, path)


def test_best_is_the_best_score_whatever_the_file_names_and_a_resume_keeps_only_it():
    """A kill between saving a new best and replacing last.ckpt leaves two best files, which sort by name the
    wrong way round (best-58 after best-106): --ckpt best takes the better score, and the resumed run, which
    never heard of the newer file, adopts it and removes the worse one."""
    from lmtemplate.run import checkpoint_of

    fit("trainer.max_steps=20", "optim.decay_steps=30")
    folder = Path("outputs/tiny/version_0/checkpoints")
    (best,) = folder.glob("best-*.ckpt")
    shutil.copy(best, folder / "best-58.ckpt")
    shutil.copy(best, folder / "best-106.ckpt")
    if best.name not in ("best-58.ckpt", "best-106.ckpt"):
        best.unlink()
    recorded(folder / "best-58.ckpt", step=58, score=2.53)
    recorded(folder / "best-106.ckpt", step=106, score=0.01)  # better than anything the run reaches
    assert checkpoint_of(folder.parent, "best") == folder / "best-106.ckpt"
    assert main(["validate", "run.name=tiny", *TINY[:7]]) == 0
    assert json.loads((folder.parent / "metrics.json").read_text())["validate"][-1]["step"] == 106
    fit("trainer.max_steps=30", "optim.decay_steps=30", "run.version=0", ckpt="last")
    assert sorted(p.name for p in folder.glob("best*.ckpt")) == ["best-106.ckpt"]


def test_a_run_moved_elsewhere_resumes_in_place_exactly():
    """After `mv`, Lightning's saved paths point to the old place: the resumed run still writes last.ckpt (not
    last-v1.ckpt beside a stale one), records where it now is, and ends with an uninterrupted run's weights."""
    fit()  # version_0: 30 steps in one go
    fit("trainer.max_steps=15", "run.name=moved")
    shutil.move("outputs/moved", "elsewhere")
    Path("outputs/moved").mkdir()  # an unrelated run of the same name where the old one was
    fit("trainer.max_steps=30", ckpt="elsewhere/version_0")
    run = Path("elsewhere/version_0")
    assert sorted(p.name for p in run.glob("checkpoints/last*.ckpt")) == ["last.ckpt"]
    a, b = weights(Path("outputs/tiny/version_0")), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = OmegaConf.load(run / "config.yaml").run
    assert (Path(saved.root) / saved.name).resolve() == run.parent.resolve()  # where it is now
    assert main(["validate", "--ckpt", "elsewhere/version_0"]) == 0
    assert json.loads((run / "metrics.json").read_text())["validate"][-1]["step"] == 30
    assert not any(Path("outputs/moved").iterdir())


def test_a_resume_removes_temporaries_that_killed_saves_left():
    fit("trainer.max_steps=10")
    folder = Path("outputs/tiny/version_0/checkpoints")
    dead = folder / ".last.ckpt.999999999.0123abcd.tmp"  # no process has that id
    alive = folder / f".last.ckpt.{os.getpid()}.0123abcd.tmp"  # a write still going on
    dead.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"half a checkpoint")
    fit("trainer.max_steps=12", "run.version=0", ckpt="last")
    assert not dead.exists() and alive.exists()


def test_a_resumed_fine_tuning_run_does_not_need_the_run_it_started_from():
    """model.init_from is read when training starts, not on resume: the checkpoint has the weights."""
    fit("trainer.max_steps=10", "run.name=base")
    fit("trainer.max_steps=10", "run.name=tuned", "model.init_from=outputs/base/version_0")
    shutil.rmtree("outputs/base")
    fit("trainer.max_steps=12", "run.name=tuned", "model.init_from=outputs/base/version_0", ckpt="last")
    assert json.loads(Path("outputs/tuned/version_0/metrics.json").read_text())["step"] == 12


def test_best_checkpoints_hold_the_weights_alone_and_are_not_resumed_from(capsys):
    """Only last.ckpt is resumed from, so only it carries the optimizer and the loops' state."""
    fit("trainer.max_steps=10", "optim.decay_steps=30")
    run = Path("outputs/tiny/version_0")
    best = torch.load(next(run.glob("checkpoints/best-*.ckpt")), weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "optimizer_states" in last and "optimizer_states" not in best and "callbacks" not in best
    assert best["lmtemplate"]["score"] is not None and best["state_dict"].keys() == last["state_dict"].keys()
    assert main(["fit", *TINY, "run.version=0", "--ckpt", "best"]) == 2
    assert "holds the weights alone, as best checkpoints do" in capsys.readouterr().err
    assert main(["test", "run.name=tiny", "--ckpt", "best"]) == 0  # scoring needs the weights alone
