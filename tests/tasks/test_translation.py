"""Task translation: learns the demo data, translates files line for line, scores BLEU as sacreBLEU does."""

import json
import re
from pathlib import Path

import pytest
import sacrebleu
import torch

from lmtemplate.cli import main
from lmtemplate.config import ConfigError
from lmtemplate.data.demo.translation import demo_translation
from lmtemplate.run import load_config
from lmtemplate.tasks.base import OptimConfig, inverse_sqrt
from lmtemplate.tasks.translation import Translation, TranslationDataModule

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "finetune" / "translation-demo.yaml")
QUIET = ["trainer.enable_progress_bar=false"]
TINY = ["task=translation", "model.block_size=48", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
        "trainer.max_steps=4", "trainer.val_check_interval=4", "data.demo_train=200", "data.demo_val=20",
        "data.batch_size=8", "tokenizer.vocab_size=300", "decode.val_sentences=8", *QUIET]


def test_demo_config_learns_the_demo_data_and_translates_a_file_line_for_line(tmp_path, monkeypatch):
    """The issue's bar: validation BLEU of at least 90 on the demo data (word order and agreement change)."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", DEMO, *QUIET]) == 0
    run = Path("outputs/translation-demo/version_0")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/bleu"] >= 90 and metrics["val/chrf"] >= 90, metrics
    sources = ["the small dogs chase a ball near the river", "", "a happy girl sees some old trees"]
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n")
    assert main(["predict", "--ckpt", str(run), "--input", "in.txt", "--output", "out.txt", *QUIET]) == 0
    lines = (tmp_path / "out.txt").read_text().split("\n")
    assert lines == ["apud lo rivo , los hundoen petas un balo chasan", "", "un nina gaja unos arboen viejas vida", ""]


def test_task_bleu_and_chrf_equal_sacrebleu_on_fixed_hypotheses(tmp_path, monkeypatch):
    """The validation path (batches, metric states, the 0-100 scale) on hypotheses made from the references."""
    monkeypatch.chdir(tmp_path)  # not the repository root, whose ./plugins a config load would register
    cfg = load_config([], [*TINY, f"run.cache_dir={tmp_path}", "decode.val_sentences=15"]).cfg
    dm = TranslationDataModule(cfg)
    module = Translation(cfg, dm)
    references = [e[4] for e in dm.examples["val"]]

    def hypothesis(i: int) -> str:  # drop a word, swap two words or keep the sentence
        words = references[i].split()
        return " ".join(words[1:] if i % 3 == 0 else words[::-1] if i % 3 == 1 else words)

    module.translate = lambda src, mask, beam: [hypothesis(i) for i in current]
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    module.on_validation_epoch_start()
    for batch in dm.val_dataloader():
        current = [i for i in batch["index"].tolist() if i < 15]
        with torch.no_grad():
            module.validation_step(batch, 0)
    module.on_validation_epoch_end()
    hypotheses = [hypothesis(i) for i in range(15)]
    assert logged["val/bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references[:15]]).score, abs=1e-3)
    assert logged["val/chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references[:15]]).score, abs=1e-2)
    assert 10 < logged["val/bleu"] < 90
    assert module.text_samples()[0] == (dm.examples["val"][0][3], references[0], hypotheses[0])


def test_separate_tokenizers_train_and_predict_from_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = [*TINY, "tokenizer.joint=false", "model.shared_embeddings=false", "model.tie_output=false"]
    assert main(["fit", *tiny]) == 0
    run = Path("outputs/demo/version_0")
    assert (run / "source_tokenizer.json").is_file() and (run / "tokenizer.json").is_file()
    (tmp_path / "in.txt").write_text("the dog sees a cat\nsome birds like the tree\n")
    assert main(["predict", "--ckpt", str(run), "--input", "in.txt", "--output", "out.txt", "task=translation",
                 "decode.beam_size=3"]) == 0  # without -c, overrides of a task's own keys need its name
    assert len((tmp_path / "out.txt").read_text().split("\n")) == 3
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not torch.equal(state["model.encoder.tok_emb.weight"], state["model.decoder.tok_emb.weight"])
    assert not torch.equal(state["model.decoder.lm_head.weight"], state["model.decoder.tok_emb.weight"])
    assert (run / "source_tokenizer.json").read_text() != (run / "tokenizer.json").read_text()


@pytest.mark.parametrize("overrides, message", [
    (["tokenizer.joint=false"], "model.shared_embeddings: one embedding table needs one vocabulary"),
    (["decode.beam_size=0"], "decode.beam_size: expected a positive integer, got 0"),
    (["optim.label_smoothing=1.5"], r"optim.label_smoothing: expected a number in \[0, 1\)"),
    (["optim.schedule=sawtooth"], "optim.schedule: 'sawtooth' is not one of cosine, linear, inverse_sqrt"),
    (["model.vocab_size=100"], r"model.vocab_size: 100 is smaller than the tokenizer's vocabulary \(300\)"),
])
def test_bad_settings_fail_before_training_and_name_the_key(tmp_path, monkeypatch, capsys, overrides, message):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *TINY, *overrides]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not Path("outputs/demo").exists()


def test_a_predict_input_file_of_blank_lines_gives_as_many_blank_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *TINY]) == 0
    (tmp_path / "in.txt").write_text("\n\n" + demo_translation(1, 0)[0][0] + "\n")
    assert main(["predict", "--ckpt", "outputs/demo/version_0", "--input", "in.txt", "--output", "out.txt"]) == 0
    assert (tmp_path / "out.txt").read_text().split("\n")[:2] == ["", ""]
    assert len((tmp_path / "out.txt").read_text().split("\n")) == 4


def test_inverse_sqrt_schedule_warms_up_then_decays_as_one_over_the_square_root():
    cfg = OptimConfig(lr=1.0, warmup_steps=100, schedule="inverse_sqrt")
    assert inverse_sqrt(0, cfg) == pytest.approx(0.01) and inverse_sqrt(99, cfg) == pytest.approx(1.0)
    assert inverse_sqrt(399, cfg) == pytest.approx(0.5) and inverse_sqrt(9999, cfg) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="optim.schedule"):
        OptimConfig(schedule="step")


def test_a_time_budget_needs_a_schedule_without_an_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    budget = [*TINY, "trainer.max_steps=-1", "trainer.max_time=00:00:00:02"]
    assert main(["fit", *budget, "optim.schedule=cosine"]) == 2
    assert "optim.decay_steps: the cosine schedule needs an end" in capsys.readouterr().err
    assert main(["fit", *budget, "optim.schedule=inverse_sqrt"]) == 0
