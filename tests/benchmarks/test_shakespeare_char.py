"""The Tiny Shakespeare benchmark's smoke run; needs ../shared/data (skipped without it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_file(), reason="../shared/data/tinyshakespeare is not here")
def test_quick_run_trains_char_level(tmp_path):
    out = tmp_path / "shakespeare.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "shakespeare_char.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert run["steps"] == 40 and run["ms_per_iter_median"] > 0
    assert run["val_loss"] < 4.0  # 40 steps already beat uniform guessing over ~65 characters (ln 67 = 4.2)
