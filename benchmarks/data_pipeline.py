"""Data-pipeline benchmark: build the token cache for a large generated corpus, then read training windows.

    python benchmarks/data_pipeline.py                 # ~1 GiB of text (8 files x 128 MiB), 20,000 batches
    python benchmarks/data_pipeline.py --quick         # ~20 MiB, 500 batches: a smoke test (< 60 s)
    python benchmarks/data_pipeline.py --size-mb 256 --keep --work-dir /tmp/dp

Steps (each measured):

1. generate: ``--size-mb`` MiB of text with the project's demo grammar (``lmtemplate.data.demo.text.demo_lines``),
   written in chunks of ``CHUNK_LINES`` lines into ``--files`` ``.txt`` files under the work dir, so the
   generator never holds more than one chunk. Files are generated in parallel (one process per core).
   Not part of the measured pipeline; its time is reported for the record.
2. tokenizer: a byte-level BPE (``lmtemplate.tokenization.train_tokenizer``, ``--vocab-size``) trained on
   the first ``--tokenizer-sample-mb`` MiB of the corpus only, so the benchmark measures the cache build,
   not BPE training; saved to ``<work>/tokenizer.json``.
2b. digest: ``lmtemplate.tokenization.file_fingerprint`` over the whole corpus, timed: the hash of every byte that
   each fit computes to find its caches (``docs/tasks/causal_lm.md``). The files were just written, so they are read
   from the page cache: the hash's speed, not the disk's. Reports MiB/s and the hash's name.
3. build: ``token_file(Corpus(files), tokenizer, cache_dir)`` in a fresh subprocess, timed (the digest included); reports MiB/s of
   text, tokens/s, the token file size and the subprocess's peak resident memory (``VmHWM``), plus its
   resident memory sampled while the build runs (streaming: it must not grow with the text processed).
3b. build speed: in one more subprocess, ``--speed-rounds`` rounds over a ``--speed-mb`` MiB sample of the corpus
   (the head of each file), each round in turn: the tokenizer's ``encode_batch`` alone over the sample's batches
   of lines (read beforehand, untimed), then ``token_file`` with 1, 2 and ``--max-workers`` worker processes
   (``data.tokenize_workers``), each into a fresh cache. Reports token_file's throughput over encode_batch's
   (1 worker; the target is >= 0.95), the speed-up of each worker count over 1, and whether all builds were
   byte-identical. The build of step 3 uses the default worker count (one per core from 64 MiB of text).
4. read: in another fresh subprocess, ``TokenWindows`` + ``WindowSampler(shuffle=True)`` + a
   ``torch.utils.data.DataLoader`` over the memory-mapped token file, as ``TextDataModule`` builds them,
   iterated for ``--batches`` batches (or ``--max-seconds``), with ``VmRSS``/``RssAnon``/``RssFile``
   sampled every ``--sample-every`` batches.

Memory while reading: pages of the token file that have been read are mapped into the process and count
towards ``VmRSS`` (as ``RssFile``) -- that is page cache, shared and reclaimable, and bounded by the file
size. What must stay flat is ``RssAnon`` (the process's own heap). Each epoch ``WindowSampler`` allocates
its shuffled window starts as a Python list (~40 bytes a window, ~37 MiB for 1 GiB of this text), once, at
the first batch; growth is therefore measured from the first RSS sample after it (``--sample-every``).

``build.peak_rss_mib`` is the build subprocess's own ``VmHWM``. ``build.children_maxrss_mib`` is the
parent's ``getrusage(RUSAGE_CHILDREN)`` after the build: the largest of all its children so far, including the
forked generator processes, which inherit the parent's imports (lightning, via benchmarks/common.py), so it is
only an upper bound.

Units: MiB = 2**20 bytes throughout (so ``--size-mb 1024`` is 1 GiB); "tokens/s" while reading counts
input tokens (batch x block). The work dir is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NAME = "data_pipeline"
REPO = Path(__file__).resolve().parent.parent
# benchmarks/common.py (JSON output, table, environment) is imported by the parent process only: it imports
# lightning, and the measured subprocesses should hold only what the data pipeline itself needs.
MARKER = ".data_pipeline_work"  # marks a work dir this script created (so it may wipe it)
MiB = 2**20
CHUNK_LINES = 20_000  # lines generated and written at a time (~2.5 MiB of text)


# ---------------------------------------------------------------- memory probes (Linux /proc)


def proc_status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process, in MiB (empty off Linux)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = round(int(rest.split()[0]) / 1024, 1)  # kB -> MiB
    except OSError:
        pass
    return out


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    """common.environment() plus what matters here: memory, CPU affinity, tokenizers and numpy versions."""
    import numpy
    import tokenizers
    from common import environment

    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MiB)
    except (ValueError, OSError):
        mem = None
    return {
        **environment(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_mib": mem,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


# ---------------------------------------------------------------- step 1: generate the corpus


def generate_file(path: str, target_bytes: int, seed: int) -> int:
    """Write demo paragraphs to ``path`` in chunks until it holds ``target_bytes`` (within a line); returns its size."""
    from lmtemplate.data.demo.text import demo_lines

    written, chunk = 0, 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        while written < target_bytes:
            # demo_lines restarts its RNG from the seed, so every chunk gets its own seed
            text = "".join(line + "\n" for line in demo_lines(CHUNK_LINES, seed * 1_000_003 + chunk))
            if written + len(text) > target_bytes:  # the text is ASCII: characters == bytes
                text = text[: text.rfind("\n", 0, target_bytes - written) + 1] or text[: text.find("\n") + 1]
            f.write(text)
            written += len(text)
            chunk += 1
    os.replace(tmp, path)
    return os.path.getsize(path)


def generate_corpus(corpus_dir: Path, total_bytes: int, n_files: int, seed: int) -> list[Path]:
    corpus_dir.mkdir(parents=True, exist_ok=True)
    paths = [corpus_dir / f"part-{i:03d}.txt" for i in range(n_files)]
    sizes = [total_bytes // n_files + (1 if i < total_bytes % n_files else 0) for i in range(n_files)]
    workers = max(1, min(n_files, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(generate_file, map(str, paths), sizes, [seed * 1000 + i for i in range(n_files)]))
    return paths


def train_sample_tokenizer(files: list[Path], sample_bytes: int, vocab_size: int, out: Path) -> dict:
    """Train the BPE on the first ``sample_bytes`` of the corpus and save it to ``out``."""
    from lmtemplate.tokenization import TokenizerConfig, save_tokenizer, train_tokenizer

    def sample():
        seen = 0
        for path in files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield line
                    seen += len(line)
                    if seen >= sample_bytes:
                        return

    t0 = time.perf_counter()
    tok = train_tokenizer(TokenizerConfig(vocab_size=vocab_size), sample())
    seconds = time.perf_counter() - t0
    save_tokenizer(tok, out)
    return {"sample_mib": sample_bytes / MiB, "vocab_size": tok.get_vocab_size(), "seconds": seconds, "path": str(out)}


# ---------------------------------------------------------------- step 2b: digest the corpus


def measure_digest(files: list[Path]) -> dict:
    from lmtemplate.tokenization import CONTENT_HASH, file_fingerprint

    t0 = time.perf_counter()
    file_fingerprint(files)
    seconds = time.perf_counter() - t0
    mib = sum(f.stat().st_size for f in files) / MiB
    return {"hash": CONTENT_HASH, "text_mib": round(mib, 1), "seconds": round(seconds, 3), "mib_per_s": round(mib / seconds, 1)}


# ---------------------------------------------------------------- step 3: build the token cache (child)


def child_build(spec: dict) -> dict:
    from lmtemplate.data.corpus import Corpus, token_file
    from lmtemplate.tokenization import load_tokenizer

    files = [Path(p) for p in spec["files"]]
    cache = Path(spec["cache_dir"])
    tok = load_tokenizer(Path(spec["tokenizer"]))
    before = proc_status()  # after the imports and the tokenizer: the interpreter's own baseline

    samples: list[dict] = []
    done = threading.Event()

    def sampler() -> None:  # resident memory against the bytes of tokens written so far
        t0 = time.perf_counter()
        while True:
            written = sum(p.stat().st_size for p in cache.glob(".tokens-*") if p.is_file())
            samples.append({"t": round(time.perf_counter() - t0, 2), "token_bytes": written, **proc_status()})
            if done.wait(spec["sample_seconds"]):
                return

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    tokens = token_file(Corpus(files), tok, cache)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    end = proc_status()
    return {
        "seconds": seconds,
        "tokens": int(len(tokens)),
        "dtype": str(tokens.dtype),
        "token_file": str(tokens.filename),
        "token_file_bytes": os.path.getsize(tokens.filename),
        "rss_before_mib": before.get("VmRSS"),
        "anon_before_mib": before.get("RssAnon"),
        "peak_rss_mib": end.get("VmHWM"),
        "rss_end_mib": end.get("VmRSS"),
        "samples": samples,
    }


# ---------------------------------------------------------------- step 3b: build speed against raw encode_batch (child)


def child_speed(spec: dict) -> dict:
    """In one process, ``rounds`` rounds over the speed sample, in turn: the tokenizer's ``encode_batch`` alone over the
    sample's batches (read beforehand, untimed), then ``token_file`` (reading, encoding, writing) with each worker
    count, each into a fresh cache. Returns seconds per round for each, and whether every build was byte-identical."""
    import hashlib

    from lmtemplate.data.corpus import Corpus, token_file
    from lmtemplate.tokenization import load_tokenizer

    corpus = Corpus([Path(p) for p in spec["files"]])
    tok = load_tokenizer(Path(spec["tokenizer"]))
    batches = [texts for texts, _ in corpus.iter_batches()]
    times: dict[str, list[float]] = {"encode_batch": [], **{f"workers_{w}": [] for w in spec["workers"]}}
    digests = set()
    for r in range(spec["rounds"]):
        t0 = time.perf_counter()
        for texts in batches:
            tok.encode_batch(texts, add_special_tokens=False)
        times["encode_batch"].append(time.perf_counter() - t0)
        for w in spec["workers"]:
            cache = Path(spec["cache_dir"]) / f"speed-{r}-{w}"
            t0 = time.perf_counter()
            tokens = token_file(corpus, tok, cache, workers=w)
            times[f"workers_{w}"].append(time.perf_counter() - t0)
            digests.add(hashlib.sha256(open(tokens.filename, "rb").read()).hexdigest())
            del tokens
            shutil.rmtree(cache)
    return {"times": times, "identical": len(digests) == 1}


def speed_sample(files: list[Path], total_bytes: int, out_dir: Path) -> list[Path]:
    """The first ``total_bytes / len(files)`` bytes of each file (cut at a line end), as files in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_file, out = total_bytes // len(files), []
    for f in files:
        with open(f, "rb") as src:
            head = src.read(per_file)
        head = head[: head.rfind(b"\n") + 1] or head
        (out_dir / f.name).write_bytes(head)
        out.append(out_dir / f.name)
    return out


