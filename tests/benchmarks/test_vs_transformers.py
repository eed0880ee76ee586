"""Smoke test of benchmarks/vs_transformers.py: --quick runs both shapes and writes a sane JSON file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_transformers.py"


@pytest.mark.slow
def test_quick_run_writes_both_shapes(tmp_path):
    out = tmp_path / "vs_transformers.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio ours/HF" in proc.stdout

    data = json.loads(out.read_text())
    assert set(data["shapes"]) == {"baby", "larger"}
    assert data["torch"] and data["transformers"] and data["threads"] > 0 and data["cpu_count"] > 0
    for name, r in data["shapes"].items():
        assert r["steps"] > 0, name
        for model in ("ours", "transformers"):
            assert r[model]["median_ms"] > 0 and r[model]["tokens_per_s"] > 0, (name, model)
        assert r["ratio_ours_over_transformers"] > 0, name
        # The two models compute the same function once they hold the same weights.
        assert r["equivalence"]["max_abs_logit_diff"] < 1e-4, name
        assert r["equivalence"]["max_abs_grad_diff"] < 1e-5, name
    assert data["shapes"]["larger"]["shape"]["n_embd"] == 384
