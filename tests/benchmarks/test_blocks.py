"""The block benchmark's smoke run; needs ../shared/data (skipped without it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.mark.skipif(not DATA.is_file(), reason="../shared/data/tinyshakespeare is not here")
def test_quick_run_times_both_blocks_with_the_llama_options(tmp_path):
    out = tmp_path / "blocks.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "blocks.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "model.norm_type=rmsnorm" in result["llama_options"] and "model.n_kv_head=2" in result["llama_options"]
    for runs in result["runs"].values():
        (run,) = runs
        assert run["steps"] == 30 and run["ms_per_iter_median"] > 0 and run["val_loss"] < 4.2
    assert result["ratio_llama_over_gpt"] > 0
