"""Task ``qa`` (see docs/tasks/qa.md): extractive question answering (SQuAD v1.1 / v2.0), a start/end span head
on an encoder. Each rank answers whole examples (``data/squad.py``), gathered before EM / F1 (``pass_scores``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lmtemplate.data.squad import QADataConfig, QADataModule, QAExample, read_squad
from lmtemplate.models.backbone import BackboneConfig, build_backbone, hidden_states
from lmtemplate.models.gpt import Block
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, Task, configure_adamw
from lmtemplate.tasks.qa_postprocess import Answer, AnswerConfig, answer
from lmtemplate.tasks.squad_metric import squad_scores
from lmtemplate.tokenization import EncoderTokenizerConfig

log = logging.getLogger(__name__)


@dataclass
class QAModelConfig(BackboneConfig):
    """The encoder's shape (as the pretraining run's, with init_from)."""

    block_size: int = 384


@dataclass
class QAConfig:
    model: QAModelConfig = field(default_factory=QAModelConfig)
    data: QADataConfig = field(default_factory=QADataConfig)
    tokenizer: EncoderTokenizerConfig = field(default_factory=EncoderTokenizerConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, betas=[0.9, 0.98], weight_decay=0.01))
    answer: AnswerConfig = field(default_factory=AnswerConfig)


@register_task("qa", config=QAConfig, datamodule=QADataModule)
class QuestionAnswering(Task):
    metrics = {"val/f1": "max", "val/exact": "max", "val/loss": "min"}
    blocks = (Block,)
    predictions_file = "predictions.json"
    predict_flags = ("--input", "--question")

    def __init__(self, cfg: QAConfig, datamodule: QADataModule):
        super().__init__(cfg)
        self.model = build_backbone(cfg.model, datamodule.tokenizer.get_vocab_size())
        self.head = nn.Linear(cfg.model.n_embd, 2)
        self.has_null = datamodule.of_training("has_null", lambda rows: any(not e.answers for e in rows))
        self.allow_null = self.has_null if cfg.answer.allow_null is None else cfg.answer.allow_null
        self.answers: dict[str, str] = {}  # id -> predicted answer, over the current evaluation pass

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits (B, T); padding can never be chosen."""
        start, end = self.head(hidden_states(self.model, batch)).float().unbind(-1)
        pad = batch["attention_mask"] == 0
        return start.masked_fill(pad, -1e4), end.masked_fill(pad, -1e4)

    def loss(self, batch: dict, logits: Optional[tuple] = None) -> torch.Tensor:
        start, end = self(batch) if logits is None else logits
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2

    def answer_batch(self, batch: dict, start: torch.Tensor, end: torch.Tensor) -> dict[str, Answer]:
        """The answer to every example of an evaluation batch (by id), from all of its windows."""
        windows: dict[int, list] = {}
        for f, s, e in zip(batch["features"], start, end):
            windows.setdefault(f.example, []).append((s, e, f.offsets))
        return {ex.id: answer(ex.context, windows[i], self.cfg.answer, self.allow_null)
                for i, ex in zip(batch["indices"], batch["examples"])}

    def evaluate(self, batch: dict, batch_idx: int, stage: str) -> None:
        start, end = self(batch)
        self.log(f"{stage}/loss", self.loss(batch, (start, end)), sync_dist=True, batch_size=len(start))
        self.answers.update((qid, a.text) for qid, a in self.answer_batch(batch, start, end).items())

    def start_pass(self, stage: str) -> None:
        self.answers = {}

    def pass_scores(self, stage: str) -> dict[str, float]:
        """EM / F1 over every example any rank answered in this pass (the examples it saw completely)."""
        answers = self.answers
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, answers)
            answers = {k: v for part in everyone for k, v in part.items()}  # a padded sampler's repeats merge
        golds = {e.id: [text for text, _ in e.answers] for e in self.trainer.datamodule.rows[stage]}
        if len(answers) < len(golds) and not self.trainer.sanity_checking:
            log.info("%s: scored %d of %d examples (a partial pass, e.g. limit_%s_batches)", stage, len(answers),
                     len(golds), stage)
        return squad_scores(answers, golds, self.trainer.datamodule.version(stage)) if answers else {}

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        found = self.answer_batch(batch, *self(batch))
        return [{"id": ex.id, "question": ex.question, "answer": found[ex.id].text, "score": found[ex.id].score,
                 "null_score": found[ex.id].null_score} for ex in batch["examples"]]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["has_null"] = self.has_null  # so evaluating the checkpoint need not read the training file

    def read_predict_inputs(self, path: Path) -> list[QAExample]:
        return read_squad(path, need_answers=False)

    def format_predictions(self, rows: list[dict]) -> str:
        """The official format: ``{id: answer text}``."""
        return json.dumps({r["id"]: r["answer"] for r in rows}, ensure_ascii=False, indent=1) + "\n"

    def configure_optimizers(self):
        head = {"params": list(self.head.parameters()), "weight_decay": 0.0}
        return configure_adamw(self, self.model.param_groups(self.cfg.optim.weight_decay) + [head], self.cfg.optim)
