"""benchmarks/table.py: docs/benchmarks.md is what the records give, and --add promotes a benchmark's JSON.

The --add tests work on copies of the page and the records in tmp_path, laid out as in the repository (so the
links in the table are the same), with a JSON written the way vs_nanogpt.py writes its result.
"""

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "benchmarks" / "table.py"
MACHINE = {"processor": "Test CPU", "cpu_count": 2, "threads": 2, "load_average": [0.25, 0.5, 0.5]}


def table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TABLE), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def copy(tmp_path):
    """The page and the records copied into tmp_path; the options that point table.py at them."""
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "benchmarks.md", tmp_path / "docs" / "benchmarks.md")
    return tmp_path, ["--results", str(tmp_path / "benchmarks" / "results"), "--doc", str(tmp_path / "docs" / "benchmarks.md")]


def vs_nanogpt_json(folder: Path, shapes: dict[str, float], quick: bool = False) -> Path:
    result = {"threads": 2, "quick": quick, "shapes": {s: {"speed_ratio": r} for s, r in shapes.items()},
              "environment": MACHINE}
    path = folder / "outputs" / "benchmarks" / "vs_nanogpt.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    stamp = datetime(2027, 1, 2, 12, tzinfo=timezone.utc).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def records(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (folder / "benchmarks" / "results").glob("*.json")}


def test_the_committed_page_is_what_the_records_give():
    proc = table("--check")
    assert proc.returncode == 0, proc.stderr


def test_check_finds_a_number_written_by_hand_and_a_run_puts_the_table_back(copy):
    folder, options = copy
    doc = folder / "docs" / "benchmarks.md"
    committed = doc.read_text()
    assert table("--check", *options).returncode == 0
    doc.write_text(committed.replace("**1.024**", "**1.030**", 1))
    proc = table("--check", *options)
    assert proc.returncode == 1 and "out of date" in proc.stderr
    assert table(*options).returncode == 0
    assert doc.read_text() == committed


def test_add_makes_a_run_the_current_result_and_keeps_the_old_one_in_history(copy):
    folder, options = copy
    before = {n: json.loads(t) for n, t in records(folder).items()}
    raw = vs_nanogpt_json(folder, {"baby": 1.25, "large": 0.97})
    proc = table("--add", str(raw), "--note", "re-run on the test machine", *options)
    assert proc.returncode == 0, proc.stderr
    for name, value in (("vs_nanogpt_baby.json", 1.25), ("vs_nanogpt_large.json", 0.97)):
        old, new = before[name], json.loads((folder / "benchmarks" / "results" / name).read_text())
        assert new["value"] == value and new["date"] == "2027-01-02" and new["note"] == "re-run on the test machine"
        assert new["machine"] == "2-core Test CPU, threads 2, load 0.25" and new["numbers"] == json.loads(raw.read_text())
        assert new["command"] == old["command"]
        assert new["history"] == [{k: old[k] for k in ("date", "machine", "value", "command", "note", "numbers")},
                                  *old["history"]]
    page = (folder / "docs" / "benchmarks.md").read_text()
    assert "| **1.250** |" in page and "| **0.970** |" in page and "| 2027-01-02 | 2-core Test CPU" in page
    assert "[record, 5 earlier runs](../benchmarks/results/vs_nanogpt_large.json)" in page
    assert table("--check", *options).returncode == 0


def test_add_refuses_what_its_records_cannot_take_and_writes_nothing(copy):
    folder, options = copy
    committed, page = records(folder), (folder / "docs" / "benchmarks.md").read_text()
    baby_only = vs_nanogpt_json(folder, {"baby": 1.25})  # a --shapes baby run: the large row's number is not there
    proc = table("--add", str(baby_only), "--note", "n", *options)
    assert proc.returncode != 0 and "shapes -> large" in proc.stderr and "--to" in proc.stderr
    quick = vs_nanogpt_json(folder / "quick", {"baby": 1.25, "large": 0.97}, quick=True)
    proc = table("--add", str(quick), "--note", "n", *options)
    assert proc.returncode != 0 and "--quick smoke run" in proc.stderr
    other = quick.with_name("unknown.json")
    shutil.copy(quick, other)
    proc = table("--add", str(other), "--note", "n", *options)
    assert proc.returncode != 0 and "--to" in proc.stderr and "vs_nanogpt_baby" in proc.stderr
    assert table("--add", str(baby_only), *options).returncode == 2  # argparse: --note is required with --add
    assert records(folder) == committed and (folder / "docs" / "benchmarks.md").read_text() == page
    proc = table("--add", str(baby_only), "--note", "baby only", "--to", "vs_nanogpt_baby", *options)
    assert proc.returncode == 0, proc.stderr
    changed = {n for n, t in records(folder).items() if t != committed[n]}
    assert changed == {"vs_nanogpt_baby.json"}


def test_add_reads_a_runs_table_by_the_config_values_of_its_rows(copy):
    """A sweep's result is `runs --json`: a list of rows, which the record reads by the values that tell them apart."""
    folder, options = copy
    rows = [{"model.positions": p, "runs": 3, "steps": 2000, "val/loss": v, "vs best": ""}
            for p, v in (("learned", 1.9), ("rotary", 1.7))]  # not in the record's order: found by name
    path = folder / "outputs" / "benchmarks" / "shakespeare-positions.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rows))
    proc = table("--add", str(path), "--note", "a re-run", *options)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((folder / "benchmarks" / "results" / "shakespeare_positions.json").read_text())
    assert record["value"] == [1.7, 1.9] and record["numbers"]["rows"]["model.positions=rotary"] == rows[1]
    assert record["machine"].startswith(f"{os.cpu_count()}-core")


def test_add_refuses_a_list_that_is_not_a_runs_table(copy):
    folder, options = copy
    committed = records(folder)
    path = folder / "shakespeare-positions.json"
    path.write_text(json.dumps([{"val/loss": 1.7}]))
    proc = table("--add", str(path), "--note", "n", "--to", "shakespeare_positions", *options)
    assert proc.returncode == 1 and "not a `python -m lmtemplate runs --json` table" in proc.stderr
    assert "Traceback" not in proc.stderr and records(folder) == committed
