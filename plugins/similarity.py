"""Example fine-tuning plugin: how similar two sentences are (regression), scored by Pearson and Spearman.

Data: .tsv / .csv / .jsonl files with the columns sentence1, sentence2, score (STS-B's layout), or the generated
demo. Run: python -m lmtemplate fit -c configs/plugins/similarity-demo.yaml. docs/writing-a-task.md explains it.
"""

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection, PearsonCorrCoef, SpearmanCorrCoef

from lmtemplate import Task, register_task
from lmtemplate.data.base import ExampleData, SplitsConfig, encode_texts
from lmtemplate.data.tables import read_table
from lmtemplate.models.backbone import BackboneConfig, build_backbone, hidden_states
from lmtemplate.tasks.base import OptimConfig, per_stage
from lmtemplate.tokenization import EncoderTokenizerConfig

COLUMNS = ("sentence1", "sentence2", "score")
WORDS = "red blue green old small happy cat dog bird fox tree house river boat runs sleeps sings waits".split()


@dataclass
class SimilarityConfig:
    model: BackboneConfig = field(default_factory=lambda: BackboneConfig(n_layer=2, n_embd=64, block_size=32))
    data: SplitsConfig = field(default_factory=SplitsConfig)
    tokenizer: EncoderTokenizerConfig = field(default_factory=lambda: EncoderTokenizerConfig(vocab_size=100))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, betas=[0.9, 0.98]))


class SimilarityData(ExampleData):
    def demo(self) -> dict[str, list]:
        """Pairs of 5-word sentences; the score is the number of words they share (0-5)."""
        d, rows, rng = self.cfg.data, [], random.Random(self.cfg.data.demo_seed)
        for shared in (rng.randint(0, 5) for _ in range(d.demo_train + d.demo_val)):
            a = rng.sample(WORDS, 5)
            b = rng.sample(a[:shared] + rng.sample([w for w in WORDS if w not in a], 5 - shared), 5)
            rows.append({"sentence1": " ".join(a), "sentence2": " ".join(b), "score": shared})
        return {"train": rows[: d.demo_train], "val": rows[d.demo_train:], "test": rows[d.demo_train:]}

    @staticmethod
    def read(path, columns: tuple = COLUMNS) -> list[dict]:  # predict reads files without scores
        return read_table(path, {c: f"the {c} column" for c in columns}, nonempty=COLUMNS[:2]).rows

    def encode(self, rows: list[dict], split: str) -> list[dict]:
        pairs = encode_texts(self.tokenizer, [r["sentence1"] for r in rows], [r["sentence2"] for r in rows],
                             self.cfg.model.block_size)
        return [{**e, "score": float(r.get("score", 0)), "row": i} for i, (e, r) in enumerate(zip(pairs, rows))]


@register_task("similarity", config=SimilarityConfig, datamodule=SimilarityData)
class Similarity(Task):
    metrics = {"val/pearson": "max", "val/spearman": "max", "val/loss": "min"}

    def __init__(self, cfg: SimilarityConfig, datamodule: SimilarityData):
        super().__init__(cfg)
        self.model = build_backbone(cfg.model, datamodule.tokenizer.get_vocab_size())
        self.head = nn.Linear(cfg.model.n_embd, 1)
        self.correlations = per_stage(MetricCollection({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()}))

    def forward(self, batch: dict) -> torch.Tensor:  # a score from the [CLS] position
        return self.head(hidden_states(self.model, batch)[:, 0]).squeeze(-1)

    def loss(self, batch: dict) -> torch.Tensor:
        return F.mse_loss(self(batch), batch["score"])

    def evaluate(self, batch: dict, batch_idx: int, stage: str) -> None:
        predicted = self(batch)
        self.log(f"{stage}/loss", F.mse_loss(predicted, batch["score"]), sync_dist=True, batch_size=len(predicted))
        self.log_metrics(stage, self.correlations, predicted, batch["score"])

    def read_predict_inputs(self, path) -> list[dict]:
        return SimilarityData.read(path, COLUMNS[:2])

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        rows = self.trainer.datamodule.predict_inputs
        return [{**rows[i], "score": s} for i, s in zip(batch["row"].tolist(), self(batch).tolist())]