# ---------------------------------------------------------------- step 4: read windows (child)


def child_read(spec: dict) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from lmtemplate.data.corpus import Corpus, TokenWindows, WindowSampler, token_file
    from lmtemplate.tokenization import load_tokenizer

    files = [Path(p) for p in spec["files"]]
    tok = load_tokenizer(Path(spec["tokenizer"]))
    stamp = os.stat(spec["token_file"]).st_mtime_ns
    tokens = token_file(Corpus(files), tok, Path(spec["cache_dir"]))  # the cached file, memory-mapped
    assert str(tokens.filename) == spec["token_file"] and os.stat(spec["token_file"]).st_mtime_ns == stamp, "cache was rebuilt"
    block, batch_size = spec["block_size"], spec["batch_size"]
    sampler = WindowSampler(len(tokens), block, shuffle=True, seed=0)
    loader = DataLoader(TokenWindows(tokens, block), batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=0)

    start = proc_status()
    samples = [{"batches": 0, "t": 0.0, **start}]
    n, epoch, checksum = 0, 0, 0
    t0 = time.perf_counter()
    deadline = t0 + spec["max_seconds"] if spec["max_seconds"] else float("inf")
    while n < spec["batches"]:
        sampler.set_epoch(epoch)
        for x in loader:
            if n == 0:
                first_batch = {"t": time.perf_counter() - t0, **proc_status()}
            assert x.shape == (batch_size, block + 1) and x.dtype == torch.int64
            checksum += int(x[0, 0])  # touch the data
            n += 1
            if n % spec["sample_every"] == 0:
                samples.append({"batches": n, "t": round(time.perf_counter() - t0, 3), **proc_status()})
            if n >= spec["batches"] or time.perf_counter() >= deadline:
                break
        else:
            epoch += 1
            continue
        break
    seconds = time.perf_counter() - t0
    if samples[-1]["batches"] != n:
        samples.append({"batches": n, "t": round(seconds, 3), **proc_status()})
    return {
        "batches": n,
        "epochs_started": epoch + 1,
        "windows_per_epoch": len(sampler),
        "seconds": seconds,
        "first_batch": first_batch,
        "start": start,
        "samples": samples,
        "checksum": checksum,
    }


