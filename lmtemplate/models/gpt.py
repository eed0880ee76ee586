"""A decoder-only GPT: pre-LayerNorm blocks, learned or rotary positions, tied output head, KV-cached sampling.

The attention and the block serve the bidirectional encoder (``models/encoder.py``) too. The options ``norm``,
``norm_eps``, ``embedding_norm``, ``final_norm`` and ``gelu`` exist so that BERT and GPT-2 checkpoints
(``models/hf.py``) compute here exactly what they compute in ``transformers``; their defaults are GPT-2's layout,
except ``gelu``, exact by default (faster on CPU; GPT-2's tanh form is set by its import and by configs meaning GPT-2).
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

POSITIONS = ("learned", "rotary")
NORMS = ("pre", "post")
GELUS = ("tanh", "exact")


@dataclass
class GPTConfig:
    """Shape of the model; `vocab_size` 0 means "fill it from the tokenizer"."""

    vocab_size: int = 0
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    positions: str = "learned"  # learned: a position embedding table; rotary: queries and keys rotated (RoPE)
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~1/3 more compute
    compile: bool = False  # the task compiles the model with torch.compile (training and evaluation)
    norm: str = "pre"  # pre: LayerNorm before attention and MLP (GPT-2); post: after each residual sum (BERT)
    norm_eps: float = 1e-5  # every LayerNorm's epsilon (BERT's is 1e-12)
    embedding_norm: bool = False  # a LayerNorm on the summed embeddings (BERT)
    final_norm: bool = True  # a LayerNorm after the last block (pre-LayerNorm models need it; BERT has none)
    # The MLP's GELU: exact (erf; BERT's, nanoGPT's) or tanh (the approximation GPT-2 uses; its imports set it).
    # Exact by default: on CPU the tanh form cost ~4% of a baby-GPT training step (benchmarks/vs_nanogpt.py).
    gelu: str = "exact"
    init_from: Optional[str] = None  # a run directory (its last.ckpt), a checkpoint file, or a Hugging Face model folder

    def __post_init__(self):
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout: expected a probability in [0, 1), got {self.dropout}")
        if self.positions not in POSITIONS:
            raise ValueError(f"model.positions: '{self.positions}' is not one of {', '.join(POSITIONS)}")
        if self.positions == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"model.positions: rotary needs an even head size, got {self.n_embd // self.n_head}")
        if self.norm not in NORMS:
            raise ValueError(f"model.norm: '{self.norm}' is not one of {', '.join(NORMS)}")
        if self.gelu not in GELUS:
            raise ValueError(f"model.gelu: '{self.gelu}' is not one of {', '.join(GELUS)}")
        if not self.norm_eps > 0:
            raise ValueError(f"model.norm_eps: expected a positive number, got {self.norm_eps}")


class KVCache:
    """Preallocated keys and values of one attention layer, for incremental decoding."""

    def __init__(self, batch_size, n_head, block_size, head_dim, device=None, dtype=None):
        shape = (batch_size, n_head, block_size, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, k, v):
        """Store k, v of shape (B, n_head, T, head_dim); return all keys and values so far."""
        end = self.length + k.size(2)
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self):
        self.length = 0

    def reorder(self, rows):
        """Keep the batch rows ``rows`` (a LongTensor, repeats allowed): beam search follows the hypotheses it keeps."""
        self.k, self.v = self.k[rows], self.v[rows]


class SelfAttention(nn.Module):
    """Multi-head self-attention: causal (each position sees itself and the past) or bidirectional.

    ``mask`` (bidirectional only) is a boolean (B, 1, 1, T) tensor, True where a
    key may be attended (not padding); ``rope`` is a (cos, sin) pair from
    :func:`rotary_tables` to rotate queries and keys by their positions.
    """

    def __init__(self, cfg: GPTConfig, causal: bool = True):
        super().__init__()
        self.n_head = cfg.n_head
        self.causal = causal
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cache: KVCache | None = None, mask=None, rope=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        prefix = 0
        if cache is not None:
            prefix = cache.length
            k, v = cache.append(k, v)
        if self.causal and prefix > 0 and T > 1:
            # New query i sits at absolute position prefix + i: it sees keys 0..prefix + i.
            mask = torch.ones(T, prefix + T, dtype=torch.bool, device=x.device).tril(prefix)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal and prefix == 0,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


def rotary_tables(head_dim: int, length: int, device=None, base: float = 10000.0):
    """cos and sin tables (length, head_dim / 2) of rotary position embeddings (RoFormer)."""
    freqs = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def layer_norm(cfg: GPTConfig) -> nn.LayerNorm:
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


def optional_norm(cfg: GPTConfig, present: bool) -> nn.Module:
    """A LayerNorm, or an Identity (no parameters, so a model without it has the state dict it always had)."""
    return layer_norm(cfg) if present else nn.Identity()


def position_table(cfg: GPTConfig) -> nn.Embedding | None:
    """The learned position embedding, or None with rotary positions."""
    return nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.positions == "learned" else None


def add_positions(module: nn.Module, x, start_pos: int = 0):
    """Token embeddings x (B, T, C) at positions start_pos.. -> (x, rope).

    With learned positions, ``module.pos_emb`` is added and rope is None; with
    rotary ones, x is unchanged and rope holds the (cos, sin) tables the
    attention rotates queries and keys by.
    """
    T = x.size(1)
    if module.pos_emb is not None:
        return x + module.pos_emb(torch.arange(start_pos, start_pos + T, device=x.device)), None
    cos, sin = rotary_tables(module.cfg.n_embd // module.cfg.n_head, start_pos + T, x.device)
    return x, (cos[start_pos:], sin[start_pos:])


def rotate(x, cos, sin):
    """Rotate each pair (x[..., i], x[..., i + d/2]) of x (B, H, T, d) by its position's angle."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[: x.size(2)], sin[: x.size(2)]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class MLP(nn.Module):
    """Position-wise feed-forward network with a 4x hidden width."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = "tanh" if cfg.gelu == "tanh" else "none"

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """Transformer block: attention then MLP, each on a residual branch; LayerNorm before each (pre) or after each
    residual sum (post, BERT's). ln1 goes with attention and ln2 with the MLP either way."""

    def __init__(self, cfg: GPTConfig, causal: bool = True):
        super().__init__()
        self.post_norm = cfg.norm == "post"
        self.ln1 = layer_norm(cfg)
        self.attn = SelfAttention(cfg, causal)
        self.ln2 = layer_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cache: KVCache | None = None, mask=None, rope=None):
        if self.post_norm:
            x = self.ln1(x + self.attn(x, cache, mask, rope))
            return self.ln2(x + self.mlp(x))
        x = x + self.attn(self.ln1(x), cache, mask, rope)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer language model mapping token ids to next-token logits."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 (fill it from the tokenizer), got {cfg.vocab_size}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = position_table(cfg)
        self.emb_ln = optional_norm(cfg, cfg.embedding_norm)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = optional_norm(cfg, cfg.final_norm)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        GPT.init_weights(self, cfg.n_layer)

    @staticmethod
    def init_weights(model: nn.Module, n_layer: int) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, smaller residual projections."""
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # Residual projections feed a sum over 2 * n_layer branches: shrink them to keep its variance stable.
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx, caches: list[KVCache] | None = None, start_pos: int = 0):
        """Logits (B, T, vocab) for token ids idx (B, T) placed at positions start_pos..start_pos+T-1."""
        return self.lm_head(self.features(idx, caches, start_pos))

    def features(self, idx, caches: list[KVCache] | None = None, start_pos: int = 0):
        """The final hidden states (B, T, n_embd), after the last LayerNorm (if any): what heads read."""
        T = idx.size(1)
        if start_pos + T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} tokens at start_pos {start_pos} exceeds block_size {self.cfg.block_size}")
        if caches is not None and caches[0].length != start_pos:
            raise ValueError(f"start_pos {start_pos} does not match the cache length {caches[0].length}")
        x, rope = add_positions(self, self.tok_emb(idx), start_pos)
        x = self.drop(self.emb_ln(x))
        for i, block in enumerate(self.blocks):
            if self.cfg.activation_checkpointing and self.training and caches is None:
                x = checkpoint(block, x, None, None, rope, use_reentrant=False)
            else:
                x = block(x, None if caches is None else caches[i], None, rope)
        return self.ln_f(x)

    def new_caches(self, batch_size: int) -> list[KVCache]:
        """One empty KV cache per layer, on the model's device and dtype."""
        c, w = self.cfg, self.lm_head.weight
        return [KVCache(batch_size, c.n_head, c.block_size, c.n_embd // c.n_head, w.device, w.dtype)
                for _ in range(c.n_layer)]

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding drops a learned position embedding (token embedding is the tied head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_emb.weight.numel() if non_embedding and self.pos_emb is not None else n

    def flops_per_token(self) -> int:
        """Training FLOPs per token, forward and backward (PaLM appendix B estimate)."""
        c = self.cfg
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.block_size

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on Linear weight matrices only, not on biases, norms or embeddings."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        linear = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)} - embeddings
        params = [p for _, p in self.named_parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if id(p) in linear], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in linear], "weight_decay": 0.0},
        ]

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_id: int | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None):
        """Extend idx (B, T) by up to max_new_tokens sampled tokens; temperature 0 is greedy.

        Calls ``forward`` rather than the module, so a model compiled with
        ``nn.Module.compile`` is not recompiled for every new sequence length.
        """
        was_training = self.training
        self.eval()
        try:
            block_size = self.cfg.block_size
            caches = self.new_caches(idx.size(0)) if use_cache else None
            cached = 0  # tokens of idx already in the caches
            done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
            for _ in range(max_new_tokens):
                if caches is not None and idx.size(1) <= block_size:
                    logits = self.forward(idx[:, cached:], caches, start_pos=cached)
                    cached = idx.size(1)
                else:
                    # Past block_size every position would shift, so a cache cannot slide:
                    # recompute on the last block_size tokens for the remaining steps.
                    caches = None
                    logits = self.forward(idx[:, -block_size:])
                nxt = _sample(logits[:, -1], temperature, top_k, top_p, generator)
                if eos_id is not None:
                    nxt = nxt.masked_fill(done[:, None], eos_id)
                    done |= nxt[:, 0] == eos_id
                idx = torch.cat([idx, nxt], dim=1)
                if done.all():
                    break
            return idx
        finally:
            self.train(was_training)


def _sample(logits, temperature, top_k, top_p, generator):
    """One token id per row (B, 1) from last-position logits (B, vocab)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the more likely ones already reach top_p; the top token always stays.
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
