"""The fine-tuning plugin example, tested as a user's plugin: found in ./plugins, trained, run under DDP, predicting."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmtemplate.cli import main

REPO = Path(__file__).resolve().parents[2]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.accelerator=cpu"]


def plugin_folder(tmp_path: Path) -> Path:
    (tmp_path / "plugins").mkdir()
    shutil.copy(REPO / "plugins" / "similarity.py", tmp_path / "plugins")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return tmp_path


@pytest.mark.slow  # 40 s; tests/plugins/test_bigram_lm.py has a plugin learn in the default suite
def test_the_plugin_learns_how_many_words_two_sentences_share_and_predicts_a_file(tmp_path, monkeypatch, clean_registry):
    monkeypatch.chdir(plugin_folder(tmp_path))
    assert main(["fit", "-c", "configs/plugins/similarity-demo.yaml", *QUIET]) == 0
    metrics = json.loads(Path("outputs/similarity-demo/version_0/metrics.json").read_text())
    # The score is the number of shared words (0-5, uniform): an untrained model's correlation is about 0; counting
    # the words two segments share needs attention across them, which 2,000 steps of this encoder learn. The end
    # point moves with float-level changes elsewhere (0.81 and 0.73 Pearson from two builds that compute the same
    # learning rates), so the bound sits below both, far above the untrained 0.
    assert metrics["val/pearson"] > 0.6 and metrics["val/spearman"] > 0.6, metrics
    Path("pairs.tsv").write_text("sentence1\tsentence2\nred cat runs big tree\tred cat runs big tree\n"
                                 "red cat runs big tree\tblue dog sleeps old boat\n")
    assert main(["predict", "run.name=similarity-demo", "--input", "pairs.tsv", *QUIET]) == 0
    same, different = (json.loads(line) for line in Path("outputs/similarity-demo/version_0/predictions.jsonl").open())
    assert same["sentence2"] == "red cat runs big tree" and same["score"] > different["score"] + 2


@pytest.mark.slow  # over a minute; tests/test_distributed.py loads a ./plugins task on every DDP rank in a third of it
def test_the_plugin_trains_under_ddp_on_cpu(tmp_path):
    """Two processes with half the batch each: every worker loads ./plugins, and the shared-word count is learned."""
    args = ["fit", "-c", "configs/plugins/similarity-demo.yaml", "trainer.max_steps=800", "data.batch_size=16",
            "trainer.strategy=ddp", "trainer.devices=2", *QUIET]
    proc = subprocess.run([sys.executable, "-m", "lmtemplate", *args], cwd=plugin_folder(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "outputs/similarity-demo/version_0/metrics.json").read_text())
    assert metrics["step"] == 800 and metrics["val/pearson"] > 0.5, metrics


def test_the_example_stays_small_enough_to_read_in_one_sitting():
    assert len((REPO / "plugins" / "similarity.py").read_text().splitlines()) <= 80
