"""Training throughput of lmtemplate's GPT against transformers' GPT2LMHeadModel or LlamaForCausalLM, same shape.

``--family gpt2`` (the default) sets our GPT up as GPT-2 (learned positions, LayerNorm, tanh GELU, biases, tied
embeddings) against GPT2LMHeadModel; ``--family llama`` with the Llama family's options (rotary positions,
RMSNorm, SwiGLU 4 x n_embd wide, grouped-query attention with half as many key/value heads as heads, no biases,
untied embeddings as LlamaConfig's default) against LlamaForCausalLM, whose config and weights are written by
lmtemplate's export (``models/hf.py``) from ours. Both sides attend with ``F.scaled_dot_product_attention``:
ours calls it, and theirs is built with ``attn_implementation="sdpa"``. Before timing, each shape checks that the
two models hold the same weights and compute the same function: the same parameter count, logits within 1e-4 and
gradients within 1e-5 on one batch (else it stops).

One training step = forward, next-token cross-entropy, backward, AdamW step, on CPU. Both models get
the same (B, T+1) window of random tokens each step (new every step, drawn from a fixed generator),
take its first T tokens as input and compute the loss the same way, from the logits:
``F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())`` (what lmtemplate's causal_lm task
does; GPT2's own ``labels=`` loss is not used, so both do identical loss work). Steps alternate
between the two models (AB, BA, AB, ...) after an untimed warm-up; each step is timed with
time.perf_counter and the report gives median ms/step, tokens/s and the ratio ours/theirs of tokens/s
(>= 1.0 means ours is no slower).

    python benchmarks/vs_transformers.py            # both shapes, default steps (~5 min on 2 cores)
    python benchmarks/vs_transformers.py --quick    # smoke test, a few seconds
    python benchmarks/vs_transformers.py --family llama   # against LlamaForCausalLM; writes vs_transformers_llama.json
    python benchmarks/vs_transformers.py --steps 100 --threads 1 --out /tmp/x.json

Needs transformers: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from common import default_out, environment, interleave, median, print_table, write_json  # noqa: E402

NAME = "vs_transformers"

# batch_size and block_size: tokens per step = batch_size * block_size.
SHAPES = {
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65),
    "larger": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8, vocab_size=65),
}
# Timed steps per model (after warm-up) when --steps is not given: enough for a stable median while the
# whole run (both shapes, both models, warm-up included) stays under ~6 minutes on a 2-core CPU.
DEFAULT_STEPS = {"baby": 300, "larger": 40}
DEFAULT_WARMUP = {"baby": 20, "larger": 3}
QUICK_STEPS, QUICK_WARMUP = 2, 1

ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
ADAMW_IMPL = {  # the same for both models
    "default": dict(foreach=False, fused=False),  # the per-tensor loop: torch's default on CPU
    "foreach": dict(foreach=True, fused=False),
    "fused": dict(foreach=False, fused=True),
}


def require_transformers():
    try:
        import transformers
    except ImportError:
        sys.exit("benchmarks/vs_transformers.py needs the 'transformers' package, which is not installed.\n"
                 "Install the benchmark extras with:  pip install -e '.[bench]'")
    return transformers


def gpt2_ours(s: dict):
    from lmtemplate.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=s["vocab_size"], block_size=s["block_size"], n_layer=s["n_layer"],
                    n_head=s["n_head"], n_embd=s["n_embd"], dropout=0.0, bias=True, gelu="tanh")  # GPT-2's GELU, as theirs
    return GPT(cfg).train()


def gpt2_theirs(s: dict):
    """GPT2LMHeadModel of the same shape, no dropout, tanh GELU, tied embeddings, SDPA attention if available."""
    from transformers import GPT2Config, GPT2LMHeadModel

    kw = dict(n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"], n_positions=s["block_size"],
              vocab_size=s["vocab_size"], n_inner=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
              activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
              scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
              bos_token_id=None, eos_token_id=None, use_cache=False)
    try:
        model = GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa", **kw))
    except (ValueError, ImportError):  # a transformers version without SDPA for GPT-2
        model = GPT2LMHeadModel(GPT2Config(**kw))
    return model.train()


@torch.no_grad()
def gpt2_copy(ours, theirs) -> None:
    """Load our weights into GPT2LMHeadModel (its Conv1D weights are our Linear weights transposed)."""
    t = theirs.transformer
    if theirs.lm_head.weight.data_ptr() != t.wte.weight.data_ptr():
        raise SystemExit("GPT2LMHeadModel's lm_head is not tied to its token embedding")
    t.wte.weight.copy_(ours.tok_emb.weight)
    t.wpe.weight.copy_(ours.pos_emb.weight)
    pairs = [(t.ln_f, ours.ln_f)]
    for hb, ob in zip(t.h, ours.blocks):
        pairs += [(hb.ln_1, ob.ln1), (hb.ln_2, ob.ln2)]
        for conv, lin in ((hb.attn.c_attn, ob.attn.qkv), (hb.attn.c_proj, ob.attn.proj),
                          (hb.mlp.c_fc, ob.mlp.fc), (hb.mlp.c_proj, ob.mlp.proj)):
            conv.weight.copy_(lin.weight.t())
            conv.bias.copy_(lin.bias)
    for h, o in pairs:
        h.weight.copy_(o.weight)
        h.bias.copy_(o.bias)


def gpt2_grad_diff(ours, theirs) -> float:
    """Of the token embedding (embedding + tied head) and the first block's fused QKV weight."""
    return max((ours.tok_emb.weight.grad - theirs.transformer.wte.weight.grad).abs().max().item(),
               (ours.blocks[0].attn.qkv.weight.grad.t() - theirs.transformer.h[0].attn.c_attn.weight.grad)
               .abs().max().item())


