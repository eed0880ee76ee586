"""The DialogSum benchmark's smoke run (slow: trains a tiny model for 20 steps on 400 dialogues, then tests it),
its baseline, and its message when the data is missing."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "dialogsum"
sys.path.insert(0, str(ROOT / "benchmarks"))

import dialogsum  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "train.jsonl").is_file(), reason="needs ../shared/data/dialogsum")
@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder"])
def test_quick_run_reports_test_rouge_two_ways_beside_the_baseline_and_a_learning_curve(tmp_path, arch):
    out = tmp_path / "dialogsum.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dialogsum.py"), "--quick", "--arch", arch,
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] and result["arch"] == arch and result["steps"] == 20 and result["train_examples"] == 400
    assert [c["step"] for c in result["learning_curve"]] == [9, 19]
    assert all(0 <= c["minutes"] < result["fit_wall_s"] / 60 for c in result["learning_curve"])
    assert list(result["test"]) == ["beam 2", "greedy"]  # the config's beam (2 in --quick) and greedy
    model = [scores for by_refs in result["test"].values() for scores in by_refs.values() if isinstance(scores, dict)]
    assert all(0 < by_refs["distinct"] <= 1 for by_refs in result["test"].values())  # the collapse scores beside
    for scores in (*model, *result["baseline"]["test"].values()):
        assert set(scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum"} and all(0 <= v <= 100 for v in scores.values())
    assert result["baseline"]["test"]["all three"]["rouge1"] >= result["baseline"]["test"]["summary1"]["rouge1"] > 15
    assert "| model, beam 2 vs summary1" in proc.stdout and "| model, greedy vs all three" in proc.stdout and "| lead-" in proc.stdout
    if importlib.util.find_spec("matplotlib"):  # the bench extra draws the learning curve beside the JSON
        assert f"chart: {out.with_suffix('.png')}" in proc.stdout and out.with_suffix(".png").stat().st_size > 1000


def test_the_baseline_strips_speaker_tags_and_keeps_the_first_words():
    dialogue = "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks. And you?"
    assert dialogsum.lead(dialogue, 5) == "Hello, how are you? Fine,"
    dev = [{"dialogue": "#Person1#: a b c d e f g h i j\n#Person2#: k l m n o p q r s t", "summary": "a b c d e f g h i j"}]
    chosen = dialogsum.baseline(dev, [{"dialogue": "#Person1#: x y", "summary1": "z", "summary2": "x y", "summary3": "z"}])
    assert chosen["k"] == 10 and chosen["dev_rouge1_by_k"][10] == 100.0  # the first 10 words are the summary
    assert chosen["test"]["summary1"]["rouge1"] == 0.0 and chosen["test"]["all three"]["rouge1"] == 100.0


def test_without_the_data_it_says_what_is_missing_and_where(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dialogsum.py"), "--data", str(tmp_path), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"dialogsum: dev.jsonl, test.jsonl not found in {tmp_path}" in proc.stderr


def test_a_missing_checkpoint_config_or_result_file_is_named():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dialogsum.py"), "--ckpt", "nowhere/best-1.ckpt"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "dialogsum: no such file: nowhere/best-1.ckpt (--ckpt names a checkpoint" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dialogsum.py"), "--plot-only", "gone.json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no such file: gone.json" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dialogsum.py"), "--config", "configs/gone.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no such file: configs/gone.yaml (--ckpt names a checkpoint, --config a YAML" in proc.stderr
