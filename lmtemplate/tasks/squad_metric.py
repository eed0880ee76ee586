"""Exact match and F1 as the official SQuAD evaluation scripts compute them (v1.1 and v2.0), as percentages.

The two scripts differ where an answer normalises to nothing (a gold answer ".", a prediction "the"). v1.1 keeps
such gold answers, and its F1 of two empty answers is 0; v2.0 drops them (a question left without any is scored
against the empty answer), and its F1 of two empty answers is 1. Exact match is the same in both.
"""

from __future__ import annotations

import re
import string
from collections import Counter

PUNCTUATION = set(string.punctuation)
VERSIONS = ("1.1", "2.0")  # the official scripts, whose rules differ on answers that normalise to nothing


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version: str = "2.0") -> float:
    """Bag-of-words F1; two empty answers score 1 by v2.0's rule and 0 by v1.1's."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version == "2.0" and (not pred or not ref):
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def scored_golds(answers: list[str], version: str) -> list[str]:
    """The gold answers a question is scored against, by ``version``'s rule (the module docstring says which)."""
    if version not in VERSIONS:
        raise ValueError(f"SQuAD version: expected one of {', '.join(VERSIONS)}, got {version!r}")
    if version == "2.0":
        return [a for a in answers if normalize_answer(a)] or [""]
    if not answers:
        raise ValueError("SQuAD v1.1 has no unanswerable questions: score data with any by v2.0's rule")
    return answers


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]], version: str = "2.0") -> dict[str, float]:
    """``exact`` and ``f1`` over the questions in ``predictions`` by the rule of the official script
    ``version`` ("1.1" or "2.0"); with unanswerable questions among them also ``HasAns_*`` / ``NoAns_*``
    (the v2.0 script's split). Every value is a Python float."""
    rows = {"": [], "HasAns_": [], "NoAns_": []}  # the key prefix of each split's scores
    # In the data's order, as the official script sums, whatever order the predictions came in (gathered from ranks).
    for qid in (q for q in golds if q in predictions):
        prediction = predictions[qid]
        answers = scored_golds(golds[qid], version)
        row = (max(exact_match(prediction, a) for a in answers), max(f1(prediction, a, version) for a in answers))
        rows[""].append(row)
        rows["HasAns_" if golds[qid] else "NoAns_"].append(row)
    out = {}
    for prefix, values in rows.items():
        if values and (not prefix or rows["NoAns_"]):
            out[f"{prefix}exact"] = 100 * sum(v[0] for v in values) / len(values)
            out[f"{prefix}f1"] = 100 * sum(v[1] for v in values) / len(values)
    return out
