"""Extractive QA data (see docs/tasks/qa.md): SQuAD v1.1 / v2.0 JSON or JSONL -> examples -> windowed features.

Evaluation and prediction batches hold whole examples (every window of each), so an example is always scored from
all of its windows, whatever part of the set a pass sees.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from lmtemplate.config import ConfigError, read_utf8, require_positive
from lmtemplate.data.base import ExampleData, SplitsConfig
from lmtemplate.data.demo.qa import write_demo_qa
from lmtemplate.data.tables import read_table


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
class QADataConfig(SplitsConfig):
    """``train`` / ``val`` / ``test``: SQuAD .json or .jsonl (question, context, answers)."""

    max_seq_length: Optional[int] = None  # tokens per feature; None: model.block_size
    doc_stride: int = 128  # context tokens between the starts of neighbouring windows
    max_query_length: int = 64  # longer questions are truncated
    batch_size: int = 32  # features per training batch; examples per evaluation batch
    demo_unanswerable: float = 0.0  # share of demo questions without an answer (SQuAD v2.0 style)
    formats: ClassVar[str] = "a SQuAD .json or .jsonl file"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("data", self, "doc_stride", "max_query_length")


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
            raise ConfigError(f"{where}: answer_start {start} points at {context[start: start + len(text)]!r} in the "
                              f"context, not at the answer text {text!r}")
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
    if need_answers and "answers" not in record:
        raise ConfigError(f"{where}: missing field 'answers' (give [] for an unanswerable question, as SQuAD v2.0 "
                          "does)")
    answers = _answers(record["answers"], context, where) if "answers" in record else []
    impossible = record.get("is_impossible", False)
    if need_answers and not answers and not impossible and "is_impossible" in record:
        raise ConfigError(f"{where}: no answers, but is_impossible is false")
    return QAExample(qid, question, context, [] if impossible else answers)


def read_squad(path: Path, need_answers: bool = True) -> list[QAExample]:
    """SQuAD JSON ``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`` or JSONL, one
    ``{"id", "question", "context", "answers"}`` per line. Every answer is checked against its context."""
    path = Path(path)
    examples = []
    if path.suffix == ".jsonl":  # read_table checks the lines are JSON objects; the fields are checked here
        table = read_table(path, {}, dict.fromkeys(["id", "question", "context", "answers", "is_impossible"], "data"))
        for line, record in zip(table.lines, table.rows):
            where = f"{path}, line {line}"
            context = _field(record, "context", str, f"{where}, example {record.get('id', '?')}")
            examples.append(_example(record, context, where, need_answers))
    else:
        try:
            data = json.loads(read_utf8(path))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e})") from None
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


def squad_version(path: Path, examples: list[QAExample]) -> str:
    """Which official script's rule scores a file's questions (see ``tasks/squad_metric.py``): "2.0" when any
    question is unanswerable or the JSON's ``version`` field says v2.0; otherwise "1.1", JSONL included."""
    if any(not e.answers for e in examples):
        return "2.0"
    declared = "1.1" if Path(path).suffix == ".jsonl" else str(json.loads(read_utf8(Path(path))).get("version", "1.1"))
    return "2.0" if declared.lstrip("v").startswith("2") else "1.1"


