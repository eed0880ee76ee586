"""Sweeps: the section's checks and plan in process; whole sweeps (each trial a `fit` subprocess) marked slow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from lmtemplate import sweep
from lmtemplate.cli import main

REPO = Path(__file__).resolve().parents[1]

# The demo on a tiny model: a trial's fit trains for a second; starting its process (imports) is most of its cost.
BASE = """\
model: {n_layer: 1, n_embd: 16, n_head: 2, block_size: 16}
data: {batch_size: 4, demo_lines: 50}
tokenizer: {vocab_size: 300}
trainer: {max_steps: 4, val_check_interval: 2, limit_val_batches: 2, log_every_n_steps: 2, enable_progress_bar: false,
          enable_model_summary: false, accelerator: cpu}
optim: {warmup_steps: 1}
run: {name: s}
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # trials import this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


def write(section: str, base: str = BASE) -> str:
    Path("s.yaml").write_text(base + "sweep:\n" + section)
    return "s.yaml"


def study(name: str = "s"):
    journal = optuna.storages.journal
    storage = journal.JournalStorage(journal.JournalFileBackend(f"outputs/{name}/study.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmtemplate", "sweep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_distributions_and_values_reach_the_trials_as_written():
    d = sweep.distribution
    assert d("k", "loguniform(1e-5, 1e-3)", "tpe") == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert d("k", "uniform(0, 0.5)", "random") == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert d("k", "int(2, 8)", "tpe") == optuna.distributions.IntDistribution(2, 8)
    assert d("k", "choice(rotary, learned)", "grid").choices == ("rotary", "learned")
    assert d("k", ["1e-4", 3, True, None], "grid").choices == (1e-4, 3, True, None)  # YAML reads 1e-4 as text
    overrides = [sweep.dotlist(f"k{i}", v) for i, v in enumerate([1e-05, "rotary", True, None, 3])]
    assert OmegaConf.to_container(OmegaConf.from_dotlist(overrides)) == {"k0": 1e-05, "k1": "rotary", "k2": True,
                                                                         "k3": None, "k4": 3}


def test_parallel_trials_share_the_threads_and_the_gpus(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert sweep.share(0, 1) == {}  # one at a time: the machine as it is
    assert [sweep.share(i, 2) for i in range(2)] == [{"OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "0,2"},
                                                     {"OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "1"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert [sweep.share(i, 4)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["5"] * 4  # fewer GPUs than trials


def test_dry_run_checks_and_lists_the_grid_and_writes_nothing(capsys):
    write("  parameters:\n    model: {positions: [rotary, learned]}\n    optim.lr: [1e-3, 3e-3]\n  seeds: [1, 2]\n")
    assert main(["sweep", "-c", "s.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 configurations x 2 seeds (1, 2) under outputs/s; method grid, metric val/loss (min)" in out
    assert "trial-0: model.positions=rotary optim.lr=0.001" in out
    assert "trial-3: model.positions=learned optim.lr=0.003" in out
    assert not Path("outputs").exists()


def test_a_search_starts_from_the_base_config_when_it_lies_in_the_space(capsys):
    write("  method: tpe\n  trials: 5\n  parameters:\n    optim.lr: loguniform(1e-4, 1e-2)\n"
          "    model.n_layer: int(1, 3)\n")
    assert main(["sweep", "-c", "s.yaml", "--dry-run"]) == 0
    assert "trial-0: the base config's optim.lr=0.002 model.n_layer=1" in capsys.readouterr().out
    assert main(["sweep", "-c", "s.yaml", "--dry-run", "optim.lr=0.5"]) == 0
    assert "base config" not in capsys.readouterr().out


def test_the_shipped_sweeps_check(capsys, tmp_path):
    """configs/sweeps/: their data are in ../shared/data, which the tests do not need; small stand-ins here."""
    Path("text.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100)
    Path("sst2.tsv").write_text("sentence\tlabel\n" + "a fine film\t1\na dull film\t0\n" * 5)
    assert main(["sweep", "-c", str(REPO / "configs/sweeps/demo-positions.yaml"), "--dry-run"]) == 0
    assert "2 configurations x 2 seeds (1, 2) under outputs/demo-positions" in capsys.readouterr().out
    positions = REPO / "configs/sweeps/shakespeare-positions.yaml"
    assert main(["sweep", "-c", str(positions), "--dry-run", "data.train=text.txt"]) == 0
    out = capsys.readouterr().out
    assert "2 configurations x 3 seeds (1337, 1338, 1339)" in out and "trial-1: model.positions=learned" in out
    tpe = REPO / "configs/sweeps/sst2-minilm-tpe.yaml"
    assert main(["sweep", "-c", str(tpe), "--dry-run", "data.train=sst2.tsv", "data.val=sst2.tsv"]) == 0
    out = capsys.readouterr().out
    assert "10 configurations x 1 seeds (1337)" in out and "method tpe, metric val/accuracy (max), prune median" in out
    assert "optim.lr: loguniform(2e-05, 0.0005)" in out and "trial-0: the base config's optim.lr=0.0001" in out


@pytest.mark.parametrize("overrides, stop", [
    ([], 2),                            # worse at its first validation after the warmup of 1 step
    (["optim.warmup_steps=2"], 4),      # still warming up at step 2: not judged there
    (["trainer.max_steps=2"], None),    # at its last step: it completes, there is nothing to save by stopping
])
def test_a_pruned_trial_stops_at_a_validation_with_its_checkpoint_and_metrics(monkeypatch, overrides, stop):
    """Two earlier configurations reported a validation loss of 0 at every step: this one, worse, stops at the first
    validation where it may be judged."""
    storage = optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend("study.journal"))
    s = optuna.create_study(storage=storage, study_name="p")
    for _ in range(2):
        earlier = s.ask()
        for step in (2, 4, 6, 8):
            earlier.report(0.0, step)
        s.tell(earlier, 0.0)
    trial = s.ask()
    spec = {"storage": "study.journal", "study": "p", "trial": trial._trial_id, "metric": "val/loss", "prune": "median"}
    monkeypatch.setenv(sweep.TRIAL_ENV, json.dumps(spec))
    Path("base.yaml").write_text(BASE)
    assert main(["fit", "-c", "base.yaml", "trainer.max_steps=8", *overrides]) == 0
    run = Path("outputs/s/version_0")
    assert json.loads((run / "metrics.json").read_text())["step"] == (stop or 2)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    frozen = s.trials[2]
    assert frozen.user_attrs.get("pruned_at") == stop and list(frozen.intermediate_values)[-1] == (stop or 2)


@pytest.mark.slow
def test_two_values_by_two_seeds_give_four_runs_and_a_table_of_two_rows(capsys):
    write("  parameters:\n    model.positions: [rotary, learned]\n  seeds: [1, 2]\n")
    assert main(["sweep", "-c", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert "study 's': 2 of 2 configurations: 2 complete" in out
    assert "compare: python -m lmtemplate runs outputs/s" in out
    runs = sorted(p.parent.relative_to("outputs/s") for p in Path("outputs/s").glob("*/*/config.yaml"))
    assert runs == [Path(f"trial-{n}-seed{s}/version_0") for n in (0, 1) for s in (1, 2)]
    config = OmegaConf.load("outputs/s/trial-1-seed2/version_0/config.yaml")
    assert (config.model.positions, config.run.seed) == ("learned", 2) and "sweep" not in config
    assert [t.state.name for t in study().trials] == ["COMPLETE", "COMPLETE"]
    assert main(["runs", "outputs/s", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["model.positions"] for row in rows) == ["learned", "rotary"]
    assert [row["val/loss n"] for row in rows] == [2, 2] and rows[0]["vs best"] == "best"
    value = {t.params["model.positions"]: t.value for t in study().trials}
    assert all(row["val/loss"] == pytest.approx(value[row["model.positions"]]) for row in rows)
    # a trial is an ordinary run: every verb finds it
    assert main(["validate", "--ckpt", "best", "run.root=outputs/s", "run.name=trial-0-seed1"]) == 0


@pytest.mark.slow
def test_a_sweep_killed_in_its_third_run_and_started_again_runs_each_configuration_once():
    write("  parameters:\n    optim.lr: [1e-3, 2e-3, 3e-3]\n", BASE.replace("max_steps: 4", "max_steps: 40"))
    first = start("-c", "s.yaml")
    third = Path("outputs/s/trial-2-seed1337/version_0")
    while not (third / "checkpoints" / "last.ckpt").is_file():
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its trial: nothing runs at exit
    first.wait()
    finished = (third / "metrics.json").is_file()  # it would take a slow poll: then the second start just counts it
    states = [t.state.name for t in study().trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"] and (states[2] == "RUNNING" or finished)
    again = start("-c", "s.yaml")
    out = again.communicate()[0]
    assert again.returncode == 0, out
    assert "trial-0 seed" not in out and "trial-1 seed" not in out
    assert finished or "trial-2 seed 1337: optim.lr=0.003 (resumed)" in out
    trials = study().trials
    assert [(t.number, t.state.name, t.params["optim.lr"]) for t in trials] == [
        (0, "COMPLETE", 1e-3), (1, "COMPLETE", 2e-3), (2, "COMPLETE", 3e-3)]
    assert sorted(p.name for p in Path("outputs/s").glob("trial-*")) == [f"trial-{n}-seed1337" for n in range(3)]
    assert [p.name for p in third.parent.iterdir()] == ["version_0"]
    assert json.loads((third / "metrics.json").read_text())["step"] == 40


@pytest.mark.slow
def test_two_workers_on_one_study_finish_exactly_the_requested_trials():
    """Two processes, one of them running two trials at once."""
    write("  method: random\n  trials: 4\n  parameters:\n    optim.lr: uniform(1e-4, 1e-2)\n")
    workers = [start("-c", "s.yaml", "sweep.parallel=2"), start("-c", "s.yaml")]
    outs = [w.communicate()[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    trials = study().trials
    assert [(t.number, t.state.name) for t in trials] == [(n, "COMPLETE") for n in range(4)]
    assert sorted(p.name for p in Path("outputs/s").glob("trial-*")) == [f"trial-{n}-seed1337" for n in range(4)]
    ran = [line.split()[0] for out in outs for line in out.splitlines() if " seed 1337: " in line]
    assert sorted(ran) == [f"trial-{n}" for n in range(4)]  # each started once, by one of the workers


@pytest.mark.slow
def test_a_failing_trial_is_recorded_with_its_message_and_the_sweep_goes_on(capsys):
    """model.block_size=100000 passes the config's checks; the demo text is too short for one such window."""
    write("  parameters:\n    model.block_size: [100000, 16]\n")
    assert main(["sweep", "-c", "s.yaml"]) == 0
    out = capsys.readouterr().out
    failed, done = study().trials
    assert failed.state.name == "FAIL" and "model.block_size=100000" in failed.user_attrs["error"]
    assert done.state.name == "COMPLETE"
    assert f"trial-0 failed: {failed.user_attrs['error']}" in out and "1 complete, 1 fail" in out
