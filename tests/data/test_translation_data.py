"""Parallel text: aligned files and tables, their errors, the length filter, batches, the demo data."""

import json
import logging

import pytest
import torch

from lmtemplate.config import ConfigError
from lmtemplate.data.demo.translation import DEMO_ADJECTIVES, DEMO_PREPOSITIONS, demo_translation
from lmtemplate.data.base import TokenBatches
from lmtemplate.data.translation import IGNORE, TranslationDataModule
from lmtemplate.run import load_config


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder: from the repository root, loading a config would register ./plugins for good."""
    monkeypatch.chdir(tmp_path)


def datamodule(tmp_path, *overrides) -> TranslationDataModule:
    base = ["task=translation", f"run.cache_dir={tmp_path}/cache", "tokenizer.vocab_size=300", "model.block_size=64"]
    return TranslationDataModule(load_config([], [*base, *overrides]).cfg)


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    """train.en / train.de and val.en / val.de: aligned demo pairs."""
    for split, n, seed in (("train", 60, 0), ("val", 10, 1)):
        pairs = demo_translation(n, seed)
        write(tmp_path / f"{split}.en", [a for a, _ in pairs])
        write(tmp_path / f"{split}.de", [b for _, b in pairs])
    return tmp_path


def aligned(corpus, *extra):
    return [f"data.train={corpus}/train", f"data.val={corpus}/val", "data.src_lang=en", "data.tgt_lang=de", *extra]


def test_aligned_files_are_read_pair_by_pair_and_the_test_set_defaults_to_val(corpus):
    dm = datamodule(corpus, *aligned(corpus))
    pairs = demo_translation(10, 1)
    assert [(e[3], e[4]) for e in dm.examples["val"]] == pairs == [(e[3], e[4]) for e in dm.examples["test"]]
    index, src, tgt, _, reference = dm.examples["val"][0]
    assert index == 0 and src[-1] == dm.eos_id and tgt[0] == dm.bos_id and tgt[-1] == dm.eos_id
    assert dm.tokenizer.decode(tgt[1:-1]) == reference == pairs[0][1]
    assert dm.source_tokenizer is dm.tokenizer  # joint: one vocabulary for both sides


def test_different_line_counts_name_both_files_and_counts(corpus):
    write(corpus / "train.de", (corpus / "train.de").read_text().splitlines()[:-3])
    with pytest.raises(ConfigError) as e:
        datamodule(corpus, *aligned(corpus))
    assert f"{corpus}/train.en has 60 lines but {corpus}/train.de has 57" in str(e.value)


def test_an_empty_line_names_the_file_and_line(corpus):
    lines = (corpus / "val.en").read_text().splitlines()
    write(corpus / "val.en", lines[:4] + ["  "] + lines[5:])
    with pytest.raises(ConfigError, match=rf"{corpus}/val.en, line 5: empty line"):
        datamodule(corpus, *aligned(corpus)).setup("validate")


def test_a_line_separator_inside_a_sentence_does_not_split_it(corpus):
    """str.splitlines would cut at U+2028 and shift every later pair by one."""
    lines = (corpus / "val.en").read_text().splitlines()
    write(corpus / "val.en", [lines[0] + "\u2028" + "x"] + lines[1:])
    dm = datamodule(corpus, *aligned(corpus))
    assert len(dm.examples["val"]) == 10 and dm.examples["val"][1][3] == lines[1]


@pytest.mark.parametrize("overrides, message", [
    (["data.train={c}/train", "data.val={c}/val", "data.src_lang=fr"], "data.train: file not found: {c}/train.fr"),
    (["data.train={c}/train"], "data.val: a validation set is required"),
    (["data.train={c}/train.txt", "data.val={c}/val"], "data.train: file not found: {c}/train.txt.src (a split is a prefix"),
    (["data.max_ratio=0.5"], "data.max_ratio: expected a number >= 1"),
    (["tokenizer.special_tokens=[<s>]"], "tokenizer.special_tokens: translation needs <pad>, </s>"),
])
def test_bad_settings_name_the_key(corpus, overrides, message):
    with pytest.raises(ConfigError, match=message.format(c=corpus).replace("(", r"\(")):
        datamodule(corpus, *[o.format(c=corpus) for o in overrides])


def test_tables_read_the_language_columns_and_name_a_missing_one(tmp_path):
    pairs = demo_translation(30, 0)
    write(tmp_path / "train.jsonl", [json.dumps({"en": a, "xx": b}) for a, b in pairs])
    write(tmp_path / "val.tsv", ["en\txx"] + [f"{a}\t{b}" for a, b in pairs[:5]])
    dm = datamodule(tmp_path, f"data.train={tmp_path}/train.jsonl", f"data.val={tmp_path}/val.tsv",
                    "data.src_lang=en", "data.tgt_lang=xx")
    assert [(e[3], e[4]) for e in dm.examples["val"]] == pairs[:5]
    assert len(dm.examples["train"]) == 30
    with pytest.raises(ConfigError, match=r"train.jsonl, line 1: the record has no key 'de' \(set data.tgt_lang\); its keys are: en, xx"):
        datamodule(tmp_path, f"data.train={tmp_path}/train.jsonl", f"data.val={tmp_path}/val.tsv",
                    "data.src_lang=en", "data.tgt_lang=de")


def test_the_length_filter_drops_long_and_unequal_training_pairs_only_and_says_how_many(tmp_path, caplog):
    """Character tokens, max_tokens 10, max_ratio 3."""
    kept, borderline = ("a b", "c d"), ("ab", "c d e")  # 3 / 3 and 2 / 5 tokens
    long, unequal = ("a b c d e f", "a b c"), ("a", "b c d")  # 11 / 5 and 1 / 5 tokens
    pairs = [kept] * 20 + [long] * 3 + [unequal] * 2 + [borderline]
    for split in ("train", "val"):
        write(tmp_path / f"{split}.src", [a for a, _ in pairs])
        write(tmp_path / f"{split}.tgt", [b for _, b in pairs])
    with caplog.at_level(logging.WARNING):
        dm = datamodule(tmp_path, f"data.train={tmp_path}/train", f"data.val={tmp_path}/val", "tokenizer.kind=char",
                        "data.max_tokens=10", "data.max_ratio=3")
    assert [(e[3], e[4]) for e in dm.examples["train"]] == [kept] * 20 + [borderline]
    assert f"{tmp_path}/train: dropped 5 of 26 training pairs longer than 10 tokens" in caplog.text
    assert len(dm.examples["val"]) == 26  # validation keeps every pair: BLEU is measured on the whole set
    dm = datamodule(tmp_path, f"data.train={tmp_path}/train", f"data.val={tmp_path}/val", "tokenizer.kind=char",
                    "data.max_tokens=20", "data.max_ratio=3", "model.block_size=6")
    assert len(dm.examples["train"]) == 20  # block_size 6 leaves 4 tokens: the borderline pair's 5 do not fit
    assert max(len(e[1]) for e in dm.examples["val"]) == 6 and max(len(e[2]) for e in dm.examples["val"]) == 7  # cut


def test_collate_shifts_targets_and_ignores_padding(corpus):
    dm = datamodule(corpus, *aligned(corpus))
    batch = dm.collate(dm.examples["val"][:3])
    lengths = [len(e[2]) - 1 for e in dm.examples["val"][:3]]
    for row, (n, example) in enumerate(zip(lengths, dm.examples["val"][:3])):
        assert batch["decoder_input_ids"][row, :n].tolist() == example[2][:-1]
        assert batch["labels"][row, :n].tolist() == example[2][1:]
        assert (batch["labels"][row, n:] == IGNORE).all()
        assert batch["attention_mask"][row].sum() == len(example[1])
    assert batch["references"] == [e[4] for e in dm.examples["val"][:3]] and batch["index"].tolist() == [0, 1, 2]


def test_token_batches_cover_every_pair_once_within_the_budget_in_a_new_order_each_epoch():
    g = torch.Generator().manual_seed(0)
    sizes = [tuple(x) for x in torch.randint(2, 30, (500, 2), generator=g).tolist()]
    sampler = TokenBatches(sizes, max_tokens=300, seed=1)
    first, second = list(sampler), list(sampler)
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert all(len(b) * (max(sizes[i][0] for i in b) + max(sizes[i][1] for i in b)) <= 300 for b in batches)
        assert len(batches) == len(sampler)
    assert first != second
    ranks = [list(TokenBatches(sizes, 300, seed=1, rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_separate_tokenizers_learn_each_side(corpus):
    dm = datamodule(corpus, *aligned(corpus), "tokenizer.joint=false", "tokenizer.kind=char")
    source = set(dm.source_tokenizer.get_vocab()) - {"<pad>", "<s>", "</s>", "<unk>"}
    target = set(dm.tokenizer.get_vocab()) - {"<pad>", "<s>", "</s>", "<unk>"}
    assert source == set("".join((corpus / "train.en").read_text().split("\n")))
    assert target == set("".join((corpus / "train.de").read_text().split("\n")))


def test_demo_translation_is_deterministic_and_follows_its_rules():
    pairs = demo_translation(300, 3)
    assert pairs == demo_translation(300, 3) and pairs != demo_translation(300, 4)
    for en, xx in pairs:
        words, target = en.split(), xx.split()
        subject = words[2] if words[1] in DEMO_ADJECTIVES else words[1]
        assert target[-1].endswith("an" if subject.endswith("s") else "a")  # the verb, last, agrees
        assert ("," in target) == any(p in words for p in DEMO_PREPOSITIONS)
        assert len(target) == len(words) + ("," in target)
