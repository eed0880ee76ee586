"""A bidirectional (BERT-style) encoder from the GPT's blocks, and the masked-LM head.

Conventions: a sequence is ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``;
``attention_mask`` (B, T) is 1 on real tokens and 0 on padding;
``token_type_ids`` (B, T) are 0 for the first text and 1 for the second
(used when ``type_vocab_size`` > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmtemplate.models.gpt import GPT, Block, GPTConfig, add_positions, optional_norm, position_table


@dataclass
class EncoderConfig(GPTConfig):
    """The GPT's shape fields (rotary positions by default) and the number of segment types."""

    block_size: int = 128  # the longest sequence, [CLS] and [SEP] included
    positions: str = "rotary"
    type_vocab_size: int = 2  # segment (token type) embeddings for text pairs; 0: none

    def __post_init__(self):
        super().__post_init__()
        if self.type_vocab_size < 0:
            raise ValueError(f"model.type_vocab_size: expected >= 0, got {self.type_vocab_size}")


class Encoder(nn.Module):
    """Token ids (B, T) -> hidden states (B, T, n_embd); every position attends to every non-padding one."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 (fill it from the tokenizer), got {cfg.vocab_size}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = position_table(cfg)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.n_embd) if cfg.type_vocab_size else None
        self.emb_ln = optional_norm(cfg, cfg.embedding_norm)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal=False) for _ in range(cfg.n_layer))
        self.ln_f = optional_norm(cfg, cfg.final_norm)
        GPT.init_weights(self, cfg.n_layer)

    def forward(self, idx, attention_mask=None, token_type_ids=None):
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds model.block_size {self.cfg.block_size}")
        x, rope = add_positions(self, self.tok_emb(idx))
        if self.type_emb is not None:
            x = x + self.type_emb(torch.zeros_like(idx) if token_type_ids is None else token_type_ids)
        x = self.drop(self.emb_ln(x))
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(block, x, None, mask, rope, use_reentrant=False)
            else:
                x = block(x, None, mask, rope)
        return self.ln_f(x)

    def features(self, idx, attention_mask=None, token_type_ids=None):
        """The final hidden states: the same call as the GPT's, so heads read either backbone alike."""
        return self(idx, attention_mask, token_type_ids)

    num_params = GPT.num_params  # the same counts and estimate as the GPT's (heads not counted)
    flops_per_token = GPT.flops_per_token
    param_groups = GPT.param_groups


class MaskedLMHead(nn.Module):
    """Hidden states -> vocabulary logits: dense + GELU + LayerNorm, then the token embedding as output matrix."""

    def __init__(self, cfg: EncoderConfig, embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.embedding = embedding  # tied: shares its weight with the encoder's token embedding
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h):
        return F.linear(self.ln(F.gelu(self.dense(h))), self.embedding.weight, self.bias)
