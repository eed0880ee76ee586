"""Parallel text for translation: aligned files or two-column tables -> batches of source and target ids.

A split is named by one key (``data.train``, ``data.val``, ``data.test``):

* a path prefix of aligned plain-text files ``<prefix>.<src_lang>`` and
  ``<prefix>.<tgt_lang>``, one sentence per line, line i of one translating
  line i of the other (Multi30k's ``train.en`` / ``train.de``), or
* a ``.tsv`` / ``.csv`` / ``.jsonl`` table with the columns ``src_lang`` and ``tgt_lang``.

A source is encoded as ``ids </s>``, a target as ``<s> ids </s>``. Training
pairs that are too long or too unequal are dropped (and counted); validation and
test pairs are kept whole, so that BLEU is measured on the full sets.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import lightning as L
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, DistributedSampler

from lmtemplate.config import ConfigError
from lmtemplate.data.demo import write_demo_translation
from lmtemplate.data.tables import read_table
from lmtemplate.tokenization import TokenizerConfig, build_tokenizer, file_fingerprint, load_tokenizer, read_utf8

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<s>", "</s>"]
TABLES = (".tsv", ".csv", ".jsonl")
IGNORE = -100  # target positions the loss skips (padding)
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
class TranslationDataConfig:
    train: Optional[str] = None  # a prefix of aligned text files, or a table (see above); None: the built-in demo data
    # for every split (val and test are then not read)
    val: Optional[str] = None  # required with train
    test: Optional[str] = None  # None: the validation set
    src_lang: str = "src"  # the source side: suffix of the text files, or the table's column
    tgt_lang: str = "tgt"
    max_tokens: int = 100  # training pairs with more source or target tokens (or more than model.block_size - 2) are dropped
    max_ratio: float = 3.0  # ...and those whose longer side has more than max_ratio times the tokens of the shorter
    batch_size: int = 64  # sentence pairs per batch (validation, test and predict always count sentences)
    batch_tokens: int = 0  # > 0: training batches of similar-length pairs with up to this many padded src + tgt tokens
    num_workers: int = 0
    demo_train: int = 6000  # sizes of the built-in demo data
    demo_val: int = 300
    demo_seed: int = 0

    def __post_init__(self) -> None:
        if self.train is not None and self.val is None:
            raise ConfigError("data.val: a validation set is required when data.train is set")
        for key in ("train", "val", "test") if self.train is not None else ():  # the demo data has every split
            for path in split_files(getattr(self, key), self.src_lang, self.tgt_lang):
                if not path.is_file():
                    raise ConfigError(f"data.{key}: file not found: {path} (a split is a prefix of aligned files "
                                      "<prefix>.<data.src_lang> and <prefix>.<data.tgt_lang>, or a .tsv/.csv/.jsonl table)")
        for key in ("max_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: expected a positive integer, got {getattr(self, key)}")
        if self.max_ratio < 1:
            raise ConfigError(f"data.max_ratio: expected a number >= 1, got {self.max_ratio}")


def split_files(spec: Optional[str], src_lang: str, tgt_lang: str) -> list[Path]:
    """The files a split key names: the table itself, or the two aligned text files."""
    if spec is None:
        return []
    if Path(spec).suffix in TABLES:
        return [Path(spec)]
    return [Path(f"{spec}.{src_lang}"), Path(f"{spec}.{tgt_lang}")]


def _lines(path: Path) -> list[str]:
    """The file's lines; only "\\n" ends one (str.splitlines would also split at U+2028 and misalign the sides)."""
    text = read_utf8(path)
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []


def read_pairs(spec: str, src_lang: str, tgt_lang: str) -> list[tuple[str, str]]:
    """(source, target) sentences of a split; an empty sentence or a side without its partner is an error."""
    files = split_files(spec, src_lang, tgt_lang)
    if len(files) == 1:
        table = read_table(files[0], {src_lang: "data.src_lang", tgt_lang: "data.tgt_lang"}, nonempty=(src_lang, tgt_lang))
        return [(str(row[src_lang]).strip(), str(row[tgt_lang]).strip()) for row in table.rows]
    sides = [_lines(path) for path in files]
    if len(sides[0]) != len(sides[1]):
        raise ConfigError(
            f"{files[0]} has {len(sides[0])} lines but {files[1]} has {len(sides[1])}: aligned files must have one "
            "line per sentence pair, line i of one translating line i of the other"
        )
    for path, lines in zip(files, sides):
        for i, line in enumerate(lines, 1):
            if not line.strip():
                raise ConfigError(f"{path}, line {i}: empty line; every line must hold a sentence "
                                  "(remove the pair from both files)")
    return [(a.strip(), b.strip()) for a, b in zip(*sides)]


