"""The results table of docs/benchmarks.md, written from the records in benchmarks/results/*.json.

    python benchmarks/table.py            # rewrite the table between the two markers in docs/benchmarks.md
    python benchmarks/table.py --check    # exit 1 when the doc is not what the records give
    python benchmarks/table.py --add outputs/benchmarks/vs_nanogpt.json --note "why it was re-run, what differed"

A record is one row: its current result (``value``, ``date``, ``machine``, ``command``, ``note``, ``numbers``;
``date_from`` where the run is undated and ``date`` is that of the commit that first documented it) and, in
``history``, every earlier run, newest first. ``--add`` promotes a benchmark's JSON into the records whose
``source`` is that JSON's name (or the ones ``--to`` names): the current result goes to the front of ``history``
and the new one is read from the JSON at the record's ``value_from`` paths (and ``reference_from``, where the run
measures its reference too), dated by the file's modification time; the table is then rewritten.

The JSON may also be a ``python -m lmtemplate runs PATH --json`` table (a sweep's result): its rows are then read
by the config values that tell them apart, e.g. ``value_from: [["rows", "model.positions=rotary", "val/loss"]]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- benchmarks/table.py: begin -->", "<!-- benchmarks/table.py: end -->"
COLUMNS = ["benchmark", "data", "command", "metric", "result", "reference", "date", "machine", "history"]
RUN_KEYS = ["date", "date_from", "machine", "value", "command", "note", "numbers"]  # a run, current or in history


def load(folder: Path) -> dict[str, dict]:
    """The records by name (file stem), in their ``order``."""
    records = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    return dict(sorted(records.items(), key=lambda item: item[1]["order"]))


def show(value, record: dict) -> str:
    """A value (or a list of them, joined by " / ") in the record's format, with its unit (a reference may
    give its own)."""
    values = value if isinstance(value, list) else [value]
    return f"{' / '.join(format(v, record['format']) for v in values)} {record['unit']}".strip()


def row(name: str, r: dict, link: str) -> list[str]:
    ref = r["reference"]
    return [r["benchmark"], r["data"], f"`{r['command']}`", r["metric"], f"**{show(r['value'], r)}**",
            f"{ref['what']}: {show(ref['value'], {**r, **ref})}" if ref else "-",
            f"by {r['date']}" if r.get("date_from") else r["date"], r["machine"],
            f"[record{f', {n} earlier run' + 's' * (n > 1) if (n := len(r['history'])) else ''}]({link}/{name}.json)"]


def table(records: dict[str, dict], link: str) -> str:
    lines = [COLUMNS, ["---"] * len(COLUMNS), *(row(name, r, link) for name, r in records.items())]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def render(doc: Path, records: dict[str, dict], folder: Path) -> str:
    """The doc's text with the table between the markers made from ``records``."""
    text = doc.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        sys.exit(f"table.py: {doc} needs the lines {BEGIN} and {END} once each, around the table")
    head, rest = text.split(BEGIN)
    link = Path(os.path.relpath(folder, doc.parent)).as_posix()
    return f"{head}{BEGIN}\n{table(records, link)}\n{END}{rest.split(END, 1)[1]}"


def read(raw: dict, path: list[str], where: Path, name: str):
    try:
        return functools.reduce(lambda d, key: d[key], path, raw)
    except (KeyError, TypeError):
        sys.exit(f"table.py: {where} has no {' -> '.join(path)}, which record {name} reads its result from "
                 "(--to names the records this run measures); nothing written")


def values(raw: dict, paths: list[list[str]], where: Path, name: str):
    found = [read(raw, p, where, name) for p in paths]
    return found[0] if len(found) == 1 else found


def machine(raw: dict) -> str:
    """The machine a benchmark's JSON says it ran on: common.environment() under "environment" or "machine", or
    spread over the top level (where "machine" is then the architecture, a string)."""
    env = raw.get("environment") or (raw["machine"] if isinstance(raw.get("machine"), dict) else raw)
    load = env.get("load_average")
    return f"{env.get('cpu_count')}-core {env.get('processor')}, threads {env.get('threads')}" + (
        f", load {load[0]:.2f}" if load else "")


