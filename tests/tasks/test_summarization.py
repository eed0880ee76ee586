"""Task summarization: both architectures learn the demo data, summarize files line for line, score ROUGE as the
rouge-score package does, start from pretraining runs, and cut long documents where the summary still fits."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rouge_score import rouge_scorer

from lmtemplate.cli import main
from lmtemplate.data.demo.summarization import demo_summaries
from lmtemplate.data.summarization import IGNORE, SummarizationDataModule
from lmtemplate.run import load_config
from lmtemplate.tasks.rouge import KEYS, sentence_lines
from lmtemplate.tasks.summarization import Summarization

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "finetune" / "summarization-demo.yaml")
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TINY = ["task=summarization", "model.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "data.demo_train=100", "data.demo_val=20",
        "data.batch_size=8", "tokenizer.vocab_size=300", "decode.max_len_b=8", "data.max_target_tokens=16", *QUIET]
PRETRAIN = ["model.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "data.demo_lines=300",
            "tokenizer.vocab_size=300", *QUIET]  # a pretraining run of the fine-tuning runs' shape

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["encoder_decoder", pytest.param("decoder", marks=pytest.mark.slow)])  # 35 s each
def test_demo_config_learns_the_demo_data_and_summarizes_line_for_line(tmp_path, monkeypatch, arch):
    """Above the issue's bar, ROUGE-L 80, on the demo's validation set (an untrained model scores about 0):
    both architectures reach 99.9-100 in the demo's 300 steps."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", DEMO, f"model.arch={arch}", *QUIET]) == 0
    run = Path("outputs/summarization-demo/version_0")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/rougeL"] >= 95 and metrics["val/rouge2"] >= 90, metrics
    assert list((run / "checkpoints").glob("best-*.ckpt"))  # chosen by val/rougeL, the first of the task's metrics
    rows = demo_summaries(3, seed=123)
    Path("docs.txt").write_text(f"{rows[0]['source']}\n\n{rows[1]['source']}\n")
    assert main(["predict", "--ckpt", str(run), "--input", "docs.txt", "--output", "out.txt", *QUIET]) == 0
    lines = Path("out.txt").read_text().split("\n")
    assert len(lines) == 4 and lines[1] == lines[3] == ""
    assert lines[0] == rows[0]["summary"]
    assert main(["predict", "--ckpt", str(run), "--prompt", rows[2]["source"], "--output", "one.txt", *QUIET]) == 0
    assert len(Path("one.txt").read_text().split("\n")) == 2


def test_task_rouge_equals_rouge_score_against_several_references(tmp_path, monkeypatch):
    """The validation path (batches, metric states, best reference, 0-100) on hypotheses made from references."""
    monkeypatch.chdir(tmp_path)
    rows = demo_summaries(30, seed=5)
    val = [{"text": r["source"], "refs": [r["summary"], f"{r['summary'].split()[1]} did things."]} for r in rows]
    Path("val.jsonl").write_text("".join(json.dumps(v) + "\n" for v in val))
    cfg = load_config([], [*TINY, f"run.cache_dir={tmp_path}", "data.train=val.jsonl", "data.val=val.jsonl",
                           "data.source_column=text", "data.target_column=refs", "decode.val_sentences=25"]).cfg
    dm = SummarizationDataModule(cfg)
    module = Summarization(cfg, dm)
    assert len(dm.examples["train"]) == 60 and len(dm.examples["val"]) == 30  # every reference trains

    def hypothesis(i: int) -> str:  # drop words, reverse them, or keep the summary
        words = val[i]["refs"][0].split()
        return " ".join(words[2:] if i % 3 == 0 else words[::-1] if i % 3 == 1 else words) + " Again."

    module.summarize = lambda batch, keep, beam: [hypothesis(batch["index"][i].item()) for i in keep]
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    module.on_validation_epoch_start()
    for batch in dm.val_dataloader():
        with torch.no_grad():
            module.validation_step(batch, 0)
    module.on_validation_epoch_end()
    scorer = rouge_scorer.RougeScorer(list(KEYS), use_stemmer=True, split_summaries=False)
    for key in KEYS:
        expected = [scorer.score_multi([sentence_lines(r) for r in val[i]["refs"]], sentence_lines(hypothesis(i)))[key]
                    for i in range(25)]
        assert logged[f"val/{key}"] == pytest.approx(100 * sum(s.fmeasure for s in expected) / 25, abs=1e-6)
    assert 20 < logged["val/rouge2"] < logged["val/rouge1"] < 100
    source, reference, summary = module.text_samples()[0]
    assert (source, reference, summary) == (val[0]["text"], val[0]["refs"][0], hypothesis(0))


