"""What ExampleData (lmtemplate/data/base.py) gives every datamodule: each verb reads and encodes only the splits
it uses. Not test_base.py: pytest imports test files by their base name, and tests/tasks/test_base.py has it."""

import json
from pathlib import Path

import pytest
import torch

from lmtemplate.cli import main
from lmtemplate.config import ConfigError
from lmtemplate.data.demo.qa import write_demo_qa
from lmtemplate.data.demo.sentiment import write_demo_classification
from lmtemplate.data.summarization import SummarizationDataModule
from lmtemplate.run import load_config

TINY = ["task=summarization", "model.block_size=32", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "data.batch_size=4", "tokenizer.vocab_size=300",
        "decode.max_len_b=4", "data.max_target_tokens=8", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.train=train.jsonl", "data.val=val.jsonl", "data.test=test.jsonl"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def files(tmp_path, monkeypatch):
    """train, val and test tables of a few rows each, in the working directory."""
    monkeypatch.chdir(tmp_path)
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        rows = [{"source": f"{split} document {i} about the number {i}", "summary": f"number {i}"} for i in range(n)]
        Path(f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def reads(monkeypatch) -> list[str]:
    """The files the summarization datamodule reads from now on, in order."""
    read, seen = SummarizationDataModule.read, []
    monkeypatch.setattr(SummarizationDataModule, "read", lambda self, path: seen.append(str(path)) or read(self, path))
    return seen


@pytest.mark.parametrize("stage, read", [("fit", ["train.jsonl", "val.jsonl"]), ("validate", ["val.jsonl"]),
                                         ("test", ["test.jsonl"]), ("predict", [])])
def test_a_stage_reads_only_its_splits_when_the_tokenizer_is_given(files, monkeypatch, stage, read):
    cfg = load_config([], [*TINY, f"run.cache_dir={files}"]).cfg
    SummarizationDataModule(cfg).tokenizer.save("tokenizer.json")
    seen = reads(monkeypatch)
    dm = SummarizationDataModule(load_config([], [*TINY, f"run.cache_dir={files}", "tokenizer.path=tokenizer.json"]).cfg)
    dm.setup(stage)
    assert seen == read and sorted(dm.examples) == sorted(path.removesuffix(".jsonl") for path in read)


def test_training_a_tokenizer_reads_the_training_file_once(files, monkeypatch):
    seen = reads(monkeypatch)
    dm = SummarizationDataModule(load_config([], [*TINY, f"run.cache_dir={files}"]).cfg)
    assert seen == ["train.jsonl"] and not dm.examples
    dm.setup("fit")
    assert seen == ["train.jsonl", "val.jsonl"]


def test_a_test_split_that_is_the_validation_file_is_read_and_encoded_once(files, monkeypatch):
    seen = reads(monkeypatch)
    dm = SummarizationDataModule(load_config([], [*TINY, f"run.cache_dir={files}", "data.test=null"]).cfg)
    dm.setup("validate")
    dm.setup("test")
    assert seen == ["train.jsonl", "val.jsonl"] and dm.examples["test"] is dm.examples["val"]


def test_test_and_validate_never_read_the_other_files(files):
    """After fit, the training file (and, for test, the validation file) may be broken: those verbs do not read it."""
    assert main(["fit", *TINY, "run.name=s"]) == 0
    Path("train.jsonl").write_text("not json\n")
    assert main(["validate", "--ckpt", "best", "run.name=s"]) == 0
    Path("val.jsonl").write_text("not json\n")
    assert main(["test", "--ckpt", "best", "run.name=s"]) == 0
    assert main(["predict", "--ckpt", "best", "run.name=s", "--prompt", "a document"]) == 0


TRAINED_FROM_FILES = {  # task: (write the files, overrides, what the checkpoint records of the training file)
    "classification": (lambda: write_demo_classification(".", 200, 40, 0), ["model.block_size=32", "model.pooler=true"], "labels"),
    "qa": (lambda: write_demo_qa(".", 200, 40, 0.3, 0), ["model.block_size=48", "data.doc_stride=16"], "has_null"),
}


@pytest.mark.parametrize("task", sorted(TRAINED_FROM_FILES))
def test_what_a_task_learns_from_the_training_file_comes_from_the_checkpoint_after_fit(tmp_path, monkeypatch, capsys,
                                                                                       task):
    """Classification's label names and QA's "some question has no answer" are read from the checkpoint by
    validate, test and predict: after fit the training file may be gone, and the scores do not change. Export
    reads no data file either."""
    monkeypatch.chdir(tmp_path)
    write, overrides, recorded = TRAINED_FROM_FILES[task]
    train, val = write()
    bert = ["model.positions=learned", "model.norm=post", "model.embedding_norm=true", "model.final_norm=false"]
    common = [f"task={task}", *overrides, *bert, "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.batch_size=8",
              "tokenizer.vocab_size=300", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              "run.name=r", f"data.train={train}", f"data.val={val}", f"data.test={val}"]
    assert main(["fit", *common, "trainer.max_steps=2", "trainer.val_check_interval=2"]) == 0
    run = Path("outputs/r/version_0")
    assert all(recorded in torch.load(c, weights_only=True) for c in (run / "checkpoints").iterdir())
    assert main(["validate", "--ckpt", "best", *common]) == 0
    scores = json.loads((run / "metrics.json").read_text())["validate"]
    Path(train).unlink()
    assert main(["validate", "--ckpt", "best", *common]) == 0
    assert json.loads((run / "metrics.json").read_text())["validate"] == scores
    assert main(["test", "--ckpt", "best", *common]) == 0
    assert main(["test", "--ckpt", "best", *common, "data.test=gone.json"]) == 2  # the file test reads must exist
    assert "data.test: file not found: gone.json" in capsys.readouterr().err
    Path("in.txt").write_text("a good film\n")
    assert main(["predict", "--ckpt", "best", *common, "--input", "in.txt" if task == "classification" else str(val)]) == 0
    assert main(["export", "--ckpt", "best", "run.name=r", "--output", "hf"]) == 0


def test_any_exception_from_read_is_an_error_naming_the_file(files, monkeypatch, capsys):
    """A plugin's read() may raise what it likes: the command still ends in one message naming the file, exit 2."""
    def read(self, path):
        raise ValueError("unknown tag 'B-FOO'")
    monkeypatch.setattr(SummarizationDataModule, "read", read)
    with pytest.raises(ConfigError, match=r"^train.jsonl \(data.train\): SummarizationDataModule.read failed: "
                                          r"ValueError: unknown tag 'B-FOO'"):
        SummarizationDataModule(load_config([], [*TINY, f"run.cache_dir={files}"]).cfg)
    assert main(["fit", *TINY]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "lmtemplate: error: train.jsonl (data.train): SummarizationDataModule.read" in err
