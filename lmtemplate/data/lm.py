"""The LightningDataModule for language-model pretraining on a text corpus."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from lmtemplate.config import ConfigError
from lmtemplate.data.base import STAGE_SPLITS, DataModule
from lmtemplate.data.corpus import Corpus, TokenWindows, WindowSampler, expand_glob, min_tokens, token_file
from lmtemplate.data.demo.text import write_demo_corpus
from lmtemplate.tokenization import build_tokenizer


class TextDataModule(DataModule):
    """Builds (or reuses) the tokenizer in ``__init__``, so the model knows its vocabulary, and each split's token
    file when first used: ``setup(stage)`` builds its stage's (fit train and val, validate val, test test).
    Reads ``cfg.data``, ``cfg.tokenizer``, ``cfg.model.block_size``, ``cfg.run.cache_dir`` and ``cfg.run.seed``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.block_size = cfg.model.block_size
        self.cache, d = Path(cfg.run.cache_dir), cfg.data
        if d.train is None:
            demo = self.cache / f"demo-{d.demo_lines}-{d.demo_seed}.txt"
            if not demo.is_file():
                write_demo_corpus(demo, d.demo_lines, d.demo_seed)
            self.train_files = [demo]
        else:
            self.train_files = expand_glob(d.train, "data.train")
        self.corpus = Corpus(self.train_files, d.text_field, d.line_documents)
        self.tokenizer = build_tokenizer(cfg.tokenizer, self.corpus, self.cache)

    def setup(self, stage: str) -> None:
        for split in STAGE_SPLITS[stage]:
            getattr(self, f"{split}_tokens")

    @functools.cached_property
    def _train_file(self) -> np.memmap:
        """The training corpus's tokens, validation's last data.val_fraction among them when there is no data.val."""
        return token_file(self.corpus, self.tokenizer, self.cache, self.cfg.data.tokenize_workers)

    def _cut(self) -> int:
        d, n = self.cfg.data, len(self._train_file)
        return int(n * (1 - d.val_fraction)) if d.val is None else n

    @functools.cached_property
    def train_tokens(self) -> np.ndarray:
        return self._checked(self._train_file[: self._cut()], "data.train", self.train_files, train=True)

    @functools.cached_property
    def val_tokens(self) -> np.ndarray:
        d = self.cfg.data
        if d.val is None:
            return self._checked(self._train_file[self._cut():],
                                 f"the last data.val_fraction={d.val_fraction} of data.train", self.train_files)
        return self._split("val")

    @functools.cached_property
    def test_tokens(self) -> np.ndarray:
        return self.val_tokens if self.cfg.data.test is None else self._split("test")

    def _split(self, key: str) -> np.memmap:
        d = self.cfg.data
        files = expand_glob(getattr(d, key), f"data.{key}")
        corpus = Corpus(files, d.text_field, d.line_documents)
        return self._checked(token_file(corpus, self.tokenizer, self.cache, d.tokenize_workers), f"data.{key}", files)

    def _checked(self, tokens: np.ndarray, split: str, files: list[Path], train: bool = False) -> np.ndarray:
        """A split must hold one window of model.block_size, checked now: before a run directory exists."""
        need = min_tokens(self.block_size, shuffle=train)
        if len(tokens) < need:
            raise ConfigError(
                f"{split} ({', '.join(map(str, files))}) holds {len(tokens)} token{'s' * (len(tokens) != 1)}: too few for one "
                f"{'training' if train else 'evaluation'} window of model.block_size={self.block_size}, which needs "
                f"{need}; add text or lower model.block_size"
            )
        return tokens

    def windows(self, tokens: np.ndarray, train: bool) -> DataLoader:
        rank, world = self.rank()
        sampler = WindowSampler(len(tokens), self.block_size, shuffle=train, seed=self.cfg.run.seed, rank=rank, world_size=world)
        return self.loader(TokenWindows(tokens, self.block_size), train, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self.windows(self.train_tokens, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.windows(self.val_tokens, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.windows(self.test_tokens, train=False)

    def predict_dataloader(self) -> DataLoader:
        """One prompt per batch (prompts differ in length)."""
        return DataLoader(self.predict_inputs, batch_size=1, collate_fn=lambda batch: batch[0])
