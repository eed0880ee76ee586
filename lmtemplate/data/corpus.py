"""Text corpora for language-model pretraining: .txt and .jsonl files, tokenized once into a memory-mapped token
cache and read as fixed windows (docs/tasks/causal_lm.md). Documents are separated by the first special token."""

from __future__ import annotations

import collections
import functools
import glob
import itertools
import json
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from lmtemplate.config import ConfigError, require_positive, utf8_file
from lmtemplate.data.base import SPLITS, ShardedSampler
from lmtemplate.files import atomic_file
from lmtemplate.tokenization import build_cache, digest, document_separator, file_fingerprint

log = logging.getLogger(__name__)

LINES_PER_BATCH = 2048
PROGRESS_SECONDS = 5.0  # the token cache build logs its progress at most this often
PARALLEL_BYTES = 64 * 2**20  # default_workers: a corpus this large is tokenized by several processes
MAX_WORKERS = 16


@dataclass
class TextDataConfig:
    train: Optional[str] = None  # glob of .txt / .jsonl files; None: the built-in demo corpus
    val: Optional[str] = None  # glob; None: the last `val_fraction` of the training tokens
    test: Optional[str] = None  # glob; None: the validation data
    val_fraction: float = 0.05
    text_field: str = "text"  # the field holding the text in .jsonl files
    line_documents: bool = False  # .txt files: each line is a document (one sentence per line); else each file is
    batch_size: int = 16
    num_workers: int = 0
    tokenize_workers: Optional[int] = None  # processes building the token cache; None: one a core (<= 16) from 64 MiB of text
    demo_lines: int = 25000  # size of the built-in demo corpus
    demo_seed: int = 0

    def __post_init__(self) -> None:
        for key in SPLITS:
            if getattr(self, key) is not None:
                expand_glob(getattr(self, key), f"data.{key}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction: expected a number between 0 and 1, got {self.val_fraction}")
        require_positive("data", self, "batch_size")
        if self.tokenize_workers is not None and self.tokenize_workers < 1:
            raise ConfigError(f"data.tokenize_workers: expected a positive integer or null, got {self.tokenize_workers}")


