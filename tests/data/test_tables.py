"""Tests for reading GLUE-style tables (lmtemplate.data.tables)."""

import json
import re

import pytest

from lmtemplate.config import ConfigError
from lmtemplate.data.tables import Table, read_table

COLUMNS = {"sentence": "data.text_column", "label": "data.label_column"}


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def error(path, line=None):
    """A `match` pattern: the message names the file and, when given, the line."""
    return re.escape(str(path)) + (f", line {line}:" if line is not None else ":")


# --- reading each format ---------------------------------------------------------


def test_tsv_glue_style(tmp_path):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nit 's a charming journey . \t1\n\nhide new secretions \t0\n")
    table = read_table(path, COLUMNS)
    assert table == Table(
        rows=[{"sentence": "it 's a charming journey .", "label": "1"}, {"sentence": "hide new secretions", "label": "0"}],
        lines=[2, 4],  # the blank line 3 is skipped but counted
        skipped=0,
        path=path,
    )


def test_tsv_has_no_quoting_and_crlf_endings(tmp_path):
    path = write(tmp_path, "a.tsv", 'idx\tsentence\tlabel\r\n7\t"quoted, kept"\t1\r\n')
    table = read_table(path, COLUMNS)
    assert table.rows == [{"sentence": '"quoted, kept"', "label": "1"}]  # only requested columns
    assert table.lines == [2]


def test_csv_with_quoted_newline(tmp_path):
    path = write(tmp_path, "a.csv", 'label,sentence\n1,"one, two"\n0,"three\nfour"\n1, five \n')
    table = read_table(path, COLUMNS)
    assert table.rows == [
        {"sentence": "one, two", "label": "1"},
        {"sentence": "three\nfour", "label": "0"},
        {"sentence": "five", "label": "1"},
    ]
    assert table.lines == [2, 3, 5]  # a row's first line


def test_jsonl_keeps_json_types(tmp_path):
    records = [{"sentence": "good", "label": 1, "extra": True}, None, {"sentence": "bad", "label": 0}]
    path = write(tmp_path, "a.jsonl", "".join(json.dumps(r) + "\n" if r else "\n" for r in records))
    table = read_table(path, COLUMNS)
    assert table.rows == [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    assert isinstance(table.rows[0]["label"], int)
    assert table.lines == [1, 3]


@pytest.mark.parametrize("name,text", [("a.tsv", "sentence\tlabel\nx\t1\n"), ("a.csv", "sentence,label\nx,1\n"),
                                       ("a.jsonl", '{"sentence": "x", "label": "1"}\n')])
def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path, name, text):
    path = write(tmp_path, name, text, encoding="utf-8-sig")
    assert read_table(path, COLUMNS).rows == [{"sentence": "x", "label": "1"}]


def test_optional_columns_present(tmp_path):
    path = write(tmp_path, "a.tsv", "sentence\tlabel\tidx\nx\t1\t5\n")
    assert read_table(path, COLUMNS, {"idx": "data.id_column"}).rows == [{"sentence": "x", "label": "1", "idx": "5"}]


def test_optional_columns_absent(tmp_path):
    tsv = write(tmp_path, "a.tsv", "sentence\tlabel\nx\t1\n")
    assert read_table(tsv, COLUMNS, {"idx": "data.id_column"}).rows == [{"sentence": "x", "label": "1"}]
    jsonl = write(tmp_path, "a.jsonl", '{"sentence": "x", "label": 1, "idx": 3}\n{"sentence": "y", "label": 0}\n')
    rows = read_table(jsonl, COLUMNS, {"idx": "data.id_column"}, nonempty=("idx",)).rows
    assert rows == [{"sentence": "x", "label": 1, "idx": 3}, {"sentence": "y", "label": 0}]


# --- file-level errors: raised even with skip_bad ----------------------------------


@pytest.mark.parametrize("skip_bad", [False, True])
def test_file_not_found(tmp_path, skip_bad):
    path = tmp_path / "missing.tsv"
    with pytest.raises(ConfigError, match=error(path) + " file not found"):
        read_table(path, COLUMNS, skip_bad=skip_bad)


