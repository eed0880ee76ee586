"""The LightningDataModule for language-model pretraining on a text corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from lmtemplate.config import ConfigError
from lmtemplate.data.base import DataModule
from lmtemplate.data.corpus import Corpus, TokenWindows, WindowSampler, expand_glob, min_tokens, token_file
from lmtemplate.data.demo.text import write_demo_corpus
from lmtemplate.tokenization import build_tokenizer


class TextDataModule(DataModule):
    """Builds (or reuses) the tokenizer and the token files in ``__init__``, so the model knows its vocabulary.
    Reads ``cfg.data``, ``cfg.tokenizer``, ``cfg.model.block_size``, ``cfg.run.cache_dir`` and ``cfg.run.seed``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.block_size = cfg.model.block_size
        cache, d = Path(cfg.run.cache_dir), cfg.data
        if d.train is None:
            demo = cache / f"demo-{d.demo_lines}-{d.demo_seed}.txt"
            if not demo.is_file():
                write_demo_corpus(demo, d.demo_lines, d.demo_seed)
            train_files = [demo]
        else:
            train_files = expand_glob(d.train, "data.train")
        train = Corpus(train_files, d.text_field, d.line_documents)
        self.tokenizer = build_tokenizer(cfg.tokenizer, train, cache)
        tokens = token_file(train, self.tokenizer, cache, d.tokenize_workers)

        def split(key: str) -> np.memmap:
            files = expand_glob(getattr(d, key), f"data.{key}")
            corpus = Corpus(files, d.text_field, d.line_documents)
            return self._checked(token_file(corpus, self.tokenizer, cache, d.tokenize_workers), f"data.{key}", files)

        cut = int(len(tokens) * (1 - d.val_fraction)) if d.val is None else len(tokens)
        self.train_tokens = self._checked(tokens[:cut], "data.train", train_files, train=True)
        if d.val is None:
            self.val_tokens = self._checked(tokens[cut:], f"the last data.val_fraction={d.val_fraction} of data.train",
                                            train_files)
        else:
            self.val_tokens = split("val")
        self.test_tokens = self.val_tokens if d.test is None else split("test")

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
