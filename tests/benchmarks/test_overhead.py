"""The overhead benchmark's smoke run (slow: it trains the demo model for ~35 steps)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "overhead.py"


@pytest.mark.slow
def test_quick_run_times_both_loops(tmp_path):
    out = tmp_path / "overhead.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps"] >= 20
    assert result["template_ms_median"] > 0 and result["plain_ms_median"] > 0
    assert 0.2 < result["ratio_plain_over_template"] < 5  # same work on both sides: same order of time
    phases = result["phases_ms_median"]
    assert list(phases["template"]) == list(phases["plain"]) == ["data and loop", "forward and loss", "backward",
                                                                   "clip, optimizer, callbacks"]
    for loop in ("template", "plain"):  # backward is the longest phase; the phases add up to about a step
        assert max(phases[loop], key=phases[loop].get) in ("backward", "forward and loss"), phases
        assert 0.5 < sum(phases[loop].values()) / result[f"{loop}_ms_median"] < 1.5, phases
