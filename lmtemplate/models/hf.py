"""Hugging Face checkpoints in and out: BERT into the encoder; GPT-2, Llama, Qwen2 and Mistral into the GPT; BART
and Marian into the encoder-decoder; and any such model back out.

A Hugging Face model folder holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``); both are
read as data, never as code (no ``transformers`` needed). One table per architecture maps this project's
parameter names to Hugging Face's, so import and export read the same names::

    fields = model_fields(folder)                    # the model config: shape and the family's options
    state, what = backbone_state(folder, block_size)  # our names, read when looked up; load_backbone copies them
    export(task, model_cfg, state, labels, tokenizer_json, out)   # ``python -m lmtemplate export``
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from lmtemplate.config import ConfigError, Source
from lmtemplate.models.gpt import LLAMA3_SCALING, GPTConfig
from lmtemplate.models.lora import part_names
from lmtemplate.models.seq2seq import Seq2SeqConfig, sinusoids

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
    "head": "qa_outputs",
}
NOT_IMPORTED = ("head.1",)  # the classifier: its labels are the run's
GPT2_BLOCK = {"ln1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "ln2": "ln_2",
              "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
GPT2_EMBEDDINGS = {"tok_emb": "wte", "pos_emb": "wpe", "ln_f": "ln_f"}
GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # Conv1D stores weights (in, out): transposed
LLAMA_BLOCK = {"ln1": "input_layernorm", "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               "attn.proj": "self_attn.o_proj", "ln2": "post_attention_layernorm",
               "mlp.fc": ("mlp.gate_proj", "mlp.up_proj"), "mlp.proj": "mlp.down_proj"}
LLAMA_EMBEDDINGS = {"tok_emb": "embed_tokens", "ln_f": "norm"}
LLAMA_HEAD = {"lm_head": "lm_head"}  # *ForCausalLM's untied output head, outside the backbone's prefix

ARCHITECTURES = {  # model_type -> (our backbone, the backbone's prefix inside the head models)
    "bert": ("encoder", "bert."),
    "gpt2": ("decoder", "transformer."),
    "llama": ("decoder", "model."),
    "mistral": ("decoder", "model."),
    "qwen2": ("decoder", "model."),
    "bart": ("encoder_decoder", "model."),
    "marian": ("encoder_decoder", "model."),
}
LLAMA_FAMILY = ("llama", "mistral", "qwen2")
# The GPT's options that BERT and GPT-2 leave at their defaults (the Llama family's).
LLAMA_OPTIONS = ("norm_type", "mlp", "intermediate_size", "n_kv_head", "rope_theta", "rope_scaling", "tie_embeddings",
                 "qkv_bias", "out_bias", "mlp_bias")


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
    if kind in REFUSED:
        raise ConfigError(f"model.init_from: {path} has model_type '{kind}': {REFUSED[kind]}")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"model.init_from: {path} has model_type '{kind}'; lmtemplate imports "
                          f"{', '.join(ARCHITECTURES)} (BERT into the encoder, BART and Marian into the "
                          "encoder-decoder, the others into the GPT)")
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
    elif c["model_type"] in SEQ2SEQ_FAMILIES:
        wanted = _seq2seq_wanted(c)
    elif c["model_type"] == "gpt2":
        wanted = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_by_inverse_layer_idx": False,
                  "scale_attn_weights": True, "add_cross_attention": False,
                  "n_inner": (None, 4 * c.get("n_embd", 768))}
    else:
        wanted = {"hidden_act": "silu", "head_dim": (None, c.get("hidden_size", 0) // c.get("num_attention_heads", 1)),
                  "rope_type": ("default", "llama3"), "partial_rotary_factor": 1.0}
        c = {**c, **_rope_parameters(c)}
    out = []
    for key, ok in wanted.items():
        ok = ok if isinstance(ok, tuple) else (ok,)
        if key in c and c[key] not in ok:
            out.append(f"{key}={json.dumps(c[key])} (supported: {' or '.join(json.dumps(v) for v in ok)})")
    return out


def _rope_parameters(c: dict) -> dict:
    """The rotary settings of a config.json: ``rope_parameters`` (transformers 5), or ``rope_theta`` and
    ``rope_scaling`` (earlier versions), with ``rope_type`` (default when unscaled) and ``rope_theta`` always set."""
    params = c.get("rope_parameters") or {**(c.get("rope_scaling") or {}), "rope_theta": c.get("rope_theta", 10000.0)}
    return {**params, "rope_type": params.get("rope_type", params.get("type", "default")),
            "rope_theta": params.get("rope_theta", 10000.0)}


def _window(c: dict) -> Optional[int]:
    """The attention window of a Mistral, or of a Qwen2 that uses one; None: every position sees all before it."""
    if c["model_type"] == "mistral" or (c["model_type"] == "qwen2" and c.get("use_sliding_window")):
        return c.get("sliding_window")
    return None


def _check_window(folder: Path, c: dict, block_size: int) -> None:
    window = _window(c)
    if window is not None and window < block_size:
        raise ConfigError(f"model.init_from: {Path(folder) / 'config.json'} has sliding_window={window}: each position "
                          f"attends to the last {window} tokens only, which the project's attention does not do; set "
                          f"model.block_size to {window} or less (it is {block_size}), so that the window holds every "
                          "sequence")


DEFAULT_OPTIONS = {name: getattr(GPTConfig, name) for name in LLAMA_OPTIONS}


def model_fields(folder: Path) -> dict:
    """The model config fields of the checkpoint: its shape, and the options that make the project's model BERT or GPT-2."""
    c = read_config(folder)
    if c["model_type"] == "bert":
        return {"arch": "encoder", "vocab_size": c["vocab_size"], "n_layer": c["num_hidden_layers"],
                "n_head": c["num_attention_heads"], "n_embd": c["hidden_size"],
                "block_size": c["max_position_embeddings"], "type_vocab_size": c.get("type_vocab_size", 2),
                "positions": "learned", "bias": True, "norm": "post", "norm_eps": c.get("layer_norm_eps", 1e-12),
                "embedding_norm": True, "final_norm": False, "gelu": "exact", **DEFAULT_OPTIONS}
    if c["model_type"] == "gpt2":
        return {"arch": "decoder", "vocab_size": c["vocab_size"], "n_layer": c["n_layer"], "n_head": c["n_head"],
                "n_embd": c["n_embd"], "block_size": c["n_positions"], "positions": "learned", "bias": True,
                "norm": "pre", "norm_eps": c.get("layer_norm_epsilon", 1e-5), "embedding_norm": False,
                "final_norm": True, "gelu": "tanh", **DEFAULT_OPTIONS}
    if c["model_type"] in SEQ2SEQ_FAMILIES:
        return _seq2seq_fields(c)
    return _llama_fields(c)


