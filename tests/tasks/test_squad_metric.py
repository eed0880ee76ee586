"""EM and F1 as the official SQuAD scripts define them, on hand-made cases, against torchmetrics' SQuAD and
against the official v1.1 evaluation loop; which rule a data file is scored by."""

import json
import random
import re
import string
from collections import Counter

import pytest
from torchmetrics.text import SQuAD

from lmtemplate.data.squad import read_squad, squad_version
from lmtemplate.tasks.squad_metric import exact_match, f1, normalize_answer, squad_scores


@pytest.mark.parametrize("text, normal", [
    ("The Eiffel Tower", "eiffel tower"),
    ("an apple, a pear & the plum!", "apple pear plum"),
    ("  Denver   Broncos\n", "denver broncos"),
    ("theatre anthem", "theatre anthem"),  # articles only as whole words
    ("U.S.", "us"),
    ("", ""),
])
def test_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_f1_on_hand_made_cases():
    assert exact_match("the Broncos", "Broncos.") == 1.0
    assert exact_match("Denver Broncos", "Broncos") == 0.0
    assert f1("Denver Broncos", "Broncos") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert f1("x y y", "y y z") == pytest.approx(2 / 3)  # bag-of-words overlap counts repeats
    assert f1("Paris", "London") == 0.0
    assert f1("", "London") == 0.0 and exact_match("", "London") == 0.0
    assert f1("", "") == 1.0 and f1("the", "") == 1.0  # both normalise to nothing


def test_best_over_gold_answers_and_percentages():
    golds = {"1": ["Denver Broncos", "Broncos"], "2": ["1990"], "3": ["Santa Clara, California", "Levi's Stadium"]}
    predictions = {"1": "broncos", "2": "in 1990", "3": "Levi's Stadium in Santa Clara"}
    scores = squad_scores(predictions, golds)
    assert scores["exact"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + max(2 * (2 / 5) * 1 / (2 / 5 + 1), 2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))) / 3)
    assert set(scores) == {"exact", "f1"}  # no unanswerable question: no HasAns / NoAns split


def test_agrees_with_torchmetrics_squad():
    golds = {"a": ["The Panthers", "Carolina Panthers"], "b": ["four"], "c": ["Gold Coast, Australia"], "d": ["1,000"]}
    predictions = {"a": "Panthers", "b": "four times", "c": "the gold coast", "d": "1000"}
    ours = squad_scores(predictions, golds)
    theirs = SQuAD()(
        [{"prediction_text": p, "id": k} for k, p in predictions.items()],
        [{"answers": {"answer_start": [0] * len(g), "text": g}, "id": k} for k, g in golds.items()],
    )
    assert ours["exact"] == pytest.approx(float(theirs["exact_match"]))
    assert ours["f1"] == pytest.approx(float(theirs["f1"]), abs=1e-4)


def test_unanswerable_questions_split_has_and_no_answer():
    golds = {"1": ["Oslo"], "2": [], "3": [], "4": ["Lima"]}
    predictions = {"1": "Oslo", "2": "", "3": "Lima", "4": ""}
    scores = squad_scores(predictions, golds)
    assert scores == pytest.approx({"exact": 50.0, "f1": 50.0, "HasAns_exact": 50.0, "HasAns_f1": 50.0,
                                    "NoAns_exact": 50.0, "NoAns_f1": 50.0})


def test_scores_only_the_questions_predicted():
    assert squad_scores({"2": "x"}, {"1": ["a"], "2": ["x"]}) == {"exact": 100.0, "f1": 100.0}


@pytest.mark.parametrize("prediction, v11, v20", [
    ("", (100.0, 0.0), (100.0, 100.0)),  # v1.1 keeps the gold "."; its F1 of two empty answers is 0
    ("the", (100.0, 0.0), (100.0, 100.0)),
    ("a dot", (0.0, 0.0), (0.0, 0.0)),
])
def test_a_gold_answer_that_normalises_to_nothing_by_each_rule(prediction, v11, v20):
    for version, (em, f) in (("1.1", v11), ("2.0", v20)):
        assert squad_scores({"q": prediction}, {"q": ["."]}, version) == {"exact": em, "f1": f}


def test_multiple_golds_some_normalising_to_nothing():
    golds = {"1": [".", "The Alps", "the"], "2": ["!", "Rhine river"]}
    predictions = {"1": "", "2": "river"}
    assert squad_scores(predictions, golds, "1.1") == pytest.approx({"exact": 50.0, "f1": 100 * (2 / 3) / 2})
    assert squad_scores(predictions, golds, "2.0") == pytest.approx({"exact": 0.0, "f1": 100 * (2 / 3) / 2})


