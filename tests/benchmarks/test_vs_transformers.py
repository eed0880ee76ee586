"""Smoke test of benchmarks/vs_transformers.py: --quick runs both shapes and writes a sane JSON file, for GPT-2
(the default) and for the Llama family; and the check that both sides compute the same function can fail."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "vs_transformers.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_transformers import FAMILIES, check_equivalent  # noqa: E402

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=2, vocab_size=11)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_quick_run_writes_both_shapes(tmp_path, family):
    out = tmp_path / "vs_transformers.json"
    args = [] if family == "gpt2" else ["--family", family]  # gpt2: the default
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio ours/HF" in proc.stdout

    data = json.loads(out.read_text())
    assert data["benchmark"] == FAMILIES[family].name
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
        assert r["equivalence"]["loss_ours"] == pytest.approx(r["equivalence"]["loss_theirs"], abs=1e-5), name
    assert data["shapes"]["larger"]["shape"]["n_embd"] == 384
    if family == "llama":  # our GPT's attention is F.scaled_dot_product_attention
        assert {r["attn_implementation_transformers"] for r in data["shapes"].values()} == {"sdpa"}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_models_that_do_not_share_weights_are_refused(family):
    f = FAMILIES[family]
    ours, theirs = f.build_ours(TINY), f.build_theirs(TINY)
    assert check_equivalent(f, ours, theirs, TINY)["max_abs_logit_diff"] < 1e-4
    with pytest.raises(SystemExit, match="the models are not equivalent"):
        check_equivalent(replace(f, copy_weights=lambda a, b: None), f.build_ours(TINY), f.build_theirs(TINY), TINY)
