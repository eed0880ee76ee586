"""Documents and their summaries: a table's ``data.source_column`` and ``data.target_column`` -> examples for an
encoder-decoder (``model.arch: encoder_decoder``) or a decoder-only language model (``model.arch: decoder``).

A row's document, ``data.source_column``, is a text or (JSON lines) a list of texts, its sentences, joined with
single spaces. Its summaries are the ``data.reference_columns`` it has (DialogSum's test file: ``summary1..3``),
else its ``data.target_column``, a text or (JSON lines) a list of texts, each one summary. Training learns every
summary of a row; evaluation scores the output against the best of them. The special tokens are the tokenizer's ``<s>`` / ``</s>``, else
BERT's ``[CLS]`` / ``[SEP]`` (a masked_lm run's WordPiece), else its first special token for both (a causal_lm
run's ``<|endoftext|>``).

- encoder_decoder: source ``<s> document </s>``, target ``<s> summary </s>``; a document longer than
  ``model.block_size`` keeps its beginning.
- decoder: one sequence ``document <s> summary </s>``, the loss on the summary and ``</s>`` only; the summary
  has ``data.max_target_tokens`` places of the window, and a longer document keeps its end (the summary
  follows it).

Summaries longer than their room are cut too; every cut is counted and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lmtemplate.config import ConfigError, require_positive
from lmtemplate.data.base import IGNORE, ExampleData, SplitsConfig, pad
from lmtemplate.data.demo.summarization import demo_summaries
from lmtemplate.data.tables import preview, read_table
from lmtemplate.tokenization import TokenizerConfig, start_end_ids

log = logging.getLogger(__name__)

ARCHS = ("encoder_decoder", "decoder")


@dataclass
class SummarizationTokenizerConfig(TokenizerConfig):
    """Byte-level BPE (it decodes back to the text ROUGE reads) with ``<pad>``, ``<s>`` and ``</s>``."""

    vocab_size: int = 8000
    special_tokens: list[str] = field(default_factory=lambda: ["<pad>", "<s>", "</s>"])


@dataclass
class SummarizationDataConfig(SplitsConfig):
    source_column: str = "source"  # the document
    target_column: str = "summary"  # its summary: a text, or a list of texts
    reference_columns: list[str] = field(default_factory=list)  # columns of references a row may have instead
    max_target_tokens: int = 64  # decoder: the summary's room in the window (the document gets the rest)
    demo_train: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("data", self, "max_target_tokens")


def read_summaries(path: Path, d: SummarizationDataConfig) -> list[dict]:
    """Rows ``{"source", "summaries"}`` of a table; errors name the file and line."""
    optional = {d.target_column: "data.target_column", **{c: "data.reference_columns" for c in d.reference_columns}}
    table = read_table(path, {d.source_column: "data.source_column"}, optional,
                       nonempty=(d.source_column, *optional))
    rows = []
    for record, line in zip(table.rows, table.lines):
        where = f"{path}, line {line}"
        source = _texts(record[d.source_column], f"{where}: column '{d.source_column}' (data.source_column)")
        rows.append({"source": " ".join(source), "summaries": _summaries(record, d, where)})
    return rows


def _texts(value: object, what: str) -> list[str]:
    """A text or a list of texts, each stripped; anything else, an empty list or an empty text, is an error."""
    texts = value if isinstance(value, list) else [value]
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ConfigError(f"{what} holds {preview(value)}; expected a text or a list of non-empty texts")
    return [t.strip() for t in texts]


def _summaries(record: dict, d: SummarizationDataConfig, where: str) -> list[str]:
    """The reference columns the record has, else its target column: each a text or a list of texts."""
    columns = [c for c in d.reference_columns if c in record] or [d.target_column]
    if columns[0] not in record:
        others = f" nor any of {', '.join(d.reference_columns)} (data.reference_columns)" if d.reference_columns else ""
        raise ConfigError(f"{where}: no summary: the row has no column '{d.target_column}' (data.target_column){others}")
    return [text for column in columns for text in _texts(record[column], f"{where}: column '{column}'")]


class SummarizationDataModule(ExampleData):
    """Rows are ``{"source", "summaries"}``; examples are dicts of ids with the texts beside them."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.bos_id, self.eos_id = start_end_ids(self.tokenizer, "summarization")

    def demo(self) -> dict[str, list]:
        d = self.cfg.data
        rows = [{"source": r["source"], "summaries": [r["summary"]]}
                for r in demo_summaries(d.demo_train + d.demo_val, d.demo_seed)]
        return {"train": rows[: d.demo_train], "val": rows[d.demo_train:], "test": rows[d.demo_train:]}

    def read(self, path: Path) -> list[dict]:
        return read_summaries(path, self.cfg.data)

    def texts(self, rows: list[dict]) -> Iterator[str]:
        for row in rows:
            yield row["source"]
            yield from row["summaries"]

    def encode(self, rows: list, split: str) -> list[dict]:
        """One example per summary in training, one per row (its first summary as the loss's target) otherwise;
        a prediction input is a document alone."""
        d, block = self.cfg.data, self.cfg.model.block_size
        if self.cfg.model.arch == "decoder" and not 2 <= d.max_target_tokens <= block - 2:
            raise ConfigError(f"data.max_target_tokens: {d.max_target_tokens} does not fit model.block_size={block}; "
                              f"expected 2 to {block - 2} (the document takes the rest of the window)")
        if split == "predict":
            rows = [{"source": text, "summaries": [""]} for text in rows]
        pairs = [(i, s) for i, row in enumerate(rows) for s in (row["summaries"] if split == "train" else row["summaries"][:1])]
        sources = self.tokenizer.encode_batch([rows[i]["source"] for i, _ in pairs], add_special_tokens=False)
        targets = self.tokenizer.encode_batch([s for _, s in pairs], add_special_tokens=False)
        encode = self._decoder_example if self.cfg.model.arch == "decoder" else self._encoder_decoder_example
        self.cut = {"documents": 0, "summaries": 0}
        examples = [{**encode(src.ids, tgt.ids), "index": i, "sources": rows[i]["source"],
                     "references": rows[i]["summaries"]} for (i, _), src, tgt in zip(pairs, sources, targets)]
        if any(self.cut.values()):
            log.warning("%s: cut %d of %d documents and %d summaries to fit model.block_size=%d (%s)",
                        split, self.cut["documents"], len(examples), self.cut["summaries"], self.cfg.model.block_size,
                        "the end of each document kept" if self.cfg.model.arch == "decoder" else
                        "the beginning of each document kept")
        return examples

    def _fit(self, ids: list[int], room: int, kind: str, keep_end: bool = False) -> list[int]:
        """``ids`` cut to ``room`` tokens (its end when ``keep_end``); a cut counts in ``self.cut[kind]``."""
        if len(ids) <= room:
            return ids
        self.cut[kind] += 1
        return ids[len(ids) - room:] if keep_end else ids[:room]

    def _encoder_decoder_example(self, source: list[int], target: list[int]) -> dict:
        room = self.cfg.model.block_size - 2
        source = [self.bos_id, *self._fit(source, room, "documents"), self.eos_id]
        target = [self.bos_id, *self._fit(target, room, "summaries"), self.eos_id]
        return {"input_ids": source, "decoder_input_ids": target[:-1], "labels": target[1:]}

    def _decoder_example(self, source: list[int], target: list[int]) -> dict:
        """``document <s> summary </s>`` less its last token, labels on the summary and ``</s>``; the summary has
        ``data.max_target_tokens`` places (``</s>`` included), the document the rest of the window."""
        d, block = self.cfg.data, self.cfg.model.block_size
        target = self._fit(target, d.max_target_tokens - 1, "summaries")
        source = self._fit(source, block - 1 - d.max_target_tokens, "documents", keep_end=True)
        sequence = [*source, self.bos_id, *target, self.eos_id]
        return {"input_ids": sequence[:-1], "labels": [IGNORE] * len(source) + sequence[len(source) + 1:],
                "prompt": source}

    def collate(self, rows: list[dict]) -> dict:
        """Padded ids, the texts as lists; a decoder's prompts (the documents) stay unpadded lists of ids."""
        batch = pad([{k: v for k, v in r.items() if k != "prompt"} for r in rows],
                    {"input_ids": self.pad_id, "decoder_input_ids": self.pad_id, "labels": IGNORE})
        return {**batch, "prompts": [r["prompt"] for r in rows]} if "prompt" in rows[0] else batch