class Sentences:
    """Sentences of one or both sides of a training split, as ``build_tokenizer`` reads a corpus."""

    def __init__(self, files: list[Path], pairs: list[tuple[str, str]], sides: tuple[int, ...]):
        self.files, self.pairs, self.sides = files, pairs, sides

    def fingerprint(self) -> object:
        return [file_fingerprint(self.files), self.sides]

    def iter_texts(self) -> Iterator[str]:
        for pair in self.pairs:
            yield from (pair[side] for side in self.sides)


class TokenBatches:
    """Training batches of similar-length pairs, each at most ``max_tokens`` padded source + target tokens.

    Each pass sorts the pairs by length (ties broken at random), cuts them into
    batches and shuffles the batches, with a new seed every pass (epoch); rank r
    of w takes every w-th batch. Only the tie-breaking and order change between
    passes, so the number of batches is the same in every one.
    """

    def __init__(self, sizes: list[tuple[int, int]], max_tokens: int, seed: int, rank: int = 0, world: int = 1):
        self.sizes, self.max_tokens, self.seed, self.rank, self.world = sizes, max_tokens, seed, rank, world
        self.epoch = 0

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        order = sorted(range(len(self.sizes)), key=lambda i: (sum(self.sizes[i]), rng.random()))
        batches, batch, widths = [], [], (0, 0)
        for i in order:
            grown = (max(widths[0], self.sizes[i][0]), max(widths[1], self.sizes[i][1]))
            if batch and sum(grown) * (len(batch) + 1) > self.max_tokens:
                batches.append(batch)
                batch, grown = [], self.sizes[i]
            batch.append(i)
            widths = grown
        batches.append(batch)
        rng.shuffle(batches)
        return batches[self.rank: len(batches) // self.world * self.world or len(batches): self.world]

    def __iter__(self) -> Iterator[list[int]]:
        self.epoch += 1
        return iter(self.batches(self.epoch - 1))

    def __len__(self) -> int:
        return len(self.batches(0))


class TranslationDataModule(L.LightningDataModule):
    """Reads and checks every split, builds or loads the tokenizer(s), encodes every pair once.

    Reads ``cfg.data``, ``cfg.tokenizer``, ``cfg.model.block_size``, ``cfg.run.cache_dir`` and ``cfg.run.seed``.
    An example is ``(index, source ids, target ids, source text, target text)``.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        specs, langs = {"train": d.train, "val": d.val, "test": d.test or d.val}, (d.src_lang, d.tgt_lang)
        if d.train is None:
            folder = Path(cfg.run.cache_dir) / f"demo-translation-{d.demo_train}-{d.demo_val}-{d.demo_seed}"
            train, val = folder / "train", folder / "val"
            if not all(p.is_file() for p in split_files(str(train), "src", "tgt") + split_files(str(val), "src", "tgt")):
                write_demo_translation(folder, d.demo_train, d.demo_val, d.demo_seed)
            specs, langs = {"train": str(train), "val": str(val), "test": str(val)}, ("src", "tgt")
        pairs = {split: read_pairs(spec, *langs) for split, spec in specs.items()}
        self.source_tokenizer, self.tokenizer = self._tokenizers(split_files(specs["train"], *langs), pairs["train"])
        self.pad_id, self.bos_id, self.eos_id = (self.tokenizer.token_to_id(t) for t in SPECIALS)
        self.examples = {split: self._encode(p, filter_lengths=split == "train") for split, p in pairs.items()}
        dropped = len(pairs["train"]) - len(self.examples["train"])
        if dropped:
            log.warning("%s: dropped %d of %d training pairs longer than %d tokens (data.max_tokens, "
                        "model.block_size - 2) or with a length ratio above data.max_ratio=%g", specs["train"], dropped,
                        len(pairs["train"]), min(d.max_tokens, cfg.model.block_size - 2), d.max_ratio)
        if not self.examples["train"]:
            raise ConfigError(f"{specs['train']}: no training pair is left after the length filter (data.max_tokens, "
                              "data.max_ratio)")
        self.predict_inputs: list[str] = []

    def _tokenizers(self, files: list[Path], pairs: list[tuple[str, str]]) -> tuple[Tokenizer, Tokenizer]:
        """(source, target) tokenizers: the same one when joint."""
        t, cache = self.cfg.tokenizer, Path(self.cfg.run.cache_dir)
        if t.joint:
            tok = build_tokenizer(t, Sentences(files, pairs, (0, 1)), cache)
            return self._checked(tok, "tokenizer"), self._checked(tok, "tokenizer")
        target = self._checked(build_tokenizer(t, Sentences(files, pairs, (1,)), cache), "tokenizer")
        beside = Path(t.path).with_name(SOURCE_TOKENIZER) if t.path else None
        if t.source_path:
            source = load_tokenizer(Path(t.source_path))
        elif beside is not None:
            if not beside.is_file():
                raise ConfigError(f"tokenizer.source_path: tokenizer.joint is false and there is no {beside} beside "
                                  f"tokenizer.path; set tokenizer.source_path to the source side's tokenizer.json")
            source = load_tokenizer(beside)
        else:
            source = build_tokenizer(t, Sentences(files, pairs, (0,)), cache)
        return self._checked(source, "tokenizer.source_path"), target

    @staticmethod
    def _checked(tok: Tokenizer, key: str) -> Tokenizer:
        missing = [s for s in SPECIALS if tok.token_to_id(s) is None]
        if missing:
            raise ConfigError(f"{key}: the tokenizer has no {', '.join(missing)} token; translation needs {SPECIALS}")
        return tok

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        """``ids </s>``, cut to model.block_size."""
        room = self.cfg.model.block_size - 1
        return [e.ids[:room] + [self.eos_id] for e in self.source_tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _encode(self, pairs: list[tuple[str, str]], filter_lengths: bool) -> list[tuple]:
        d, room = self.cfg.data, self.cfg.model.block_size
        longest = min(d.max_tokens, room - 2)  # <s> and </s> take two places
        sources = self.encode_sources([s for s, _ in pairs])
        targets = [e.ids for e in self.tokenizer.encode_batch([t for _, t in pairs], add_special_tokens=False)]
        examples = []
        for i, ((src_text, tgt_text), src, tgt) in enumerate(zip(pairs, sources, targets)):
            n, m = len(src) - 1, len(tgt)
            if filter_lengths and (max(n, m) > longest or max(n, m) > d.max_ratio * max(1, min(n, m))):
                continue
            examples.append((i, src, [self.bos_id] + tgt[: room - 1] + [self.eos_id], src_text, tgt_text))
        return examples

    def collate(self, batch: list[tuple]) -> dict:
        """Pad to the batch's longest; ``labels`` are the targets shifted left, IGNORE on padding."""
        n, S, T = len(batch), max(len(b[1]) for b in batch), max(len(b[2]) for b in batch) - 1
        src = torch.full((n, S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, S), dtype=torch.long)
        tgt_in = torch.full((n, T), self.pad_id, dtype=torch.long)
        labels = torch.full((n, T), IGNORE, dtype=torch.long)
        for row, (_, s, t, _, _) in enumerate(batch):
            src[row, : len(s)], mask[row, : len(s)] = torch.tensor(s), 1
            tgt_in[row, : len(t) - 1], labels[row, : len(t) - 1] = torch.tensor(t[:-1]), torch.tensor(t[1:])
        return {"input_ids": src, "attention_mask": mask, "decoder_input_ids": tgt_in, "labels": labels,
                "index": torch.tensor([b[0] for b in batch]), "sources": [b[3] for b in batch],
                "references": [b[4] for b in batch]}

    def _loader(self, examples: list, train: bool) -> DataLoader:
        d, trainer = self.cfg.data, self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        workers = {"num_workers": d.num_workers, "persistent_workers": d.num_workers > 0, "collate_fn": self.collate}
        if train and d.batch_tokens:
            sizes = [(len(e[1]), len(e[2]) - 1) for e in examples]
            return DataLoader(examples, batch_sampler=TokenBatches(sizes, d.batch_tokens, self.cfg.run.seed, rank, world), **workers)
        sampler = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=train, seed=self.cfg.run.seed)
        return DataLoader(examples, batch_size=d.batch_size, sampler=sampler, **workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.examples["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.examples["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.examples["test"], train=False)

    def predict_dataloader(self) -> DataLoader:
        """``predict_inputs`` (set by the CLI): one source sentence per line, in order."""
        examples = [(i, src, [self.bos_id, self.eos_id], text, "")
                    for i, (src, text) in enumerate(zip(self.encode_sources(self.predict_inputs), self.predict_inputs))]
        return DataLoader(examples, batch_size=self.cfg.data.batch_size, collate_fn=self.collate)
