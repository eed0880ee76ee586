"""Hugging Face checkpoints in and out: BERT into the encoder, GPT-2 into the GPT, and any such model back out.

A Hugging Face model folder holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``); both are
read as data, never as code (no ``transformers`` needed). One table per architecture maps this project's
parameter names to Hugging Face's, so import and export read the same names::

    fields = model_fields(folder)                    # the model config: shape and BERT's / GPT-2's options
    state, what = backbone_state(folder, block_size)  # our names; load_backbone copies it into the model
    export(task, model_cfg, state, labels, tokenizer_json, out)   # ``python -m lmtemplate export``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from lmtemplate.config import ConfigError, Source

# ours (under blocks.{i}.) -> theirs (under the layer prefix); a tuple is concatenated along the output dimension.
BERT_BLOCK = {
    "attn.qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attn.proj": "attention.output.dense",
    "ln1": "attention.output.LayerNorm",
    "mlp.fc": "intermediate.dense",
    "mlp.proj": "output.dense",
    "ln2": "output.LayerNorm",
}
BERT_EMBEDDINGS = {
    "tok_emb": "embeddings.word_embeddings",
    "pos_emb": "embeddings.position_embeddings",
    "type_emb": "embeddings.token_type_embeddings",
    "emb_ln": "embeddings.LayerNorm",
}
BERT_HEADS = {  # a task's head modules (named as in the task) -> BertFor*'s
    "mlm_head.dense": "cls.predictions.transform.dense",
    "mlm_head.ln": "cls.predictions.transform.LayerNorm",
    "pooler.0": "bert.pooler.dense",
    "head.1": "classifier",
}
GPT2_BLOCK = {"ln1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "ln2": "ln_2",
              "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
GPT2_EMBEDDINGS = {"tok_emb": "wte", "pos_emb": "wpe", "ln_f": "ln_f"}
GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # Conv1D stores weights (in, out): transposed

ARCHITECTURES = {  # model_type -> (our backbone, the backbone's prefix inside the head models)
    "bert": ("encoder", "bert."),
    "gpt2": ("decoder", "transformer."),
}


def is_pretrained_dir(init_from: Optional[str]) -> bool:
    """A Hugging Face model folder: it has a config.json (a run directory has config.yaml and checkpoints/)."""
    return bool(init_from) and (Path(init_from) / "config.json").is_file()


def read_config(folder: Path) -> dict:
    """config.json, checked: a supported model_type with no option that the project's models do not compute."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.init_from: {path}: not a readable JSON file ({e})") from None
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"model.init_from: {path} has model_type '{kind}'; lmtemplate imports "
                          f"{', '.join(ARCHITECTURES)} (BERT into the encoder, GPT-2 into the GPT)")
    unsupported = _unsupported(config)
    if unsupported:
        raise ConfigError(f"model.init_from: {path}: {'; '.join(unsupported)}: the project's models do not compute "
                          f"{'this' if len(unsupported) == 1 else 'these'}, so its weights would not mean the same")
    return config


def _unsupported(c: dict) -> list[str]:
    """Each option of config.json whose value the project's models do not implement, with its value."""
    if c["model_type"] == "bert":
        wanted = {"position_embedding_type": "absolute", "hidden_act": "gelu", "is_decoder": False,
                  "add_cross_attention": False, "intermediate_size": 4 * c.get("hidden_size", 768)}
    else:
        wanted = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_by_inverse_layer_idx": False,
                  "scale_attn_weights": True, "add_cross_attention": False,
                  "n_inner": (None, 4 * c.get("n_embd", 768))}
    out = []
    for key, ok in wanted.items():
        ok = ok if isinstance(ok, tuple) else (ok,)
        if key in c and c[key] not in ok:
            out.append(f"{key}={json.dumps(c[key])} (supported: {' or '.join(json.dumps(v) for v in ok)})")
    return out


