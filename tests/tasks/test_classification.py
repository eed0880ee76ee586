"""Task classification: learns the demo data, predicts with probabilities, starts from pretrained backbones."""

import json
from pathlib import Path

import pytest
import torch

from lmtemplate.cli import main
from lmtemplate.config import ConfigError
from lmtemplate.data.base import encode_texts
from lmtemplate.data.classification import label_vocabulary
from lmtemplate.models.encoder import Encoder, EncoderConfig
from lmtemplate.models.gpt import GPT, GPTConfig
from lmtemplate.models.backbone import load_backbone
from lmtemplate.tasks.classification import pool
from lmtemplate.tokenization import TokenizerConfig, train_tokenizer

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "finetune" / "classification-demo.yaml")
QUIET = ["trainer.enable_progress_bar=false"]
TINY = ["model.block_size=32", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "trainer.max_steps=4",
        "trainer.val_check_interval=4", "trainer.limit_val_batches=2", "data.batch_size=8", *QUIET]
SMALL_DEMO = ["data.demo_train=200", "data.demo_val=40"]


def test_demo_config_learns_the_demo_data_and_predicts_labels_with_probabilities(tmp_path, monkeypatch, capsys):
    """The demo's label needs word order (negation; the clause after 'but' decides): a bag of words gets
    about 60% (tests/data/test_demo.py). The config must reach the issue's bar of 95% validation accuracy."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", DEMO, *QUIET]) == 0
    run = Path("outputs/classification-demo/version_0")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/accuracy"] >= 0.95, metrics
    assert metrics["val/f1"] >= 0.95 and metrics["val/mcc"] >= 0.9
    assert json.loads((run / "labels.json").read_text()) == ["negative", "positive"]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("the plot was dull but the actors were great\nthe film was not good\n")
    assert main(["predict", "--ckpt", str(run), "--input", str(inputs), *QUIET]) == 0
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert rows[0]["input"] == "the plot was dull but the actors were great"


def fit_run(name: str, task: str, extra: list[str]) -> Path:
    data = SMALL_DEMO if task == "classification" else ["data.demo_lines=2000"]
    assert main(["fit", f"task={task}", f"run.name={name}", *TINY, *data, *extra]) == 0
    return Path(f"outputs/{name}/version_0")


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_init_from_a_masked_lm_run_loads_its_encoder_and_tokenizer_and_freezing_keeps_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pre = fit_run("mlm", "masked_lm", ["tokenizer.vocab_size=300"])
    source = weights(pre)
    frozen = fit_run("frozen", "classification", [f"model.init_from={pre}", "model.freeze_backbone=true"])
    lower = fit_run("lower", "classification", [f"model.init_from={pre}", "model.freeze_layers=1"])
    free = fit_run("free", "classification", [f"model.init_from={pre}"])
    assert (frozen / "tokenizer.json").read_text() == (pre / "tokenizer.json").read_text()
    f, lo, fr = weights(frozen), weights(lower), weights(free)
    for key in ("model.tok_emb.weight", "model.blocks.1.attn.qkv.weight", "model.ln_f.weight"):
        assert torch.equal(source[key], f[key]), key
    assert "head.1.weight" in f and not any(k.startswith("mlm_head") for k in f)
    block0, block1 = "model.blocks.0.mlp.fc.weight", "model.blocks.1.mlp.fc.weight"
    assert torch.equal(lo[block0], source[block0]) and torch.equal(lo["model.tok_emb.weight"], source["model.tok_emb.weight"])
    assert not torch.equal(lo[block1], source[block1])
    assert not torch.equal(fr[block0], source[block0])


def test_init_from_a_causal_lm_run_fine_tunes_a_decoder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pre = fit_run("gpt", "causal_lm", ["model.dropout=0.0"])
    fine = fit_run("cls", "classification", [f"model.init_from={pre}", "model.arch=decoder", "model.positions=learned",
                                             "model.type_vocab_size=0", "model.dropout=0.0"])
    assert json.loads((fine / "metrics.json").read_text())["step"] == 4


def test_a_shape_mismatch_names_the_parameter(tmp_path):
    enc = Encoder(EncoderConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32, positions="learned"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in enc.state_dict().items()}}, ckpt)
    wider = Encoder(EncoderConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=64, positions="learned"))
    with pytest.raises(ConfigError, match=r"parameter 'tok_emb.weight' has shape \(50, 32\) .* but \(50, 64\)"):
        load_backbone(wider, str(tmp_path / "run"), "encoder")
    gpt = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(ConfigError, match=r"model.arch=decoder.*'lm_head.weight' is not in the checkpoint"):
        load_backbone(gpt, str(tmp_path / "run"), "decoder")
    with pytest.raises(ConfigError, match="model.init_from: no checkpoint file"):
        load_backbone(enc, str(tmp_path / "nowhere"), "encoder")


def test_a_validation_label_unseen_in_training_names_file_and_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.tsv").write_text("text\tlabel\na good film\tpos\na bad film\tneg\n")
    (tmp_path / "val.tsv").write_text("text\tlabel\na fine film\tpos\nan odd film\tmeh\n")
    files = ["task=classification", "data.train=train.tsv", "data.val=val.tsv", *TINY, "trainer.max_steps=1"]
    assert main(["fit", *files]) == 2
    err = capsys.readouterr().err
    assert "val.tsv, line 3: label 'meh' never occurs in the training file (neg, pos)" in err
    assert main(["fit", *files, "data.skip_bad_rows=true", "data.batch_size=1"]) == 0


def test_a_missing_column_names_the_config_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na good film\t1\n")
    assert main(["fit", "task=classification", "data.train=train.tsv", "data.val=train.tsv", *TINY]) == 2
    assert "data.text_column" in capsys.readouterr().err


def test_labels_sort_numerically_when_they_are_integers():
    assert label_vocabulary([10, 2, "1", 2]) == ["1", "2", "10"]
    assert label_vocabulary(["pos", "neg", "10"]) == ["10", "neg", "pos"]
    assert label_vocabulary(["²", "1", "-3"]) == ["-3", "1", "²"]  # a digit that is not a number sorts as text
    assert label_vocabulary(["--1", "2"]) == ["--1", "2"]
    assert label_vocabulary(["1", "01", "2"]) == ["01", "1", "2"]  # one number, two names: ordered by name too
    assert label_vocabulary(["-1", "+1"]) == ["+1", "-1"]  # "+1" is not written as an integer label: as text


def test_pairs_are_encoded_with_cls_sep_and_types_and_truncated_longest_first():
    tok = train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=100, special_tokens=["[SEP]", "[CLS]", "[PAD]", "[MASK]", "[UNK]"]),
                          iter(["a b c d e f g h"] * 20))
    (example,) = encode_texts(tok, ["a b c d e f"], ["g h"], max_length=8)
    ids, types = example["input_ids"], example["token_type_ids"]
    assert tok.decode(ids, skip_special_tokens=False).split() == ["[CLS]", "a", "b", "c", "[SEP]", "g", "h", "[SEP]"]
    assert types == [0, 0, 0, 0, 0, 1, 1, 1]


def test_pooling_reads_the_first_the_last_real_or_the_mean_of_real_tokens():
    h = torch.arange(12.0).view(1, 4, 3).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])
    assert torch.equal(pool(h, mask, "last"), torch.stack([h[0, 3], h[1, 1]]))
    assert torch.allclose(pool(h, mask, "mean")[1], h[1, :2].mean(0))


def test_best_metric_picks_the_monitored_metric(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = fit_run("mcc", "classification", ["best.metric=val/mcc"])
    callbacks = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert any("'monitor': 'val/mcc'" in key and "'mode': 'max'" in key for key in callbacks), list(callbacks)
    assert main(["fit", "task=classification", "best.metric=val/acc", *TINY]) == 2
    assert "best.metric: 'val/acc' is not one of val/accuracy, val/f1, val/mcc, val/loss" in capsys.readouterr().err
