"""Smoke test of benchmarks/data_pipeline.py: --quick builds a token cache and reads windows with flat memory.

Marked slow: the quick run generates and tokenizes ~20 MiB of text, ~30-55 s on 2 busy cores.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_pipeline.py"

# The quick run reads 500 batches of 32 windows of 257 int64 tokens (~64 KiB a batch), sampling memory
# every 50, so growth is measured over the last 450 batches (the sampler's per-epoch list of window starts
# is allocated before that). Keeping every window alive adds ~40 MiB of anonymous memory (measured: 42 MiB
# with TokenWindows.__getitem__ patched to keep its results), keeping every tenth ~4 MiB; a healthy loop
# adds ~0 (memory-mapped token pages count as RssFile, not RssAnon). 4 MiB leaves room for allocator noise
# and fails any leak of a tenth of the batches or more.
MAX_ANON_GROWTH_MIB = 4.0


@pytest.mark.slow
def test_quick_run_streams_the_build_and_reads_with_flat_memory(tmp_path):
    out, work = tmp_path / "x.json", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--work-dir", str(work)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "text throughput" in proc.stdout

    data = json.loads(out.read_text())
    assert not work.exists(), "the work dir should be deleted without --keep"
    assert 15 < data["corpus"]["text_mib"] < 25 and data["corpus"]["files"] > 1
    digest = data["digest"]  # the content hash every fit computes over its corpus
    assert digest["hash"] == "sha1" and digest["text_mib"] == data["corpus"]["text_mib"] and digest["mib_per_s"] > 0

    build = data["build"]
    assert build["text_mib_per_s"] > 0 and build["tokens_per_s"] > 0 and build["seconds"] > 0
    assert build["tokens"] > 0 and build["token_file_mib"] > 0
    assert 0 < build["peak_rss_mib"] < 2048
    # Streaming: resident memory does not grow with the text processed. Between 10% and 100% of the build
    # ~18 MiB of text goes through; keeping that text would add >= 18 MiB, keeping its ~4M token ids as
    # Python ints far more. Observed growth is ~2-3 MiB (the tokenizer's word cache filling up).
    assert build["rss_growth_10pct_to_end_mib"] < 12

    speed = data["build_speed"]  # encode_batch alone, then token_file with 1, 2 and N workers, over a 4 MiB sample
    assert speed["byte_identical"] and speed["rounds"] == 2
    assert speed["encode_batch_mib_per_s"] > 0 and speed["ratio_token_file_1_worker_to_encode_batch"] > 0.3
    assert {"1", "2"} <= set(speed["speedup_over_1_worker"]) and speed["speedup_over_1_worker"]["1"] == 1.0

    read = data["read"]
    assert read["batches"] == 500 and read["batches_per_s"] > 0 and read["tokens_per_s"] > 0
    assert read["rss_mib"]["after_first_interval"]["batches"] == 50 and read["rss_mib"]["end"]["batches"] == 500
    assert read["anon_growth_mib"] < MAX_ANON_GROWTH_MIB, read["rss_mib"]

    assert data["machine"]["cpu_count"] > 0 and data["machine"]["platform"]
