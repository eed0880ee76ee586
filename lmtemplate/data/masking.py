"""Masked-LM data: BERT's corruption (pick a share of the tokens, hide most of them, score only those), and
the corpus read one document per sequence (``data.packing: false``) instead of as packed windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import TextDataConfig
from lmtemplate.data.base import IGNORE, pad
from lmtemplate.data.lm import TextDataModule


@dataclass
class MaskingConfig:
    rate: float = 0.15  # share of the (non-special) tokens selected for prediction
    mask: float = 0.8  # of those: replaced by [MASK]
    random: float = 0.1  # replaced by a random token; the rest keep their own token

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ConfigError(f"masking.rate: expected a share between 0 and 1, got {self.rate}")
        if self.mask < 0 or self.random < 0 or self.mask + self.random > 1.0:
            raise ConfigError(f"masking.mask ({self.mask}) and masking.random ({self.random}) must be >= 0 "
                              "and add up to at most 1")


def mask_tokens(ids: torch.Tensor, cfg: MaskingConfig, mask_id: int, special_ids: torch.Tensor, vocab_size: int,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for token ids (B, T): labels hold the original id at selected positions, IGNORE elsewhere;
    special tokens ([CLS], [SEP], [PAD], ...) are never selected."""
    probs = torch.where(torch.isin(ids, special_ids), 0.0, cfg.rate)
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels = ids.masked_fill(~selected, IGNORE)
    u = torch.rand(ids.shape, device=ids.device, generator=generator)
    inputs = ids.masked_fill(selected & (u < cfg.mask), mask_id)
    to_random = selected & (u >= cfg.mask) & (u < cfg.mask + cfg.random)
    random_ids = torch.randint(vocab_size, ids.shape, device=ids.device, generator=generator)
    return torch.where(to_random, random_ids, inputs), labels


@dataclass
class MaskedLMDataConfig(TextDataConfig):
    packing: bool = True  # true: windows of packed documents; false: one document (e.g. JSONL record) per sequence


class DocumentSpans(Dataset):
    """Each document of a token file (the tokens between two separators) as ``[CLS] tokens [SEP]``, cut to ``length``."""

    CHUNK = 1 << 24  # tokens scanned at a time for separators: memory stays flat on large files

    def __init__(self, tokens: np.ndarray, sep_id: int, cls_id: int, length: int):
        self.tokens, self.sep_id, self.cls_id, self.length = tokens, sep_id, cls_id, length
        ends = np.concatenate([np.flatnonzero(tokens[i : i + self.CHUNK] == sep_id) + i
                               for i in range(0, len(tokens), self.CHUNK)] or [np.zeros(0, dtype=np.int64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        keep = ends > starts  # no empty documents
        self.starts, self.ends = starts[keep], ends[keep]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> list[int]:
        start = int(self.starts[i])
        end = min(int(self.ends[i]), start + self.length - 2)
        return [self.cls_id, *self.tokens[start:end].tolist(), self.sep_id]


class MaskedLMDataModule(TextDataModule):
    """The causal LM's corpus and token cache; with ``data.packing: false``, padded batches of whole documents
    (dicts with ``input_ids`` and ``attention_mask``) instead of packed windows."""

    def windows(self, tokens: np.ndarray, train: bool) -> DataLoader:
        if self.cfg.data.packing:
            return super().windows(tokens, train)
        tok = self.tokenizer
        spans = DocumentSpans(tokens, tok.token_to_id("[SEP]"), tok.token_to_id("[CLS]"), self.block_size)
        pad_id = tok.token_to_id("[PAD]")
        return self.loader(spans, train, collate_fn=lambda docs: pad([{"input_ids": d} for d in docs], {"input_ids": pad_id}))
