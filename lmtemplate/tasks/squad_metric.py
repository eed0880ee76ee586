"""Exact match and F1 as the official SQuAD evaluation scripts compute them (v1.1 and v2.0).

Answers are normalised first: lower case, punctuation removed, the articles
a / an / the removed, white space collapsed. Each question scores the best over
its gold answers; a question without gold answers (v2.0) is right only when the
prediction is empty. Scores are percentages, as the leaderboard reports them.
"""

from __future__ import annotations

import re
import string
from collections import Counter

PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """``exact`` and ``f1`` over the questions in ``predictions``; with unanswerable questions among
    them also ``HasAns_*`` / ``NoAns_*`` (the v2.0 script's split)."""
    rows = {"all": [], "HasAns": [], "NoAns": []}
    for qid, prediction in predictions.items():
        answers = [a for a in golds[qid] if normalize_answer(a)] or [""]
        row = (max(exact_match(prediction, a) for a in answers), max(f1(prediction, a) for a in answers))
        rows["all"].append(row)
        rows["HasAns" if golds[qid] else "NoAns"].append(row)
    out = {}
    for split, values in rows.items():
        if values and (split == "all" or rows["NoAns"]):
            prefix = "" if split == "all" else f"{split}_"
            out[f"{prefix}exact"] = 100 * sum(v[0] for v in values) / len(values)
            out[f"{prefix}f1"] = 100 * sum(v[1] for v in values) / len(values)
    return out
