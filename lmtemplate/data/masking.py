"""BERT's masked-LM corruption: pick a share of the tokens, hide most of them, score the model on those only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from lmtemplate.config import ConfigError

IGNORE = -100  # label of positions the loss skips (torch's cross_entropy default ignore_index)


@dataclass
class MaskingConfig:
    rate: float = 0.15  # share of the (non-special) tokens selected for prediction
    mask: float = 0.8  # of those: replaced by [MASK]
    random: float = 0.1  # replaced by a random token; the rest keep their own token

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ConfigError(f"masking.rate: expected a share between 0 and 1, got {self.rate}")
        if self.mask < 0 or self.random < 0 or self.mask + self.random > 1.0:
            raise ConfigError(
                f"masking.mask ({self.mask}) and masking.random ({self.random}) must be >= 0 and add up to at most 1"
            )


def mask_tokens(ids: torch.Tensor, cfg: MaskingConfig, mask_id: int, special_ids: torch.Tensor, vocab_size: int,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for token ids (B, T): labels hold the original id at selected positions, IGNORE elsewhere.

    Special tokens ([CLS], [SEP], [PAD], ...) are never selected.
    """
    probs = torch.full(ids.shape, cfg.rate, device=ids.device)
    probs[torch.isin(ids, special_ids)] = 0.0
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels = ids.masked_fill(~selected, IGNORE)
    u = torch.rand(ids.shape, device=ids.device, generator=generator)
    inputs = ids.masked_fill(selected & (u < cfg.mask), mask_id)
    to_random = selected & (u >= cfg.mask) & (u < cfg.mask + cfg.random)
    random_ids = torch.randint(vocab_size, ids.shape, device=ids.device, generator=generator)
    return torch.where(to_random, random_ids, inputs), labels
