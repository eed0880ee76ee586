"""Text corpora for language-model pretraining.

Text files (``.txt``, or ``.jsonl`` with one document per line under
``data.text_field``) are tokenized once, in batches, into a flat token file
``<cache_dir>/tokens-<hash>.u16`` (or ``.u32``) whose hash covers the input
files and the tokenizer. Training reads fixed windows from that file through
``numpy.memmap``, so memory stays flat however large the corpus is. Documents
(files, or JSONL records) are separated by the tokenizer's first special token.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from lmtemplate.config import ConfigError
from lmtemplate.data.base import ShardedSampler
from lmtemplate.tokenization import atomic_file, digest, document_separator, file_fingerprint, utf8_file

LINES_PER_BATCH = 2048


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
    demo_lines: int = 25000  # size of the built-in demo corpus
    demo_seed: int = 0

    def __post_init__(self) -> None:
        for key in ("train", "val", "test"):
            pattern = getattr(self, key)
            if pattern is not None:
                expand_glob(pattern, f"data.{key}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction: expected a number between 0 and 1, got {self.val_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: expected a positive integer, got {self.batch_size}")


def expand_glob(pattern: str, key: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
    if not files:
        raise ConfigError(f"{key}: no file matches '{pattern}' (relative to {Path.cwd()})")
    return files


class Corpus:
    """A list of text files, read as documents."""

    def __init__(self, files: list[Path], text_field: str = "text", line_documents: bool = False):
        self.files = list(files)
        self.text_field = text_field
        self.line_documents = line_documents

    def fingerprint(self) -> object:
        return [file_fingerprint(self.files), self.text_field, self.line_documents]

    def iter_texts(self) -> Iterator[str]:
        for batch in self.iter_batches():
            yield from batch[0]

    def iter_batches(self) -> Iterator[tuple[list[str], list[bool]]]:
        """Yield (texts, ends_document) in batches of at most LINES_PER_BATCH lines; a flag per text."""
        for path in self.files:
            if path.suffix == ".jsonl":
                yield from self._jsonl_batches(path)
            else:
                yield from self._text_batches(path)

    def _text_batches(self, path: Path) -> Iterator[tuple[list[str], bool]]:
        with utf8_file(path) as f:
            batch: list[str] = []
            for line in f:
                if self.line_documents and not line.strip():
                    continue
                batch.append(line.rstrip("\n") if self.line_documents else line)
                if len(batch) == LINES_PER_BATCH:
                    yield batch, [self.line_documents] * len(batch)
                    batch = []
            yield batch, [self.line_documents] * (len(batch) - 1) + [True]

    def _jsonl_batches(self, path: Path) -> Iterator[tuple[list[str], bool]]:
        with utf8_file(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record[self.text_field]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ConfigError(
                        f"{path}, line {lineno}: expected a JSON object with a string field "
                        f"'{self.text_field}' (data.text_field): {type(e).__name__}: {e}"
                    ) from None
                if not isinstance(text, str):
                    raise ConfigError(f"{path}, line {lineno}: field '{self.text_field}' is not a string")
                yield [text], [True]


def token_file(corpus: Corpus, tokenizer: Tokenizer, cache_dir: Path) -> np.memmap:
    """The corpus as one memory-mapped token array, built on first use and reused after."""
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
    suffix = ".u16" if dtype == np.uint16 else ".u32"
    path = Path(cache_dir) / f"tokens-{digest(corpus.fingerprint(), tokenizer.to_str())}{suffix}"
    if not path.is_file():
        _write_tokens(corpus, tokenizer, path, dtype)
    if path.stat().st_size == 0:
        raise ConfigError(f"the training text is empty: {', '.join(map(str, corpus.files))}")
    return np.memmap(path, dtype=dtype, mode="r")


def _write_tokens(corpus: Corpus, tokenizer: Tokenizer, path: Path, dtype: type) -> None:
    sep = document_separator(tokenizer)
    eos = [] if sep is None else [sep]
    with atomic_file(path, binary=True) as out:
        for texts, ends in corpus.iter_batches():
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            ids = [i for enc, end in zip(encodings, ends) for i in (enc.ids + eos if end else enc.ids)]
            np.asarray(ids if texts else eos, dtype=dtype).tofile(out)


def min_tokens(block_size: int, shuffle: bool) -> int:
    """The fewest tokens that hold one WindowSampler window: shuffled (training) passes shift the grid, so need more."""
    return 2 * block_size if shuffle else block_size + 1


class TokenWindows(Dataset):
    """Windows of ``block_size + 1`` tokens (inputs and shifted targets), indexed by start position."""

    def __init__(self, tokens: np.ndarray, block_size: int):
        self.tokens = tokens
        self.block_size = block_size

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.block_size)

    def __getitem__(self, start: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))


class WindowSampler(ShardedSampler):
    """Start positions of non-overlapping windows, sharded and resumable as every ``ShardedSampler``.

    In training every epoch shifts the window grid by a random offset and
    shuffles the windows (both seeded by ``seed`` and the epoch), so epochs see
    different cuts of the text.
    """

    def __init__(self, n_tokens: int, block_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        n_windows = (n_tokens - 1 - (block_size - 1 if shuffle else 0)) // block_size  # see min_tokens
        if n_windows < world_size:
            raise ConfigError(
                f"the data holds {n_tokens} tokens: too few for one window of model.block_size={block_size} "
                f"per process ({world_size}); add text or lower model.block_size"
            )
        super().__init__(n_windows, shuffle, seed, rank, world_size)
        self.block_size = block_size

    def order(self, g: torch.Generator) -> torch.Tensor:
        starts = torch.arange(self.n_items) * self.block_size
        if not self.shuffle:
            return starts
        return starts[torch.randperm(self.n_items, generator=g)] + int(torch.randint(self.block_size, (1,), generator=g))