def model_fields(folder: Path) -> dict:
    """The model config fields of the checkpoint: its shape, and the options that make the project's model BERT or GPT-2."""
    c = read_config(folder)
    if c["model_type"] == "bert":
        return {"arch": "encoder", "vocab_size": c["vocab_size"], "n_layer": c["num_hidden_layers"],
                "n_head": c["num_attention_heads"], "n_embd": c["hidden_size"],
                "block_size": c["max_position_embeddings"], "type_vocab_size": c.get("type_vocab_size", 2),
                "positions": "learned", "bias": True, "norm": "post", "norm_eps": c.get("layer_norm_eps", 1e-12),
                "embedding_norm": True, "final_norm": False, "gelu": "exact"}
    return {"arch": "decoder", "vocab_size": c["vocab_size"], "n_layer": c["n_layer"], "n_head": c["n_head"],
            "n_embd": c["n_embd"], "block_size": c["n_positions"], "positions": "learned", "bias": True,
            "norm": "pre", "norm_eps": c.get("layer_norm_epsilon", 1e-5), "embedding_norm": False,
            "final_norm": True, "gelu": "tanh"}


def with_checkpoint_fields(schema: DictConfig, sources: list[Source], task: str) -> list[Source]:
    """``sources`` with, first (under every file and override), the model fields of the Hugging Face folder that
    ``model.init_from`` names, so the model is built in the checkpoint's shape (an encoder-decoder's encoder;
    with ``model.shared_embeddings=false`` the vocabulary is the source's). A source that sets one of them to
    another value is an error naming both, except a smaller ``model.block_size`` (shorter sequences are fine)."""
    init_from = _given(sources, "init_from")
    if init_from is None or not isinstance(init_from[1], str) or not is_pretrained_dir(init_from[1]) \
            or "init_from" not in schema.get("model", {}):
        return sources
    init_from = init_from[1]
    keys = set(schema.model.keys())
    fields = model_fields(Path(init_from))
    backbone = "either" if "arch" in keys else "encoder" if "type_vocab_size" in keys else "decoder"
    if backbone not in ("either", fields["arch"]):
        raise ConfigError(f"model.init_from: {init_from} is a {read_config(Path(init_from))['model_type']} checkpoint "
                          f"(an {fields['arch']}); task {task} needs {'a BERT' if backbone == 'encoder' else 'a GPT-2'} one")
    if "src_vocab_size" in keys and fields["arch"] == "encoder":  # a BERT starts an encoder-decoder's encoder
        fields["arch"] = "encoder_decoder"
    separate = _given(sources, "shared_embeddings")
    if "src_vocab_size" in keys and separate is not None and separate[1] is False:  # a target vocabulary of its own
        fields["src_vocab_size"] = fields.pop("vocab_size")
    layer = {}
    for key, value in fields.items():
        if key not in keys:
            continue
        given = _given(sources, key)
        if given is None or given[1] == value:
            layer[key] = value
        elif not (key == "block_size" and isinstance(given[1], int) and given[1] <= value):
            raise ConfigError(f"model.{key}: {given[1]} (in {given[0]}), but the checkpoint's {init_from}/config.json "
                              f"gives {value}; the model's shape and options come from the checkpoint: leave model.{key} out")
    return [Source(f"{init_from}/config.json", OmegaConf.create({"model": layer})), *sources]