def test_unknown_suffix_lists_the_accepted_ones(tmp_path):
    path = write(tmp_path, "a.txt", "sentence\tlabel\nx\t1\n")
    with pytest.raises(ConfigError, match=error(path) + r".*'\.txt'.*\.tsv, \.csv or \.jsonl"):
        read_table(path, COLUMNS)


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("name,text", [("a.tsv", ""), ("a.csv", "\n"), ("a.jsonl", "\n  \n")])
def test_empty_file(tmp_path, name, text, skip_bad):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=error(path) + r" the file (is empty|holds no records)"):
        read_table(path, COLUMNS, skip_bad=skip_bad)


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("name,text", [("a.tsv", "sentence\tlabel\n"), ("a.csv", "sentence,label\n\n")])
def test_header_without_rows(tmp_path, name, text, skip_bad):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=error(path) + r" no data rows after the header \(line 1\)"):
        read_table(path, COLUMNS, skip_bad=skip_bad)


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("name,text", [("a.tsv", "text\tlabel\nx\t1\n"), ("a.csv", "text,label\nx,1\n")])
def test_required_column_missing_from_header(tmp_path, name, text, skip_bad):
    path = write(tmp_path, name, text)
    pattern = error(path, 1) + r" the header has no column 'sentence' \(set data.text_column\); its columns are: text, label"
    with pytest.raises(ConfigError, match=pattern):
        read_table(path, COLUMNS, skip_bad=skip_bad)


def test_all_rows_bad_is_an_error_even_with_skip_bad(tmp_path):
    path = write(tmp_path, "a.tsv", "sentence\tlabel\na\tb\tc\n")
    with pytest.raises(ConfigError, match=error(path) + " all 1 rows are bad"):
        read_table(path, COLUMNS, skip_bad=True)


# --- row errors: raised, or skipped and counted with skip_bad -------------------------

ROW_ERRORS = {
    "tsv_field_count": ("a.tsv", "sentence\tlabel\nok\t1\na stray\ttab\t0\nok\t0\n", 3,
                        "expected 2 fields as in the header, got 3"),
    "csv_field_count": ("a.csv", "sentence,label\nok,1\nno label\nok,0\n", 3, "expected 2 fields as in the header, got 1"),
    "jsonl_invalid": ("a.jsonl", '{"sentence": "ok", "label": 1}\n{"sentence": \n{"sentence": "ok", "label": 0}\n', 2,
                      "not valid JSON"),
    "jsonl_not_object": ("a.jsonl", '{"sentence": "ok", "label": 1}\n["ok", 1]\n{"sentence": "ok", "label": 0}\n', 2,
                         r"expected a JSON object \{\.\.\.\} per line, got \[\"ok\", 1\]"),
    "jsonl_missing_key": ("a.jsonl", '{"sentence": "ok", "label": 1}\n\n{"text": "x", "label": 1}\n{"sentence": "ok", "label": 0}\n',
                          3, r"the record has no key 'sentence' \(set data.text_column\); its keys are: text, label"),
    "tsv_empty_text": ("a.tsv", "sentence\tlabel\nok\t1\n  \t0\nok\t0\n", 3, r"empty text in column 'sentence' \(data.text_column\)"),
    "csv_empty_text": ("a.csv", 'sentence,label\nok,1\n"",0\nok,0\n', 3, r"empty text in column 'sentence' \(data.text_column\)"),
    "jsonl_empty_text": ("a.jsonl", '{"sentence": "ok", "label": 1}\n{"sentence": " ", "label": 1}\n{"sentence": "ok", "label": 0}\n',
                         2, r"empty text in column 'sentence' \(data.text_column\)"),
    "jsonl_null": ("a.jsonl", '{"sentence": "ok", "label": 1}\n{"sentence": null, "label": 1}\n{"sentence": "ok", "label": 0}\n',
                   2, r"null in column 'sentence' \(data.text_column\)"),
}


@pytest.mark.parametrize("case", ROW_ERRORS)
def test_row_error_names_file_and_line(tmp_path, case):
    name, text, line, message = ROW_ERRORS[case]
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=error(path, line) + " " + message):
        read_table(path, COLUMNS, nonempty=("sentence",))


@pytest.mark.parametrize("case", ROW_ERRORS)
def test_row_error_skipped_and_counted(tmp_path, case):
    name, text, line, _ = ROW_ERRORS[case]
    path = write(tmp_path, name, text)
    table = read_table(path, COLUMNS, skip_bad=True, nonempty=("sentence",))
    assert table.skipped == 1
    assert [row["sentence"] for row in table.rows] == ["ok", "ok"]
    assert line not in table.lines and len(table.lines) == 2


def test_empty_values_are_fine_unless_nonempty(tmp_path):
    path = write(tmp_path, "a.tsv", "sentence\tlabel\n\t1\n")
    assert read_table(path, COLUMNS).rows == [{"sentence": "", "label": "1"}]


def test_nonempty_must_name_a_column_that_is_read(tmp_path):
    path = write(tmp_path, "a.tsv", "sentence\tlabel\nx\t1\n")
    with pytest.raises(ValueError, match="idx"):
        read_table(path, COLUMNS, nonempty=("idx",))
