"""EM and F1 as the official SQuAD scripts define them, on hand-made cases and against torchmetrics' SQuAD."""

import pytest
from torchmetrics.text import SQuAD

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
