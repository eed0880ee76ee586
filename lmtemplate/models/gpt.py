"""A decoder-only GPT: pre-LayerNorm blocks, learned or rotary positions, tied output head, KV-cached sampling.

The attention and the block serve the bidirectional encoder (``models/encoder.py``) too. The options ``norm``,
``norm_eps``, ``embedding_norm``, ``final_norm`` and ``gelu`` exist so that BERT and GPT-2 checkpoints
(``models/hf.py``) compute here exactly what they compute in ``transformers``; their defaults are GPT-2's layout,
except ``gelu``, exact by default (faster on CPU; GPT-2's tanh form is set by its import and by configs meaning GPT-2).
The Llama family's options (Llama, Qwen2, Mistral) follow: ``norm_type`` rmsnorm, ``mlp`` swiglu with its
``intermediate_size``, grouped-query attention (``n_kv_head``), ``rope_theta`` and Llama 3.1's ``rope_scaling``,
untied embeddings and a bias switch per projection kind; their defaults keep GPT-2's layout too.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

POSITIONS = ("learned", "rotary")
NORMS = ("pre", "post")
GELUS = ("tanh", "exact")
NORM_TYPES = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
LLAMA3_SCALING = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


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
    norm_type: str = "layernorm"  # every norm's kind: layernorm, or rmsnorm (no mean subtracted, no bias: Llama's)
    mlp: str = "gelu"  # gelu: proj(gelu(fc(x))); swiglu: proj(silu(gate(x)) * up(x)), gate and up as one fc (Llama's)
    intermediate_size: int = 0  # the MLP's hidden width; 0: 4 x n_embd
    n_kv_head: int = 0  # key/value heads, dividing n_head: fewer is grouped-query attention, 1 multi-query; 0: n_head
    rope_theta: float = 10000.0  # the base of rotary positions' frequencies
    # Llama 3.1's frequency scaling: {rope_type: llama3, factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings}, as its config.json writes it; None: none
    rope_scaling: Optional[dict[str, Any]] = None
    tie_embeddings: bool = True  # the output head is the token embedding matrix (false: a matrix of its own)
    qkv_bias: Optional[bool] = None  # biases of the query/key/value projections; None: as model.bias (Qwen2: true)
    out_bias: Optional[bool] = None  # of the attention's output projection; None: as model.bias
    mlp_bias: Optional[bool] = None  # of the MLP's projections; None: as model.bias
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
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"model.norm_type: '{self.norm_type}' is not one of {', '.join(NORM_TYPES)}")
        if self.mlp not in MLPS:
            raise ValueError(f"model.mlp: '{self.mlp}' is not one of {', '.join(MLPS)}")
        if self.intermediate_size < 0:
            raise ValueError(f"model.intermediate_size: expected >= 0 (0: 4 x n_embd), got {self.intermediate_size}")
        if self.n_kv_head < 0 or self.n_head % self.kv_heads:
            raise ValueError(f"model.n_kv_head: expected a divisor of model.n_head ({self.n_head}) or 0 (as many), "
                             f"got {self.n_kv_head}")
        if not self.rope_theta > 0:
            raise ValueError(f"model.rope_theta: expected a positive number, got {self.rope_theta}")
        if self.rope_scaling is not None:
            kind, missing = self.rope_scaling.get("rope_type"), [k for k in LLAMA3_SCALING if k not in self.rope_scaling]
            if kind != "llama3":
                raise ValueError(f"model.rope_scaling: rope_type '{kind}' is not supported; the one supported is llama3 "
                                 "(Llama 3.1's)")
            if missing:
                raise ValueError(f"model.rope_scaling: llama3 needs {', '.join(missing)}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def mlp_width(self) -> int:
        return self.intermediate_size or 4 * self.n_embd

    def bias_of(self, kind: str) -> bool:
        """Whether the ``kind`` projections (qkv, out, mlp) have biases: ``model.<kind>_bias``, else ``model.bias``."""
        own = getattr(self, f"{kind}_bias")
        return self.bias if own is None else own


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
        self.n_head, self.n_kv_head = cfg.n_head, cfg.kv_heads
        self.causal = causal
        self.dropout = cfg.dropout
        self.kv_width = cfg.kv_heads * (cfg.n_embd // cfg.n_head)
        self.qkv = nn.Linear(cfg.n_embd, cfg.n_embd + 2 * self.kv_width, bias=cfg.bias_of("qkv"))
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias_of("out"))
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cache: KVCache | None = None, mask=None, rope=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split([C, self.kv_width, self.kv_width], dim=2)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, -1).transpose(1, 2) for t in (k, v))
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
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv_head != self.n_head,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


def rotary_tables(head_dim: int, length: int, device=None, base: float = 10000.0, scaling: dict | None = None):
    """cos and sin tables (length, head_dim / 2) of rotary position embeddings (RoFormer), the frequencies computed
    as ``transformers`` computes them (Llama 3.1's ``scaling`` too), so that imported models match it exactly."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    if scaling is not None:
        freqs = llama3_frequencies(freqs, scaling)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def llama3_frequencies(freqs, s: dict):
    """Llama 3.1's rotary frequencies: long wavelengths divided by ``factor``, short ones kept, a smooth blend between."""
    factor, low, high, context = (s[k] for k in LLAMA3_SCALING)
    wavelen = 2 * math.pi / freqs
    scaled = torch.where(wavelen > context / low, freqs / factor, freqs)
    smooth = (context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(medium, smoothed, scaled)


def layer_norm(cfg: GPTConfig) -> nn.Module:
    """A LayerNorm, or an RMSNorm with ``model.norm_type=rmsnorm``."""
    if cfg.norm_type == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


def optional_norm(cfg: GPTConfig, present: bool) -> nn.Module:
    """A norm, or an Identity (no parameters, so a model without it has the state dict it always had)."""
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
    c = module.cfg
    cos, sin = rotary_tables(c.n_embd // c.n_head, start_pos + T, x.device, c.rope_theta, c.rope_scaling)
    return x, (cos[start_pos:], sin[start_pos:])


def rotate(x, cos, sin):
    """Rotate each pair (x[..., i], x[..., i + d/2]) of x (B, H, T, d) by its position's angle."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[: x.size(2)], sin[: x.size(2)]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class MLP(nn.Module):
    """Position-wise feed-forward network, ``model.mlp_width`` wide: GELU, or SwiGLU (``fc`` holds gate, then up)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.fc = nn.Linear(cfg.n_embd, (2 if self.swiglu else 1) * cfg.mlp_width, bias=cfg.bias_of("mlp"))
        self.proj = nn.Linear(cfg.mlp_width, cfg.n_embd, bias=cfg.bias_of("mlp"))
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = "tanh" if cfg.gelu == "tanh" else "none"

    def forward(self, x):
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.drop(self.proj(F.silu(gate) * up))
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """Transformer block: attention then MLP, each on a residual branch; a norm before each (pre) or after each
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
        if cfg.tie_embeddings:
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
        """The final hidden states (B, T, n_embd), after the last norm (if any): what heads read."""
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
        return [KVCache(batch_size, c.kv_heads, c.block_size, c.n_embd // c.n_head, w.device, w.dtype)
                for _ in range(c.n_layer)]

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding drops a learned position embedding, and the token embedding when it is
        not the (tied) output head: tables looked up, not multiplied."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            lookups = (self.pos_emb, None if self.cfg.tie_embeddings else self.tok_emb)
            n -= sum(m.weight.numel() for m in lookups if m is not None)
        return n

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
