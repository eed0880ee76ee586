"""An encoder-decoder transformer (the original Transformer's shape) from the GPT's and the encoder's pieces.

The encoder is ``models/encoder.Encoder``. Each decoder block is the GPT's
block (causal self-attention with a KV cache, then the MLP) with cross-attention
over the encoder output in between. The cross-attention keys and values depend
only on the source, so decoding computes them once per source (``Seq2Seq.memory``).

Conventions: ``src`` (B, S) token ids with ``src_mask`` (B, S) 1 on real tokens
and 0 on padding; ``tgt`` (B, T) decoder inputs that start with BOS.

The options below the shape exist so that BART and Marian checkpoints (``models/hf.py``) compute here what they
compute in ``transformers``; their defaults keep the original layout (a pre-LayerNorm decoder, GELU, learned
positions, unscaled embeddings, no output bias).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmtemplate.models.encoder import Encoder, EncoderConfig
from lmtemplate.models.gpt import MLP, GPT, Block, KVCache, add_positions, layer_norm, optional_norm, position_table

# (tokens (N, 1), parents (N,) or None) -> next-token logits (N, vocab); see Seq2Seq.stepper
Step = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


@dataclass
class Seq2SeqConfig(EncoderConfig):
    """The encoder's shape (``n_layer`` counts encoder blocks), the decoder's depth and how embeddings are shared.

    ``vocab_size`` is the target vocabulary; ``src_vocab_size`` the source's
    (0: from the tokenizers). ``block_size`` bounds the source and the target alike.
    """

    type_vocab_size: int = 0  # one source text: no segment embeddings
    n_decoder_layer: int = 0  # decoder blocks; 0: as many as n_layer
    src_vocab_size: int = 0
    shared_embeddings: bool = True  # one table for source and target tokens (needs a joint tokenizer)
    tie_output: bool = True  # the output projection is the target embedding matrix
    # pre: pre-LayerNorm decoder blocks and a final norm, whatever the encoder's layout; encoder: the encoder's
    # model.norm, embedding_norm and final_norm (BART's and Marian's post-LayerNorm decoders)
    decoder_norms: str = "pre"
    activation: str = "gelu"  # the MLPs' activation: gelu (in model.gelu's form), relu or silu (Marian's swish)
    embedding_scale: bool = False  # token embeddings times sqrt(n_embd) on input (Marian's, BART's scale_embedding)
    sinusoidal: bool = False  # with learned positions: a fixed, untrained table of sines and cosines (Marian's)
    logits_bias: bool = False  # a per-token bias added to the output logits (BART's final_logits_bias)
    # with model.init_from: the decoder's embeddings, self-attention, MLPs and norms start as the encoder's (its
    # first blocks), cross-attention fresh (BERT2BERT, Rothe et al. 2020); needs model.decoder_norms=encoder
    warm_start: bool = False
    # with warm_start: each decoder block's cross-attention (and its norm) starts as the same encoder block's
    # self-attention, so the decoder reads the source from its first step instead of learning to
    warm_cross: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.n_decoder_layer < 0:
            raise ValueError(f"model.n_decoder_layer: expected >= 0 (0: model.n_layer), got {self.n_decoder_layer}")
        if self.decoder_norms not in DECODER_NORMS:
            raise ValueError(f"model.decoder_norms: '{self.decoder_norms}' is not one of {', '.join(DECODER_NORMS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation: '{self.activation}' is not one of {', '.join(ACTIVATIONS)}")
        if self.sinusoidal and self.positions != "learned":
            raise ValueError(f"model.sinusoidal: a fixed position table needs model.positions=learned, "
                             f"got {self.positions}")
        if self.warm_start and (self.decoder_norms != "encoder" or self.decoder_layers > self.n_layer
                                or not self.init_from):
            raise ValueError(f"model.warm_start: the decoder starts as the pretrained encoder's first blocks, so it "
                             f"needs model.init_from (got {self.init_from}), model.decoder_norms=encoder (got "
                             f"{self.decoder_norms}) and at most model.n_layer ({self.n_layer}) decoder blocks (got "
                             f"{self.decoder_layers})")
        if self.warm_cross and not self.warm_start:
            raise ValueError("model.warm_cross: the cross-attention starts as the encoder's self-attention only in a "
                             "warm-started decoder: set model.warm_start=true too")

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layer or self.n_layer


DECODER_NORMS = ("pre", "encoder")
ACTIVATIONS = {"gelu": None, "relu": F.relu, "silu": F.silu}  # gelu: the MLP's own, in model.gelu's form


class FeedForward(MLP):
    """The MLP with ``model.activation`` (relu or silu) in place of its GELU."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__(cfg)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x):
        return self.drop(self.proj(self.act(self.fc(x))))


