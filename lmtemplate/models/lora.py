"""Low-rank adapters (LoRA): a frozen backbone whose chosen projections learn a low-rank update.

    add_adapters(model, cfg.lora)         # Task does this to ``self.model`` when lora.rank is set
    state = merged(state_dict, cfg)       # export: the frozen base (model.init_from) with the updates added in

The projections are named as the Llama family names them: an attention's ``q``, ``k``, ``v`` and ``o``, an MLP's
``gate``, ``up`` and ``down`` (a GELU MLP has ``up`` and ``down``). A fused projection (the GPT's qkv, SwiGLU's
gate and up) gets one adapter per targeted part, each updating that part's rows only, so that a ``q`` adapter here
is a ``q_proj`` adapter in PEFT. ``lora.targets`` are glob patterns over the names ``blocks.3.attn.q``,
``blocks.3.mlp.up``, ``decoder.blocks.0.cross.k``, ...; a pattern without a dot matches the last part.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import nn

from lmtemplate.config import ConfigError, LoRAConfig

# a projection (the last two parts of its module name) -> the parts of its output, in the order of its rows
PARTS = {"attn.qkv": ("q", "k", "v"), "attn.proj": ("o",), "mlp.fc": ("gate", "up"), "mlp.proj": ("down",),
         "cross.q": ("q",), "cross.kv": ("k", "v"), "cross.proj": ("o",)}


def parts_of(module: str, out_features: int, in_features: int, swiglu: bool) -> dict[str, tuple[int, int]]:
    """The rows (start, stop) of each part of projection ``module``'s output; {} for a projection without parts.
    A ``q`` part has as many rows as the input is wide; the others share the rest equally."""
    names = part_names(module, swiglu)
    sizes = [in_features] if names[:1] == ("q",) else []
    rest = names[len(sizes):]
    sizes += [(out_features - sum(sizes)) // max(1, len(rest))] * len(rest)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return {name: (start, start + size) for name, start, size in zip(names, starts, sizes)}


def part_names(module: str, swiglu: bool) -> tuple[str, ...]:
    """The parts of projection ``module``'s output, in the order of its rows (a GELU MLP's fc is ``up`` alone)."""
    names = PARTS.get(".".join(module.split(".")[-2:]), ())
    return ("up",) if names == PARTS["mlp.fc"] and not swiglu else names


def part_name(module: str, part: str) -> str:
    """``blocks.0.attn.qkv``, ``q`` -> ``blocks.0.attn.q``: the name ``lora.targets`` match."""
    return f"{module.rsplit('.', 1)[0]}.{part}"


class LoRALinear(nn.Linear):
    """A frozen ``nn.Linear`` (its own weight and bias, under their names) plus, for each adapted part, the update
    ``scale * B @ A`` of that part's rows; ``A`` starts random and ``B`` at zero, so training starts at the base."""

    def __init__(self, linear: nn.Linear, parts: dict[str, tuple[int, int]], cfg: LoRAConfig):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias
        self.parts = parts
        self.scale = cfg.alpha / cfg.rank
        like = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.lora_A = nn.ParameterDict({p: torch.empty(cfg.rank, self.in_features, **like) for p in parts})
        self.lora_B = nn.ParameterDict({p: torch.zeros(stop - start, cfg.rank, **like)
                                        for p, (start, stop) in parts.items()})
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear and PEFT initialise A
        self.lora_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        y = super().forward(x)
        h = self.lora_dropout(x)
        for name, (start, stop) in self.parts.items():
            y[..., start:stop] += self.scale * F.linear(F.linear(h, self.lora_A[name]), self.lora_B[name])
        return y


def add_adapters(model: nn.Module, cfg: LoRAConfig) -> None:
    """Freeze ``model`` and put adapters on the projections whose names match ``cfg.targets``; a pattern that
    matches none is an error naming the projections there are."""
    model.requires_grad_(False)
    swiglu = getattr(getattr(model, "cfg", None), "mlp", "gelu") == "swiglu"
    found, used = [], set()
    for module, linear in list(model.named_modules()):
        if not isinstance(linear, nn.Linear):
            continue
        chosen = {}
        for part, rows in parts_of(module, linear.out_features, linear.in_features, swiglu).items():
            name = part_name(module, part)
            hits = {t for t in cfg.targets if fnmatchcase(name, t) or fnmatchcase(name, f"*.{t}")}
            found.append(name)
            used |= hits
            if hits:
                chosen[part] = rows
        if chosen:
            parent, _, name = module.rpartition(".")
            setattr(model.get_submodule(parent), name, LoRALinear(linear, chosen, cfg))
    unused = [t for t in cfg.targets if t not in used]
    if unused:
        kinds = sorted({n.rsplit(".", 1)[1] for n in found})
        raise ConfigError(f"lora.targets: '{unused[0]}' matches no projection of this {type(model).__name__}; its "
                          f"projections are {', '.join(kinds) or 'none'}, named like "
                          f"{', '.join(found[:3]) or '(none)'} (patterns without a dot match the last part)")


def merged(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """A LoRA run's checkpoint state dict made whole, as an export needs it: the frozen base's weights
    (``model.init_from``), each adapter's update added to the rows it adapts, and the task's head. A checkpoint of
    a run without adapters is returned as it is."""
    if cfg.lora.rank is None:
        return state
    from lmtemplate.models.backbone import read_backbone

    base, checkpoint = read_backbone(cfg.model.init_from, cfg.model.block_size)[:2]
    full = {f"model.{name}": base[name] for name in base}
    full.update({k: v for k, v in state.items() if ".lora_" not in k})
    scale = cfg.lora.alpha / cfg.lora.rank
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        module, part = key.split(".lora_A.")
        b, weight = state[f"{module}.lora_B.{part}"], full[f"{module}.weight"].clone()
        start, stop = parts_of(module, *weight.shape, getattr(cfg.model, "mlp", "gelu") == "swiglu")[part]
        if weight[start:stop].shape != (b.shape[0], a.shape[1]):
            raise ConfigError(f"export: the adapter {key} updates a {b.shape[0]} x {a.shape[1]} matrix, but the frozen "
                              f"base's {module}.weight ({checkpoint}, model.init_from) is {tuple(weight.shape)}: the "
                              "base is not the one the adapters were trained on")
        weight[start:stop] += scale * b @ a
        full[f"{module}.weight"] = weight
    return full
