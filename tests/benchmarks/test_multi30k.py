"""The Multi30k benchmark's smoke run (slow: trains a tiny model for 30 steps on 2,000 pairs, then tests it twice)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "multi30k"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "train.en").is_file(), reason="needs ../shared/data/multi30k")
def test_quick_run_reports_beam_and_greedy_test_scores_and_a_learning_curve(tmp_path):
    out = tmp_path / "multi30k.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "multi30k.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] and result["steps"] == 30 and result["train_pairs"] == 2000
    assert [c["step"] for c in result["learning_curve"]] == [14, 29]
    assert all(0 <= c["minutes"] < result["fit_wall_s"] / 60 for c in result["learning_curve"])
    for name in ("beam 5", "greedy"):
        scores = result["test_2016_flickr"][name]
        assert 0 <= scores["bleu"] <= 100 and 0 <= scores["chrf"] <= 100 and scores["wall_s"] > 0
    assert "| test_2016_flickr | BLEU" in proc.stdout


def test_without_the_data_it_says_what_is_missing_and_where(tmp_path):
    (tmp_path / "train.en").write_text("a\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "multi30k.py"), "--data", str(tmp_path), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"multi30k: train.de, val.en, val.de, test_2016_flickr.en, test_2016_flickr.de not found in {tmp_path}" in proc.stderr