def expand_glob(pattern: str, key: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
    if not files:
        raise ConfigError(f"{key}: no file matches '{pattern}' (relative to {Path.cwd()})")
    return files


class Corpus:
    """A list of text files, read as documents."""

    def __init__(self, files: list[Path], text_field: str = "text", line_documents: bool = False):
        self.files, self.text_field, self.line_documents = list(files), text_field, line_documents

    @functools.cached_property
    def inputs(self) -> list[tuple[str, str]]:
        """Each file's resolved path and the digest of its bytes, read once (about a second per GiB)."""
        return file_fingerprint(self.files)

    def fingerprint(self) -> object:
        """What its caches are keyed on: each file's content and how it is read, in order, and the reading settings;
        not the paths, so a corpus moved or copied elsewhere reuses its caches."""
        files = [(content, is_jsonl(path)) for path, (_, content) in zip(self.files, self.inputs)]
        return [files, self.text_field, self.line_documents]

    def iter_texts(self) -> Iterator[str]:
        for texts, _ in self.iter_batches():
            yield from texts

    def iter_batches(self) -> Iterator[tuple[list[str], list[bool]]]:
        """(texts, ends_document) in batches of at most LINES_PER_BATCH texts, a flag per text. A JSONL record (or,
        with line_documents, a non-blank line) is a document; else a whole text file is, and its last batch always
        comes, with no texts and the one flag True where the file is empty or fills its batches exactly."""
        for path in self.files:
            jsonl = is_jsonl(path)
            each = jsonl or self.line_documents  # every text ends a document
            texts = self._records(path) if jsonl else self._lines(path)
            while len(batch := list(itertools.islice(texts, LINES_PER_BATCH))) == LINES_PER_BATCH:
                yield batch, [each] * len(batch)
            if batch or not jsonl:
                yield batch, [each] * (len(batch) - 1) + [True]

    def _lines(self, path: Path) -> Iterator[str]:
        with utf8_file(path) as f:
            for line in f:
                if not self.line_documents:
                    yield line
                elif line.strip():
                    yield line.rstrip("\n")

    def _records(self, path: Path) -> Iterator[str]:
        with utf8_file(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[self.text_field]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ConfigError(f"{path}, line {lineno}: expected a JSON object with a string field "
                                      f"'{self.text_field}' (data.text_field): {type(e).__name__}: {e}") from None
                if not isinstance(text, str):
                    raise ConfigError(f"{path}, line {lineno}: field '{self.text_field}' is not a string")
                yield text


def is_jsonl(path: Path) -> bool:
    """A .jsonl file is read as JSON records, any other as text."""
    return path.suffix == ".jsonl"


def token_file(corpus: Corpus, tokenizer: Tokenizer, cache_dir: Path, workers: Optional[int] = None) -> np.memmap:
    """The corpus as one memory-mapped token array, built on first use and reused after; ``workers`` processes
    tokenize (None: :func:`default_workers`) while this one writes in the corpus's order, so the file is the same
    byte for byte whatever the number of workers; a long build logs its progress."""
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
    suffix = ".u16" if dtype == np.uint16 else ".u32"
    path = Path(cache_dir) / f"tokens-{digest(corpus.fingerprint(), tokenizer.to_str())}{suffix}"

    def build() -> None:
        total = sum(f.stat().st_size for f in corpus.files)
        processes = default_workers(total) if workers is None else max(1, workers)
        progress = Progress(total, path.name)
        with atomic_file(path, binary=True) as out:
            for tokens, chars in _encoded(corpus, tokenizer, dtype, processes):
                out.write(tokens)
                progress.update(chars)
        progress.done()  # after the file is in place

    build_cache(path, "token file", corpus.inputs, build)
    if path.stat().st_size == 0:
        raise ConfigError(f"the training text is empty: {', '.join(map(str, corpus.files))}")
    return np.memmap(path, dtype=dtype, mode="r")


def default_workers(text_bytes: int) -> int:
    """One process per core (at most MAX_WORKERS) for a corpus of PARALLEL_BYTES or more; else the build's own process
    (starting workers costs about a second, which a small corpus does not repay)."""
    if text_bytes < PARALLEL_BYTES:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_WORKERS, cores)


def encode_lines(tokenizer: Tokenizer, texts: list[str], ends: list[bool], sep: Optional[int], dtype) -> bytes:
    """The tokens of a batch of texts as ``dtype`` bytes: each text's ids, and ``sep`` after those that end a document.
    ``encode_batch_fast`` (no character offsets) gives encode_batch's ids in less time; numpy flattens the ids."""
    eos = [] if sep is None else [sep]
    if not texts:
        return np.asarray(eos, dtype=dtype).tobytes()
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    ids = [e.ids + eos if end else e.ids for e, end in zip(encodings, ends)]
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=sum(map(len, ids))).tobytes()


_worker: dict = {}


def _start_worker(tokenizer_json: str, dtype: str) -> None:
    _worker["tok"] = Tokenizer.from_str(tokenizer_json)
    _worker["sep"], _worker["dtype"] = document_separator(_worker["tok"]), np.dtype(dtype)


def _encode_in_worker(texts: list[str], ends: list[bool]) -> bytes:
    return encode_lines(_worker["tok"], texts, ends, _worker["sep"], _worker["dtype"])


