"""benchmarks/lora_sst2.py on a tiny random BERT that transformers builds here: full fine-tuning and LoRA train for
as many steps, each in its own process, and the result compares what trains, accuracy, time, memory and size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from test_hf import bert_config, bert_folder  # noqa: E402
from test_pretrained import sst2_folder  # noqa: E402
import transformers  # noqa: E402


@pytest.mark.slow  # two fits, each in a process of its own
def test_quick_run_compares_lora_with_full_fine_tuning_at_equal_steps(tmp_path):
    checkpoint = bert_folder(transformers.BertModel(bert_config()), tmp_path / "bert")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lora_sst2.py"), "--quick", "--checkpoint",
                           str(checkpoint), "--data", str(sst2_folder(tmp_path / "data")), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    full, lora = result["full"], result["lora"]
    assert full["steps"] == lora["steps"] == 6 and full["trainable_params"] == full["params"]
    adapters = 2 * 2 * 8 * (32 + 32)  # rank 8 on q and v of 2 layers 32 wide: A (8 x 32) and B (32 x 8) each
    assert lora["params"] == full["params"] + adapters
    assert lora["trainable_params"] == adapters + 32 * 2 + 2  # and the 2-class head on the mean of the tokens
    assert result["trainable_share"] == pytest.approx(lora["trainable_params"] / lora["params"])
    assert result["checkpoint_size_ratio"] < 0.5
    for r in (full, lora):
        assert 0 <= r["accuracy"] <= 1 and r["ms_per_step_median"] > 0 and r["peak_memory_mib"] > 0
