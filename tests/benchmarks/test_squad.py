"""The SQuAD benchmark's smoke run: the article split, the three rows of its table, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

from squad import baseline, first_words, split  # noqa: E402

from lmtemplate.data.squad import read_squad  # noqa: E402


@pytest.mark.skipif(not DEV.is_file(), reason="needs ../shared/data/squad/dev-v1.1.json")
def test_split_keeps_each_article_on_one_side(tmp_path):
    train, held_out, paragraphs = split(DEV, tmp_path, quick=False)
    a, b = (json.loads(p.read_text())["data"] for p in (train, held_out))
    assert (len(a), len(b)) == (38, 10)
    assert not {x["title"] for x in a} & {x["title"] for x in b}
    assert (len(read_squad(train)), len(read_squad(held_out))) == (8582, 1988)
    assert len(paragraphs.read_text().splitlines()) == sum(len(x["paragraphs"]) for x in a)


def test_baseline_answers_with_the_first_words_of_the_first_sentence():
    assert first_words("Super Bowl 50 was a game. It was played in 2016.", 3) == "Super Bowl 50"
    assert first_words("Short one. Next.", 5) == "Short one."
    from lmtemplate.data.squad import QAExample

    examples = [QAExample("1", "q", "Denver won it. Then more.", [("Denver", 0)])]
    assert baseline(examples, 1)["exact"] == 100.0 and baseline(examples, 2)["exact"] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(not DEV.is_file(), reason="needs ../shared/data/squad/dev-v1.1.json")
def test_quick_run_reports_learned_baseline_and_oracle(tmp_path):
    out = tmp_path / "squad.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "squad.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["pretraining"]["steps"] == 4 and result["finetuning"]["steps"] == 4
    rows = result["eval"]
    assert len(rows) == 3 and all(0 <= r["exact"] <= r["f1"] + 1e-9 <= 100 + 1e-9 for r in rows.values())
    assert rows["oracle (gold spans through our tokenization)"]["exact"] >= 95


def test_without_the_data_it_says_where_it_looked(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "squad.py"), "--data", str(tmp_path / "x.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"{tmp_path}/x.json not found" in proc.stderr