def _llama_fields(c: dict) -> dict:
    """Llama, Mistral and Qwen2: RMSNorm, SwiGLU, grouped-query attention, rotary positions, no biases but Qwen2's
    q/k/v ones (Llama's ``attention_bias`` puts them on q, k, v and o, ``mlp_bias`` on the MLP)."""
    rope = _rope_parameters(c)
    attention_bias = c.get("attention_bias", False)
    return {"arch": "decoder", "vocab_size": c["vocab_size"], "n_layer": c["num_hidden_layers"],
            "n_head": c["num_attention_heads"], "n_kv_head": c.get("num_key_value_heads") or c["num_attention_heads"],
            "n_embd": c["hidden_size"], "intermediate_size": c["intermediate_size"],
            "block_size": c["max_position_embeddings"], "positions": "rotary", "rope_theta": rope["rope_theta"],
            "rope_scaling": {"rope_type": "llama3", **{k: rope[k] for k in LLAMA3_SCALING if k in rope}}
            if rope["rope_type"] == "llama3" else None,
            "bias": False, "qkv_bias": c["model_type"] == "qwen2" or attention_bias, "out_bias": attention_bias,
            "mlp_bias": c.get("mlp_bias", False), "norm": "pre", "norm_type": "rmsnorm",
            "norm_eps": c.get("rms_norm_eps", 1e-6), "embedding_norm": False, "final_norm": True, "mlp": "swiglu",
            "tie_embeddings": c.get("tie_word_embeddings", False)}


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
    if fields["arch"] == "encoder_decoder" and "src_vocab_size" not in keys:
        raise ConfigError(f"model.init_from: {init_from} is a {read_config(Path(init_from))['model_type']} "
                          f"encoder-decoder; task {task} has none (translation and summarization take one)")
    if fields["arch"] != "encoder_decoder" and backbone not in ("either", fields["arch"]):
        raise ConfigError(f"model.init_from: {init_from} is a {read_config(Path(init_from))['model_type']} checkpoint "
                          f"(an {fields['arch']}); task {task} needs "
                          f"{'a BERT' if backbone == 'encoder' else 'a GPT-2, Llama, Mistral or Qwen2'} one")
    if "src_vocab_size" in keys and fields["arch"] == "encoder":  # a BERT starts an encoder-decoder's encoder
        fields["arch"] = "encoder_decoder"
    separate = _given(sources, "shared_embeddings")
    if "src_vocab_size" in keys and separate is not None and separate[1] is False and "shared_embeddings" not in fields:
        # a BERT encoder's vocabulary is the source's: the target has its own
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
    block_size = _given(sources, "block_size")
    block_size = block_size[1] if block_size and isinstance(block_size[1], int) else fields["block_size"]
    _check_window(Path(init_from), read_config(Path(init_from)), block_size)
    return [Source(f"{init_from}/config.json", OmegaConf.create({"model": layer})), *sources]


def _given(sources: list[Source], key: str) -> Optional[tuple[str, object]]:
    """(label, value) of the last source that sets ``model.<key>``, or None."""
    for s in reversed(sources):
        value = OmegaConf.select(s.data, f"model.{key}", default=None, throw_on_missing=False)
        if value is not None:
            return s.label, value
    return None


class Lazy(Mapping):
    """Tensors by name, each read from the checkpoint when it is looked up: ``load_backbone`` copies one at a time
    into the model, so an import never holds a second copy of the weights."""

    def __init__(self, readers: dict[str, Callable[[], torch.Tensor]], origin: Optional[dict] = None):
        self.readers = readers
        self.origin: dict[str, tuple[str, ...]] = origin or {}  # our name -> the checkpoint tensors it is read from

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.readers[name]()

    def __contains__(self, name) -> bool:  # without reading the tensor, as Mapping's would
        return name in self.readers

    def __iter__(self):
        return iter(self.readers)

    def __len__(self) -> int:
        return len(self.readers)


def read_weights(folder: Path) -> Lazy:
    """model.safetensors (with the ``safetensors`` package) or pytorch_model.bin (``weights_only``, memory-mapped):
    no code runs, and no tensor is read before it is looked up."""
    folder = Path(folder)
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        try:
            from safetensors import safe_open
        except ImportError:
            if not bin_file.is_file():
                raise ConfigError(f"model.init_from: {safetensors_file} needs the safetensors package "
                                  "(pip install safetensors)") from None
        else:
            with safe_open(str(safetensors_file), "pt") as f:
                return Lazy({name: partial(_read_tensor, safetensors_file, name) for name in f.keys()})
    if bin_file.is_file():
        weights = torch.load(bin_file, map_location="cpu", weights_only=True, mmap=True)
        return Lazy({name: partial(weights.get, name) for name in weights})
    raise ConfigError(f"model.init_from: {folder} has a config.json but no model.safetensors or pytorch_model.bin "
                      "(a sharded checkpoint is not supported: save it as one file)")