def test_an_unanswerable_question_is_scored_by_v2_only():
    golds = {"1": [], "2": ["Oslo"]}
    assert squad_scores({"1": "", "2": "Oslo"}, golds, "2.0") == {
        "exact": 100.0, "f1": 100.0, "HasAns_exact": 100.0, "HasAns_f1": 100.0, "NoAns_exact": 100.0, "NoAns_f1": 100.0}
    assert squad_scores({"1": "the", "2": "Oslo"}, golds, "2.0")["NoAns_exact"] == 100.0
    with pytest.raises(ValueError, match="v1.1 has no unanswerable"):
        squad_scores({"1": ""}, golds, "1.1")
    with pytest.raises(ValueError, match="expected one of 1.1, 2.0"):
        squad_scores({"2": ""}, golds, "v2.0")


def official_v11(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """The official v1.1 evaluate() loop, rewritten from its definition: the best over the gold answers of
    exact match and token F1 (0 without a common token), averaged as percentages."""
    def normalize(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def f1_score(prediction, truth):
        pred, ref = normalize(prediction).split(), normalize(truth).split()
        same = sum((Counter(pred) & Counter(ref)).values())
        if same == 0:
            return 0
        precision, recall = same / len(pred), same / len(ref)
        return 2 * precision * recall / (precision + recall)

    def exact_match_score(prediction, truth):
        return normalize(prediction) == normalize(truth)

    em = f = total = 0
    for qid, truths in golds.items():
        total += 1
        em += max(exact_match_score(predictions[qid], t) for t in truths)
        f += max(f1_score(predictions[qid], t) for t in truths)
    return {"exact": 100.0 * em / total, "f1": 100.0 * f / total}


def test_the_v11_rule_equals_the_official_v11_loop_on_random_cases():
    rng = random.Random(0)
    words = ["the", "a", "an", "Alps", "alps", "river", "Rhine", ".", "!", "1,000", "1000", "U.S.", ""]

    def text() -> str:
        return rng.choice([" ", "", ", "]).join(rng.choices(words, k=rng.randint(0, 3)))

    for _ in range(300):
        golds = {str(q): [text() for _ in range(rng.randint(1, 3))] for q in range(rng.randint(1, 4))}
        predictions = {q: text() for q in golds}
        ours = squad_scores(predictions, golds, "1.1")
        assert ours == official_v11(predictions, golds), (predictions, golds)
        assert all(type(v) is float for v in ours.values())


def write_squad(tmp_path, name: str, answers: list, version=None):
    qas = [{"id": str(i), "question": "Where?", "answers": [{"text": a, "answer_start": 0} for a in group]}
           for i, group in enumerate(answers)]
    if name.endswith(".jsonl"):
        rows = [{**q, "context": "Oslo is north."} for q in qas]
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        data = {"data": [{"paragraphs": [{"context": "Oslo is north.", "qas": qas}]}]}
        text = json.dumps({**data, "version": version} if version else data)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, answers, declared, version", [
    ("v11.json", [["Oslo"]], "1.1", "1.1"),
    ("v20.json", [["Oslo"]], "v2.0", "2.0"),  # declared v2.0 though every question has an answer
    ("none.json", [["Oslo"], []], "1.1", "2.0"),  # an unanswerable question is v2.0 whatever is declared
    ("bare.json", [["Oslo"]], None, "1.1"),
    ("rows.jsonl", [["Oslo"]], None, "1.1"),
    ("rows2.jsonl", [["Oslo"], []], None, "2.0"),
])
def test_the_scoring_rule_follows_the_data(tmp_path, name, answers, declared, version):
    path = write_squad(tmp_path, name, answers, declared)
    assert squad_version(path, read_squad(path)) == version


def test_scores_do_not_depend_on_the_order_the_predictions_come_in():
    """DDP gathers each rank's answers: the scores must be those of one process, to the last bit (the sum runs in
    the data's order, as the official script's does)."""
    words = [f"w{i}" for i in range(12)]
    golds = {str(q): [" ".join(words[: 2 + q % 9])] for q in range(60)}
    predictions = {q: " ".join(words[q_i % 5: 3 + q_i % 7]) for q_i, q in enumerate(golds)}
    reordered = dict(reversed(predictions.items()))
    assert squad_scores(reordered, golds) == squad_scores(predictions, golds)
