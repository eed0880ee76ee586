"""The language models' datamodule builds each split's token file only when a verb uses the split."""

from pathlib import Path

import pytest

from lmtemplate.data import lm
from lmtemplate.data.demo.text import demo_lines
from lmtemplate.run import load_config


@pytest.mark.parametrize("stage, built", [("fit", ["train.txt", "val.txt"]), ("validate", ["val.txt"]),
                                          ("test", ["test.txt"]), ("predict", [])])
def test_a_stage_tokenizes_only_its_splits(tmp_path, monkeypatch, stage, built):
    monkeypatch.chdir(tmp_path)
    for i, split in enumerate(("train", "val", "test")):
        Path(f"{split}.txt").write_text("\n".join(demo_lines(200, i)) + "\n")
    overrides = ["model.block_size=16", "tokenizer.vocab_size=300", f"run.cache_dir={tmp_path}/cache",
                 "data.train=train.txt", "data.val=val.txt", "data.test=test.txt"]
    lm.TextDataModule(load_config([], overrides).cfg).tokenizer.save("tokenizer.json")
    token_file, seen = lm.token_file, []
    monkeypatch.setattr(lm, "token_file", lambda corpus, *a: seen.extend(map(str, corpus.files)) or token_file(corpus, *a))
    dm = lm.TextDataModule(load_config([], [*overrides, "tokenizer.path=tokenizer.json"]).cfg)
    dm.setup(stage)
    assert seen == built
