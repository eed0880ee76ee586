"""The runs table, on run directories written here: config.yaml, metrics.json and TensorBoard events."""

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from lmtemplate import runs
from lmtemplate.cli import main


def make_run(path: str, positions: str, seed: int, loss: float, curve: list[float] = (), lr: float = 1e-3) -> Path:
    run = Path(path)
    run.mkdir(parents=True)
    config = {"task": "causal_lm", "best": {"metric": "val/loss"}, "model": {"positions": positions, "n_layer": 2},
              "optim": {"lr": lr}, "run": {"seed": seed, "name": run.parent.name, "root": "outputs", "version": 0}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps({"step": 100, "val/loss": loss, "val/ppl": 2.0 ** loss}))
    if curve:
        with SummaryWriter(str(run)) as w:
            for i, value in enumerate(curve):
                w.add_scalar("val/loss", value, 50 * i + 49)  # Lightning logs validation at the step before
    return run


ROTARY = [1.78, 1.79, 1.785]
LEARNED = [1.90, 1.89, 1.904]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sweep():
    for i, seed in enumerate((1, 2, 3)):
        make_run(f"sw/trial-0-seed{seed}/version_0", "rotary", seed, ROTARY[i], [2.5, ROTARY[i] - 0.01, ROTARY[i]])
        make_run(f"sw/trial-1-seed{seed}/version_0", "learned", seed, LEARNED[i], [2.6, LEARNED[i]])
    return "sw"


def test_t_quantiles():
    assert runs.t95(1) == 12.706 and runs.t95(2) == 4.303 and runs.t95(30) == 2.042
    assert runs.t95(60) == pytest.approx(2.000, abs=2e-3) and runs.t95(10_000) == pytest.approx(1.960, abs=1e-3)


def test_seeds_are_one_row_with_mean_sd_and_a_t_interval(sweep, capsys):
    assert main(["runs", sweep, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model.positions"], r["runs"], r["val/loss n"], r["vs best"]) for r in rows] == [
        ("rotary", 3, 3, "best"), ("learned", 3, 3, "")]
    top = rows[0]
    mean, sd = statistics.fmean(ROTARY), statistics.stdev(ROTARY)
    assert top["val/loss"] == pytest.approx(mean) and top["val/loss sd"] == pytest.approx(sd)
    half = 4.303 * sd / 3 ** 0.5
    assert [top["val/loss ci95 low"], top["val/loss ci95 high"]] == pytest.approx([mean - half, mean + half])
    assert top["val/loss best"] == pytest.approx(statistics.fmean(v - 0.01 for v in ROTARY))  # the curves' minimum
    assert top["steps"] == 100 and "run.seed" not in top and "model.n_layer" not in top  # only what differs


def test_overlapping_intervals_are_marked_not_distinguishable(capsys):
    for seed, (a, b) in enumerate([(1.0, 1.2), (1.3, 1.1), (1.2, 1.25)]):
        make_run(f"o/a-{seed}/version_0", "rotary", seed, a)
        make_run(f"o/b-{seed}/version_0", "learned", seed, b)
    make_run("o/c/version_0", "learned", 0, 9.0, lr=0.1)  # one run: its interval is its value
    assert main(["runs", "o"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["vs", "best", "model.positions", "optim.lr"]
    assert [line.split()[:3] for line in out[1:4]] == [["best", "rotary", "0.001"], ["=", "learned", "0.001"],
                                                       ["learned", "0.1", "1"]]
    assert out[-1].startswith("sorted by val/loss")


def test_csv_and_plot(sweep, capsys, tmp_path):
    assert main(["runs", sweep, "--csv", "--plot", "p.png"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model.positions"] for r in rows] == ["rotary", "learned"] and rows[0]["val/loss n"] == "3"
    assert Path("p.png").read_bytes()[:4] == b"\x89PNG"


def test_a_metric_to_sort_by(sweep, capsys):
    assert main(["runs", sweep, "--metric", "val/ppl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model.positions"] == "rotary"
    assert main(["runs", sweep, "--metric", "val/bleu"]) == 2
    assert "runs --metric: 'val/bleu' is not one of val/loss, val/ppl" in capsys.readouterr().err