def _scaled(factor: float, module, args, out):
    return out * factor


def sinusoids(n: int, dim: int) -> torch.Tensor:
    """Marian's position table (n, dim): sin(p / 10000^(2i/dim)) in the first half, the cosines in the second."""
    angles = torch.arange(n, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.cat([angles.sin(), angles.cos()[:, : dim // 2]], dim=1).float()


class CrossAttention(nn.Module):
    """Multi-head attention from decoder positions (queries) to the encoder output (keys, values)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.kv = nn.Linear(cfg.n_embd, 2 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def _heads(self, x):
        return x.view(x.size(0), x.size(1), self.n_head, -1).transpose(1, 2)

    def memory(self, encoded):
        """Keys and values (B, n_head, S, head_dim) of the encoder output (B, S, n_embd)."""
        k, v = self.kv(encoded).split(encoded.size(-1), dim=2)
        return self._heads(k), self._heads(v)

    def forward(self, x, memory, mask):
        """``mask`` (B, 1, 1, S) is True on the source tokens that may be attended."""
        B, T, C = x.shape
        y = F.scaled_dot_product_attention(self._heads(self.q(x)), *memory, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class DecoderBlock(Block):
    """The GPT's causal block with cross-attention between self-attention and the MLP."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__(cfg, causal=True)
        self.ln_cross = layer_norm(cfg)
        self.cross = CrossAttention(cfg)

    def forward(self, x, memory, mask, cache: KVCache | None = None, rope=None):
        if self.post_norm:
            x = self.ln1(x + self.attn(x, cache, None, rope))
            x = self.ln_cross(x + self.cross(x, memory, mask))
            return self.ln2(x + self.mlp(x))
        x = x + self.attn(self.ln1(x), cache, None, rope)
        x = x + self.cross(self.ln_cross(x), memory, mask)
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    """Target token ids -> next-token logits, attending to the source through per-layer memories."""

    def __init__(self, cfg: Seq2SeqConfig, tok_emb: nn.Embedding | None = None):
        super().__init__()
        if cfg.decoder_norms == "pre":
            cfg = dataclasses.replace(cfg, norm="pre", embedding_norm=False, final_norm=True)
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd) if tok_emb is None else tok_emb
        self.pos_emb = position_table(cfg)
        self.emb_ln = optional_norm(cfg, cfg.embedding_norm)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.ln_f = optional_norm(cfg, cfg.final_norm)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.logits_bias:
            self.register_buffer("logits_bias", torch.zeros(cfg.vocab_size))
        GPT.init_weights(self, cfg.decoder_layers)
        if cfg.tie_output:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx, memories: list, mask, caches: list[KVCache] | None = None, start_pos: int = 0):
        """Logits (B, T, vocab) for ids (B, T) at positions start_pos..; ``mask`` (B, 1, 1, S) marks real source tokens."""
        T = idx.size(1)
        if start_pos + T > self.cfg.block_size:
            raise ValueError(f"target of {start_pos + T} tokens exceeds model.block_size {self.cfg.block_size}")
        x, rope = add_positions(self, self.tok_emb(idx), start_pos)
        x = self.drop(self.emb_ln(x))
        for i, block in enumerate(self.blocks):
            if self.cfg.activation_checkpointing and self.training and caches is None:
                x = checkpoint(block, x, memories[i], mask, None, rope, use_reentrant=False)
            else:
                x = block(x, memories[i], mask, None if caches is None else caches[i], rope)
        logits = self.lm_head(self.ln_f(x))
        return logits + self.logits_bias if self.cfg.logits_bias else logits


class Seq2Seq(nn.Module):
    """Encoder-decoder: ``forward(src, src_mask, tgt)`` gives teacher-forced logits; ``stepper`` decodes."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 (fill it from the tokenizer), got {cfg.vocab_size}")
        src_vocab = cfg.vocab_size if cfg.shared_embeddings else cfg.src_vocab_size
        if src_vocab <= 0:
            raise ValueError(f"model.src_vocab_size must be > 0 with separate embeddings, got {src_vocab}")
        self.cfg = cfg
        shape = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(EncoderConfig)}
        self.encoder = Encoder(EncoderConfig(**{**shape, "vocab_size": src_vocab}))
        self.decoder = Decoder(cfg, self.encoder.tok_emb if cfg.shared_embeddings else None)
        self._apply_options(cfg)

    def _apply_options(self, cfg: Seq2SeqConfig) -> None:
        """The options that change the encoder's and the decoder's parts after they are built (none by default)."""
        halves = (self.encoder, self.decoder)
        if cfg.activation != "gelu":
            for half in halves:
                for block in half.blocks:
                    block.mlp = FeedForward(cfg)
                    GPT.init_weights(block.mlp, len(half.blocks))
        if cfg.embedding_scale:
            for embedding in {id(h.tok_emb): h.tok_emb for h in halves}.values():
                embedding.register_forward_hook(partial(_scaled, math.sqrt(cfg.n_embd)))
        if cfg.sinusoidal:
            for half in halves:
                with torch.no_grad():
                    half.pos_emb.weight.copy_(sinusoids(*half.pos_emb.weight.shape))
                half.pos_emb.weight.requires_grad_(False)

    def warm_start_decoder(self) -> list[str]:
        """Copy the encoder's embeddings, norms and each block's self-attention, MLP and norms into the decoder's
        (``model.warm_start``); the cross-attention stays as it is, or with ``model.warm_cross`` starts as the same
        block's self-attention (its q rows, its k and v rows, its output; ln1 for its norm). Returns the decoder's
        parameters left fresh."""
        own, encoder, fresh = self.decoder.state_dict(), self.encoder.state_dict(), []
        if self.cfg.warm_cross:  # the cross-attention's names, read from the encoder's self-attention
            C = self.cfg.n_embd  # cross-attention part -> (self-attention part, its rows)
            sources = {"cross.q": ("attn.qkv", slice(None, C)), "cross.kv": ("attn.qkv", slice(C, None)),
                       "cross.proj": ("attn.proj", slice(None)), "ln_cross": ("ln1", slice(None))}
            for i, (target, (source, rows)), kind in itertools.product(
                    range(len(self.decoder.blocks)), sources.items(), ("weight", "bias")):
                tensor = encoder.get(f"blocks.{i}.{source}.{kind}")
                if tensor is not None:
                    encoder[f"blocks.{i}.{target}.{kind}"] = tensor[rows]
        with torch.no_grad():
            for name, tensor in own.items():
                source = encoder.get(name)
                if source is None or source.shape != tensor.shape:  # cross-attention; a vocabulary of its own
                    fresh += [] if name == "lm_head.weight" and self.cfg.tie_output else [name]
                else:
                    tensor.copy_(source)
        return fresh

    def memory(self, src, src_mask):
        """Encode the source once: (per-layer cross-attention keys and values, the (B, 1, 1, S) source mask)."""
        encoded = self.encoder(src, src_mask)
        return [block.cross.memory(encoded) for block in self.decoder.blocks], src_mask.bool()[:, None, None, :]

    def forward(self, src, src_mask, tgt):
        memories, mask = self.memory(src, src_mask)
        return self.decoder(tgt, memories, mask)

    def stepper(self, src, src_mask, copies: int = 1, use_cache: bool = True) -> Step:
        """A decoding state for ``copies`` hypotheses per source, rows ordered source by source.

        Returns ``step(tokens, parents)``: feed each row's newest token (N, 1), get
        its next-token logits (N, vocab). ``parents`` (N,) says which row of the
        previous step each row continues (beam search keeps some hypotheses twice
        and drops others), always a row of the same source; the decoder's caches,
        or without ``use_cache`` the token histories that are then decoded anew
        each step, follow it.
        """
        memories, mask = self.memory(src, src_mask)
        memories = [(k.repeat_interleave(copies, 0), v.repeat_interleave(copies, 0)) for k, v in memories]
        mask = mask.repeat_interleave(copies, 0)
        n, c = mask.size(0), self.cfg
        caches = [KVCache(n, c.kv_heads, c.block_size, c.n_embd // c.n_head, src.device, memories[0][0].dtype)
                  for _ in self.decoder.blocks] if use_cache else None
        history = src.new_empty(n, 0)

        def step(tokens, parents=None):
            nonlocal history
            if parents is not None:
                history = history[parents]
                for cache in caches or []:
                    cache.reorder(parents)
            history = torch.cat([history, tokens], dim=1)
            if caches is None:
                return self.decoder(history, memories, mask)[:, -1]
            return self.decoder(tokens, memories, mask, caches, start_pos=history.size(1) - 1)[:, -1]

        return step

    param_groups = GPT.param_groups
