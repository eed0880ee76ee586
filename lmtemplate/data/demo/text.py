"""Built-in demo corpus: a tiny English-like grammar a small LM can learn in minutes.

Each line is a paragraph of 1-4 sentences; words and punctuation, separated by single spaces, come from a ~130-word
vocabulary, so a ~512-token byte-level BPE keeps every word whole. What a model can learn:

* agreement -- ``the old dogs near the cat run .`` / ``the cat that the dogs chase sleeps today .``: the main verb
  agrees with the head noun, not with the nearer "attractor" noun of a prepositional phrase or relative clause
  (whose own verb agrees with its own subject).
* dialogue -- ``anna says " the boxes fall . " to ben .``: balanced quotes around an agreement sentence.
* brackets -- ``ben writes ( red [ box ( tree ) ] fox ) .``: balanced, nested ``( )`` and ``[ ]`` up to depth 4.
* counting -- ``cara counts : four five six seven .``: number words counting up by one (from one to twenty).
* long range -- a paragraph that opens with ``dora :`` ends with ``bye dora .``

Lines come one after another from a single ``random.Random(seed)``, so the output is deterministic in ``seed`` and
prefix-stable: ``demo_lines(n, s)[:k] == demo_lines(k, s)`` for ``k <= n``.
"""

from __future__ import annotations

import pathlib
import random

from lmtemplate.files import atomic_write_text

# singular -> plural
NOUNS = {"dog": "dogs", "cat": "cats", "bird": "birds", "tree": "trees", "girl": "girls", "boy": "boys", "box": "boxes",
         "car": "cars", "king": "kings", "fox": "foxes", "house": "houses", "child": "children"}
# plural (base) form -> singular form
INTRANSITIVE = {"sleep": "sleeps", "run": "runs", "sing": "sings", "wait": "waits", "fall": "falls", "smile": "smiles"}
TRANSITIVE = {"chase": "chases", "see": "sees", "like": "likes", "follow": "follows", "help": "helps",
              "watch": "watches"}
ADJECTIVES = ["old", "small", "red", "blue", "happy", "quiet", "big", "green"]
PREPOSITIONS = ["near", "behind", "under", "with", "beside"]
ADVERBS = ["today", "again", "slowly", "here", "now"]
NAMES = ["anna", "ben", "cara", "dora", "emil", "finn", "gus", "hana"]
SAY_VERBS = ["says", "asks", "shouts"]
NUMBERS = ("one two three four five six seven eight nine ten eleven twelve "
           "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
BRACKETS = [("(", ")"), ("[", "]")]
_SINGULAR = list(NOUNS)


def _noun_phrase(rng: random.Random) -> tuple[list[str], bool]:
    """``the [adj] noun`` with a random number; returns (words, is_plural)."""
    plural = rng.random() < 0.5
    sg = rng.choice(_SINGULAR)
    words = ["the"] + ([rng.choice(ADJECTIVES)] if rng.random() < 0.4 else [])
    return words + [NOUNS[sg] if plural else sg], plural


def _verb(rng: random.Random, table: dict[str, str], plural: bool) -> str:
    base = rng.choice(list(table))
    return base if plural else table[base]


def _agreement(rng: random.Random) -> list[str]:
    words, plural = _noun_phrase(rng)
    r = rng.random()
    if r < 0.4:  # prepositional phrase with an attractor noun
        words += [rng.choice(PREPOSITIONS)] + _noun_phrase(rng)[0]
    elif r < 0.8:  # object relative clause; its verb agrees with its own subject
        inner, inner_plural = _noun_phrase(rng)
        words += ["that"] + inner + [_verb(rng, TRANSITIVE, inner_plural)]
    if rng.random() < 0.5:
        words.append(_verb(rng, INTRANSITIVE, plural))
    else:
        words += [_verb(rng, TRANSITIVE, plural)] + _noun_phrase(rng)[0]
    if rng.random() < 0.3:
        words.append(rng.choice(ADVERBS))
    return words + ["."]


def _dialogue(rng: random.Random) -> list[str]:
    speaker, listener = rng.sample(NAMES, 2)
    return [speaker, rng.choice(SAY_VERBS), '"', *_agreement(rng), '"', "to", listener, "."]


def _bracket_items(rng: random.Random, depth: int) -> list[str]:
    items: list[str] = []
    for _ in range(rng.randint(1, 3)):
        if depth < 4 and rng.random() < 0.35:
            left, right = rng.choice(BRACKETS)
            items += [left, *_bracket_items(rng, depth + 1), right]
        else:
            items.append(rng.choice(ADJECTIVES + _SINGULAR))
    return items


def _brackets(rng: random.Random) -> list[str]:
    return [rng.choice(NAMES), "writes", "(", *_bracket_items(rng, 2), ")", "."]


def _counting(rng: random.Random) -> list[str]:
    length = rng.randint(3, 7)
    start = rng.randint(0, len(NUMBERS) - length)
    return [rng.choice(NAMES), "counts", ":", *NUMBERS[start:start + length], "."]


def _paragraph(rng: random.Random) -> str:
    words: list[str] = []
    for kind in rng.choices([_agreement, _dialogue, _brackets, _counting], [0.5, 0.2, 0.15, 0.15], k=rng.randint(1, 4)):
        words += kind(rng)
    if rng.random() < 0.3:  # long-range dependency: the opening name returns at the end
        name = rng.choice(NAMES)
        words = [name, ":", *words, "bye", name, "."]
    return " ".join(words)


def demo_lines(n_lines: int, seed: int = 0) -> list[str]:
    """``n_lines`` demo paragraphs (no newlines inside), deterministic in ``seed`` and prefix-stable."""
    if n_lines < 0:
        raise ValueError(f"n_lines must be >= 0, got {n_lines}")
    rng = random.Random(seed)
    return [_paragraph(rng) for _ in range(n_lines)]


def write_demo_corpus(path, n_lines: int = 25000, seed: int = 0) -> pathlib.Path:
    """Write ``demo_lines(n_lines, seed)`` to ``path``, one per line, atomically (parent folders are created)."""
    path = pathlib.Path(path)
    atomic_write_text(path, "".join(line + "\n" for line in demo_lines(n_lines, seed)))
    return path