def _encoded(corpus: Corpus, tokenizer: Tokenizer, dtype, workers: int) -> Iterator[tuple[bytes, int]]:
    """(token bytes, characters of text) per batch of the corpus, in order."""
    sep = document_separator(tokenizer)
    if workers == 1:
        for texts, ends in corpus.iter_batches():
            yield encode_lines(tokenizer, texts, ends, sep, dtype), sum(map(len, texts))
        return
    # Each worker runs one tokenizer thread, so n workers use n cores. Forked where the platform forks by default
    # (Linux: a worker starts in milliseconds; spawned ones import torch and the main module again, seconds each);
    # the tokenizer's thread pool is not used in the children. At most 2 batches per worker in flight: memory stays flat.
    context = multiprocessing.get_context("fork" if multiprocessing.get_start_method(allow_none=True) in (None, "fork")
                                          and sys.platform == "linux" else "spawn")
    env = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pool = context.Pool(workers, _start_worker, (tokenizer.to_str(), np.dtype(dtype).str))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    with pool:
        pending = collections.deque()
        for texts, ends in corpus.iter_batches():
            pending.append((pool.apply_async(_encode_in_worker, (texts, ends)), sum(map(len, texts))))
            if len(pending) >= 2 * workers:
                result, chars = pending.popleft()
                yield result.get(), chars
        yield from ((result.get(), chars) for result, chars in pending)


class Progress:
    """Logs how far a token cache build is: text read (characters, counted as bytes), MiB/s, an estimate of the
    time left; at most every PROGRESS_SECONDS, and only for builds that take longer than that."""

    def __init__(self, total_bytes: int, name: str):
        self.total, self.name, self.done_bytes = total_bytes, name, 0
        self.start = self.last = time.monotonic()
        self.logged = False

    def update(self, chars: int) -> None:
        self.done_bytes += chars
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last, self.logged = now, True
            log.info("token cache %s: %s", self.name, self.line(now))

    def line(self, now: float) -> str:
        mib, total = self.done_bytes / 2**20, self.total / 2**20
        rate = mib / max(now - self.start, 1e-9)
        left = max(0.0, total - mib) / rate if rate > 0 else float("inf")
        return (f"{mib:,.1f} of {total:,.1f} MiB of text ({100 * min(1.0, mib / total if total else 1):.0f}%), "
                f"{rate:.2f} MiB/s, about {_duration(left)} left")

    def done(self) -> None:
        if self.logged:
            now = time.monotonic()
            log.info("token cache %s: built, %.1f MiB of text in %s (%.2f MiB/s)", self.name, self.done_bytes / 2**20,
                     _duration(now - self.start), self.done_bytes / 2**20 / max(now - self.start, 1e-9))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60} min" if seconds >= 3600 else (
        f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s")


def min_tokens(block_size: int, shuffle: bool) -> int:
    """The fewest tokens that hold one WindowSampler window: shuffled (training) passes shift the grid, so need more."""
    return 2 * block_size if shuffle else block_size + 1


class TokenWindows(Dataset):
    """Windows of ``block_size + 1`` tokens (inputs and shifted targets), indexed by start position."""

    def __init__(self, tokens: np.ndarray, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.block_size)

    def __getitem__(self, start: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))


class WindowSampler(ShardedSampler):
    """Start positions of non-overlapping windows, sharded and resumable as every ``ShardedSampler``.

    In training every epoch shifts the window grid by a random offset and shuffles the windows (both seeded by
    ``seed`` and the epoch), so epochs see different cuts of the text.
    """

    def __init__(self, n_tokens: int, block_size: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        n_windows = (n_tokens - 1 - (block_size - 1 if shuffle else 0)) // block_size  # see min_tokens
        if n_windows < world_size:
            raise ConfigError(f"the data holds {n_tokens} tokens: too few for one window of model.block_size="
                              f"{block_size} per process ({world_size}); add text or lower model.block_size")
        super().__init__(n_windows, shuffle, seed, rank, world_size)
        self.block_size = block_size

    def order(self, g: torch.Generator) -> torch.Tensor:
        starts = torch.arange(self.n_items) * self.block_size
        if not self.shuffle:
            return starts
        shuffled = starts[torch.randperm(self.n_items, generator=g)]  # then the grid's shift, from the same generator
        return shuffled + int(torch.randint(self.block_size, (1,), generator=g))