def _given(sources: list[Source], key: str) -> Optional[tuple[str, object]]:
    """(label, value) of the last source that sets ``model.<key>``, or None."""
    for s in reversed(sources):
        value = OmegaConf.select(s.data, f"model.{key}", default=None, throw_on_missing=False)
        if value is not None:
            return s.label, value
    return None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (with the ``safetensors`` package) or pytorch_model.bin (``weights_only``): no code runs."""
    folder = Path(folder)
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            if not bin_file.is_file():
                raise ConfigError(f"model.init_from: {safetensors_file} needs the safetensors package "
                                  "(pip install safetensors)") from None
        else:
            return load_file(str(safetensors_file))
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise ConfigError(f"model.init_from: {folder} has a config.json but no model.safetensors or pytorch_model.bin "
                      "(a sharded checkpoint is not supported: save it as one file)")


def names(kind: str, n_layer: int) -> dict[str, str | tuple[str, ...]]:
    """Our backbone's module names -> the Hugging Face module names (without the head models' prefix)."""
    if kind == "bert":
        embeddings, block, layer = BERT_EMBEDDINGS, BERT_BLOCK, "encoder.layer.{}."
    else:
        embeddings, block, layer = GPT2_EMBEDDINGS, GPT2_BLOCK, "h.{}."
    table = dict(embeddings)
    for i in range(n_layer):
        for ours, theirs in block.items():
            prefix = layer.format(i)
            table[f"blocks.{i}.{ours}"] = tuple(prefix + t for t in theirs) if isinstance(theirs, tuple) else prefix + theirs
    return table


def _transposed(theirs: str) -> bool:
    return theirs.endswith(GPT2_CONV1D)


def backbone_state(folder: Path, block_size: int) -> tuple[dict[str, torch.Tensor], str]:
    """(our backbone's state dict from the checkpoint, a description of it). The position table keeps its first
    ``block_size`` rows: a model may read shorter sequences than the checkpoint's longest."""
    config, weights = read_config(folder), read_weights(folder)
    kind = config["model_type"]
    prefix = ARCHITECTURES[kind][1]
    weights = {k.removeprefix(prefix): v for k, v in weights.items()}
    table = names(kind, config.get("num_hidden_layers", config.get("n_layer")))
    state = {}
    for ours, theirs in table.items():
        for suffix in ("weight", "bias"):
            parts = [f"{t}.{suffix}" for t in (theirs if isinstance(theirs, tuple) else (theirs,))]
            if not all(p in weights for p in parts):
                continue  # absent: load_backbone names what the model misses
            tensors = [weights[p].t() if suffix == "weight" and _transposed(p.rsplit(".", 1)[0]) else weights[p]
                       for p in parts]
            state[f"{ours}.{suffix}"] = torch.cat(tensors).contiguous()
    if "pos_emb.weight" in state:
        state["pos_emb.weight"] = state["pos_emb.weight"][:block_size].clone()
    if kind == "gpt2" and "tok_emb.weight" in state:
        state["lm_head.weight"] = state["tok_emb.weight"]  # tied
    return state, f"a Hugging Face {', '.join(config.get('architectures') or [kind])}"


def head_state(folder: Path, module: str) -> dict[str, torch.Tensor]:
    """The weights of a task's head module (``mlm_head``, ``pooler``) where the checkpoint has them, else {}."""
    weights = read_weights(folder)
    state = {}
    for ours, theirs in BERT_HEADS.items():
        if ours.startswith(module + "."):
            for suffix in ("weight", "bias"):
                if f"{theirs}.{suffix}" in weights:
                    state[f"{ours.removeprefix(module + '.')}.{suffix}"] = weights[f"{theirs}.{suffix}"]
    if module == "mlm_head" and "cls.predictions.bias" in weights:
        state["bias"] = weights["cls.predictions.bias"]
    return state


# ---------------------------------------------------------------------------------------------------- export

BERT_OPTIONS = {"positions": "learned", "bias": True, "norm": "post", "embedding_norm": True, "final_norm": False}
GPT2_OPTIONS = {"positions": "learned", "bias": True, "norm": "pre", "embedding_norm": False, "final_norm": True}
# model.gelu -> the activation name both GPT-2's and BERT's transformers configs accept for it (ACT2FN)
ACTIVATIONS = {"exact": "gelu", "tanh": "gelu_new"}
EXPORTS = {"causal_lm": "GPT2LMHeadModel", "masked_lm": "BertForMaskedLM", "classification": "BertForSequenceClassification"}


def export(task: str, model: dict, state: dict[str, torch.Tensor], labels: Optional[list[str]],
           tokenizer: Path, output: Path) -> str:
    """Write ``output``/config.json, model.safetensors (pytorch_model.bin without safetensors) and tokenizer.json
    from a run's model config and state dict (the task's names); returns the architecture written."""
    architecture = EXPORTS.get(task)
    if architecture is None:
        raise ConfigError(f"export: a {task} run has no Hugging Face counterpart; lmtemplate exports "
                          + ", ".join(f"{t} -> {a}" for t, a in EXPORTS.items()))
    gpt2 = architecture.startswith("GPT2")
    _check_exportable(task, model, GPT2_OPTIONS if gpt2 else BERT_OPTIONS, architecture)
    vocab_size = state["model.tok_emb.weight"].shape[0]
    config = _gpt2_config(model, vocab_size) if gpt2 else _bert_config(model, vocab_size, labels)
    weights = _export_weights(state, model["n_layer"], gpt2, architecture)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}, indent=2) + "\n")
    _save_weights(weights, output)
    shutil.copyfile(tokenizer, output / "tokenizer.json")
    return architecture