def windows(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of length <= room, starting every ``stride`` tokens, that cover all n tokens."""
    starts = range(0, max(n_tokens - room, 0) + stride, stride)  # until the first window that reaches the end
    return [(start, min(start + room, n_tokens)) for start in starts]


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
        head = [cls, *q.ids[:max_query], sep]
        room = max_length - len(head) - 1
        if room < stride:
            raise ConfigError(f"data.doc_stride ({stride}) is larger than the room left for the context ({room} tokens "
                              f"of max_seq_length {max_length} after a {len(head) - 2}-token question): windows would "
                              "skip text")
        span = token_span(c.offsets, ex.answers[0][1], ex.answers[0][1] + len(ex.answers[0][0])) if ex.answers else None
        for lo, hi in windows(len(c.ids), room, stride):
            first = len(head) - lo  # context token k sits at position first + k
            start, end = (first + span[0], first + span[1]) if span and lo <= span[0] and span[1] < hi else (0, 0)
            features.append(Feature(i, head + c.ids[lo:hi] + [sep], [0] * len(head) + [1] * (hi - lo + 1),
                                    [None] * len(head) + c.offsets[lo:hi] + [None], start, end))
    return features


class QADataModule(ExampleData):
    """Rows are ``QAExample``s, examples their windowed ``Feature``s. Training batches are features; evaluation
    and prediction batches hold whole examples with every window (``examples``, ``indices``, ``features``)."""

    def __init__(self, cfg):
        self.rules: dict[int, str] = {}  # id of a file's examples -> the official script that scores them
        super().__init__(cfg)

    def demo(self) -> dict[str, list]:
        d = self.cfg.data
        name = f"demo-qa-{d.demo_train}-{d.demo_val}-{d.demo_unanswerable}-{d.demo_seed}"
        folder = Path(self.cfg.run.cache_dir) / name
        train, val = folder / "train.json", folder / "val.json"
        if not (train.is_file() and val.is_file()):
            train, val = write_demo_qa(folder, d.demo_train, d.demo_val, d.demo_unanswerable, d.demo_seed)
        rows = {"train": self.read(train), "val": self.read(val)}
        return {**rows, "test": rows["val"]}

    def read(self, path: Path) -> list[QAExample]:
        examples = read_squad(path)
        self.rules[id(examples)] = squad_version(path, examples)
        return examples

    def version(self, split: str) -> str:
        return self.rules[id(self.rows[split])]

    def texts(self, rows: list[QAExample]):
        yield from (e.question for e in rows)
        yield from dict.fromkeys(e.context for e in rows)  # each paragraph once, in order

    def encode(self, rows: list[QAExample], split: str) -> list[Feature]:
        for token in ("[CLS]", "[SEP]", "[PAD]"):
            if self.tokenizer.token_to_id(token) is None:
                raise ConfigError(f"tokenizer: QA needs a '{token}' token; this tokenizer has none "
                                  "(use kind wordpiece)")
        d, block = self.cfg.data, self.cfg.model.block_size
        if (d.max_seq_length or block) > block:
            raise ConfigError(f"data.max_seq_length ({d.max_seq_length}) exceeds model.block_size ({block})")
        return build_features(rows, self.tokenizer, d.max_seq_length or block, d.doc_stride, d.max_query_length)

    def collate(self, features: list[Feature]) -> dict:
        return super().collate([{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids,
                                 "start_positions": f.start, "end_positions": f.end} for f in features])

    def _by_example(self, examples: list[QAExample], features: list[Feature]) -> DataLoader:
        of: list[list[Feature]] = [[] for _ in examples]
        for f in features:
            of[f.example].append(f)

        def gather(indices: list[int]) -> dict:
            feats = [f for i in indices for f in of[i]]
            return {**self.collate(feats), "indices": indices, "examples": [examples[i] for i in indices],
                    "features": feats}
        return self.loader(range(len(examples)), train=False, collate_fn=gather)

    def val_dataloader(self) -> DataLoader:
        return self._by_example(self.rows["val"], self.examples["val"])

    def test_dataloader(self) -> DataLoader:
        return self._by_example(self.rows["test"], self.examples["test"])

    def predict_dataloader(self) -> DataLoader:
        """``predict_inputs``: examples from ``read_predict_inputs``, or dicts with question and context."""
        examples = [x if isinstance(x, QAExample) else QAExample(str(x.get("id", i)), x["question"], x["context"], [])
                    for i, x in enumerate(self.predict_inputs)]
        return self._by_example(examples, self.encode(examples, "predict"))
