"""Tables of labelled examples (GLUE-style), by suffix: ``.tsv`` (a header line, then every line split on each tab,
without quoting, as GLUE writes its files), ``.csv`` (the ``csv`` module; the first row is the header) or ``.jsonl``
(one JSON object per line; values keep their JSON type).

TSV and CSV values are strings with surrounding white space stripped (GLUE sentences end in a space before the
tab). Blank lines are skipped in every format; line numbers count them, and the header as line 1, and stay with
each row so that anything found wrong later (a label outside the task's classes, say) can still point at the line.

Problems with the whole file (missing, empty, a required column not in the header) always raise ``ConfigError``.
Problems with one row (a wrong number of fields, a line that is not a JSON object, a missing key, an empty value in
a ``nonempty`` column) raise too, unless ``skip_bad`` is set: then the row is skipped and counted in ``skipped``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from lmtemplate.config import ConfigError, utf8_file

@dataclass
class Table:
    """The kept rows of a table file: ``rows[i]`` (the requested columns) was read from line ``lines[i]`` (1-based)."""

    rows: list[dict[str, object]]
    lines: list[int]
    skipped: int  # bad rows skipped (only with skip_bad=True)
    path: Path


def read_table(path, columns: dict[str, str], optional: Optional[dict[str, str]] = None, *,
               skip_bad: bool = False, nonempty: tuple[str, ...] = ()) -> Table:
    """Read the ``columns`` (required) and ``optional`` columns of a table file.

    Both map a column name to the config key that named it, so that messages can say which setting to change.
    An optional column absent from the file (or, in JSONL, from one record) is absent from the row dicts.
    Values of the columns in ``nonempty`` must not be empty, white space or JSON null.
    """
    path = Path(path)
    if path.suffix not in (".tsv", ".csv", ".jsonl"):
        raise ConfigError(f"{path}: cannot read a table from a '{path.suffix}' file; "
                          "expected a .tsv, .csv or .jsonl file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (relative to {Path.cwd()})")
    wanted = {**columns, **(optional or {})}
    if not set(nonempty) <= set(wanted):
        raise ValueError(f"nonempty names columns that are not read: {sorted(set(nonempty) - set(wanted))}")
    table = Table(rows=[], lines=[], skipped=0, path=path)
    for line, record in _jsonl_records(path) if path.suffix == ".jsonl" else _delimited(path, columns, wanted):
        problem = record if isinstance(record, str) else _problem(record, columns, wanted, nonempty)
        if problem is None:
            table.rows.append({name: record[name] for name in wanted if name in record})
            table.lines.append(line)
        elif skip_bad:
            table.skipped += 1
        else:
            raise ConfigError(f"{path}, line {line}: {problem}")
    if not table.rows and table.skipped:
        raise ConfigError(f"{path}: all {table.skipped} rows are bad and were skipped; no rows are left to read")
    return table


def preview(value: object, width: int = 60) -> str:
    """``str(value)`` for a message: when longer than ``width``, cut after its last whole word that fits, then ``...``."""
    text = str(value)
    if len(text) <= width:
        return text
    space = text.rfind(" ", 0, width)
    return text[: space if space > 0 else width] + " ..."


def _problem(record: dict, columns: dict[str, str], wanted: dict[str, str], nonempty: tuple[str, ...]) -> Optional[str]:
    """What is wrong with one record, or None."""
    for name, key in columns.items():
        if name not in record:
            return f"the record has no key '{name}' (set {key}); its keys are: {', '.join(record) or 'none'}"
    for name in (n for n in nonempty if n in record):  # an absent optional column has nothing to check
        if record[name] is None:
            return f"null in column '{name}' ({wanted[name]}); expected a value"
        if isinstance(record[name], str) and not record[name].strip():
            return f"empty text in column '{name}' ({wanted[name]})"
    return None


def _tsv_fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line; only "\\n" ends a line, so a stray "\\r" stays in its field."""
    with utf8_file(path, newline="\n") as f:
        for line_no, line in enumerate(f, 1):
            line = line.removesuffix("\n").removesuffix("\r")
            if line:
                yield line_no, line.split("\t")


def _csv_fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number of the row's first line, fields) of each non-blank CSV row."""
    with utf8_file(path, newline="") as f:
        reader, start = csv.reader(f), 1
        try:
            for fields in reader:
                if fields:
                    yield start, fields
                start = reader.line_num + 1
        except csv.Error as e:
            raise ConfigError(f"{path}, line {start}: not valid CSV: {e}") from None


def _delimited(path: Path, columns: dict[str, str], wanted: dict[str, str]) -> Iterator[tuple[int, dict | str]]:
    """Check the header of a TSV/CSV file, then yield its rows as dicts of the wanted columns, or their problems."""
    lines = _tsv_fields(path) if path.suffix == ".tsv" else _csv_fields(path)
    header_line, header = next(lines, (None, None))
    if header is None:
        raise ConfigError(f"{path}: the file is empty; "
                          "expected a header line naming the columns, then one row per line")
    header = [name.strip() for name in header]
    for name, key in columns.items():
        if name not in header:
            raise ConfigError(f"{path}, line {header_line}: the header has no column '{name}' (set {key}); "
                              f"its columns are: {', '.join(header)}")
    index = {name: header.index(name) for name in wanted if name in header}
    empty = True
    for line_no, fields in lines:
        empty = False
        if len(fields) != len(header):
            yield line_no, f"expected {len(header)} fields as in the header, got {len(fields)}"
        else:
            yield line_no, {name: fields[i].strip() for name, i in index.items()}
    if empty:
        raise ConfigError(f"{path}: no data rows after the header (line {header_line}); expected one row per line")


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict | str]]:
    """Each non-blank line as a dict, or what is wrong with it; the keys are checked later, per record."""
    empty = True
    with utf8_file(path, newline="\n") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            empty = False
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, f"not valid JSON ({e}); expected one JSON object per line"
                continue
            problem = f"expected a JSON object {{...}} per line, got {preview(line.strip())}"
            yield line_no, record if isinstance(record, dict) else problem
    if empty:
        raise ConfigError(f"{path}: the file holds no records; expected one JSON object per line")
