"""Text classification data: GLUE-style TSV / CSV / JSONL files -> padded batches of token ids and labels."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from lmtemplate.config import ConfigError
from lmtemplate.data.base import ExampleData, SplitsConfig, encode_texts
from lmtemplate.data.demo.sentiment import write_demo_classification
from lmtemplate.data.tables import read_table

log = logging.getLogger(__name__)


@dataclass
class ClassificationDataConfig(SplitsConfig):
    text_column: str = "text"
    text_pair_column: Optional[str] = None  # set for sentence-pair tasks
    label_column: str = "label"
    skip_bad_rows: bool = False  # skip (and count) malformed rows and unknown labels instead of stopping
    demo_train: int = 4000
    demo_val: int = 500


def label_vocabulary(labels: list[object]) -> list[str]:
    """The sorted label names: numerically when every label is an integer, else as strings."""
    names = {str(x) for x in labels}
    if all(n.removeprefix("-").isdecimal() for n in names):  # not isdigit: "²" is a digit that int() rejects
        return sorted(names, key=lambda n: (int(n), n))  # "01" and "1": the same number, one order in every process
    return sorted(names)


class ClassificationDataModule(ExampleData):
    """Rows ``{text, [text_pair], label, line, path}``; examples ``{input_ids, token_type_ids, labels}``.

    ``predict`` inputs are lines: one text, or a pair as ``text<TAB>text_pair``.
    """

    def demo(self) -> dict[str, list]:
        d = self.cfg.data
        folder = Path(self.cfg.run.cache_dir) / f"demo-classification-{d.demo_train}-{d.demo_val}-{d.demo_seed}"
        paths = folder / "train.tsv", folder / "val.tsv"
        if not all(path.is_file() for path in paths):
            paths = write_demo_classification(folder, d.demo_train, d.demo_val, d.demo_seed)
        train, val = map(self.read, paths)
        return {"train": train, "val": val, "test": val}

    def read(self, path: Path) -> list[dict]:
        d = self.cfg.data
        columns = {d.text_column: "data.text_column", d.label_column: "data.label_column"}
        if d.text_pair_column:
            columns[d.text_pair_column] = "data.text_pair_column"
        texts = tuple(c for c in (d.text_column, d.text_pair_column) if c)
        table = read_table(path, columns, skip_bad=d.skip_bad_rows, nonempty=texts)
        if table.skipped:
            log.warning("%s: skipped %d malformed rows (data.skip_bad_rows)", path, table.skipped)
        return [{"text": str(r[d.text_column]), "pair": str(r[d.text_pair_column]) if d.text_pair_column else None,
                 "label": str(r[d.label_column]), "line": line, "path": path} for r, line in zip(table.rows, table.lines)]

    @functools.cached_property
    def labels(self) -> list[str]:
        """The label names, in class-index order: the training file's, or those the checkpoint was trained with."""
        return self.of_training("labels", lambda rows: label_vocabulary([r["label"] for r in rows]))

    def texts(self, rows: list[dict]) -> Iterator[str]:
        return (text for r in rows for text in (r["text"], r["pair"]) if text is not None)

    def encode(self, rows: list, split: str) -> list[dict]:
        if split == "predict":
            parts = [line.partition("\t") for line in rows]
            rows = [{"text": text, "pair": pair if self.cfg.data.text_pair_column else None, "label": None}
                    for text, _, pair in parts]
        index = {name: i for i, name in enumerate(self.labels)}
        keep = [r for r in rows if r["label"] is None or r["label"] in index]
        unknown = [r for r in rows if r["label"] is not None and r["label"] not in index]
        if unknown and not self.cfg.data.skip_bad_rows:
            r = unknown[0]
            raise ConfigError(
                f"{r['path']}, line {r['line']}: label '{r['label']}' never occurs in the training file "
                f"({', '.join(self.labels)}); fix the row, or set data.skip_bad_rows=true to skip such rows"
            )
        if unknown:
            log.warning("%s: skipped %d rows whose label is not in the training file", unknown[0]["path"], len(unknown))
        if not keep:
            raise ConfigError(f"{rows[0]['path'] if rows else 'predict'}: no usable rows")
        pairs = [r["pair"] for r in keep] if self.cfg.data.text_pair_column else None
        encoded = encode_texts(self.tokenizer, [r["text"] for r in keep], pairs, self.cfg.model.block_size)
        return [{**e, "labels": index.get(r["label"], -1), "inputs": r["text"] if r["pair"] is None
                 else f"{r['text']}\t{r['pair']}"} for e, r in zip(encoded, keep)]
