"""Extractive QA data: SQuAD v1.1 / v2.0 JSON (or JSONL) -> examples -> windowed features.

A feature is ``[CLS] question [SEP] window of the context [SEP]``. A context
longer than one window is covered by several: they start every ``doc_stride``
context tokens (BERT's meaning: the step between window starts, so neighbours
overlap by window - stride tokens). Each context token keeps its character span
in the original context (the tokenizer's offsets), so a predicted span maps back
to the exact characters. The training target is the answer's first and last
token, or ``[CLS]`` (position 0) when the answer is not inside the window or the
question has none.

Training batches are shuffled features; evaluation and prediction batches hold
whole examples (every window of each), so an example is always scored from all
of its windows, whatever part of the set a pass sees.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, DistributedSampler

from lmtemplate.config import ConfigError
from lmtemplate.data.demo import write_demo_qa
from lmtemplate.data.tables import check_split_files
from lmtemplate.tokenization import build_tokenizer, file_fingerprint, read_utf8


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, answer_start) pairs; empty: unanswerable (v2.0) or unknown (predict)


@dataclass
class Feature:
    example: int  # index of its example
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[Optional[tuple[int, int]]]  # each token's character span in the context; None outside it
    start: int  # the answer's first and last token; 0 ([CLS]) when not in this window
    end: int


@dataclass
class QADataConfig:
    train: Optional[str] = None  # SQuAD .json or .jsonl (question, context, answers); None: the built-in demo data
    val: Optional[str] = None  # required with train
    test: Optional[str] = None  # None: the validation file
    max_seq_length: Optional[int] = None  # tokens per feature; None: model.block_size
    doc_stride: int = 128  # context tokens between the starts of neighbouring windows
    max_query_length: int = 64  # longer questions are truncated
    batch_size: int = 32  # features per training batch; examples per evaluation batch
    num_workers: int = 0
    demo_train: int = 3000  # sizes of the built-in demo data (questions)
    demo_val: int = 300
    demo_unanswerable: float = 0.0  # share of demo questions without an answer (SQuAD v2.0 style)
    demo_seed: int = 0

    def __post_init__(self) -> None:
        check_split_files(self)
        for key in ("doc_stride", "max_query_length", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: expected a positive integer, got {getattr(self, key)}")


def _field(record: dict, key: str, kind: type, where: str):
    if key not in record:
        raise ConfigError(f"{where}: missing field '{key}'")
    if not isinstance(record[key], kind):
        raise ConfigError(f"{where}: field '{key}' should be a {kind.__name__}, got {type(record[key]).__name__}")
    return record[key]


def _answers(raw, context: str, where: str) -> list[tuple[str, int]]:
    """SQuAD's list of {text, answer_start}, or the columnar {text: [...], answer_start: [...]} of JSONL exports."""
    if isinstance(raw, dict):
        texts, starts = _field(raw, "text", list, where), _field(raw, "answer_start", list, where)
        if len(texts) != len(starts):
            raise ConfigError(f"{where}: answers has {len(texts)} texts but {len(starts)} answer_start values")
        raw = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: field 'answers' should be a list of {{text, answer_start}}")
    out = []
    for a in raw:
        if not isinstance(a, dict):
            raise ConfigError(f"{where}: each answer should be an object with text and answer_start")
        text, start = _field(a, "text", str, where), _field(a, "answer_start", int, where)
        if context[start: start + len(text)] != text:
            raise ConfigError(
                f"{where}: answer_start {start} points at {context[start: start + len(text)]!r} in the context, "
                f"not at the answer text {text!r}"
            )
        out.append((text, start))
    return out


def _example(record: dict, context: str, where: str, need_answers: bool) -> QAExample:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a question object with id, question and answers")
    qid = str(record.get("id", where))
    where = f"{where}, example {qid}" if "id" in record else where
    question = _field(record, "question", str, where)
    if not question.strip():
        raise ConfigError(f"{where}: empty question")
    impossible = record.get("is_impossible", False)
    answers = _answers(record["answers"], context, where) if "answers" in record else None
    if answers is None and need_answers:
        raise ConfigError(f"{where}: missing field 'answers' (give [] for an unanswerable question, as SQuAD v2.0 does)")
    if need_answers and not answers and not impossible and "is_impossible" in record:
        raise ConfigError(f"{where}: no answers, but is_impossible is false")
    return QAExample(qid, question, context, [] if impossible else answers or [])