def llama_config(s: dict):
    """Our GPT with the Llama family's options; LlamaConfig's default leaves the embeddings untied."""
    from lmtemplate.models.gpt import GPTConfig

    return GPTConfig(vocab_size=s["vocab_size"], block_size=s["block_size"], n_layer=s["n_layer"],
                     n_head=s["n_head"], n_embd=s["n_embd"], dropout=0.0, bias=False, positions="rotary",
                     norm_type="rmsnorm", mlp="swiglu", n_kv_head=s["n_head"] // 2, tie_embeddings=False)


def llama_ours(s: dict):
    from lmtemplate.models.gpt import GPT

    return GPT(llama_config(s)).train()


def llama_theirs(s: dict):
    """LlamaForCausalLM with the config lmtemplate's export writes for ours, SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmtemplate.models.hf import _llama_config

    cfg = llama_config(s)
    fields = {k: v for k, v in _llama_config(cfg, cfg.vocab_size, "llama").items() if k != "model_type"}
    return LlamaForCausalLM(LlamaConfig(**fields, attn_implementation="sdpa", use_cache=False)).train()


def as_llama(ours, of: Callable) -> dict:
    """``of`` each of our parameters (itself, its gradient) under LlamaForCausalLM's names, by lmtemplate's export."""
    from lmtemplate.models.hf import _export_weights

    return _export_weights({f"model.{n}": of(p) for n, p in ours.named_parameters()}, ours.cfg, "llama",
                           "LlamaForCausalLM")


@torch.no_grad()
def llama_copy(ours, theirs) -> None:
    theirs.load_state_dict(as_llama(ours, lambda p: p))  # strict: every parameter of theirs is set


def llama_grad_diff(ours, theirs) -> float:
    """Of every parameter."""
    grads = dict(theirs.named_parameters())
    return max((g - grads[n].grad).abs().max().item() for n, g in as_llama(ours, lambda p: p.grad).items())


@dataclass(frozen=True)
class Family:
    name: str  # the benchmark's, in its JSON; its default file is outputs/benchmarks/<name>.json
    build_ours: Callable[[dict], nn.Module]
    build_theirs: Callable[[dict], nn.Module]
    copy_weights: Callable[[nn.Module, nn.Module], None]  # ours into theirs
    grad_diff: Callable[[nn.Module, nn.Module], float]  # the largest |gradient difference|, after a backward


FAMILIES = {"gpt2": Family(NAME, gpt2_ours, gpt2_theirs, gpt2_copy, gpt2_grad_diff),
            "llama": Family(f"{NAME}_llama", llama_ours, llama_theirs, llama_copy, llama_grad_diff)}


def forward_ours(model, x):
    return model(x)


def forward_theirs(model, x):
    return model(input_ids=x, use_cache=False).logits


def loss_of(logits, y):
    # As lmtemplate's causal_lm task computes it.
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def check_equivalent(family: Family, ours, theirs, s: dict) -> dict:
    """Same parameter count, and the same logits and loss once theirs holds our weights."""
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    if n_ours != n_theirs:
        raise SystemExit(f"parameter counts differ: ours {n_ours:,}, {type(theirs).__name__} {n_theirs:,}")
    family.copy_weights(ours, theirs)
    g = torch.Generator().manual_seed(1)
    w = torch.randint(s["vocab_size"], (2, s["block_size"] + 1), generator=g)
    a, b = forward_ours(ours, w[:, :-1]), forward_theirs(theirs, w[:, :-1])
    la, lb = loss_of(a, w[:, 1:]), loss_of(b, w[:, 1:])
    (la + lb).backward()
    grad_diff = family.grad_diff(ours, theirs)
    ours.zero_grad(set_to_none=True)
    theirs.zero_grad(set_to_none=True)
    diff = (a - b).abs().max().item()
    if diff > 1e-4 or grad_diff > 1e-5:
        raise SystemExit(f"the models are not equivalent: max |logit difference| {diff:.2e}, "
                         f"max |gradient difference| {grad_diff:.2e}")
    return {"params": n_ours, "max_abs_logit_diff": diff, "max_abs_grad_diff": grad_diff,
            "loss_ours": la.item(), "loss_theirs": lb.item()}


def bench_shape(family: Family, s: dict, steps: int, warmup: int, adamw_impl: str) -> dict:
    torch.manual_seed(0)
    ours, theirs = family.build_ours(s), family.build_theirs(s)
    equivalence = check_equivalent(family, ours, theirs, s)  # also starts both from the same weights
    models = {"ours": (ours, forward_ours), "transformers": (theirs, forward_theirs)}
    opts = {k: torch.optim.AdamW(m.parameters(), **ADAMW, **ADAMW_IMPL[adamw_impl]) for k, (m, _) in models.items()}

    gen = torch.Generator().manual_seed(1234)
    window = {}

    def draw(_i):  # untimed: the round's batch, shared by both models
        window["w"] = torch.randint(s["vocab_size"], (s["batch_size"], s["block_size"] + 1), generator=gen)

    def make_step(key):
        model, forward = models[key]
        opt = opts[key]

        def step(_i):
            w = window["w"]
            loss = loss_of(forward(model, w[:, :-1]), w[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    t0 = time.perf_counter()
    times = interleave({k: make_step(k) for k in models}, steps=steps, warmup=warmup, before_round=draw)
    wall = time.perf_counter() - t0

    tokens = s["batch_size"] * s["block_size"]
    res = {"shape": dict(s), "tokens_per_step": tokens, "steps": steps, "warmup_steps": warmup,
           "wall_s": round(wall, 2), "attn_implementation_transformers": theirs.config._attn_implementation,
           "equivalence": equivalence}
    for k, ts in times.items():
        med = median(ts)
        res[k] = {"median_ms": med * 1e3, "tokens_per_s": tokens / med,
                  "min_ms": min(ts) * 1e3, "max_ms": max(ts) * 1e3}
    # Ratio of medians of tokens/s: >= 1.0 means ours is no slower.
    res["ratio_ours_over_transformers"] = res["ours"]["tokens_per_s"] / res["transformers"]["tokens_per_s"]
    # The same ratio step by step (each round's two steps ran back to back on the same batch), then the
    # median: less sensitive to load that changes during the run.
    res["paired_ratio_median"] = median([b / a for a, b in zip(times["ours"], times["transformers"])])
    res["times_ms"] = {k: [round(t * 1e3, 3) for t in ts] for k, ts in times.items()}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_WARMUP} warm-up + {QUICK_STEPS} timed steps per model and shape")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per model at each shape (default: " +
                   ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per model first (default: " +
                   ", ".join(f"{k} {v}" for k, v in DEFAULT_WARMUP.items()) + ")")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--adamw", choices=list(ADAMW_IMPL), default="default",
                   help="AdamW implementation, the same for both models (default: torch's CPU default, "
                        "the per-tensor loop: foreach=False, fused=False)")
    p.add_argument("--family", choices=list(FAMILIES), default="gpt2",
                   help="our GPT as GPT-2 against GPT2LMHeadModel, or as Llama against LlamaForCausalLM "
                        "(default: %(default)s)")
    p.add_argument("--out", default=None, help=f"result JSON (default: {default_out(NAME)}, with --family llama "
                                               f"{default_out(FAMILIES['llama'].name)})")
    args = p.parse_args(argv)
    family = FAMILIES[args.family]

    transformers = require_transformers()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    results = {}
    for name in args.shapes:
        steps = args.steps if args.steps is not None else QUICK_STEPS if args.quick else DEFAULT_STEPS[name]
        warmup = args.warmup if args.warmup is not None else QUICK_WARMUP if args.quick else DEFAULT_WARMUP[name]
        print(f"[{name}] {SHAPES[name]}: {warmup} warm-up + {steps} timed steps per model ...", flush=True)
        results[name] = bench_shape(family, SHAPES[name], steps, warmup, args.adamw)

    rows = []
    for name, r in results.items():
        s = r["shape"]
        rows.append([name, f"{s['n_layer']}/{s['n_head']}/{s['n_embd']}", s["block_size"], s["batch_size"],
                     r["steps"], r["ours"]["median_ms"], r["transformers"]["median_ms"],
                     round(r["ours"]["tokens_per_s"]), round(r["transformers"]["tokens_per_s"]),
                     f"{r['ratio_ours_over_transformers']:.3f}"])
    print()
    print_table(rows, ["shape", "layer/head/embd", "block", "batch", "steps", "ours ms/step",
                       "HF ms/step", "ours tok/s", "HF tok/s", "ratio ours/HF"])

    env = environment()
    out = {
        "benchmark": family.name,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "transformers": transformers.__version__,
        **env,
        "adamw": {**ADAMW, "betas": list(ADAMW["betas"]), **ADAMW_IMPL[args.adamw]},
        "loss": "F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten()) for both models",
        "quick": args.quick,
        "shapes": results,
    }
    path = write_json(args.out or default_out(family.name), out)
    print(f"\ntorch {env['torch']}, transformers {transformers.__version__}, {env['threads']} threads, "
          f"{env['processor']} ({env['cpu_count']} CPUs), AdamW {args.adamw}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
