"""Task ``causal_lm``: next-token prediction with a GPT (pretraining), and text generation; and ``LanguageModel``,
what it shares with ``masked_lm``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torchmetrics.text import Perplexity

from lmtemplate.config import ConfigError, require_positive
from lmtemplate.data.corpus import TextDataConfig
from lmtemplate.data.lm import TextDataModule
from lmtemplate.models.backbone import build_model
from lmtemplate.models.gpt import GPT, GPTConfig
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import LanguageModel, OptimConfig, per_stage
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
        require_positive("generate", self, "top_k")


@dataclass
class CausalLMConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)


@register_task("causal_lm", config=CausalLMConfig, datamodule=TextDataModule)
class CausalLM(LanguageModel):
    metrics = {"val/loss": "min", "val/ppl": "min"}

    def __init__(self, cfg: CausalLMConfig, datamodule: TextDataModule):
        super().__init__(cfg)
        self.tokenizer = datamodule.tokenizer
        self.model = build_model(GPT, cfg.model, self.tokenizer.get_vocab_size())
        self.ppl = per_stage(Perplexity())

    def log_training(self, loss: torch.Tensor, batch: torch.Tensor) -> None:
        super().log_training(loss, batch)
        self.log("train/ppl", loss.exp())

    def batch_tokens(self, batch: torch.Tensor) -> int:
        return batch[:, 1:].numel()  # a window of block_size + 1 tokens feeds block_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def scored(self, batch: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position of the windows, scored on the token after it."""
        return self.model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten()

    def complete(self, prompt: str, generator: Optional[torch.Generator] = None) -> str:
        """Continue ``prompt`` with the ``generate`` settings; an empty prompt starts a new document."""
        g = self.cfg.generate
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids or [document_separator(self.tokenizer) or 0]
        out = self.model.generate(torch.tensor([ids], device=self.device), g.max_new_tokens, temperature=g.temperature,
                                  top_k=g.top_k, top_p=g.top_p, generator=generator)
        return self.tokenizer.decode(out[0, len(ids):].tolist())

    def predict_step(self, prompt: str, batch_idx: int) -> dict:
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.generate.seed + batch_idx)
        return {"prompt": prompt, "completion": self.complete(prompt, generator)}

    def text_samples(self) -> list[tuple[str, str]]:
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.generate.seed)
        return [(p, self.complete(p, generator)) for p in self.cfg.generate.samples]