def _read_tensor(file: Path, name: str) -> torch.Tensor:
    """One tensor of a safetensors file. The file is opened for it alone: the pages a long-open file maps stay in the
    process's memory, and the model would sit beside a second copy of itself."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        return f.get_tensor(name)


def names(kind: str, n_layer: int, prefix: str = "") -> dict[str, str | tuple[str, ...]]:
    """Our backbone's module names -> the Hugging Face module names, the backbone's under ``prefix`` (the head
    models'; import strips it from the checkpoint's names). A Llama-family output head is outside it."""
    if kind == "bert":
        embeddings, block, layer = BERT_EMBEDDINGS, BERT_BLOCK, "encoder.layer.{}."
    elif kind == "gpt2":
        embeddings, block, layer = GPT2_EMBEDDINGS, GPT2_BLOCK, "h.{}."
    else:
        embeddings, block, layer = LLAMA_EMBEDDINGS, LLAMA_BLOCK, "layers.{}."
    table = {ours: prefix + theirs for ours, theirs in embeddings.items()}
    for i in range(n_layer):
        start = prefix + layer.format(i)
        for ours, theirs in block.items():
            table[f"blocks.{i}.{ours}"] = tuple(start + t for t in theirs) if isinstance(theirs, tuple) else start + theirs
    return {**table, **(LLAMA_HEAD if kind in LLAMA_FAMILY else {})}


def _transposed(theirs: str) -> bool:
    return theirs.endswith(GPT2_CONV1D)


def backbone_state(folder: Path, block_size: int) -> tuple[Lazy, str]:
    """(our backbone's state dict from the checkpoint, each tensor read when looked up; a description of it). The
    position table keeps its first ``block_size`` rows: a model may read shorter sequences than the checkpoint's
    longest. A tied output head is the token embedding; an untied one that the checkpoint lacks (LlamaModel) is
    left out, and the model keeps its fresh one."""
    config = read_config(folder)
    kind = config["model_type"]
    if kind in SEQ2SEQ_FAMILIES:
        return seq2seq_state(folder, config, block_size)
    _check_window(folder, config, block_size)
    prefix = ARCHITECTURES[kind][1]
    weights = read_weights(folder).readers
    full = {k.removeprefix(prefix): k for k in weights}
    weights = {k.removeprefix(prefix): v for k, v in weights.items()}
    state, origin = {}, {}
    for ours, theirs in names(kind, config.get("num_hidden_layers", config.get("n_layer"))).items():
        for suffix in ("weight", "bias"):
            parts = [f"{t}.{suffix}" for t in (theirs if isinstance(theirs, tuple) else (theirs,))]
            if all(p in weights for p in parts):  # else absent: load_backbone names what the model misses
                transposed = suffix == "weight" and _transposed(parts[0].removesuffix(".weight"))
                state[f"{ours}.{suffix}"] = partial(_joined, [weights[p] for p in parts], transposed)
                origin[f"{ours}.{suffix}"] = tuple(full[p] for p in parts)
    if "pos_emb.weight" in state:
        state["pos_emb.weight"] = partial(_rows, state["pos_emb.weight"], block_size)
    tied = kind == "gpt2" or (kind in LLAMA_FAMILY and config.get("tie_word_embeddings", False))
    if tied and "tok_emb.weight" in state:
        state["lm_head.weight"], origin["lm_head.weight"] = state["tok_emb.weight"], origin["tok_emb.weight"]
    return Lazy(state, origin), f"a Hugging Face {', '.join(config.get('architectures') or [kind])}"


def _joined(readers: list[Callable[[], torch.Tensor]], transposed: bool) -> torch.Tensor:
    """The tensors concatenated along the output dimension (q, k, v; gate, up); GPT-2's Conv1D weight transposed."""
    tensors = [r() for r in readers]
    tensor = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
    return tensor.t() if transposed else tensor


def _rows(reader: Callable[[], torch.Tensor], n: int) -> torch.Tensor:
    return reader()[:n]


def head_state(folder: Path, wanted) -> Lazy:
    """The task's head parameters (``wanted``: the task's parameter names) that a BERT checkpoint has:
    BertForMaskedLM's ``cls.predictions``, the pooler (``bert.pooler``, or a BertModel's ``pooler`` as MiniLM
    stores it), BertForQuestionAnswering's ``qa_outputs``. The classifier is never read: its labels are the run's."""
    weights = read_weights(folder).readers
    pairs = [(f"{ours}.{suffix}", f"{theirs}.{suffix}") for ours, theirs in BERT_HEADS.items()
             if ours not in NOT_IMPORTED for suffix in ("weight", "bias")]
    readers, origin = {}, {}
    for ours, theirs in [*pairs, ("mlm_head.bias", "cls.predictions.bias")]:
        found = next((n for n in (theirs, theirs.removeprefix(ARCHITECTURES["bert"][1])) if n in weights), None)
        if ours in wanted and found:
            readers[ours], origin[ours] = weights[found], (found,)
    return Lazy(readers, origin)


# ------------------------------------------------------------------------------------ encoder-decoders: in

SEQ2SEQ_FAMILIES = ("bart", "marian")
REFUSED = {"t5": "T5's relative position bias (a learned bias per head and distance, added to every attention "
                 "score) needs an attention the project does not have; lmtemplate imports BART and Marian "
                 "encoder-decoders"}
SEQ2SEQ_ACTIVATIONS = {"gelu": ("gelu", "exact"), "gelu_new": ("gelu", "tanh"), "relu": ("relu", "exact"),
                       "silu": ("silu", "exact"), "swish": ("silu", "exact")}  # -> model.activation, model.gelu
# ours (under encoder.blocks.{i}. / decoder.blocks.{i}.) -> theirs (under model.encoder.layers.{i}. / ...)
BART_LAYER = {"attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              "attn.proj": "self_attn.out_proj", "ln1": "self_attn_layer_norm", "mlp.fc": "fc1", "mlp.proj": "fc2",
              "ln2": "final_layer_norm"}
BART_CROSS = {"cross.q": "encoder_attn.q_proj", "cross.kv": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
              "cross.proj": "encoder_attn.out_proj", "ln_cross": "encoder_attn_layer_norm"}
BART_POSITION_OFFSET = 2  # BART's learned table starts with two rows that no position reads


def _seq2seq_wanted(c: dict) -> dict:
    """The BART and Marian options the encoder-decoder computes: one head count and MLP width for both halves,
    post-LayerNorm blocks, and one vocabulary where embeddings are shared."""
    return {"decoder_attention_heads": c.get("encoder_attention_heads"), "decoder_ffn_dim": c.get("encoder_ffn_dim"),
            "activation_function": tuple(SEQ2SEQ_ACTIVATIONS), "normalize_before": False,
            "add_final_layer_norm": False, "tie_word_embeddings": True,
            **({"decoder_vocab_size": (None, c["vocab_size"])} if _shared(c) else {})}


def _shared(c: dict) -> bool:
    """One token table for both halves (BART's always; Marian's unless share_encoder_decoder_embeddings=false)."""
    return c["model_type"] == "bart" or c.get("share_encoder_decoder_embeddings", True)


def _seq2seq_fields(c: dict) -> dict:
    """BART: learned positions (two rows offset), a LayerNorm on the embeddings; Marian: sinusoidal positions, scaled
    embeddings; both post-LayerNorm halves without a final norm and a bias on the output logits."""
    bart, shared = c["model_type"] == "bart", _shared(c)
    activation, gelu = SEQ2SEQ_ACTIVATIONS[c.get("activation_function", "gelu")]
    return {**DEFAULT_OPTIONS, "arch": "encoder_decoder", "vocab_size": c.get("decoder_vocab_size") or c["vocab_size"],
            "src_vocab_size": 0 if shared else c["vocab_size"], "shared_embeddings": shared,
            "tie_output": True, "n_layer": c["encoder_layers"],
            "n_decoder_layer": c["decoder_layers"], "n_head": c["encoder_attention_heads"], "n_embd": c["d_model"],
            "intermediate_size": c["encoder_ffn_dim"], "block_size": c["max_position_embeddings"],
            "type_vocab_size": 0, "positions": "learned", "sinusoidal": not bart, "bias": True, "norm": "post",
            "norm_eps": 1e-5, "embedding_norm": bart, "final_norm": False, "decoder_norms": "encoder",
            "activation": activation, "gelu": gelu, "embedding_scale": c.get("scale_embedding", False),
            "logits_bias": True}


def seq2seq_names(c: dict) -> dict[str, str | tuple[str, ...]]:
    """The encoder-decoder's module names -> BartForConditionalGeneration's or MarianMTModel's (the position tables
    apart: BART's is offset, Marian's computed)."""
    shared = _shared(c)
    table = {}
    for half, layers in (("encoder", c["encoder_layers"]), ("decoder", c["decoder_layers"])):
        table[f"{half}.tok_emb"] = "model.shared" if shared else f"model.{half}.embed_tokens"
        if c["model_type"] == "bart":
            table[f"{half}.emb_ln"] = f"model.{half}.layernorm_embedding"
        for i in range(layers):
            for ours, theirs in {**BART_LAYER, **(BART_CROSS if half == "decoder" else {})}.items():
                start = f"model.{half}.layers.{i}."
                table[f"{half}.blocks.{i}.{ours}"] = tuple(start + t for t in theirs) if isinstance(theirs, tuple) \
                    else start + theirs
    table["decoder.lm_head"] = table["decoder.tok_emb"]  # tied (read_config refuses tie_word_embeddings=false)
    return table


def seq2seq_state(folder: Path, c: dict, block_size: int) -> tuple[Lazy, str]:
    """(the encoder-decoder's state dict from a BART or Marian checkpoint, each tensor read when looked up; a
    description). BART's position tables lose their two unused rows, Marian's are computed; ``final_logits_bias``
    (1, vocab) becomes ``decoder.logits_bias``."""
    weights = read_weights(folder).readers
    state, origin = {}, {}
    for ours, theirs in seq2seq_names(c).items():
        for suffix in ("weight", "bias"):
            parts = [f"{t}.{suffix}" for t in (theirs if isinstance(theirs, tuple) else (theirs,))]
            if all(p in weights for p in parts):  # else absent: load_backbone names what the model misses
                state[f"{ours}.{suffix}"] = partial(_joined, [weights[p] for p in parts], False)
                origin[f"{ours}.{suffix}"] = tuple(parts)
    for half in ("encoder", "decoder"):
        if c["model_type"] == "bart":
            table = f"model.{half}.embed_positions.weight"
            rows = partial(_rows, weights[table], BART_POSITION_OFFSET + block_size)
            state[f"{half}.pos_emb.weight"], origin[f"{half}.pos_emb.weight"] = partial(_offset, rows), (table,)
        else:
            state[f"{half}.pos_emb.weight"] = partial(sinusoids, block_size, c["d_model"])  # computed: no tensor read
            origin[f"{half}.pos_emb.weight"] = ()
    if "final_logits_bias" in weights:
        state["decoder.logits_bias"] = partial(_flat, weights["final_logits_bias"])
        origin["decoder.logits_bias"] = ("final_logits_bias",)
    return Lazy(state, origin), f"a Hugging Face {', '.join(c.get('architectures') or [c['model_type']])}"


def _offset(reader: Callable[[], torch.Tensor]) -> torch.Tensor:
    return reader()[BART_POSITION_OFFSET:]


def _flat(reader: Callable[[], torch.Tensor]) -> torch.Tensor:
    return reader().reshape(-1)


# ---------------------------------------------------------------------------------------------------- export

# model.gelu -> the activation name both GPT-2's and BERT's transformers configs accept for it (ACT2FN)
ACTIVATIONS = {"exact": "gelu", "tanh": "gelu_new"}
# task -> what it exports as; causal_lm: GPT-2 with learned positions, else the Llama family (Qwen2 with q/k/v biases
# and none on the attention output)
EXPORTS = {"causal_lm": "GPT2LMHeadModel, LlamaForCausalLM or Qwen2ForCausalLM", "masked_lm": "BertForMaskedLM",
           "classification": "BertForSequenceClassification (on a decoder: GPT2-, Llama- or Qwen2ForSequenceClassification)",
           "qa": "BertForQuestionAnswering"}
KINDS = {"GPT2LMHeadModel": "gpt2", "BertForMaskedLM": "bert", "BertForSequenceClassification": "bert",
         "LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "BertForQuestionAnswering": "bert",
         "GPT2ForSequenceClassification": "gpt2", "LlamaForSequenceClassification": "llama",
         "Qwen2ForSequenceClassification": "qwen2"}
SEQUENCE_CLASSIFIERS = {"GPT2LMHeadModel": "GPT2ForSequenceClassification", "LlamaForCausalLM":
                        "LlamaForSequenceClassification", "Qwen2ForCausalLM": "Qwen2ForSequenceClassification"}


def export(task: str, model: dict, state: dict[str, torch.Tensor], labels: Optional[list[str]],
           tokenizer: Path, output: Path, decoding: Optional[dict] = None) -> str:
    """Write ``output``/config.json, model.safetensors (pytorch_model.bin without safetensors), tokenizer.json,
    tokenizer_config.json, special_tokens_map.json and, for a generating task, generation_config.json
    (``decoding``: the run's generate or decode settings) from a run's model config and state dict (the task's
    names); returns the architecture written."""
    if task in SEQ2SEQ_EXPORTS:
        return export_seq2seq(task, model, state, tokenizer, Path(output), decoding or {})
    if task not in EXPORTS:
        raise ConfigError(f"export: a {task} run has no Hugging Face counterpart; lmtemplate exports "
                          + ", ".join(f"{t} -> {a}" for t, a in {**EXPORTS, **SEQ2SEQ_EXPORTS}.items()))
    cfg = GPTConfig(**{f.name: model[f.name] for f in dataclasses.fields(GPTConfig)})
    architecture = _architecture(task, cfg, model)
    kind = KINDS[architecture]
    _check_exportable(task, model, cfg, architecture)
    vocab_size = state["model.tok_emb.weight"].shape[0]
    if kind == "gpt2":
        config = _gpt2_config(model, vocab_size)
    elif kind == "bert":
        config = _bert_config(model, vocab_size, labels)
    else:
        config = _llama_config(cfg, vocab_size, kind)
    if kind != "bert" and labels is not None:
        config.update(_label_fields(model, labels))
    weights = _export_weights(state, cfg, kind, architecture)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config = _complete(task, model, kind, config, weights, tokenizer, output, decoding)
    (output / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}, indent=2) + "\n")
    _save_weights(weights, output)
    return architecture


