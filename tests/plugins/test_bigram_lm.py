"""The example plugin, tested as a user's plugin would be: found in ./plugins, run by name."""

import json
import shutil
from pathlib import Path

from lmtemplate.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_bigram_plugin_is_listed_and_learns(tmp_path, monkeypatch, capsys, clean_registry):
    (tmp_path / "plugins").mkdir()
    shutil.copy(REPO / "plugins" / "bigram_lm.py", tmp_path / "plugins")
    monkeypatch.chdir(tmp_path)
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert "bigram_lm" in listing and "plugin file plugins/bigram_lm.py" in listing
    tiny = ["data.demo_lines=2000", "trainer.max_steps=150", "trainer.val_check_interval=50",
            "trainer.enable_progress_bar=false", "tokenizer.vocab_size=300"]
    assert main(["fit", "-c", str(REPO / "configs/plugins/bigram-demo.yaml"), *tiny]) == 0
    metrics = json.loads(Path("outputs/bigram-demo/version_0/metrics.json").read_text())
    # Uniform guessing over 300 tokens costs ln(300) = 5.7 nats; the demo's unigram entropy is about 4.2;
    # a bigram table must beat that, since the previous token narrows the next one down a lot.
    assert metrics["val/loss"] < 3.8, metrics
