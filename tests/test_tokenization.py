import hashlib
import json

import pytest

from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import Corpus
from lmtemplate.data.squad import read_squad
from lmtemplate.data.tables import read_table
from lmtemplate.data.translation import read_pairs
from lmtemplate.tokenization import (
    INPUTS_RECORD,
    TokenizerConfig,
    build_tokenizer,
    document_separator,
    file_digest,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("the cat sits on the mat.\nthe dogs run — fast! ünïcode ✓\n" * 50, encoding="utf-8")
    return Corpus([path])


def test_round_trip_is_lossless(corpus, tmp_path):
    tok = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "cache")
    text = "the dogs run — fast! ünïcode ✓ and unseen wörds\n  two spaces"
    assert tok.decode(tok.encode(text).ids) == text
    assert tok.get_vocab_size() <= 300
    assert document_separator(tok) == tok.token_to_id("<|endoftext|>")


def test_trained_tokenizer_is_cached_by_inputs(corpus, tmp_path):
    cache = tmp_path / "cache"
    build_tokenizer(TokenizerConfig(vocab_size=300), corpus, cache)
    build_tokenizer(TokenizerConfig(vocab_size=300), corpus, cache)
    assert len(list(cache.glob("tokenizer-*.json"))) == 1
    build_tokenizer(TokenizerConfig(vocab_size=320), corpus, cache)
    assert len(list(cache.glob("tokenizer-*.json"))) == 2


def test_the_inputs_record_names_each_file_and_its_content_and_replaces_one_that_is_not_json(corpus, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / INPUTS_RECORD).write_text("{half a record")
    build_tokenizer(TokenizerConfig(vocab_size=300), corpus, cache)
    path = corpus.files[0]
    assert json.loads((cache / INPUTS_RECORD).read_text()) == {"tokenizer": {str(path.resolve()): file_digest(path)}}
    assert file_digest(path) == hashlib.sha1(path.read_bytes()).hexdigest()


def test_given_path_is_loaded_not_trained(corpus, tmp_path):
    tok = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "cache")
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    loaded = build_tokenizer(TokenizerConfig(path=str(tmp_path / "tokenizer.json")), corpus, tmp_path / "other")
    assert loaded.to_str() == tok.to_str()
    assert not (tmp_path / "other").exists()


def test_bad_settings_and_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.kind"):
        TokenizerConfig(kind="sentencepiece")
    with pytest.raises(ConfigError, match="tokenizer.path"):
        TokenizerConfig(path=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        TokenizerConfig(vocab_size=100)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        load_tokenizer(bad)


def test_char_tokenizer_has_one_token_per_character(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("First Citizen:\nBefore we proceed  any further, hear me speak.\n")
    tok = build_tokenizer(TokenizerConfig(kind="char"), Corpus([path]), tmp_path / "cache")
    text = "hear me,\nCitizen!"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) == len(text) - 1 + 1  # every character is one token ('!' was never seen: <unk>)
    assert tok.decode(ids) == "hear me,\nCitizen<unk>"
    assert tok.get_vocab_size() == len(set(path.read_text())) + 2  # + <|endoftext|> and <unk>
    assert document_separator(tok) == 0


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDPIECE_TEXTS = [
    "the cat sits on the mat. the dogs run fast in the park.",
    "a quick brown fox jumps over the lazy dog!",
    "the cafe serves coffee.",
] * 30


def wordpiece(**overrides):
    cfg = TokenizerConfig(**{"kind": "wordpiece", "vocab_size": 100, "special_tokens": BERT_SPECIALS, **overrides})
    return train_tokenizer(cfg, iter(WORDPIECE_TEXTS))


def test_wordpiece_splits_unseen_words_into_continued_pieces():
    """A word never seen whole ('cats') is spelled as a piece then '##' pieces, and decodes back."""
    tok = wordpiece()
    assert tok.token_to_id("[UNK]") is not None and tok.get_vocab_size() <= 100
    pieces = tok.encode("cats", add_special_tokens=False).tokens
    assert len(pieces) > 1
    assert not pieces[0].startswith("##") and all(p.startswith("##") for p in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == "cats"
    text = "the cats sits on the mat."
    enc = tok.encode(text, add_special_tokens=False)
    assert "[UNK]" not in enc.tokens
    assert tok.decode(enc.ids) == text


def test_wordpiece_maps_unknown_characters_to_unk():
    """A character absent from training ('✓', upper case without lowercase) becomes [UNK]."""
    tok = wordpiece()
    unk = tok.token_to_id("[UNK]")
    ids = tok.encode("the cat ✓ runs", add_special_tokens=False).ids
    assert ids.count(unk) == 1
    assert ids[2] == unk
    assert tok.encode("THE", add_special_tokens=False).ids == [unk]


def test_wordpiece_lowercase_folds_case_and_accents():
    """lowercase=True encodes 'THE CAFÉ' exactly like 'the cafe'."""
    tok = wordpiece(lowercase=True)
    unk = tok.token_to_id("[UNK]")
    folded = tok.encode("THE CAFÉ", add_special_tokens=False)
    plain = tok.encode("the cafe", add_special_tokens=False)
    assert folded.ids == plain.ids and unk not in folded.ids
    assert tok.decode(folded.ids) == "the cafe"


def test_wordpiece_needs_unk_among_special_tokens():
    """A wordpiece config without '[UNK]' among its special tokens is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"\[UNK\]"):
        TokenizerConfig(kind="wordpiece", special_tokens=["<s>"])
    TokenizerConfig(kind="wordpiece", special_tokens=["<s>", "[UNK]"])


BAD_BYTES = "la première ligne\n".encode() + b"deuxi\xe8me ligne\n"  # Latin-1 'è' on line 2, at byte 24
READERS = {
    "corpus .txt": ("corpus.txt", lambda p: list(Corpus([p]).iter_batches())),
    "corpus .jsonl": ("corpus.jsonl", lambda p: list(Corpus([p]).iter_batches())),
    "table .tsv": ("t.tsv", lambda p: read_table(p, {"sentence": "data.text_column"})),
    "table .csv": ("t.csv", lambda p: read_table(p, {"sentence": "data.text_column"})),
    "table .jsonl": ("t.jsonl", lambda p: read_table(p, {"sentence": "data.text_column"})),
    "SQuAD JSON": ("squad.json", read_squad),
    "aligned text": ("pairs.src", lambda p: read_pairs(str(p.with_suffix("")), "src", "tgt")),
}


@pytest.mark.parametrize("name", list(READERS), ids=list(READERS))
def test_every_reader_names_the_line_and_byte_that_is_not_utf8(tmp_path, name):
    """One behaviour for every input file: a ConfigError with the line and the byte offset, never U+FFFD."""
    filename, read = READERS[name]
    path = tmp_path / filename
    path.write_bytes(BAD_BYTES)
    path.with_suffix(".tgt").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        read(path)
    assert str(e.value).startswith(f"{path}, line 2: not valid UTF-8 (byte 0xe8 at byte offset 24 of the file);")