def _architecture(task: str, cfg: GPTConfig, model: dict) -> str:
    if task == "classification" and model["arch"] == "decoder":  # the causal_lm export's backbone, a score head
        return SEQUENCE_CLASSIFIERS[_architecture("causal_lm", cfg, model)]
    if task != "causal_lm":
        return EXPORTS[task].split(" ")[0]
    if cfg.positions == "learned":
        return "GPT2LMHeadModel"
    return "Qwen2ForCausalLM" if cfg.bias_of("qkv") and not cfg.bias_of("out") else "LlamaForCausalLM"


def _needs(cfg: GPTConfig, kind: str) -> dict:
    """The options (defaults resolved, as :func:`_options` gives them) that the architecture computes."""
    if kind in LLAMA_FAMILY:
        qkv = cfg.bias_of("qkv")  # Llama's attention_bias is on q, k, v and o alike; Qwen2's on q, k, v only
        biases = {"qkv_bias": True, "out_bias": False, "mlp_bias": False} if kind == "qwen2" else {"out_bias": qkv}
        return {"positions": "rotary", "norm": "pre", "norm_type": "rmsnorm", "embedding_norm": False,
                "final_norm": True, "mlp": "swiglu", **biases}
    layout = {"norm": "pre", "embedding_norm": False, "final_norm": True} if kind == "gpt2" \
        else {"norm": "post", "embedding_norm": True, "final_norm": False}
    return {"positions": "learned", "bias": True, **layout, "norm_type": "layernorm", "mlp": "gelu",
            "intermediate_size": 4 * cfg.n_embd, "n_kv_head": cfg.n_head, "tie_embeddings": True,
            "qkv_bias": True, "out_bias": True, "mlp_bias": True}


