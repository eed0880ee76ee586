"""Summarization tables: a document stored as a list of sentences."""

import json

import pytest

from lmtemplate.config import ConfigError
from lmtemplate.data.summarization import SummarizationDataConfig, read_summaries


def test_a_list_of_sentences_is_one_document_joined_with_spaces(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text(json.dumps({"sentences": [" It rained. ", "Roads closed."], "summary": ["Rain.", "Closures."]}) + "\n")
    rows = read_summaries(path, SummarizationDataConfig(source_column="sentences"))
    assert rows == [{"source": "It rained. Roads closed.", "summaries": ["Rain.", "Closures."]}]


@pytest.mark.parametrize("source", [[], ["a", ""], ["a", 3], 7])
def test_a_source_that_is_not_texts_is_an_error_cut_at_a_word(tmp_path, source):
    path = tmp_path / "news.jsonl"
    path.write_text(json.dumps({"source": source, "summary": "s"}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: column 'source' \(data.source_column\) holds .*; expected a text"):
        read_summaries(path, SummarizationDataConfig())


def test_a_long_value_in_a_message_ends_at_a_whole_word(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text(json.dumps({"source": {"text": "word " * 30}, "summary": "s"}) + "\n")
    with pytest.raises(ConfigError, match=r"holds \{'text': 'word word( word)* \.\.\.; expected"):
        read_summaries(path, SummarizationDataConfig())
