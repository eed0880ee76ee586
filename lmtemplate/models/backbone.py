"""A backbone for any task: a GPT or an encoder built from one model config, read alike, and its pretrained weights.

    model = build_backbone(cfg.model, vocab_size)   # cfg.model.arch: encoder or decoder
    gpt = build_model(GPT, cfg.model, vocab_size)    # a GPTConfig (or EncoderConfig with Encoder)
    h = hidden_states(model, batch)                  # (B, T, n_embd), whichever it is
    load_backbone(model, cfg.model.init_from, cfg.model.arch)   # Task.setup does this for ``self.model``
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from lmtemplate.checkpointing import init_source, read_checkpoint
from lmtemplate.config import ConfigError
from lmtemplate.models import hf
from lmtemplate.models.encoder import Encoder, EncoderConfig
from lmtemplate.models.gpt import GPT, GPTConfig

ARCHS = ("encoder", "decoder")


@dataclass
class BackboneConfig(EncoderConfig):
    """The shape of an encoder (a masked_lm run's) or of a GPT (a causal_lm run's), by ``arch``."""

    arch: str = "encoder"

    def __post_init__(self):
        super().__post_init__()
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch: '{self.arch}' is not one of {', '.join(ARCHS)}")


def build_model(kind: type, cfg, vocab_size: int) -> nn.Module:
    """``kind(cfg)`` with the tokenizer's vocabulary when ``model.vocab_size`` is 0; compiled in place if asked
    (parameter names, and so checkpoints, stay as without compile)."""
    if 0 < cfg.vocab_size < vocab_size:
        raise ConfigError(f"model.vocab_size: {cfg.vocab_size} is smaller than the tokenizer's vocabulary ({vocab_size})")
    model = kind(dataclasses.replace(cfg, vocab_size=cfg.vocab_size or vocab_size))
    if cfg.compile:
        model.compile()
    return model


def build_backbone(cfg: BackboneConfig, vocab_size: int) -> nn.Module:
    """``cfg.arch``'s model with ``cfg``'s shape: the one place that copies a task's model fields into a model's."""
    kind, model = (GPTConfig, GPT) if cfg.arch == "decoder" else (EncoderConfig, Encoder)
    return build_model(model, kind(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(kind)}), vocab_size)


def hidden_states(model: nn.Module, batch: dict) -> torch.Tensor:
    """The final hidden states of a padded batch; a GPT ignores the mask (right padding is never attended)."""
    if isinstance(model, Encoder):
        return model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
    return model.features(batch["input_ids"])


def read_backbone(init_from: str, block_size: int) -> tuple[Mapping[str, torch.Tensor], Path, Optional[Path], str]:
    """(the weights of ``model.init_from`` under the backbone's names, the file they are in, its run's config.yaml
    (None for a Hugging Face folder), what it is in words). A Hugging Face folder's tensors are read when looked up."""
    if hf.is_pretrained_dir(init_from):
        source, task = hf.backbone_state(Path(init_from), block_size)
        return source, Path(init_from), None, task
    checkpoint, run_dir = init_source(init_from)
    state = read_checkpoint(checkpoint)["state_dict"]
    source = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    config = run_dir / "config.yaml" if run_dir else None
    task = f"a {OmegaConf.load(config).get('task', '?') if config and config.is_file() else '?'} run"
    return source, checkpoint, config, task


def load_backbone(backbone: nn.Module, init_from: str, arch: str) -> None:
    """Copy the pretraining run's ``model.*`` weights, or a Hugging Face model's (``models/hf.py``, read one tensor
    at a time), into ``backbone``; any missing, extra or reshaped parameter is an error that names it (the config's
    shape or ``model.arch`` differs from the run's). A Hugging Face model without an output head (LlamaModel) leaves
    the backbone's fresh one."""
    source, checkpoint, config, task = read_backbone(init_from, backbone.cfg.block_size)
    own = backbone.state_dict()
    fresh = {k for k in own if ".lora_" in k}  # low-rank adapters (models/lora.py) are not the base's
    fresh |= {"lm_head.weight"} if hf.is_pretrained_dir(init_from) else set()
    missing, extra = [k for k in own if k not in source and k not in fresh], [k for k in source if k not in own]
    if missing or extra:
        first = f"'{missing[0]}' is not in the checkpoint" if missing else f"the checkpoint's '{extra[0]}' is not in this model"
        raise ConfigError(
            f"model.init_from: {checkpoint} ({task}) does not fit this backbone (model.arch={arch}): {first} "
            f"({len(missing)} missing, {len(extra)} unexpected parameters). A masked_lm run needs model.arch=encoder, "
            "a causal_lm run model.arch=decoder, and the same model.positions / model.type_vocab_size / model.bias"
        )
    with torch.no_grad():
        for name, tensor in own.items():
            if name not in source:
                continue  # a fresh head
            value = source[name]
            if tensor.shape != value.shape:
                raise ConfigError(
                    f"model.init_from: parameter '{name}' has shape {tuple(value.shape)} in {checkpoint} but "
                    f"{tuple(tensor.shape)} in this model; set model.n_layer / n_head / n_embd / block_size to the "
                    f"pretraining run's{f' (see {config})' if config else ''}"
                )
            tensor.copy_(value)
