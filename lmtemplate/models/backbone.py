"""A backbone for any task: a GPT or an encoder built from one model config, read alike, and its pretrained weights.

    model = build_backbone(cfg.model, vocab_size)   # cfg.model.arch: encoder or decoder
    gpt = build_model(GPT, cfg.model, vocab_size)    # a GPTConfig (or EncoderConfig with Encoder)
    h = hidden_states(model, batch)                  # (B, T, n_embd), whichever it is
    load_backbone(model, cfg.model.init_from, cfg.model.arch)   # -> a LoadReport of the backbone
    report = load_pretrained(task, task.model, cfg.model.init_from)   # Task.setup: the backbone and the heads
    write_load_report(report, run_dir)   # init_from.json, and the log
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from lmtemplate.checkpointing import init_source, read_checkpoint
from lmtemplate.config import ConfigError
from lmtemplate.files import atomic_write_text
from lmtemplate.models import hf
from lmtemplate.models.encoder import Encoder, EncoderConfig
from lmtemplate.models.gpt import GPT, GPTConfig

log = logging.getLogger(__name__)

ARCHS = ("encoder", "decoder")
LOAD_REPORT = "init_from.json"  # in the run directory: what model.init_from loaded


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


class Pretrained(NamedTuple):
    """What ``model.init_from`` holds (``read_backbone``)."""

    source: Mapping[str, torch.Tensor]  # the weights by the backbone's names (a Hugging Face folder's: read lazily)
    checkpoint: Path  # the file (or Hugging Face folder) they are in
    config: Optional[Path]  # its run's config.yaml; None for a Hugging Face folder
    task: str  # what it is, in words
    origin: Mapping[str, tuple[str, ...]]  # a backbone name -> the checkpoint tensors it is read from
    everything: list[str]  # every tensor of the checkpoint


def read_backbone(init_from: str, block_size: int) -> Pretrained:
    """The weights of ``model.init_from`` (a run directory, checkpoint or Hugging Face folder) under the backbone's
    names, and where they come from."""
    if hf.is_pretrained_dir(init_from):
        source, task = hf.backbone_state(Path(init_from), block_size)
        return Pretrained(source, Path(init_from), None, task, source.origin, list(hf.read_weights(Path(init_from))))
    checkpoint, run_dir = init_source(init_from)
    state = read_checkpoint(checkpoint)["state_dict"]
    source = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    config = run_dir / "config.yaml" if run_dir else None
    task = f"a {OmegaConf.load(config).get('task', '?') if config and config.is_file() else '?'} run"
    return Pretrained(source, checkpoint, config, task, {k: ("model." + k,) for k in source}, list(state))


@dataclass
class LoadReport:
    """What ``model.init_from`` put into a model: each parameter loaded (-> the checkpoint tensors it was read
    from), each left fresh, and each checkpoint tensor that no parameter took."""

    init_from: str
    loaded: dict[str, list[str]] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def load_backbone(backbone: nn.Module, init_from: str, arch: str) -> LoadReport:
    """Copy the pretraining run's ``model.*`` weights, or a Hugging Face model's (``models/hf.py``, read one tensor
    at a time), into ``backbone``; any missing, extra or reshaped parameter is an error that names it (the config's
    shape or ``model.arch`` differs from the run's). A Hugging Face model without an output head (LlamaModel) leaves
    the backbone's fresh one."""
    source, checkpoint, config, task, origin, everything = read_backbone(init_from, backbone.cfg.block_size)
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
    loaded = {k: list(origin[k]) for k in own if k in source}
    used = {name for names in loaded.values() for name in names}
    return LoadReport(str(init_from), loaded, [k for k in own if k not in source], [k for k in everything if k not in used])


def load_pretrained(task: nn.Module, backbone: nn.Module, init_from: str) -> LoadReport:
    """``load_backbone`` into ``task``'s ``backbone``, then each head of a Hugging Face checkpoint that the task
    has (``hf.head_state``: the MLM head, BERT's pooler, the span head); the report names the task's parameters
    (a tied one once)."""
    prefix = next(name for name, module in task.named_modules() if module is backbone) + "."
    report = load_backbone(backbone, init_from, "decoder" if isinstance(backbone, GPT) else "encoder")
    loaded = {prefix + k: v for k, v in report.loaded.items()}
    if hf.is_pretrained_dir(init_from):
        heads = hf.head_state(Path(init_from), task.state_dict().keys())
        task.load_state_dict(heads, strict=False)
        loaded.update((k, list(v)) for k, v in heads.origin.items())
    own = nn.Module.state_dict(task, keep_vars=True)  # with a LoRA run's frozen base, which Task.state_dict drops
    taken = {id(own[k]) for k in loaded}
    used = {name for names in loaded.values() for name in names}
    return LoadReport(report.init_from, loaded, [k for k, p in own.items() if id(p) not in taken],
                      [k for k in report.unused if k not in used])


def write_load_report(report: LoadReport, run_dir: Path) -> None:
    """The report as ``run_dir``/init_from.json, and its counts and names in the log."""
    path = Path(run_dir) / LOAD_REPORT
    atomic_write_text(path, json.dumps(dataclasses.asdict(report), indent=1) + "\n")
    log.info("model.init_from %s: loaded %d parameters; fresh: %s; checkpoint tensors not used: %s (%s)",
             report.init_from, len(report.loaded), ", ".join(report.fresh) or "none",
             ", ".join(report.unused) or "none", path)
