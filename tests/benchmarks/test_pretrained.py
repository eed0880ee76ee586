"""benchmarks/pretrained.py on a tiny random BERT that transformers builds here (no MiniLM needed): the template and
the plain loop around transformers' BertModel train for as many steps on the same batches, are scored at the same
steps, and, with dropout 0, start from the same loss on the first batch (the same function of the same weights)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))

from test_hf import bert_config, bert_folder  # noqa: E402
import transformers  # noqa: E402

WORDS = {"1": ["good", "fine", "warm", "great"], "0": ["bad", "dull", "cold", "awful"]}


def sst2_folder(folder: Path) -> Path:
    folder.mkdir()
    for name, n in (("train.tsv", 240), ("dev.tsv", 48)):
        lines = [f"a {WORDS[str(i % 2)][i % 4]} film\t{i % 2}" for i in range(n)]
        (folder / name).write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    return folder


def squad_folder(folder: Path) -> Path:
    """39 articles (the benchmark's split keeps the first 38 for training) of paragraphs that each answer one question."""
    folder.mkdir()
    articles = []
    for a in range(39):
        paragraphs = []
        for p in range(6):
            city = "abcdefgh"[(a + p) % 8] * 3
            context = f"the capital of land {p} is {city}. it is old."
            qas = [{"id": f"{a}-{p}", "question": f"what is the capital of land {p}?",
                    "answers": [{"text": city, "answer_start": context.index(city)}]}]
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": str(a), "paragraphs": paragraphs})
    (folder / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles}))
    return folder


@pytest.mark.parametrize("task, make, metrics, plain_steps", [("sst2", sst2_folder, {"accuracy"}, 6),
                                                               ("squad", squad_folder, {"f1", "exact"}, 3)])
def test_quick_run_compares_the_template_with_a_plain_transformers_loop_on_the_same_batches(tmp_path, task, make,
                                                                                            metrics, plain_steps):
    checkpoint = bert_folder(transformers.BertModel(bert_config()), tmp_path / "bert")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), task, "--quick", "--checkpoint",
                           str(checkpoint), "--data", str(make(tmp_path / "data")), "--out", str(out),
                           "--plain-steps", str(plain_steps)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 6 and result["plain_steps"] == plain_steps  # the plain loop may stop sooner
    assert [r["step"] for r in result["template"]["curve"]] == [3, 6]
    assert [r["step"] for r in result["plain"]["curve"]] == [3, 6][: plain_steps // 3]
    for side in ("template", "plain"):
        assert all(set(r) >= metrics and all(0 <= r[m] <= 100 for m in metrics) for r in result[side]["curve"])
        assert result[side]["ms_per_step_median"] > 0
    assert result["template"]["first_loss"] == pytest.approx(result["plain"]["first_loss"], abs=1e-4)
    assert result["speed_ratio"] == pytest.approx(result["plain"]["ms_per_step_median"]
                                                  / result["template"]["ms_per_step_median"])


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), "sst2", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_without_the_data_it_says_what_to_pass(tmp_path):
    checkpoint = bert_folder(transformers.BertModel(bert_config()), tmp_path / "bert")
    proc = bench(tmp_path, "--checkpoint", str(checkpoint), "--data", str(tmp_path / "none"))
    assert proc.returncode == 1 and "pass --data FOLDER" in proc.stderr and str(tmp_path / "none") in proc.stderr


def test_a_checkpoint_folder_without_config_json_or_a_bad_plain_steps_is_named(tmp_path):
    proc = bench(tmp_path, "--checkpoint", str(tmp_path))
    assert proc.returncode == 1 and f"{tmp_path} is not a Hugging Face model folder" in proc.stderr
    proc = bench(tmp_path, "--checkpoint", str(tmp_path), "--plain-steps", "0")
    assert proc.returncode == 2 and "--plain-steps: expected a positive number of steps, got 0" in proc.stderr
