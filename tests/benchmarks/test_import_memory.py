"""Smoke test of benchmarks/import_memory.py: --quick imports a tiny random Llama both ways in fresh processes.

Marked slow: three interpreters start (transformers, then lmtemplate twice), ~15-60 s on 2 busy cores.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "import_memory.py"


@pytest.mark.slow
def test_quick_run_imports_the_saved_llama_and_measures_both_ways(tmp_path):
    out = tmp_path / "import_memory.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] and 0.1 < result["file_mib"] < 5
    assert result["parameters"] * 4 / 2 ** 20 < result["file_mib"] < result["parameters"] * 4.1 / 2 ** 20  # fp32
    for run in (result["import"], result["baseline_all_tensors_first"]):
        assert run["weights_match"] is True
        assert 0 < run["start_rss_mib"] <= run["peak_rss_mib"]
        assert run["peak_over_file"] == run["peak_rss_mib"] / result["file_mib"]
    assert "weights match: True" in proc.stdout
