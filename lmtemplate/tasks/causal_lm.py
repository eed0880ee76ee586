"""Task ``causal_lm``: next-token prediction with a GPT (pretraining), and text generation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torchmetrics.text import Perplexity

from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import TextDataConfig
from lmtemplate.data.lm import TextDataModule
from lmtemplate.models.gpt import GPT, Block, GPTConfig
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, Task, configure_adamw
from lmtemplate.tokenization import TokenizerConfig, document_separator


@dataclass
class GenerateConfig:
    """Sampling for ``predict`` and for the text samples logged at each validation."""

    max_new_tokens: int = 64
    temperature: float = 0.8  # 0: greedy
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: int = 0
    samples: list[str] = field(default_factory=lambda: ["", "the"])  # prompts sampled at each validation

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"generate.temperature: expected >= 0 (0 is greedy), got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p: expected a number in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"generate.top_k: expected a positive integer, got {self.top_k}")


@dataclass
class CausalLMConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)


def split(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A window of block_size + 1 tokens -> inputs and next-token targets."""
    return batch[:, :-1], batch[:, 1:]


@register_task("causal_lm", config=CausalLMConfig, datamodule=TextDataModule)
class CausalLM(Task):
    monitor = ("val/loss", "min")  # the metric that picks the best checkpoint
    blocks = (Block,)  # the units FSDP shards and checkpoints one at a time

    def __init__(self, cfg, datamodule: TextDataModule):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = datamodule.tokenizer
        vocab = self.tokenizer.get_vocab_size()
        if 0 < cfg.model.vocab_size < vocab:
            raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} is smaller than the tokenizer's vocabulary ({vocab})")
        self.model = GPT(dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size or vocab))
        if cfg.model.compile:
            self.model.compile()  # in place: parameter names, and so checkpoints, stay as without compile
        self.val_ppl, self.test_ppl = Perplexity(), Perplexity()
        self.save_hyperparameters(dataclasses.asdict(cfg))

    @property
    def flops_per_batch(self) -> int:
        """For Lightning's ThroughputMonitor (FLOP/s and MFU)."""
        return self.model.flops_per_token() * self.cfg.data.batch_size * self.cfg.model.block_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = split(batch)
        logits = self.model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()), logits, y

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", loss.detach().exp())
        return loss

    def _eval_step(self, batch: torch.Tensor, stage: str, ppl: Perplexity) -> None:
        loss, logits, y = self._loss(batch)
        ppl.update(logits.float(), y)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/ppl", ppl)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_ppl)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_ppl)

    def configure_optimizers(self):
        return configure_adamw(self, self.model.param_groups(self.cfg.optim.weight_decay), self.cfg.optim)

    def complete(self, prompt: str, generator: Optional[torch.Generator] = None) -> str:
        """Continue ``prompt`` with the ``generate`` settings; an empty prompt starts a new document."""
        g = self.cfg.generate
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids or [document_separator(self.tokenizer) or 0]
        idx = torch.tensor([ids], device=self.device)
        out = self.model.generate(
            idx, g.max_new_tokens, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, generator=generator
        )
        return self.tokenizer.decode(out[0, len(ids) :].tolist())

    def predict_step(self, prompt: str, batch_idx: int) -> dict:
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.generate.seed + batch_idx)
        return {"prompt": prompt, "completion": self.complete(prompt, generator)}

    def text_samples(self) -> list[tuple[str, str]]:
        """(prompt, completion) pairs logged to TensorBoard at each validation."""
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.generate.seed)
        return [(p, self.complete(p, generator)) for p in self.cfg.generate.samples]
