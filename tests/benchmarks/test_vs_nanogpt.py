"""benchmarks/vs_nanogpt.py: the message without a nanoGPT checkout, and a quick run against a fake nanoGPT.

The fake ``train.py`` (written here, so CI needs no checkout) prints what nanoGPT's prints: a line per iteration
with its time, and the losses at each evaluation; the lmtemplate side really trains, on a small generated text.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "vs_nanogpt.py"

FAKE_TRAIN = '''
import sys
args = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("--"))
assert sys.argv[1] == "config/train_shakespeare_char.py" and args["device"] == "cpu" and args["compile"] == "False"
for name in ("train.bin", "val.bin", "meta.pkl"):
    open("data/shakespeare_char/" + name, "rb").close()
iters = int(args["max_iters"])
for it in range(iters + 1):
    if it % int(args["eval_interval"]) == 0:
        print(f"step {it}: train loss 3.1000, val loss 3.2000")
    print(f"iter {it}: loss 3.0000, time {20 + it % 3}.00ms, mfu -100.00%")
'''


def env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def test_without_a_checkout_it_says_how_to_get_one(tmp_path):
    for args in ([], ["--nanogpt", str(tmp_path / "nowhere")]):
        proc = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, env=env(), timeout=120)
        assert proc.returncode != 0
        assert "git clone https://github.com/karpathy/nanoGPT" in proc.stderr
        assert "--nanogpt" in proc.stderr and "prepare.py" in proc.stderr


@pytest.mark.slow
def test_quick_run_against_a_fake_nanogpt(tmp_path):
    fake = tmp_path / "nanoGPT"
    (fake / "config").mkdir(parents=True)
    (fake / "train.py").write_text(FAKE_TRAIN)
    (fake / "model.py").write_text("")
    (fake / "config" / "train_shakespeare_char.py").write_text("")
    text = tmp_path / "input.txt"
    text.write_text("".join(f"ROMEO {i}:\nBut soft, what light through yonder window breaks?\n\n" for i in range(600)))
    out = tmp_path / "vs.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--nanogpt", str(fake), "--data", str(text), "--quick",
                           "--threads", "1", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          env=env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (fake / "data" / "shakespeare_char" / "train.bin").stat().st_size > 0  # written from --data
    result = json.loads(out.read_text())
    baby = result["shapes"]["baby"]
    assert baby["nanogpt_ms_per_iter"] == 21.0  # the median of the fake's times after the first ten
    assert baby["lmtemplate_ms_per_iter"] > 0 and baby["speed_ratio"] == pytest.approx(21.0 / baby["lmtemplate_ms_per_iter"])
    assert baby["val_loss"]["nanogpt"] == 3.2 and 0 < baby["val_loss"]["lmtemplate"] < 10
    assert baby["rounds"][0]["lmtemplate"]["iters"] == 30
    assert result["threads"] == 1