# ---------------------------------------------------------------- driver


def run_child(kind: str, spec: dict, work: Path) -> dict:
    spec_path, result_path = work / f"{kind}-spec.json", work / f"{kind}-result.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(spec_path), str(result_path)]
    subprocess.run(cmd, check=True, cwd=REPO)
    return json.loads(result_path.read_text())


def prepare_work_dir(work: Path) -> None:
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            sys.exit(f"error: --work-dir {work} exists, is not empty and was not made by this script; choose another")
        shutil.rmtree(work)  # left over from an earlier --keep run
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by benchmarks/data_pipeline.py; deleted at the end unless --keep\n")


def thin(samples: list[dict], keep: int = 60) -> list[dict]:
    """At most ``keep`` samples, evenly spaced, always with the first and the last."""
    if len(samples) <= keep:
        return samples
    idx = sorted({round(i * (len(samples) - 1) / (keep - 1)) for i in range(keep)})
    return [samples[i] for i in idx]


def summarize(args, gen: dict, tokenizer: dict, build: dict, read: dict, extra: dict) -> dict:
    text_bytes = gen["bytes"]
    text_mib = text_bytes / MiB
    # build: resident memory when 10% of the tokens had been written vs at the end (streaming => equal)
    final = build["token_file_bytes"]
    during = [s for s in build["samples"] if s["token_bytes"] > 0]
    early = next((s for s in during if s["token_bytes"] >= 0.1 * final), during[0] if during else None)
    late = during[-1] if during else None
    build_out = {
        "seconds": round(build["seconds"], 2),
        "text_mib_per_s": round(text_mib / build["seconds"], 3),
        "tokens": build["tokens"],
        "tokens_per_s": round(build["tokens"] / build["seconds"]),
        "bytes_per_token": round(text_bytes / build["tokens"], 3),
        "token_dtype": build["dtype"],
        "token_file_mib": round(final / MiB, 1),
        "peak_rss_mib": build["peak_rss_mib"],
        "rss_before_build_mib": build["rss_before_mib"],
        "rss_at_10pct_mib": early and early.get("VmRSS"),
        "rss_at_end_mib": late and late.get("VmRSS"),
        "rss_growth_10pct_to_end_mib": early and late and round(late["VmRSS"] - early["VmRSS"], 1),
        "children_maxrss_mib": extra["children_maxrss_mib"],
        "samples": thin(build["samples"]),
    }
    s = read["samples"]
    warm = s[1] if len(s) > 2 else s[0]  # after the first --sample-every batches
    mid = s[len(s) // 2]
    end = s[-1]
    in_tokens = read["batches"] * args.batch_size * args.block_size
    read_out = {
        "batches": read["batches"],
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "num_workers": 0,
        "seconds": round(read["seconds"], 3),
        "batches_per_s": round(read["batches"] / read["seconds"], 1),
        "tokens_per_s": round(in_tokens / read["seconds"]),
        "windows_per_epoch": read["windows_per_epoch"],
        "epochs_started": read["epochs_started"],
        "first_batch_seconds": round(read["first_batch"]["t"], 3),
        "sample_every": args.sample_every,
        "rss_mib": {k: {m: p.get(m) for m in ("VmRSS", "RssAnon", "RssFile")} | {"batches": p.get("batches")}
                    for k, p in (("start", s[0]), ("after_first_interval", warm), ("middle", mid), ("end", end))},
        "anon_after_first_batch_mib": read["first_batch"].get("RssAnon"),
        # the sampler's epoch: a shuffled tensor of window starts turned into a Python list (~40 B a window)
        "anon_first_batch_minus_start_mib": round(read["first_batch"]["RssAnon"] - s[0]["RssAnon"], 1),
        "rss_growth_mib": round(end["VmRSS"] - warm["VmRSS"], 1),
        "anon_growth_mib": round(end["RssAnon"] - warm["RssAnon"], 1),
        "file_growth_mib": round(end["RssFile"] - warm["RssFile"], 1),
        "anon_growth_from_start_mib": round(end["RssAnon"] - s[0]["RssAnon"], 1),
        "samples": thin(s),
    }
    return {
        "benchmark": "data_pipeline",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "corpus": {
            "files": gen["files"],
            "text_mib": round(text_mib, 1),
            "text_bytes": text_bytes,
            "generator": "lmtemplate.data.demo.text.demo_lines",
            "generate_seconds": round(gen["seconds"], 2),
            "generate_mib_per_s": round(text_mib / gen["seconds"], 2),
        },
        "tokenizer": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in tokenizer.items() if k != "path"},
        "build": build_out,
        "read": read_out,
        "machine": extra["machine"],
        "load_avg_before": extra["load_before"],
        "load_avg_after": extra["load_after"],
        "wall_seconds": round(extra["wall"], 1),
    }