def _options(cfg: GPTConfig) -> dict:
    return {**dataclasses.asdict(cfg), "intermediate_size": cfg.mlp_width, "n_kv_head": cfg.kv_heads,
            **{f"{kind}_bias": cfg.bias_of(kind) for kind in ("qkv", "out", "mlp")}}


def _check_exportable(task: str, model: dict, cfg: GPTConfig, architecture: str) -> None:
    """Every option of the run's model that the architecture does not compute, named in one error."""
    options = _options(cfg)
    wrong = [f"model.{k}={options[k]} (it needs {v})" for k, v in _needs(cfg, KINDS[architecture]).items()
             if options[k] != v]
    if task == "classification":
        needs = (("pooling", "last"), ("pooler", False), ("head_bias", False)) if model["arch"] == "decoder" \
            else (("pooling", "cls"), ("pooler", True))
        wrong += [f"model.{k}={model[k]} (it needs {v})" for k, v in needs
                  if model[k] != v and not (k == "pooling" and model[k] == "auto")]
    if architecture.startswith("Bert") and model.get("arch", "encoder") != "encoder":  # a GPT under qa
        wrong.append(f"model.arch={model['arch']} (it needs encoder)")
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


def _llama_config(cfg: GPTConfig, vocab_size: int, kind: str) -> dict:
    """LlamaConfig's or Qwen2Config's fields; rotary settings as rope_theta and rope_scaling, which transformers 4
    and 5 both read."""
    config = {"model_type": kind, "vocab_size": vocab_size, "hidden_size": cfg.n_embd,
              "intermediate_size": cfg.mlp_width, "num_hidden_layers": cfg.n_layer,
              "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.kv_heads, "hidden_act": "silu",
              "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
              "rope_theta": cfg.rope_theta, "rope_scaling": cfg.rope_scaling, "attention_dropout": cfg.dropout,
              "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": None, "eos_token_id": None}
    if kind == "qwen2":
        return {**config, "use_sliding_window": False, "sliding_window": None}
    return {**config, "head_dim": cfg.n_embd // cfg.n_head, "attention_bias": cfg.bias_of("qkv"),
            "mlp_bias": cfg.bias_of("mlp")}


