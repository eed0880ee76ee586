"""Text corpora for language-model pretraining.

Text files (``.txt``, or ``.jsonl`` with one document per line under ``data.text_field``) are tokenized once, in
batches, into a flat token file ``<cache_dir>/tokens-<hash>.u16`` (or ``.u32``) whose hash covers the input files
and the tokenizer. Training reads fixed windows from that file through ``numpy.memmap``, so memory stays flat however
large the corpus is. Documents (files, or JSONL records) are separated by the tokenizer's first special token.
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
from lmtemplate.data.base import SPLITS, ShardedSampler
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
        for key in SPLITS:
            if getattr(self, key) is not None:
                expand_glob(getattr(self, key), f"data.{key}")
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
        self.files, self.text_field, self.line_documents = list(files), text_field, line_documents

    def fingerprint(self) -> object:
        return [file_fingerprint(self.files), self.text_field, self.line_documents]

    def iter_texts(self) -> Iterator[str]:
        for texts, _ in self.iter_batches():
            yield from texts

    def iter_batches(self) -> Iterator[tuple[list[str], list[bool]]]:
        """(texts, ends_document) in batches of at most LINES_PER_BATCH texts, a flag per text. A JSONL record (or,
        with line_documents, a non-blank line) is a document; else a whole text file is, and its last batch always
        comes, with no texts and the one flag True where the file is empty or fills its batches exactly."""
        for path in self.files:
            jsonl = path.suffix == ".jsonl"
            each = jsonl or self.line_documents  # every text ends a document
            batch: list[str] = []
            for text in self._records(path) if jsonl else self._lines(path):
                batch.append(text)
                if len(batch) == LINES_PER_BATCH:
                    yield batch, [each] * len(batch)
                    batch = []
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


def token_file(corpus: Corpus, tokenizer: Tokenizer, cache_dir: Path) -> np.memmap:
    """The corpus as one memory-mapped token array, built on first use and reused after."""
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
    suffix = ".u16" if dtype == np.uint16 else ".u32"
    path = Path(cache_dir) / f"tokens-{digest(corpus.fingerprint(), tokenizer.to_str())}{suffix}"
    if not path.is_file():
        sep = document_separator(tokenizer)
        eos = [] if sep is None else [sep]
        with atomic_file(path, binary=True) as out:
            for texts, ends in corpus.iter_batches():
                encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
                ids = [i for enc, end in zip(encodings, ends) for i in (enc.ids + eos if end else enc.ids)]
                np.asarray(ids if texts else eos, dtype=dtype).tofile(out)
    if path.stat().st_size == 0:
        raise ConfigError(f"the training text is empty: {', '.join(map(str, corpus.files))}")
    return np.memmap(path, dtype=dtype, mode="r")


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
