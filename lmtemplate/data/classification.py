"""Text classification data: GLUE-style TSV / CSV / JSONL files -> padded batches of token ids and labels.

One text, or a text pair, per row. Encoder tokenizers (with ``[CLS]`` and
``[SEP]``) encode ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` with token types
0 / 1; other tokenizers (a GPT's) encode ``a <sep>`` / ``a <sep> b <sep>`` with
their document separator, so a decoder's last token has read everything.
The label set comes from the training file: integers sort by value, other
labels as strings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import lightning as L
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, DistributedSampler

from lmtemplate.config import ConfigError
from lmtemplate.data.demo import write_demo_classification
from lmtemplate.data.tables import Table, check_split_files, read_table
from lmtemplate.tokenization import build_tokenizer, document_separator, file_fingerprint

log = logging.getLogger(__name__)


@dataclass
class ClassificationDataConfig:
    train: Optional[str] = None  # a .tsv / .csv / .jsonl file; None: the built-in demo data
    val: Optional[str] = None  # required with train
    test: Optional[str] = None  # None: the validation file
    text_column: str = "text"
    text_pair_column: Optional[str] = None  # set for sentence-pair tasks
    label_column: str = "label"
    skip_bad_rows: bool = False  # skip (and count) malformed rows and unknown labels instead of stopping
    batch_size: int = 32
    num_workers: int = 0
    demo_train: int = 4000  # sizes of the built-in demo data
    demo_val: int = 500
    demo_seed: int = 0

    def __post_init__(self) -> None:
        check_split_files(self)
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: expected a positive integer, got {self.batch_size}")


def label_vocabulary(labels: list[object]) -> list[str]:
    """The sorted label names: numerically when every label is an integer, else as strings."""
    names = {str(x) for x in labels}
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


class TableTexts:
    """The texts of a table, as ``build_tokenizer`` reads a corpus."""

    def __init__(self, table: Table, columns: list[str]):
        self.table, self.columns = table, columns

    def fingerprint(self) -> object:
        return [file_fingerprint([self.table.path]), self.columns]

    def iter_texts(self) -> Iterator[str]:
        for row in self.table.rows:
            yield from (str(row[c]) for c in self.columns if c in row)


def encode(tokenizer: Tokenizer, texts: list[str], pairs: Optional[list[str]], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(ids, token types) per example, truncated to ``max_length`` (the longer text loses tokens first)."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    encoder = cls is not None and sep is not None
    sep = sep if encoder else document_separator(tokenizer)
    ends = [] if sep is None else [sep]
    first = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    second = [e.ids for e in tokenizer.encode_batch(pairs, add_special_tokens=False)] if pairs else [None] * len(texts)
    out = []
    for a, b in zip(first, second):
        room = max_length - (1 if encoder else 0) - len(ends) * (1 if b is None else 2)
        a, b = list(a), (None if b is None else list(b))
        while len(a) + len(b or []) > room:
            (a if b is None or len(a) >= len(b) else b).pop()
        ids = ([cls] if encoder else []) + a + ends
        types = [0] * len(ids)
        if b is not None:
            ids += b + ends
            types += [1] * (len(b) + len(ends))
        out.append((ids, types))
    return out


class ClassificationDataModule(L.LightningDataModule):
    """Reads and checks the files, builds or loads the tokenizer, encodes every example once.

    Reads ``cfg.data``, ``cfg.tokenizer``, ``cfg.model.block_size`` (the longest
    encoded example), ``cfg.model.init_from`` (whose tokenizer it uses),
    ``cfg.run.cache_dir`` and ``cfg.run.seed``.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        files = {"train": d.train, "val": d.val, "test": d.test or d.val}
        if d.train is None:
            folder = Path(cfg.run.cache_dir) / f"demo-classification-{d.demo_train}-{d.demo_val}-{d.demo_seed}"
            train, val = (folder / "train.tsv", folder / "val.tsv")
            if not (train.is_file() and val.is_file()):
                train, val = write_demo_classification(folder, d.demo_train, d.demo_val, d.demo_seed)
            files = {"train": str(train), "val": str(val), "test": str(val)}
        self.text_columns = [d.text_column] + ([d.text_pair_column] if d.text_pair_column else [])
        tables = {split: self._read(path) for split, path in files.items()}
        self.labels = label_vocabulary([row[d.label_column] for row in tables["train"].rows])
        if cfg.tokenizer.path is None and getattr(cfg.model, "init_from", None):
            from lmtemplate.tasks.base import tokenizer_of

            cfg.tokenizer.path = str(tokenizer_of(cfg.model.init_from))
        self.tokenizer = build_tokenizer(cfg.tokenizer, TableTexts(tables["train"], self.text_columns), Path(cfg.run.cache_dir))
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        self.examples = {split: self._examples(table) for split, table in tables.items()}
        self.predict_inputs: list[str] = []

    def _read(self, path: str) -> Table:
        d = self.cfg.data
        columns = {d.text_column: "data.text_column", d.label_column: "data.label_column"}
        if d.text_pair_column:
            columns[d.text_pair_column] = "data.text_pair_column"
        table = read_table(Path(path), columns, skip_bad=d.skip_bad_rows, nonempty=tuple(self.text_columns))
        if table.skipped:
            log.warning("%s: skipped %d malformed rows (data.skip_bad_rows)", path, table.skipped)
        return table

    def _examples(self, table: Table) -> list[tuple[list[int], list[int], int]]:
        d = self.cfg.data
        index = {name: i for i, name in enumerate(self.labels)}
        keep, unknown = [], 0
        for row, line in zip(table.rows, table.lines):
            label = str(row[d.label_column])
            if label in index:
                keep.append(row)
            elif d.skip_bad_rows:
                unknown += 1
            else:
                raise ConfigError(
                    f"{table.path}, line {line}: label '{label}' never occurs in the training file "
                    f"({', '.join(self.labels)}); fix the row, or set data.skip_bad_rows=true to skip such rows"
                )
        if unknown:
            log.warning("%s: skipped %d rows whose label is not in the training file", table.path, unknown)
        if not keep:
            raise ConfigError(f"{table.path}: no usable rows")
        texts = [str(r[d.text_column]) for r in keep]
        pairs = [str(r[d.text_pair_column]) for r in keep] if d.text_pair_column else None
        encoded = encode(self.tokenizer, texts, pairs, self.cfg.model.block_size)
        return [(ids, types, index[str(r[d.label_column])]) for (ids, types), r in zip(encoded, keep)]

    def collate(self, batch: list[tuple[list[int], list[int], int]]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of the batch."""
        width = max(len(ids) for ids, _, _ in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        types = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (x, t, _) in enumerate(batch):
            ids[i, : len(x)], types[i, : len(t)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(t), 1
        labels = torch.tensor([y for _, _, y in batch])
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}

    def _loader(self, examples: list, train: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=train, seed=self.cfg.run.seed)
        return DataLoader(examples, batch_size=self.cfg.data.batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.cfg.data.num_workers, persistent_workers=self.cfg.data.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.examples["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.examples["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.examples["test"], train=False)

    def predict_dataloader(self) -> DataLoader:
        """``predict_inputs`` (set by the CLI): one text per line, or a pair as ``text<TAB>text_pair``."""
        rows = [line.split("\t", 1) for line in self.predict_inputs]
        texts, pairs = [r[0] for r in rows], [r[1] if len(r) > 1 else "" for r in rows]
        encoded = encode(self.tokenizer, texts, pairs if self.cfg.data.text_pair_column else None, self.cfg.model.block_size)
        examples = [(ids, types, -1) for ids, types in encoded]

        def collate(batch):
            return {**self.collate([examples[i] for i in batch]), "inputs": [self.predict_inputs[i] for i in batch]}

        return DataLoader(range(len(examples)), batch_size=self.cfg.data.batch_size, collate_fn=collate)