def runs_table(rows: list, where: Path) -> dict:
    """A ``runs --json`` table as a benchmark's JSON: its rows by the config values before the ``runs`` column
    ("model.positions=rotary"; "all" for a row alone), and the machine adding it, as run directories record none."""
    if not all(isinstance(r, dict) and "runs" in r for r in rows):
        sys.exit(f"table.py: {where} is a list but not a `python -m lmtemplate runs --json` table (each row a dict "
                 "with a runs column); nothing written")
    from common import environment  # Lightning and torch: only here, so that the table itself is written in a moment

    keyed = {", ".join(f"{key}={r[key]}" for key in list(r)[: list(r).index("runs")]) or "all": r for r in rows}
    return {"rows": keyed, "environment": {**environment(), "load_average": None}}


def add(raw_path: Path, note: str, to: list[str] | None, command: str | None, records: dict[str, dict]) -> list[str]:
    """Make the run in ``raw_path`` the current result of its records; return their names."""
    raw = json.loads(raw_path.read_text())
    raw = runs_table(raw, raw_path) if isinstance(raw, list) else raw
    names = to or [name for name, r in records.items() if r.get("source") == raw_path.stem]
    unknown = [n for n in names if n not in records or not records[n].get("value_from")]
    if not names or unknown:
        readers = ", ".join(sorted(n for n, r in records.items() if r.get("value_from")))
        what = (f"no record named {', '.join(unknown)} reads" if unknown
                else f"no record's source is {raw_path.stem}, for")
        sys.exit(f"table.py: {what} a benchmark's JSON; name the records {raw_path} measures with --to ({readers})")
    date = datetime.fromtimestamp(raw_path.stat().st_mtime, timezone.utc).date().isoformat()
    for name in names:
        r = records[name]
        run_command = command or r["command"]
        if raw.get("quick") and "--quick" not in run_command:
            sys.exit(f"table.py: {raw_path} is a --quick smoke run and record {name}'s command is `{run_command}` "
                     "(--to names the records this run measures); nothing written")
        r["history"].insert(0, {key: r[key] for key in RUN_KEYS if key in r})
        r.pop("date_from", None)
        r.update(date=date, machine=machine(raw), value=values(raw, r["value_from"], raw_path, name),
                 command=run_command, note=note, numbers=raw)
        if r.get("reference_from"):
            r["reference"]["value"] = values(raw, r["reference_from"], raw_path, name)
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when the doc's table is not what the records give")
    p.add_argument("--add", type=Path, metavar="JSON", help="a benchmark's outputs/benchmarks/<name>.json to promote")
    p.add_argument("--note", help="with --add: why it was run and what differed from the run it replaces")
    p.add_argument("--to", nargs="+", metavar="NAME", help="with --add: the records it updates (default: by source)")
    p.add_argument("--command", help="with --add: the command that ran, where it differs from the record's")
    p.add_argument("--results", type=Path, default=RESULTS, help="the records' folder (default: %(default)s)")
    p.add_argument("--doc", type=Path, default=DOC, help="the page holding the table (default: %(default)s)")
    args = p.parse_args(argv)
    folder, doc = args.results.resolve(), args.doc.resolve()
    records = load(folder)
    if args.add:
        if not args.add.is_file():
            p.error(f"--add {args.add}: no such file (a benchmark writes outputs/benchmarks/<name>.json)")
        if not args.note:
            p.error("--add needs --note: why the benchmark was run again and what differed")
        for name in add(args.add, args.note, args.to, args.command, records):
            (folder / f"{name}.json").write_text(json.dumps(records[name], indent=2, ensure_ascii=False) + "\n")
            print(f"{folder / name}.json: {show(records[name]['value'], records[name])}")
    text = render(doc, records, folder)
    if args.check:
        if text != doc.read_text():
            print(f"{doc} is out of date: run python benchmarks/table.py", file=sys.stderr)
            return 1
        return 0
    doc.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