def read_squad(path: Path, need_answers: bool = True) -> list[QAExample]:
    """SQuAD JSON ``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`` or JSONL, one
    ``{"id", "question", "context", "answers"}`` per line. Every answer is checked against its context."""
    path = Path(path)
    try:
        text = read_utf8(path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None
    examples = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{where}: expected an object with question, context and answers")
            context = _field(record, "context", str, f"{where}, example {record.get('id', '?')}")
            examples.append(_example(record, context, where, need_answers))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ConfigError(f"{path}: expected SQuAD JSON, an object whose 'data' is a list of articles")
        for a, article in enumerate(data["data"]):
            for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}, article {a}")):
                where = f"{path}, article {a}, paragraph {p}"
                context = _field(paragraph, "context", str, where)
                for record in _field(paragraph, "qas", list, where):
                    examples.append(_example(record, context, where, need_answers))
    if not examples:
        raise ConfigError(f"{path}: no questions found")
    seen = set()
    for e in examples:
        if e.id in seen:
            raise ConfigError(f"{path}: example id {e.id} occurs twice; ids name the answers in predictions.json")
        seen.add(e.id)
    return examples


def windows(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of length <= room, starting every ``stride`` tokens, that cover all n tokens."""
    out, start = [], 0
    while True:
        end = min(start + room, n_tokens)
        out.append((start, end))
        if end == n_tokens:
            return out
        start += stride


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The first and last token covering characters [start, end) of the context."""
    first = bisect.bisect_right([e for _, e in offsets], start)  # first token ending after the answer starts
    last = bisect.bisect_left([s for s, _ in offsets], end) - 1  # last token starting before the answer ends
    return first, max(first, last)


def build_features(examples: list[QAExample], tokenizer: Tokenizer, max_length: int, stride: int,
                   max_query: int) -> list[Feature]:
    """Every example's windows, with targets from its first answer."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = tokenizer.encode_batch([e.context for e in examples], add_special_tokens=False)
    features = []
    for i, (ex, q, c) in enumerate(zip(examples, questions, contexts)):
        question = q.ids[:max_query]
        room = max_length - len(question) - 3
        if room < stride:
            raise ConfigError(
                f"data.doc_stride ({stride}) is larger than the room left for the context ({room} tokens of "
                f"max_seq_length {max_length} after a {len(question)}-token question): windows would skip text"
            )
        span = token_span(c.offsets, ex.answers[0][1], ex.answers[0][1] + len(ex.answers[0][0])) if ex.answers else None
        for lo, hi in windows(len(c.ids), room, stride):
            head = [cls, *question, sep]
            first = len(head) - lo  # context token k sits at position first + k
            start = end = 0
            if span and lo <= span[0] and span[1] < hi:
                start, end = first + span[0], first + span[1]
            features.append(Feature(
                example=i,
                input_ids=head + c.ids[lo:hi] + [sep],
                token_type_ids=[0] * len(head) + [1] * (hi - lo + 1),
                offsets=[None] * len(head) + list(c.offsets[lo:hi]) + [None],
                start=start, end=end,
            ))
    return features


def collate(features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f.input_ids)
        ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(f.input_ids), torch.tensor(f.token_type_ids), 1
    return {
        "input_ids": ids, "token_type_ids": types, "attention_mask": mask,
        "start_positions": torch.tensor([f.start for f in features]),
        "end_positions": torch.tensor([f.end for f in features]),
    }


class QATexts:
    """Questions and contexts, as ``build_tokenizer`` reads a corpus."""

    def __init__(self, path: Path, examples: list[QAExample]):
        self.path, self.examples = path, examples

    def fingerprint(self) -> object:
        return file_fingerprint([self.path])

    def iter_texts(self):
        contexts = dict.fromkeys(e.context for e in self.examples)  # each paragraph once, in order
        yield from (e.question for e in self.examples)
        yield from contexts


class QADataModule(L.LightningDataModule):
    """Reads and checks the files, builds or loads the tokenizer, builds every feature once.

    Reads ``cfg.data``, ``cfg.tokenizer``, ``cfg.model.block_size``,
    ``cfg.model.init_from`` (whose tokenizer it uses), ``cfg.run.cache_dir`` and ``cfg.run.seed``.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.max_length = d.max_seq_length or cfg.model.block_size
        if self.max_length > cfg.model.block_size:
            raise ConfigError(f"data.max_seq_length ({self.max_length}) exceeds model.block_size ({cfg.model.block_size})")
        files = {"train": d.train, "val": d.val, "test": d.test or d.val}
        if d.train is None:
            folder = Path(cfg.run.cache_dir) / f"demo-qa-{d.demo_train}-{d.demo_val}-{d.demo_unanswerable}-{d.demo_seed}"
            train, val = folder / "train.json", folder / "val.json"
            if not (train.is_file() and val.is_file()):
                train, val = write_demo_qa(folder, d.demo_train, d.demo_val, d.demo_unanswerable, d.demo_seed)
            files = {"train": str(train), "val": str(val), "test": str(val)}
        self.examples = {split: read_squad(Path(path)) for split, path in files.items()}
        if cfg.tokenizer.path is None and getattr(cfg.model, "init_from", None):
            from lmtemplate.tasks.base import tokenizer_of

            cfg.tokenizer.path = str(tokenizer_of(cfg.model.init_from))
        texts = QATexts(Path(files["train"]), self.examples["train"])
        self.tokenizer = build_tokenizer(cfg.tokenizer, texts, Path(cfg.run.cache_dir))
        for token in ("[CLS]", "[SEP]", "[PAD]"):
            if self.tokenizer.token_to_id(token) is None:
                raise ConfigError(f"tokenizer: QA needs a '{token}' token; this tokenizer has none (use kind wordpiece)")
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        self.features = {split: self.featurize(ex) for split, ex in self.examples.items()}
        self.has_unanswerable = any(not e.answers for e in self.examples["train"])
        self.predict_inputs: list = []

    def featurize(self, examples: list[QAExample]) -> list[Feature]:
        d = self.cfg.data
        return build_features(examples, self.tokenizer, self.max_length, d.doc_stride, d.max_query_length)

    def read_predict_inputs(self, path: Path) -> list[QAExample]:
        return read_squad(path, need_answers=False)

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def train_dataloader(self) -> DataLoader:
        features = self.features["train"]
        rank, world = self._rank()
        sampler = DistributedSampler(features, num_replicas=world, rank=rank, shuffle=True, seed=self.cfg.run.seed)
        return DataLoader(features, batch_size=self.cfg.data.batch_size, sampler=sampler,
                          collate_fn=lambda b: collate(b, self.pad_id), num_workers=self.cfg.data.num_workers,
                          persistent_workers=self.cfg.data.num_workers > 0)

    def _by_example(self, examples: list[QAExample], features: list[Feature]) -> DataLoader:
        """Batches of whole examples: their windows as tensors, plus the ``examples`` (and their ``indices``)
        and ``features`` (whose ``example`` is such an index) to score them."""
        of: list[list[Feature]] = [[] for _ in examples]
        for f in features:
            of[f.example].append(f)
        rank, world = self._rank()
        sampler = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=False)

        def gather(indices: list[int]) -> dict:
            feats = [f for i in indices for f in of[i]]
            return {**collate(feats, self.pad_id), "indices": indices, "examples": [examples[i] for i in indices],
                    "features": feats}

        return DataLoader(range(len(examples)), batch_size=self.cfg.data.batch_size, sampler=sampler, collate_fn=gather)

    def val_dataloader(self) -> DataLoader:
        return self._by_example(self.examples["val"], self.features["val"])

    def test_dataloader(self) -> DataLoader:
        return self._by_example(self.examples["test"], self.features["test"])

    def predict_dataloader(self) -> DataLoader:
        """``predict_inputs``: examples from ``read_predict_inputs``, or dicts with question and context."""
        examples = [
            x if isinstance(x, QAExample) else QAExample(str(x.get("id", i)), x["question"], x["context"], [])
            for i, x in enumerate(self.predict_inputs)
        ]
        return self._by_example(examples, self.featurize(examples))
