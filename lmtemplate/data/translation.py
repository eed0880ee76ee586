"""Parallel text for translation: aligned files or two-column tables -> batches of source and target ids.

A split (``data.train``, ``data.val``, ``data.test``) is a path prefix of aligned plain-text files
``<prefix>.<src_lang>`` and ``<prefix>.<tgt_lang>``, line i of one translating line i of the other (Multi30k's
``train.en`` / ``train.de``), or a ``.tsv`` / ``.csv`` / ``.jsonl`` table with the columns ``src_lang`` and
``tgt_lang``. An example is ``(index, source ids </s>, <s> target ids </s>, source text, target text)``, where
``<s>`` / ``</s>`` are each side's tokenizer's (``tokenization.start_end_ids``: BERT's ``[CLS]`` / ``[SEP]`` in
a pretrained encoder's WordPiece). Training pairs that are too long or too unequal are dropped (and counted);
validation and test pairs are kept whole, so that BLEU is measured on the full sets.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Iterator, Optional

from tokenizers import Tokenizer

from lmtemplate.config import ConfigError, read_utf8, require_positive
from lmtemplate.data.base import IGNORE, ExampleData, SplitsConfig, Texts, pad
from lmtemplate.data.demo.translation import demo_translation
from lmtemplate.data.tables import read_table
from lmtemplate.tokenization import TokenizerConfig, build_tokenizer, start_end_ids

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<s>", "</s>"]
SOURCE_TOKENIZER = "source_tokenizer.json"  # beside tokenizer.json in a run directory, when the sides have their own


@dataclass
class TranslationTokenizerConfig(TokenizerConfig):
    """Byte-level BPE by default (it decodes back to the exact text, which BLEU reads)."""

    vocab_size: int = 8000
    special_tokens: list[str] = field(default_factory=lambda: list(SPECIALS))
    joint: bool = True  # one tokenizer trained on both sides; false: one per side (then tokenizer.path is the target's)
    source_path: Optional[str] = None  # joint=false: the source tokenizer.json; None: the one beside path, or train one

    def __post_init__(self) -> None:
        super().__post_init__()
        missing = [t for t in SPECIALS if t not in self.special_tokens]
        if missing:
            raise ConfigError(f"tokenizer.special_tokens: translation needs {', '.join(missing)} among them")
        if self.source_path is not None and not Path(self.source_path).is_file():
            raise ConfigError(f"tokenizer.source_path: file not found: {self.source_path}")


@dataclass
class TranslationDataConfig(SplitsConfig):
    src_lang: str = "src"  # the source side: suffix of the text files, or the table's column
    tgt_lang: str = "tgt"
    max_tokens: int = 100  # training pairs with more source or target tokens (or more than model.block_size - 2) are dropped
    max_ratio: float = 3.0  # ...and those whose longer side has more than max_ratio times the tokens of the shorter
    batch_size: int = 64  # sentence pairs per batch (validation, test and predict always count sentences)
    demo_train: int = 6000
    formats: ClassVar[str] = ("a split is a prefix of aligned files <prefix>.<data.src_lang> and <prefix>.<data.tgt_lang>, "
                              "or a .tsv/.csv/.jsonl table")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("data", self, "max_tokens")
        if self.max_ratio < 1:
            raise ConfigError(f"data.max_ratio: expected a number >= 1, got {self.max_ratio}")

    def paths(self, spec: Optional[str]) -> list[Path]:
        return split_files(spec, self.src_lang, self.tgt_lang)


def split_files(spec: Optional[str], src_lang: str, tgt_lang: str) -> list[Path]:
    if spec is None:
        return []
    if Path(spec).suffix in (".tsv", ".csv", ".jsonl"):
        return [Path(spec)]
    return [Path(f"{spec}.{src_lang}"), Path(f"{spec}.{tgt_lang}")]


def read_pairs(spec: str, src_lang: str, tgt_lang: str) -> list[tuple[str, str]]:
    """(source, target) sentences of a split; an empty sentence or a side without its partner is an error."""
    files = split_files(spec, src_lang, tgt_lang)
    if len(files) == 1:
        table = read_table(files[0], {src_lang: "data.src_lang", tgt_lang: "data.tgt_lang"}, nonempty=(src_lang, tgt_lang))
        return [(str(row[src_lang]).strip(), str(row[tgt_lang]).strip()) for row in table.rows]
    texts = [read_utf8(path) for path in files]
    # only "\n" ends a line: str.splitlines would also split at U+2028 and misalign the sides
    sides = [[line.strip() for line in text.removesuffix("\n").split("\n")] if text else [] for text in texts]
    if len(sides[0]) != len(sides[1]):
        raise ConfigError(f"{files[0]} has {len(sides[0])} lines but {files[1]} has {len(sides[1])}: aligned files "
                          "must have one line per sentence pair, line i of one translating line i of the other")
    for path, lines in zip(files, sides):
        if "" in lines:
            raise ConfigError(f"{path}, line {lines.index('') + 1}: empty line; every line must hold a sentence "
                              "(remove the pair from both files)")
    return list(zip(*sides))


class TranslationDataModule(ExampleData):
    """Rows are (source, target) sentence pairs; examples are tuples (see above)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.bos_id, self.eos_id = start_end_ids(self.tokenizer, "translation")

    def demo(self) -> dict[str, list]:
        d = self.cfg.data
        val = demo_translation(d.demo_val, 2 * d.demo_seed + 1)
        return {"train": demo_translation(d.demo_train, 2 * d.demo_seed), "val": val, "test": val}

    def read(self, path: Path) -> list[tuple[str, str]]:
        return read_pairs(str(path), self.cfg.data.src_lang, self.cfg.data.tgt_lang)

    def texts(self, rows: list[tuple[str, str]]) -> Iterator[str]:
        """Both sides for a joint tokenizer, else the target side (the source side has its own)."""
        for pair in rows:
            yield from pair if self.cfg.tokenizer.joint else pair[1:]

    @functools.cached_property
    def source_tokenizer(self) -> Tokenizer:
        """The target tokenizer when joint; else the one ``tokenizer.source_path`` or the file beside
        ``tokenizer.path`` holds, or one trained on the training sources."""
        t = self.cfg.tokenizer
        if t.joint:
            return self.tokenizer
        path = t.source_path or (str(Path(t.path).with_name(SOURCE_TOKENIZER)) if t.path else None)
        if path is not None and not Path(path).is_file():  # not source_path: the config checks it
            raise ConfigError(f"tokenizer.source_path: tokenizer.joint is false and there is no {path} beside "
                              f"tokenizer.path; set tokenizer.source_path to the source side's tokenizer.json")
        sources = Texts(lambda: (s for s, _ in self.rows["train"]))  # read only when there is no path
        return build_tokenizer(replace(t, path=path), sources, Path(self.cfg.run.cache_dir))

    def encode(self, pairs: list, split: str) -> list[tuple]:
        """Sources and targets cut to model.block_size; a prediction input is a source with an empty target."""
        source_end = start_end_ids(self.source_tokenizer, "translation")[1]
        if split == "predict":
            pairs = [(text, "") for text in pairs]
        d, room = self.cfg.data, self.cfg.model.block_size
        longest = min(d.max_tokens, room - 2)  # <s> and </s> take two places
        sources = self.source_tokenizer.encode_batch([s for s, _ in pairs], add_special_tokens=False)
        targets = self.tokenizer.encode_batch([t for _, t in pairs], add_special_tokens=False)
        examples = []
        for i, ((src_text, tgt_text), src, tgt) in enumerate(zip(pairs, sources, targets)):
            n, m = len(src.ids), len(tgt.ids)
            if split == "train" and (max(n, m) > longest or max(n, m) > d.max_ratio * max(1, min(n, m))):
                continue
            source, target = src.ids[: room - 1] + [source_end], [self.bos_id] + tgt.ids[: room - 1] + [self.eos_id]
            examples.append((i, source, target, src_text, tgt_text))
        if split == "train" and len(examples) < len(pairs):
            log.warning("%s: dropped %d of %d training pairs longer than %d tokens (data.max_tokens, model.block_size - 2) "
                        "or with a length ratio above data.max_ratio=%g", d.train or "demo", len(pairs) - len(examples),
                        len(pairs), longest, d.max_ratio)
        if not examples and split != "predict":
            raise ConfigError(f"{d.train}: no training pair is left after the length filter (data.max_tokens, "
                              "data.max_ratio)")
        return examples

    def collate(self, batch: list[tuple]) -> dict:
        """Pad to the batch's longest; ``labels`` are the targets shifted left, IGNORE on padding."""
        out = pad([{"input_ids": s, "decoder_input_ids": t[:-1], "labels": t[1:], "index": i} for i, s, t, _, _ in batch],
                  {"input_ids": self.pad_id, "decoder_input_ids": self.pad_id, "labels": IGNORE})
        return {**out, "sources": [b[3] for b in batch], "references": [b[4] for b in batch]}

    def sizes(self, examples: list[tuple]) -> list[tuple[int, int]]:
        return [(len(e[1]), len(e[2]) - 1) for e in examples]