def _check_exportable(task: str, model: dict, options: dict, architecture: str) -> None:
    """Every option of the run's model that the architecture does not compute, named in one error."""
    wrong = [f"model.{k}={model[k]} (it needs {v})" for k, v in options.items() if model[k] != v]
    if task == "classification":
        wrong += [f"model.{k}={model[k]} (it needs {v})" for k, v in
                  (("arch", "encoder"), ("pooling", "cls"), ("pooler", True)) if model[k] != v and
                  not (k == "pooling" and model[k] == "auto" and model["arch"] == "encoder")]
    if architecture.startswith("Bert") and model["type_vocab_size"] < 1:
        wrong.append("model.type_vocab_size=0 (BERT always has token types: it needs >= 1)")
    if wrong:
        raise ConfigError(f"export: this {task} model does not map onto {architecture}: {'; '.join(wrong)}")


def _gpt2_config(model: dict, vocab_size: int) -> dict:
    return {"model_type": "gpt2", "vocab_size": vocab_size, "n_positions": model["block_size"],
            "n_embd": model["n_embd"], "n_layer": model["n_layer"], "n_head": model["n_head"], "n_inner": None,
            "activation_function": ACTIVATIONS[model.get("gelu", "tanh")], "layer_norm_epsilon": model["norm_eps"],
            "resid_pdrop": model["dropout"], "embd_pdrop": model["dropout"], "attn_pdrop": model["dropout"],
            "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None}


def _bert_config(model: dict, vocab_size: int, labels: Optional[list[str]]) -> dict:
    config = {"model_type": "bert", "vocab_size": vocab_size, "hidden_size": model["n_embd"],
              "num_hidden_layers": model["n_layer"], "num_attention_heads": model["n_head"],
              "intermediate_size": 4 * model["n_embd"], "hidden_act": ACTIVATIONS[model.get("gelu", "tanh")],
              "max_position_embeddings": model["block_size"], "type_vocab_size": model["type_vocab_size"],
              "layer_norm_eps": model["norm_eps"], "position_embedding_type": "absolute",
              "hidden_dropout_prob": model["dropout"], "attention_probs_dropout_prob": model["dropout"],
              "tie_word_embeddings": True}
    if labels is not None:
        config.update(id2label={str(i): label for i, label in enumerate(labels)},
                      label2id={label: i for i, label in enumerate(labels)},
                      classifier_dropout=model["head_dropout"], problem_type="single_label_classification")
    return config


def _export_weights(state: dict[str, torch.Tensor], n_layer: int, gpt2: bool, architecture: str) -> dict:
    """The task's state dict under the architecture's names (the tied output matrices are the embedding's)."""
    kind = "gpt2" if gpt2 else "bert"
    prefix = ARCHITECTURES[kind][1]
    table = {f"model.{ours}": tuple(prefix + t for t in theirs) if isinstance(theirs, tuple) else prefix + theirs
             for ours, theirs in names(kind, n_layer).items()}
    if not gpt2:
        table.update(BERT_HEADS)
    out = {}
    for ours, full in table.items():
        for suffix in ("weight", "bias"):
            tensor = state.get(f"{ours}.{suffix}")
            if tensor is None:
                continue
            if isinstance(full, tuple):  # fused q, k, v
                for name, part in zip(full, tensor.chunk(len(full))):
                    out[f"{name}.{suffix}"] = part
            else:
                out[f"{full}.{suffix}"] = tensor.t() if suffix == "weight" and _transposed(full) else tensor
    if architecture == "BertForMaskedLM":
        out["cls.predictions.bias"] = state["mlm_head.bias"]
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _save_weights(weights: dict[str, torch.Tensor], output: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        torch.save(weights, output / "pytorch_model.bin")
    else:
        save_file(weights, str(output / "model.safetensors"), metadata={"format": "pt"})