def test_reference_columns_replace_the_target_column_where_a_row_has_them(tmp_path, monkeypatch):
    """DialogSum: training rows have ``summary``, test rows ``summary1..3``."""
    monkeypatch.chdir(tmp_path)
    Path("train.jsonl").write_text('{"d": "a b c", "summary": "a"}\n{"d": "d e f", "summary": "d"}\n')
    Path("test.jsonl").write_text('{"d": "a b c", "summary1": "a", "summary2": "b", "summary3": "c"}\n')
    cfg = load_config([], [*TINY, f"run.cache_dir={tmp_path}", "data.train=train.jsonl", "data.val=train.jsonl",
                           "data.test=test.jsonl", "data.source_column=d",
                           "data.reference_columns=[summary1,summary2,summary3]"]).cfg
    dm = SummarizationDataModule(cfg)
    assert [r["summaries"] for r in dm.rows["train"]] == [["a"], ["d"]]
    assert dm.rows["test"] == [{"source": "a b c", "summaries": ["a", "b", "c"]}]


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder"])
def test_batch_tokens_groups_documents_of_similar_length_within_the_budget(tmp_path, monkeypatch, arch):
    """data.batch_tokens (shared by every ExampleData task) on documents of 5 to 60 words: every example once per
    epoch, each padded batch within the budget, and far less padding than batches of data.batch_size."""
    monkeypatch.chdir(tmp_path)  # not the repository, whose plugins/ folder would register its tasks
    cfg = load_config([], [*TINY, f"run.cache_dir={tmp_path}", f"model.arch={arch}", "model.block_size=128",
                           "data.batch_tokens=600"]).cfg
    dm = SummarizationDataModule(cfg)
    dm.examples["train"] = [{**e, "input_ids": e["input_ids"][: 5 + i % 56]} for i, e in enumerate(dm.examples["train"])]
    batches = list(dm.train_dataloader())
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(len(dm.examples["train"])))
    width = [b["input_ids"].shape[1] + b.get("decoder_input_ids", b["input_ids"][:, :0]).shape[1] for b in batches]
    assert all(len(b["index"]) * w <= 600 for b, w in zip(batches, width))
    dm.cfg.data.batch_tokens = 0
    fixed = list(dm.train_dataloader())

    def padding(batches):  # padded places of input_ids per document
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches) / sum(len(b["index"]) for b in batches)
    assert padding(batches) < padding(fixed) / 3, (padding(batches), padding(fixed))


def test_a_decoder_keeps_the_end_of_a_long_document_and_learns_only_the_summary(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    long = " ".join(f"w{i}" for i in range(200))
    Path("t.tsv").write_text(f"source\tsummary\n{long}\tw198 w199\nshort one\tone\n")
    cfg = load_config([], [*TINY, f"run.cache_dir={tmp_path}", "model.arch=decoder", "model.block_size=32",
                           "data.max_target_tokens=8", "data.train=t.tsv", "data.val=t.tsv"]).cfg
    with caplog.at_level(logging.WARNING):
        dm = SummarizationDataModule(cfg)
        dm.setup("fit")
    assert "train: cut 1 of 2 documents and 0 summaries to fit model.block_size=32 (the end of each document kept)" in caplog.text
    cut, short = dm.examples["train"]
    assert len(cut["prompt"]) == 32 - 1 - 8 and dm.tokenizer.decode(cut["prompt"]).strip().endswith("w199")
    assert len(cut["input_ids"]) <= 32
    summary = dm.tokenizer.encode("w198 w199", add_special_tokens=False).ids
    labelled = [t for t in cut["labels"] if t != IGNORE]
    assert labelled == [*summary, dm.eos_id]  # the summary and its end, nothing of the document
    assert cut["input_ids"][len(cut["prompt"])] == dm.bos_id
    batch = dm.collate([cut, short])
    assert batch["prompts"] == [cut["prompt"], short["prompt"]] and batch["labels"].shape == batch["input_ids"].shape


def test_an_encoder_decoder_starts_its_encoder_from_a_masked_lm_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "task=masked_lm", "run.name=mlm", *PRETRAIN]) == 0
    pre = Path("outputs/mlm/version_0")
    assert main(["fit", *TINY, "run.name=sum", f"model.init_from={pre}", "model.type_vocab_size=2",
                 "optim.lr=1e-9", "optim.min_lr=1e-9"]) == 0
    run = Path("outputs/sum/version_0")
    assert (run / "tokenizer.json").read_text() == (pre / "tokenizer.json").read_text()  # [CLS] / [SEP] as <s> / </s>
    load = lambda r: torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]  # noqa: E731
    a, b = load(pre), load(run)
    for name in ("blocks.0.attn.qkv.weight", "tok_emb.weight", "type_emb.weight"):
        assert torch.allclose(a[f"model.{name}"], b[f"model.encoder.{name}"], atol=1e-6), name
    assert torch.equal(b["model.encoder.tok_emb.weight"], b["model.decoder.tok_emb.weight"])  # shared embeddings


