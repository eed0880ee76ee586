"""The SST-2 benchmark's smoke run (slow: pretrains and fine-tunes twice for 30 steps on 2,000 sentences)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "sst2"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "train.tsv").is_file(), reason="needs ../shared/data/sst2")
def test_quick_run_reports_both_fine_tunings(tmp_path):
    out = tmp_path / "sst2.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sst2.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["train_sentences"] == 2000 and result["pretraining"]["steps"] == 30
    for name in ("pretrained", "from scratch"):
        run = result["finetuning"][name]
        assert run["steps"] == 30 and 0.3 < run["dev_accuracy_final"] <= run["dev_accuracy_best"] + 1e-9 <= 1.0 + 1e-9


def test_without_the_data_it_says_where_it_looked(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sst2.py"), "--data", str(tmp_path), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"{tmp_path}/train.tsv and dev.tsv not found" in proc.stderr
