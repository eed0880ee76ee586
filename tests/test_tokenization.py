import pytest

from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import Corpus
from lmtemplate.tokenization import TokenizerConfig, build_tokenizer, document_separator, load_tokenizer, save_tokenizer


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