def test_a_decoder_starts_from_a_causal_lm_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "task=causal_lm", "run.name=gpt", *PRETRAIN]) == 0
    pre = Path("outputs/gpt/version_0")
    assert main(["fit", *TINY, "run.name=sum", f"model.init_from={pre}", "model.arch=decoder",
                 "model.positions=learned", "optim.lr=1e-9", "optim.min_lr=1e-9"]) == 0
    load = lambda r: torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]  # noqa: E731
    a, b = load(pre), load(Path("outputs/sum/version_0"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k.startswith("model."))


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder"])
def test_sampling_is_seeded_and_rules_bound_the_length(tmp_path, monkeypatch, arch):
    monkeypatch.chdir(tmp_path)

    def summaries(*overrides):  # the ids of each summary, as text
        cfg = load_config([], [*TINY, f"run.cache_dir={tmp_path}", f"model.arch={arch}", *overrides]).cfg
        dm = SummarizationDataModule(cfg)
        torch.manual_seed(0)
        module = Summarization(cfg, dm).eval()
        module.tokenizer = SimpleNamespace(decode_batch=lambda ids, **_: [" ".join(map(str, row)) for row in ids])
        return module.summarize(next(iter(dm.val_dataloader())), list(range(8)), beam_size=2)

    sampled = summaries("decode.temperature=1.0", "decode.seed=3")
    assert sampled == summaries("decode.temperature=1.0", "decode.seed=3")
    assert sampled != summaries("decode.temperature=1.0", "decode.seed=4")
    assert all(len(s.split()) == 6 for s in summaries("decode.min_len=6", "decode.max_len_b=7"))  # then the forced end



def test_a_warm_started_decoder_starts_as_the_masked_lm_encoder_and_validation_scores_diversity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bert = ["model.norm=post", "model.embedding_norm=true", "model.final_norm=false"]
    assert main(["fit", "task=masked_lm", "run.name=mlm", *bert, *PRETRAIN]) == 0
    assert main(["fit", *TINY, *bert, "run.name=sum", "model.init_from=outputs/mlm/version_0", "model.type_vocab_size=2",
                 "model.decoder_norms=encoder", "model.warm_start=true", "optim.lr=1e-9", "optim.min_lr=1e-9"]) == 0
    run = Path("outputs/sum/version_0")
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.proj.weight", "emb_ln.weight"):
        assert torch.allclose(state[f"model.encoder.{name}"], state[f"model.decoder.{name}"], atol=1e-6), name
    metrics = (run / "metrics.json").read_text()
    assert '"val/distinct"' in metrics and '"val/repeated_trigrams"' in metrics, metrics


def test_the_sanity_check_decodes_two_examples_and_validation_the_configured_share(tmp_path, monkeypatch):
    """An untrained decoder runs to the length limit: the check before training decodes SANITY_SENTENCES examples,
    not decode.val_sentences (64 by default: 40 s of a summarization recipe's start)."""
    from lmtemplate.tasks.decoding import SANITY_SENTENCES

    decoded = []
    real = Summarization.decode_rows

    def counting(self, batch, rows, beam_size):
        decoded.append((self.trainer.sanity_checking, len(rows)))
        return real(self, batch, rows, beam_size)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Summarization, "decode_rows", counting)
    assert main(["fit", *TINY, "decode.val_sentences=12", "data.batch_size=4"]) == 0
    assert sum(n for sanity, n in decoded if sanity) == SANITY_SENTENCES == 2
    assert sum(n for sanity, n in decoded if not sanity) == 12
