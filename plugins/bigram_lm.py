"""Example task plugin: a bigram language model. Copy this file to start your own task.

A plugin is any Python file in ./plugins (or listed under a config's
`plugins:` key, or installed with an entry point in the `lmtemplate.tasks`
group) that calls `register_task`. This one needs nothing else:

    python -m lmtemplate tasks                                  # lists bigram_lm, from this file
    python -m lmtemplate fit -c configs/plugins/bigram-demo.yaml

It reuses the built-in text data module (tokenizer, token cache, windows),
the shared optimizer set-up and the Task base, and brings its own model and
config section.
A bigram model predicts each token from the previous one only, so it is also
a baseline: a GPT on the same data should beat its validation loss.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmtemplate import Task, register_task
from lmtemplate.data.corpus import TextDataConfig
from lmtemplate.data.lm import TextDataModule
from lmtemplate.tasks.base import OptimConfig, configure_adamw
from lmtemplate.tokenization import TokenizerConfig


@dataclass
class BigramModelConfig:
    block_size: int = 64  # length of the windows read from the corpus (the data module reads model.block_size)


@dataclass
class BigramConfig:
    """The task's config sections; each becomes a top-level key checked like the built-in ones."""

    model: BigramModelConfig = field(default_factory=BigramModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.1, min_lr=0.01, weight_decay=0.0))


@register_task("bigram_lm", config=BigramConfig, datamodule=TextDataModule)
class BigramLM(Task):
    """Task gives the training and evaluation steps, checkpoints' metric, logging and throughput; a task writes its
    model and ``loss``. See docs/writing-a-task.md for every hook."""

    def __init__(self, cfg: BigramConfig, datamodule: TextDataModule):
        super().__init__(cfg)
        vocab = datamodule.tokenizer.get_vocab_size()
        self.logits = nn.Embedding(vocab, vocab)  # row t: the next-token logits after token t
        nn.init.zeros_(self.logits.weight)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x, y = batch[:, :-1], batch[:, 1:]
        return F.cross_entropy(self.logits(x).flatten(0, 1), y.flatten())

    def configure_optimizers(self):
        return configure_adamw(self, [{"params": self.parameters(), "weight_decay": 0.0}], self.cfg.optim)
