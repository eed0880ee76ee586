"""Every command in README.md and docs/**/*.md runs.

A command is a line of a code block (indented four spaces, or fenced with ```) that starts with
``python -m lmtemplate`` or ``python benchmarks/``; a line ending in ``\\`` continues on the next. The line right
before a block may mark it:

- ``<!-- needs: data: WHY -->`` or ``<!-- needs: gpu: WHY -->``: its commands need files a fresh checkout lacks
  (a data set, a checkpoint, your own files) or a GPU; they are parsed, not run;
- ``<!-- synopsis -->``: the block shows the forms of commands, with placeholders; neither parsed nor run.

The fast test parses every other command (its arguments, and its config where it names one or is ``fit`` /
``config``). The slow test runs each page's commands in order, in a fresh folder holding links to the
repository's configs/, plugins/ and benchmarks/, with the block's ``printf ... > FILE`` lines run before them, in
their quick form: ``fit`` gets ``trainer.max_steps=2 trainer.val_check_interval=2 trainer.limit_val_batches=2``,
``validate`` ``trainer.limit_val_batches=2``, ``test`` ``trainer.limit_test_batches=2``, ``sweep`` fit's (for every
trial) and a benchmark
``--quick``. The own-data test runs the first command of each task page's "Your own data" section on generated
files in the format the section shows.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from lmtemplate.cli import main, parser
from lmtemplate.data.demo.qa import demo_qa
from lmtemplate.data.demo.sentiment import demo_sentiment
from lmtemplate.data.demo.summarization import demo_summaries
from lmtemplate.data.demo.text import demo_lines
from lmtemplate.data.demo.translation import demo_translation
from lmtemplate.run import load_config

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
MARKER = re.compile(r"<!-- (needs: (data|gpu): \S.*|synopsis) -->")
QUICK = {"fit": ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=2"],
         "validate": ["trainer.limit_val_batches=2"], "test": ["trainer.limit_test_batches=2"]}
QUICK["sweep"] = QUICK["fit"]  # the overrides of a sweep go to every trial


@dataclass
class Command:
    page: Path
    line: int
    argv: list[str]  # after ``python -m lmtemplate``, or ``benchmarks/<file>.py ...``
    benchmark: bool
    marker: Optional[str]  # the block's marker, without <!-- -->
    setup: list[str]  # the block's printf lines before this command

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[tuple[Optional[str], list[tuple[int, str]]]]:
    """(marker, [(line number, line)]) of each code block of a page."""
    found, fenced, previous, last = [], False, "", 0
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        fence = line.lstrip().startswith("```")
        if fenced or fence or line.startswith("    "):
            if number != last + 1:
                marker = MARKER.fullmatch(previous.strip())
                found.append((marker.group(1) if marker else None, []))
            found[-1][1].append((number, line.strip()))
            last = number
        fenced ^= fence
        previous = line
    return found


def commands(page: Path) -> list[Command]:
    out = []
    for marker, lines in blocks(page):
        setup, joined = [], []
        for number, line in lines:
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line)
            else:
                joined.append((number, line))
        for number, line in joined:
            if line.startswith("printf "):
                setup.append(line)
            elif line.startswith(("python -m lmtemplate", "python benchmarks/")):
                words = shlex.split(line, comments=True)
                benchmark = words[1] != "-m"
                out.append(Command(page, number, words[1:] if benchmark else words[3:], benchmark, marker, list(setup)))
    return out


ALL = [c for page in PAGES for c in commands(page)]


def test_the_docs_have_commands_and_every_marker_says_why():
    assert len(ALL) > 30 and {c.page.name for c in ALL} >= {"README.md", "summarization.md", "writing-a-task.md"}
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith(("<!-- needs", "<!-- synopsis")):
                assert MARKER.fullmatch(line.strip()), f"{page.relative_to(REPO)}:{number}: {line}"


@pytest.mark.parametrize("command", [c for c in ALL if c.marker != "synopsis"], ids=str)
def test_every_command_parses(command, monkeypatch, clean_registry):
    monkeypatch.chdir(REPO)
    if command.benchmark:
        assert Path(command.argv[0]).is_file()
        return
    args, extra = parser().parse_known_args(command.argv)
    assert all("=" in a and not a.startswith("-") for a in extra), extra
    files = getattr(args, "config", [])  # runs takes folders, not configs
    if command.marker is None and (files or args.verb in ("fit", "config")):
        load_config(files, args.overrides + extra, aside=("sweep",) if args.verb == "sweep" else ())


def quick(command: Command) -> list[str]:
    if command.benchmark:
        return [*command.argv, "--quick"]
    return [*command.argv, *QUICK.get(command.argv[0], [])]


def run(command: Command, folder: Path) -> None:
    for line in command.setup:
        subprocess.run(line, shell=True, check=True, cwd=folder)
    if command.benchmark:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, *quick(command)], cwd=folder, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    else:
        assert main(quick(command)) == 0, str(command)


@pytest.fixture
def folder(tmp_path, monkeypatch, one_thread, clean_registry):
    """A fresh working folder with the repository's configs, plugins and benchmarks."""
    for name in ("configs", "plugins", "benchmarks"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if any(c.marker is None for c in commands(p))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_of_a_page_runs_in_its_quick_form(page, folder):
    for command in commands(page):
        if command.marker is None:
            run(command, folder)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def own_files(task: str, path: Path, n: int, seed: int) -> None:
    """``n`` generated examples at ``path`` (a file, or for a glob two files) in the format the task's section shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if task in ("causal_lm", "masked_lm"):
        for i, name in enumerate(("a", "b")):
            lines = demo_lines(n, seed + i)
            if path.suffix == ".jsonl":
                write_jsonl(path.with_name(f"{name}.jsonl"), [{"body": line} for line in lines])
            else:
                path.with_name(f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif task == "classification":
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("review", "stars"), *((text, f"{label} review") for text, label in
                                                            demo_sentiment(n, seed))])
    elif task == "qa":
        write_jsonl(path, [{**q, "context": p["context"]} for p in demo_qa(n, seed) for q in p["qas"]])
    elif task == "translation":
        path.write_text("en\tfr\n" + "".join(f"{a}\t{b}\n" for a, b in demo_translation(n, seed)), encoding="utf-8")
    else:  # summarization: documents as lists of sentences
        write_jsonl(path, [{"sentences": re.findall(r"[^.]+\.", r["source"]), "summary": r["summary"]}
                           for r in demo_summaries(n, seed)])


OWN = {c.page.stem: c for c in ALL if c.page.parent.name == "tasks" and "-c configs/data/own-" in " ".join(c.argv)
       and c.marker.startswith("needs: data: your own files")}


def test_every_built_in_task_has_an_own_data_section():
    assert sorted(OWN) == ["causal_lm", "classification", "masked_lm", "qa", "summarization", "translation"]
    for command in OWN.values():
        heading = command.page.read_text(encoding="utf-8").splitlines().index("## Your own data") + 1
        assert heading < command.line, command


@pytest.mark.parametrize("task", sorted(OWN))
def test_an_own_data_section_trains_on_generated_files(task, folder):
    command = OWN[task]
    paths = {key: value for key, _, value in (a.partition("=") for a in command.argv) if key in ("data.train", "data.val")}
    for i, (key, path) in enumerate(paths.items()):
        own_files(task, folder / path, 200 if key == "data.train" else 40, i)
    run(command, folder)
    metrics = json.loads(next(folder.glob("outputs/*/version_0/metrics.json")).read_text())
    assert any(key.startswith("val/") for key in metrics)