def summarize_speed(speed: dict) -> dict:
    """Median seconds of each measure; token_file's throughput over encode_batch's, and each worker count's speed-up."""
    med = {k: statistics.median(v) for k, v in speed["times"].items()}
    mib = speed["text_mib"]
    workers = sorted(int(k.split("_")[1]) for k in med if k.startswith("workers_"))
    return {
        "text_mib": round(mib, 2),
        "rounds": len(speed["times"]["encode_batch"]),
        "encode_batch_mib_per_s": round(mib / med["encode_batch"], 3),
        "token_file_mib_per_s": {str(w): round(mib / med[f"workers_{w}"], 3) for w in workers},
        "ratio_token_file_1_worker_to_encode_batch": round(med["encode_batch"] / med["workers_1"], 3),
        "speedup_over_1_worker": {str(w): round(med["workers_1"] / med[f"workers_{w}"], 3) for w in workers},
        "byte_identical": speed["identical"],
        "seconds": speed["times"],
    }


def table_rows(r: dict) -> list[tuple[str, str, str]]:
    """(stage, measure, value) rows for common.print_table."""
    b, rd, c, t = r["build"], r["read"], r["corpus"], r["tokenizer"]
    sp = r["build_speed"]
    rows = [
        ("build speed", f"encode_batch alone ({sp['text_mib']:.1f} MiB sample)", f"{sp['encode_batch_mib_per_s']:.2f} MiB/s"),
        ("build speed", "token_file, 1 worker / encode_batch", f"{sp['ratio_token_file_1_worker_to_encode_batch']:.3f}"),
        *[("build speed", f"token_file, {w} worker{'s' if int(w) > 1 else ''}", f"{v:.2f} MiB/s, x{sp['speedup_over_1_worker'][w]:.2f}")
          for w, v in sp["token_file_mib_per_s"].items()],
        ("build speed", "byte-identical builds", str(sp["byte_identical"])),
        ("corpus", "text", f"{c['text_mib']:.1f} MiB in {c['files']} files"),
        ("corpus", "generation (not measured pipeline)", f"{c['generate_seconds']:.1f} s, {c['generate_mib_per_s']:.2f} MiB/s"),
        ("digest", f"{r['digest']['hash']} of the {r['digest']['text_mib']:.1f} MiB (page cache)",
         f"{r['digest']['mib_per_s']:,.0f} MiB/s, {r['digest']['seconds']:.2f} s"),
        ("tokenizer", "byte-level BPE", f"vocab {t['vocab_size']}, trained on the first {t['sample_mib']:g} MiB in {t['seconds']:.1f} s"),
        ("build", "time", f"{b['seconds']:.1f} s"),
        ("build", "text throughput", f"{b['text_mib_per_s']:.2f} MiB/s"),
        ("build", "tokens/s", f"{b['tokens_per_s']:,}"),
        ("build", "tokens", f"{b['tokens']:,} ({b['bytes_per_token']:.2f} bytes of text per token)"),
        ("build", "token file", f"{b['token_file_mib']:.1f} MiB ({b['token_dtype']})"),
        ("build", "peak RSS (VmHWM)", f"{b['peak_rss_mib']:.1f} MiB"),
        ("build", "RSS before build / at 10% written / at end",
         f"{b['rss_before_build_mib']} / {b['rss_at_10pct_mib']} / {b['rss_at_end_mib']} MiB"),
        ("read", "batches", f"{rd['batches']:,} x {rd['batch_size']} x {rd['block_size']} tokens in {rd['seconds']:.1f} s"),
        ("read", "batches/s", f"{rd['batches_per_s']:,.1f}"),
        ("read", "tokens/s", f"{rd['tokens_per_s']:,}"),
    ]
    for k, p in rd["rss_mib"].items():
        rows.append(("read", f"memory {k.replace('_', ' ')} (batch {p['batches']:,})",
                     f"VmRSS {p['VmRSS']:.1f}, RssAnon {p['RssAnon']:.1f}, RssFile {p['RssFile']:.1f} MiB"))
    rows += [
        ("read", "growth after first interval", f"VmRSS {rd['rss_growth_mib']:+.1f}, RssAnon {rd['anon_growth_mib']:+.1f}, "
                                                 f"RssFile {rd['file_growth_mib']:+.1f} MiB"),
        ("run", "load average before / after", f"{r['load_avg_before']} / {r['load_avg_after']}"),
        ("run", "machine", f"{r['machine']['cpu_count']} CPUs ({r['machine']['processor']}), {r['machine']['platform']}"),
        ("run", "wall time", f"{r['wall_seconds']:.1f} s"),
    ]
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~20 MiB corpus, 500 batches: a smoke test")
    p.add_argument("--size-mb", type=float, help="corpus size in MiB (default 1024; --quick: 20)")
    p.add_argument("--files", type=int, help="number of .txt files (default 8; --quick: 4)")
    p.add_argument("--tokenizer-sample-mb", type=float, help="MiB of text to train the BPE on (default 20; --quick: 2)")
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--batches", type=int, help="batches to read (default 20000; --quick: 500)")
    p.add_argument("--max-seconds", type=float, default=0, help="stop reading after this many seconds (0: no limit)")
    p.add_argument("--sample-every", type=int, help="sample RSS every N batches (default 1000; --quick: 50)")
    p.add_argument("--speed-mb", type=float, help="MiB of the corpus for the build-speed comparison (default 32; --quick: 4)")
    p.add_argument("--speed-rounds", type=int, default=2, help="rounds of the build-speed comparison")
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1, help="N of the 1, 2, N worker builds")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, help="where the corpus and caches go (default outputs/benchmarks/data_pipeline_work)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (corpus, tokenizer, token file)")
    p.add_argument("--out", type=Path, help="the JSON result file (default outputs/benchmarks/data_pipeline.json)")
    p.add_argument("--child", nargs=3, metavar=("KIND", "SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = dict(size_mb=(20, 1024), files=(4, 8), tokenizer_sample_mb=(2, 20), batches=(500, 20_000), sample_every=(50, 1000),
                    speed_mb=(4, 32))
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        kind, spec_path, result_path = args.child
        spec = json.loads(Path(spec_path).read_text())
        result = {"build": child_build, "speed": child_speed, "read": child_read}[kind](spec)
        Path(result_path).write_text(json.dumps(result))
        return 0

    from common import OUT_DIR, default_out, print_table, write_json

    args.out = args.out or default_out(NAME)
    args.work_dir = args.work_dir or OUT_DIR / f"{NAME}_work"
    wall0 = time.perf_counter()
    load_before = load_avg()
    work = args.work_dir.resolve()
    prepare_work_dir(work)
    try:
        print(f"[data_pipeline] generating {args.size_mb:g} MiB of text in {args.files} files under {work}", flush=True)
        t0 = time.perf_counter()
        files = generate_corpus(work / "corpus", int(args.size_mb * MiB), args.files, args.seed)
        gen = {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "seconds": time.perf_counter() - t0}

        print(f"[data_pipeline] training the tokenizer on the first {args.tokenizer_sample_mb:g} MiB", flush=True)
        tokenizer = train_sample_tokenizer(files, int(args.tokenizer_sample_mb * MiB), args.vocab_size, work / "tokenizer.json")

        print("[data_pipeline] digesting the corpus, as every fit does to find its caches", flush=True)
        digest = measure_digest(files)

        shared = {"files": [str(f) for f in files], "tokenizer": tokenizer["path"], "cache_dir": str(work / "cache")}
        print("[data_pipeline] building the token cache (subprocess)", flush=True)
        build = run_child("build", {**shared, "sample_seconds": 0.2 if args.quick else 1.0}, work)
        children_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux; max over all children

        workers = sorted({1, 2, args.max_workers})
        print(f"[data_pipeline] build speed: encode_batch alone vs token_file with {workers} workers, "
              f"{args.speed_rounds} rounds over {args.speed_mb:g} MiB (subprocess)", flush=True)
        sample = speed_sample(files, int(args.speed_mb * MiB), work / "speed")
        speed = run_child("speed", {"files": [str(f) for f in sample], "tokenizer": tokenizer["path"],
                                    "cache_dir": str(work / "speed-cache"), "rounds": args.speed_rounds,
                                    "workers": workers}, work)
        speed["text_mib"] = sum(f.stat().st_size for f in sample) / MiB

        print(f"[data_pipeline] reading {args.batches} batches from the memory-mapped token file (subprocess)", flush=True)
        read = run_child("read", {**shared, "token_file": build["token_file"], "batches": args.batches,
                                  "batch_size": args.batch_size, "block_size": args.block_size,
                                  "sample_every": args.sample_every, "max_seconds": args.max_seconds}, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    extra = {"machine": machine(), "load_before": load_before, "load_after": load_avg(),
             "children_maxrss_mib": round(children_maxrss, 1), "wall": time.perf_counter() - wall0}
    result = summarize(args, gen, tokenizer, build, read, extra)
    result["build_speed"] = summarize_speed(speed)
    result["digest"] = digest
    result["work_dir"] = str(work)
    result["work_dir_kept"] = args.keep
    write_json(args.out, result)
    print()
    print_table(table_rows(result), ["stage", "measure", "value"])
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
