"""Demo data for classification: short reviews labelled positive or negative by a rule that depends on word
order (negation, and "but" contrasts); see ``demo_sentiment``."""

from __future__ import annotations

import pathlib
import random

from lmtemplate.files import atomic_write_text

SUBJECTS = {  # subject -> the copula that agrees with it
    "film": "was", "movie": "was", "plot": "was", "story": "was", "ending": "was", "music": "was",
    "script": "was", "acting": "was", "actors": "were", "jokes": "were", "characters": "were", "songs": "were",
}
POSITIVE = ["good", "great", "fine", "funny", "clever", "lovely", "brilliant"]
NEGATIVE = ["bad", "dull", "awful", "boring", "weak", "silly", "poor"]
INTENSIFIERS = ["very", "really", "quite", "truly", "so"]


def _clause(rng: random.Random, subject: str, positive: bool) -> list[str]:
    """``the <subject> was|were [not] [intensifier] <adjective>`` whose meaning is ``positive``."""
    negated = rng.random() < 0.3
    words = ["the", subject, SUBJECTS[subject]] + (["not"] if negated else [])
    if rng.random() < 0.4:
        words.append(rng.choice(INTENSIFIERS))
    return words + [rng.choice(POSITIVE if positive != negated else NEGATIVE)]


def _review(rng: random.Random, positive: bool) -> str:
    first, second = rng.sample(list(SUBJECTS), 2)
    form = rng.random()
    if form < 0.4:
        words = _clause(rng, first, positive)
    elif form < 0.8:  # contrast: the clause after "but" wins
        words = _clause(rng, first, not positive) + ["but"] + _clause(rng, second, positive)
    else:
        words = _clause(rng, first, positive) + ["and"] + _clause(rng, second, positive)
    return " ".join(words)


def demo_sentiment(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` movie-review-like ``(text, label)`` pairs, deterministic in ``(n, seed)``.

    A text is one clause ``the <subject> was|were [not] [intensifier] <adjective>``, or two joined by ``but``
    (of opposite meanings) or ``and`` (of the same), e.g. ``the plot was dull but the actors were not bad``.
    **The last clause decides** the label: "positive" when its adjective is in POSITIVE and no ``not`` precedes
    it, or is in NEGATIVE after a ``not``; else "negative". So the label is a function of the text and of its word
    order (which clause comes last, which adjective a ``not`` belongs to), which a bag of words cannot see.
    Exactly half the examples (rounded up) are positive, in shuffled order; words are lowercase, separated by
    single spaces (37 words in all).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    examples = [(_review(rng, i % 2 == 0), "positive" if i % 2 == 0 else "negative") for i in range(n)]
    rng.shuffle(examples)
    return examples


def write_demo_classification(folder, n_train: int, n_val: int, seed: int) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``train.tsv`` and ``val.tsv`` (header ``text<TAB>label``) of demo_sentiment data into ``folder``, each
    atomically. The splits' seeds are ``2 * seed`` and ``2 * seed + 1``, so they differ (short single-clause texts
    can still occur in both). Returns (train path, val path)."""
    folder = pathlib.Path(folder)
    paths = folder / "train.tsv", folder / "val.tsv"
    for path, n, split_seed in zip(paths, (n_train, n_val), (2 * seed, 2 * seed + 1)):
        rows = "".join(f"{text}\t{label}\n" for text, label in demo_sentiment(n, split_seed))
        atomic_write_text(path, "text\tlabel\n" + rows)
    return paths