def _bert_config(model: dict, vocab_size: int, labels: Optional[list[str]]) -> dict:
    config = {"model_type": "bert", "vocab_size": vocab_size, "hidden_size": model["n_embd"],
              "num_hidden_layers": model["n_layer"], "num_attention_heads": model["n_head"],
              "intermediate_size": 4 * model["n_embd"], "hidden_act": ACTIVATIONS[model.get("gelu", "tanh")],
              "max_position_embeddings": model["block_size"], "type_vocab_size": model["type_vocab_size"],
              "layer_norm_eps": model["norm_eps"], "position_embedding_type": "absolute",
              "hidden_dropout_prob": model["dropout"], "attention_probs_dropout_prob": model["dropout"],
              "tie_word_embeddings": True}
    if labels is not None:
        config.update(_label_fields(model, labels))
    return config


def _label_fields(model: dict, labels: list[str]) -> dict:
    return dict(id2label={str(i): label for i, label in enumerate(labels)},
                label2id={label: i for i, label in enumerate(labels)},
                classifier_dropout=model["head_dropout"], problem_type="single_label_classification")


def _export_weights(state: dict[str, torch.Tensor], cfg: GPTConfig, kind: str, architecture: str) -> dict:
    """The task's state dict under the architecture's names (a tied output matrix is the embedding's)."""
    table = {f"model.{ours}": theirs for ours, theirs in names(kind, cfg.n_layer, ARCHITECTURES[kind][1]).items()
             if not (ours == "lm_head" and cfg.tie_embeddings)}
    if kind == "bert":
        table.update(BERT_HEADS)
    elif architecture.endswith("ForSequenceClassification"):  # a decoder's: no output head, a bias-free score
        table = {**{k: v for k, v in table.items() if k != "model.lm_head"}, "head.1": "score"}
    kv_width = cfg.kv_heads * (cfg.n_embd // cfg.n_head)
    out = {}
    for ours, full in table.items():
        for suffix in ("weight", "bias"):
            tensor = state.get(f"{ours}.{suffix}")
            if tensor is None:
                continue
            if isinstance(full, tuple):  # fused: q, k, v or gate, up
                sizes = [cfg.n_embd, kv_width, kv_width] if len(full) == 3 else [len(tensor) // len(full)] * len(full)
                for name, part in zip(full, tensor.split(sizes)):
                    out[f"{name}.{suffix}"] = part
            else:
                out[f"{full}.{suffix}"] = tensor.t() if suffix == "weight" and _transposed(full) else tensor
    if architecture == "BertForMaskedLM":
        out["cls.predictions.bias"] = state["mlm_head.bias"]
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def export_adapter(task: str, model: dict, state: dict[str, torch.Tensor], lora, output: Path) -> str:
    """``export --adapter``: a LoRA run's adapters as a PEFT adapter folder (adapter_config.json and
    adapter_model.safetensors) for the Llama or Qwen2 model that its base is, which
    ``peft.PeftModel.from_pretrained(base, folder)`` loads; returns the architecture it adapts. Each adapter of a
    fused projection's part is that projection's adapter there (``q`` -> ``q_proj``)."""
    if lora.rank is None:
        raise ConfigError("export --adapter: this run has no adapters (lora.rank is unset in its config.yaml); export "
                          "the whole model without --adapter")
    cfg = GPTConfig(**{f.name: model[f.name] for f in dataclasses.fields(GPTConfig)})
    architecture = _architecture(task, cfg, model) if task in EXPORTS else None
    trained = [k for k in state if ".lora_" not in k]
    if KINDS.get(architecture) not in ("llama", "qwen2") or trained:
        why = f"it trains {trained[0]} besides its adapters" if trained else "PEFT folders are for Llama and Qwen2"
        raise ConfigError(f"export --adapter: a {task} run{f' (a {architecture})' if architecture else ''} has no PEFT "
                          f"adapter folder ({why}); export the model with its adapters merged in, without --adapter")
    kind = KINDS[architecture]
    table = names(kind, cfg.n_layer, ARCHITECTURES[kind][1])
    weights, modules = {}, set()
    for key, tensor in state.items():
        module, matrix, part = key.removeprefix("model.").rsplit(".", 2)
        theirs = table[module]
        if isinstance(theirs, tuple):
            theirs = theirs[part_names(module, cfg.mlp == "swiglu").index(part)]
        modules.add(theirs)
        weights[f"base_model.model.{theirs}.{matrix}.weight"] = tensor.detach().to("cpu").contiguous().clone()
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank, "lora_alpha": lora.alpha,
              "lora_dropout": lora.dropout, "target_modules": sorted(modules), "bias": "none", "fan_in_fan_out": False,
              "modules_to_save": None, "inference_mode": True, "base_model_name_or_path": model["init_from"]}
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    from safetensors.torch import save_file

    save_file(weights, str(output / "adapter_model.safetensors"), metadata={"format": "pt"})
    return architecture


def _save_weights(weights: dict[str, torch.Tensor], output: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        torch.save(weights, output / "pytorch_model.bin")
    else:
        save_file(weights, str(output / "model.safetensors"), metadata={"format": "pt"})


# ------------------------------------------------------------------ export: the rest of a complete folder

ENCODER_ROLES = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
                 "unk_token": "[UNK]"}
DECODER_ROLES = {"pad_token": ("<pad>", "[PAD]"), "unk_token": ("<unk>", "[UNK]")}  # bos and eos: the separator


def _complete(task: str, model: dict, kind: str, config: dict, weights: dict, tokenizer: Path, output: Path,
              generate: Optional[dict]) -> dict:
    """The files ``save_pretrained`` writes beside the weights: tokenizer.json (with the special tokens the
    task's data reader puts around a text, so a pipeline reads what the run read), tokenizer_config.json
    (``model_max_length``: the positions the model has), special_tokens_map.json, and for causal_lm
    generation_config.json. Returns ``config`` with its token ids and its position count."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    roles = _roles(tok, kind)
    # no pad token: the data pads with the separator, which a *ForSequenceClassification would take for padding
    ids = {f"{r}_token_id": tok.token_to_id(roles[f"{r}_token"]) if f"{r}_token" in roles else None
           for r in ("bos", "eos", "pad")}
    positions = _positions(model, kind, weights)
    length_key = "n_positions" if kind == "gpt2" else "max_position_embeddings"
    if task == "causal_lm" or "eos_token" not in roles and kind != "bert":
        shutil.copyfile(tokenizer, output / "tokenizer.json")
    else:
        _add_template(tok, kind, roles)
        tok.save(str(output / "tokenizer.json"))
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if kind == "bert" else ["input_ids", "attention_mask"]
    _write_json(output / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                                   "model_max_length": positions, "model_input_names": inputs,
                                                   "padding_side": "right", "clean_up_tokenization_spaces": False,
                                                   **roles})
    _write_json(output / "special_tokens_map.json", roles)
    if task == "causal_lm":
        _write_json(output / "generation_config.json", {**ids, **_decoding(generate)})
    return {**config, **ids, length_key: positions}


def _roles(tok, kind: str) -> dict[str, str]:
    """special_tokens_map.json: BERT's five where the vocabulary has them; a decoder's separator (the first
    special token) as bos and eos, and a pad and unknown token where it has them."""
    from lmtemplate.tokenization import document_separator

    if kind == "bert":
        return {role: t for role, t in ENCODER_ROLES.items() if tok.token_to_id(t) is not None}
    separator = document_separator(tok)
    roles = {} if separator is None else {"bos_token": tok.id_to_token(separator), "eos_token": tok.id_to_token(separator)}
    for role, names in DECODER_ROLES.items():
        found = next((t for t in names if tok.token_to_id(t) is not None), None)
        if found:
            roles[role] = found
    return roles


def _add_template(tok, kind: str, roles: dict[str, str]) -> None:
    """``[CLS] a [SEP] b [SEP]`` (types 0, then 1) for BERT, ``a <sep> b <sep>`` for a decoder's classifier: what
    ``data.base.encode_texts`` and the SQuAD reader build."""
    from tokenizers import processors

    if kind == "bert":
        cls, sep = roles["cls_token"], roles["sep_token"]
        single, pair, specials = f"{cls} $A {sep}", f"{cls} $A {sep} $B:1 {sep}:1", [cls, sep]
    else:
        sep = roles["eos_token"]
        single, pair, specials = f"$A {sep}", f"$A {sep} $B {sep}", [sep]
    template = processors.TemplateProcessing(single=single, pair=pair,
                                             special_tokens=[(t, tok.token_to_id(t)) for t in specials])
    tok.post_processor = template if kind == "bert" or tok.post_processor is None \
        else processors.Sequence([tok.post_processor, template])


def _positions(model: dict, kind: str, weights: dict) -> int:
    """How many positions the exported model reads: its source checkpoint's (a learned table gets the source's
    rows past ``block_size`` back, untouched by the run), else ``block_size``."""
    source = model.get("init_from")
    if not is_pretrained_dir(source):
        return model["block_size"]
    longest = model_fields(Path(source))["block_size"]
    if model["positions"] == "learned" and longest > model["block_size"]:
        name = names(kind, 0, ARCHITECTURES[kind][1])["pos_emb"] + ".weight"
        table = backbone_state(Path(source), longest)[0]["pos_emb.weight"]
        weights[name] = torch.cat([weights[name], table[model["block_size"]:].to(weights[name].dtype)])
    return max(longest, model["block_size"])


def _decoding(generate: Optional[dict]) -> dict:
    """generation_config.json's decoding settings: the run's ``generate`` section (greedy at temperature 0),
    running to max_new_tokens as the project's generate does (no stop at eos)."""
    if generate is None:
        return {"eos_token_id": None}
    g = generate
    sampling = g["temperature"] > 0
    return {"eos_token_id": None, "max_new_tokens": g["max_new_tokens"], "do_sample": sampling,
            **({"temperature": g["temperature"], "top_k": g["top_k"] or 0, "top_p": g["top_p"] or 1.0}
               if sampling else {})}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------- encoder-decoders: out

