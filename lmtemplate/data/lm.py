"""The LightningDataModule for language-model pretraining on a text corpus."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import numpy as np
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import Corpus, TokenWindows, WindowSampler, expand_glob, min_tokens, token_file
from lmtemplate.data.demo import write_demo_corpus
from lmtemplate.tokenization import build_tokenizer


class TextDataModule(L.LightningDataModule):
    """Builds (or reuses) the tokenizer and the token files in ``__init__``, so the model knows its vocabulary.

    Reads ``cfg.data``, ``cfg.tokenizer``, ``cfg.model.block_size``,
    ``cfg.run.cache_dir`` and ``cfg.run.seed``.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.model.block_size
        cache = Path(cfg.run.cache_dir)
        d = cfg.data
        if d.train is None:
            demo = cache / f"demo-{d.demo_lines}-{d.demo_seed}.txt"
            if not demo.is_file():
                write_demo_corpus(demo, d.demo_lines, d.demo_seed)
            train_files = [demo]
        else:
            train_files = expand_glob(d.train, "data.train")
        train = Corpus(train_files, d.text_field, d.line_documents)
        self.tokenizer = build_tokenizer(cfg.tokenizer, train, cache)
        tokens = token_file(train, self.tokenizer, cache)
        if d.val is None:
            cut = int(len(tokens) * (1 - d.val_fraction))
            self.train_tokens, self.val_tokens = tokens[:cut], tokens[cut:]
            val_split, val_files = f"the last data.val_fraction={d.val_fraction} of data.train", train_files
        else:
            self.train_tokens = tokens
            val_split, val_files = "data.val", expand_glob(d.val, "data.val")
            self.val_tokens = token_file(Corpus(val_files, d.text_field, d.line_documents), self.tokenizer, cache)
        self._check_windows(self.train_tokens, "data.train", train_files, train=True)
        self._check_windows(self.val_tokens, val_split, val_files, train=False)
        if d.test is None:
            self.test_tokens = self.val_tokens
        else:
            test_files = expand_glob(d.test, "data.test")
            self.test_tokens = token_file(Corpus(test_files, d.text_field, d.line_documents), self.tokenizer, cache)
            self._check_windows(self.test_tokens, "data.test", test_files, train=False)
        self.predict_inputs: list[str] = []

    def _check_windows(self, tokens: np.ndarray, split: str, files: list[Path], train: bool) -> None:
        """A split must hold one window of model.block_size, checked now: before a run directory exists."""
        need = min_tokens(self.block_size, shuffle=train)
        if len(tokens) < need:
            raise ConfigError(
                f"{split} ({', '.join(map(str, files))}) holds {len(tokens)} token{'s' * (len(tokens) != 1)}: too few for one "
                f"{'training' if train else 'evaluation'} window of model.block_size={self.block_size}, which needs "
                f"{need}; add text or lower model.block_size"
            )

    def _loader(self, tokens: np.ndarray, train: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = WindowSampler(len(tokens), self.block_size, shuffle=train, seed=self.cfg.run.seed, rank=rank, world_size=world)
        if train and trainer is not None and trainer.fit_loop.restarting:
            # Resuming mid-epoch: skip the batches the checkpoint's weights have already learned from
            # ("processed" counts them whether the checkpoint was saved after validation or in a batch-end hook).
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            sampler.resume(trainer.current_epoch, done * self.cfg.data.batch_size)
        return DataLoader(
            TokenWindows(tokens, self.block_size),
            batch_size=self.cfg.data.batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.cfg.data.num_workers,
            persistent_workers=self.cfg.data.num_workers > 0,
            worker_init_fn=_worker_init,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_tokens, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_tokens, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_tokens, train=False)

    def predict_dataloader(self) -> DataLoader:
        """One prompt per batch (prompts differ in length); ``predict_inputs`` is set by the CLI."""
        return DataLoader(self.predict_inputs, batch_size=1, collate_fn=lambda batch: batch[0])


def _worker_init(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C and SIGTERM: the main process saves a checkpoint, then stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id)  # Lightning's per-worker seeding, which this function replaces