SEQ2SEQ_EXPORTS = {"translation": "BartForConditionalGeneration or MarianMTModel",
                   "summarization": "BartForConditionalGeneration or MarianMTModel"}
SOURCE_TEMPLATES = {"translation": "$A {end}", "summarization": "{start} $A {end}"}  # as the task's data encodes


def export_seq2seq(task: str, model: dict, state: dict[str, torch.Tensor], tokenizer: Path, output: Path,
                   decode: dict) -> str:
    """A translation or summarization run as MarianMTModel (``model.sinusoidal``) or BartForConditionalGeneration:
    config.json, the weights, generation_config.json (the run's decoding: its start token, beams, rules and
    lengths), and a tokenizer that frames sources as the task does (tokenizer.json, tokenizer_config.json)."""
    from lmtemplate.tokenization import load_tokenizer, start_end_ids  # it imports this module

    cfg = Seq2SeqConfig(**{f.name: model[f.name] for f in dataclasses.fields(Seq2SeqConfig)})
    kind = "marian" if cfg.sinusoidal else "bart"
    architecture = "MarianMTModel" if cfg.sinusoidal else "BartForConditionalGeneration"
    _check_seq2seq_exportable(task, model, cfg, kind, architecture)
    tok = load_tokenizer(tokenizer)
    start, end = start_end_ids(tok, task)
    pad = next((i for i in (tok.token_to_id(t) for t in ("<pad>", "[PAD]")) if i is not None), end)
    vocab, src_vocab = (state[f"model.{half}.tok_emb.weight"].shape[0] for half in ("decoder", "encoder"))
    activation = {"relu": "relu", "silu": "swish", "gelu": "gelu_new" if cfg.gelu == "tanh" else "gelu"}[cfg.activation]
    config = {"model_type": kind, "architectures": [architecture], "vocab_size": src_vocab, "d_model": cfg.n_embd,
              "encoder_layers": cfg.n_layer, "decoder_layers": cfg.decoder_layers,
              "encoder_attention_heads": cfg.n_head, "decoder_attention_heads": cfg.n_head,
              "encoder_ffn_dim": cfg.mlp_width, "decoder_ffn_dim": cfg.mlp_width,
              "max_position_embeddings": cfg.block_size, "activation_function": activation,
              "scale_embedding": cfg.embedding_scale, "dropout": cfg.dropout, "attention_dropout": 0.0,
              "activation_dropout": 0.0, "is_encoder_decoder": True, "tie_word_embeddings": True,
              "pad_token_id": pad, "bos_token_id": start, "eos_token_id": end, "decoder_start_token_id": start,
              "forced_eos_token_id": end}
    if kind == "marian":
        config.update(decoder_vocab_size=vocab, share_encoder_decoder_embeddings=cfg.shared_embeddings)
    names = {ours: theirs for ours, theirs in seq2seq_names({**config, "model_type": kind}).items()
             if ours != "decoder.lm_head"}
    weights = {}
    for ours, theirs in names.items():
        for suffix in ("weight", "bias"):
            tensor = state.get(f"model.{ours}.{suffix}")
            if tensor is not None:
                parts = theirs if isinstance(theirs, tuple) else (theirs,)
                for name, part in zip(parts, tensor.split(len(tensor) // len(parts))):
                    weights[f"{name}.{suffix}"] = part
    if kind == "bart":  # the two rows no position reads, then ours
        for half in ("encoder", "decoder"):
            table = state[f"model.{half}.pos_emb.weight"]
            weights[f"model.{half}.embed_positions.weight"] = torch.cat([table.new_zeros(BART_POSITION_OFFSET, table.size(1)), table])
    weights["final_logits_bias"] = state.get("model.decoder.logits_bias", torch.zeros(vocab)).reshape(1, -1)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _save_weights({k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}, output)
    (output / "generation_config.json").write_text(json.dumps(_generation_config(config, cfg, decode), indent=2) + "\n")
    _write_seq2seq_tokenizer(tok, task, start, end, pad, cfg.block_size, output)
    return architecture


def _check_seq2seq_exportable(task: str, model: dict, cfg, kind: str, architecture: str) -> None:
    """Every option of the run's encoder-decoder that the architecture does not compute, named in one error."""
    needs = {"arch": "encoder_decoder", "positions": "learned", "norm": "post", "decoder_norms": "encoder",
             "final_norm": False, "embedding_norm": kind == "bart", "norm_type": "layernorm", "norm_eps": 1e-5,
             "mlp": "gelu", "n_kv_head": 0, "bias": True, "type_vocab_size": 0, "tie_output": True,
             "qkv_bias": None, "out_bias": None, "mlp_bias": None, **({"shared_embeddings": True} if kind == "bart" else {})}
    wrong = [f"model.{k}={model[k]} (it needs {v})" for k, v in needs.items() if k in model and model[k] != v]
    if wrong:
        raise ConfigError(f"export: this {task} model does not map onto {architecture} (model.sinusoidal="
                          f"{cfg.sinusoidal} picks it): {'; '.join(wrong)}")


def _generation_config(config: dict, cfg, decode: dict) -> dict:
    """``decode``'s settings as generate reads them: its lengths count the start token; a length that grows with
    the source (decode.max_len_a > 0) has no counterpart, so the limit is the model's."""
    room = cfg.block_size if decode.get("max_len_a", 0) > 0 else min(decode.get("max_len_b", cfg.block_size), cfg.block_size)
    sample = decode.get("temperature", 0) > 0
    return {"decoder_start_token_id": config["decoder_start_token_id"], "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"],
            "forced_eos_token_id": config["eos_token_id"], "max_length": room + 1,
            "min_length": decode.get("min_len", 0) + 1, "num_beams": 1 if sample else decode.get("beam_size", 1),
            "length_penalty": decode.get("length_penalty", 1.0), "early_stopping": False,
            "no_repeat_ngram_size": decode.get("no_repeat_ngram_size", 0),
            "repetition_penalty": decode.get("repetition_penalty", 1.0), "do_sample": sample,
            **({"temperature": decode["temperature"], "top_k": decode.get("top_k") or 0,
                "top_p": decode.get("top_p") or 1.0} if sample else {})}


def _write_seq2seq_tokenizer(tok, task: str, start: int, end: int, pad: int, block_size: int, output: Path) -> None:
    """tokenizer.json framing each source as the task's data does, and tokenizer_config.json naming its special
    tokens and the longest source."""
    from tokenizers.processors import TemplateProcessing

    specials = {"start": tok.id_to_token(start), "end": tok.id_to_token(end)}
    tok.post_processor = TemplateProcessing(single=SOURCE_TEMPLATES[task].format(**specials),
                                            special_tokens=[(t, tok.token_to_id(t)) for t in set(specials.values())])
    tok.save(str(output / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
                "bos_token": specials["start"], "eos_token": specials["end"], "pad_token": tok.id_to_token(pad)}
    (output / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
