"""VQA answer normalization, closed/open/overall accuracy with CIs, and the majority baselines."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.evaluate.vqa import MajorityBaseline, format_vqa, majority_baselines, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Yes.", "yes"),
        ("YEAH", "yes"),
        ("nope", "no"),
        ("False", "no"),
        ("The left lung", "left lung"),
        ("an MRI!", "mri"),
        ("A", ""),
        ("Two", "2"),
        ("twenty", "20"),
        (4, "4"),
        ("1,000 mm", "1000 mm"),
        ("2.5 cm", "2.5 cm"),
        ("end.", "end"),
        ("X-ray", "x ray"),
        ("T2-weighted", "t2 weighted"),
        ("don't", "dont"),
        ("  right   side ", "right side"),
        (None, ""),
    ],
)
def test_normalize_answer(raw: object, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_accuracy_closed_open_and_per_type() -> None:
    preds = ["Yes", "no", "left", "Two", "liver", "yes"]
    answers = ["yes.", "yes", "Left", "2", "spleen", "Yes"]
    types = ["CLOSED", "closed", "open", "open", "open", "closed"]
    qtypes = ["PRES", "PRES", "POS", "COUNT", "ORGAN", "ABN"]
    r = vqa_accuracy(preds, answers, types, qtypes, bootstrap=200, seed=1)
    assert (r["n"], r["n_closed"], r["n_open"]) == (6, 3, 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["closed_accuracy"] == pytest.approx(2 / 3)
    assert r["open_accuracy"] == pytest.approx(2 / 3)
    assert r["per_question_type"]["PRES"] == {"n": 2, "accuracy": 0.5, "closed_accuracy": 0.5, "open_accuracy": None}
    assert r["per_question_type"]["COUNT"]["accuracy"] == 1.0
    for key in ("accuracy", "closed_accuracy", "open_accuracy"):
        assert 0 <= r[f"{key}_ci_low"] <= r[key] <= r[f"{key}_ci_high"] <= 1
    assert r["accuracy_ci_low"] < r["accuracy_ci_high"]


def test_bootstrap_matches_a_direct_resampling() -> None:
    rng = np.random.default_rng(0)
    n = 50
    correct = rng.random(n) < 0.6
    answers = ["yes"] * n
    preds = ["yes" if c else "no" for c in correct]
    r = vqa_accuracy(preds, answers, ["closed"] * n, bootstrap=300, seed=7)
    rows = np.random.default_rng(7).integers(0, n, size=(300, n))  # the draws of classification._resample_weights
    direct = correct[rows].mean(axis=1)
    assert r["accuracy_ci_low"] == pytest.approx(np.percentile(direct, 2.5))
    assert r["accuracy_ci_high"] == pytest.approx(np.percentile(direct, 97.5))


def test_group_without_questions_and_errors() -> None:
    r = vqa_accuracy(["a"], ["a"], ["open"], bootstrap=10)
    assert r["closed_accuracy"] is None and r["closed_accuracy_ci_low"] is None and r["open_accuracy"] == 1.0
    with pytest.raises(ValueError, match="closed or open"):
        vqa_accuracy(["a"], ["a"], ["other"])
    with pytest.raises(ValueError, match="2 entries but there are 1"):
        vqa_accuracy(["a", "b"], ["a"], ["open"])
    with pytest.raises(ValueError, match="no question"):
        vqa_accuracy([], [], [])


def test_majority_baseline_per_answer_and_question_type() -> None:
    train = {
        "answers": ["yes", "Yes", "no", "left", "left", "right", "no", "2", "No."],
        "answer_types": ["closed", "closed", "closed", "open", "open", "open", "closed", "open", "closed"],
        "question_types": ["PRES", "PRES", "PRES", "POS", "POS", "POS", "SIZE", "COUNT", "ABN"],
    }
    fitted = MajorityBaseline.fit(**train)
    assert fitted.by_pair[("closed", "PRES")] == "yes"
    assert fitted.by_pair[("open", "POS")] == "left"
    assert fitted.overall == "no"  # 3 no vs 2 yes vs 2 left, counted after normalization
    # an unseen pair falls back to its answer type's majority, then the overall one
    assert fitted.predict(["closed", "open"], ["PLANE", "PRES"]) == ["no", "left"]
    test = {
        "answers": ["yes", "no", "left", "right"],
        "answer_types": ["closed", "closed", "open", "open"],
        "question_types": ["PRES", "PRES", "POS", "POS"],
    }
    b = majority_baselines(train, test, bootstrap=0)
    assert b["majority_per_question_type"]["accuracy"] == 0.5
    assert b["majority_per_question_type"]["closed_accuracy"] == 0.5
    assert b["majority_overall"]["answer"] == "no" and b["majority_overall"]["accuracy"] == 0.25
    assert "majority_per_question" not in b  # no question texts given


def test_majority_per_question_is_the_blind_prior_of_each_question() -> None:
    """Two presence questions of one type with opposite priors: the per-type majority gets one of them right, the
    per-question majority (a model that never looks at the image) both; an unseen question falls back to its type."""
    train = {
        "answers": ["yes", "yes", "no", "no", "no", "no"],
        "answer_types": ["closed"] * 6,
        "question_types": ["presence"] * 6,
        "questions": ["Is the heart enlarged?", "is the heart enlarged", "is the heart enlarged?"]
        + ["is there a pneumothorax?"] * 3,
    }
    test = {
        "answers": ["yes", "no", "no"],
        "answer_types": ["closed"] * 3,
        "question_types": ["presence"] * 3,
        "questions": ["is the heart enlarged?", "is there a pneumothorax?", "is there edema?"],
    }
    b = majority_baselines(train, test, bootstrap=0)
    assert b["majority_per_question_type"]["accuracy"] == pytest.approx(2 / 3)  # "no" throughout
    assert b["majority_per_question"]["accuracy"] == 1.0  # heart: yes (2 of 3 after normalization); the rest: no
    with pytest.raises(ValueError, match="questions has 1 entries"):
        majority_baselines(train, {**test, "questions": test["questions"][:1]}, bootstrap=0)


def test_majority_tie_is_independent_of_order() -> None:
    a = MajorityBaseline.fit(["c", "b"], ["open", "open"], ["X", "X"])
    b = MajorityBaseline.fit(["b", "c"], ["open", "open"], ["X", "X"])
    assert a.by_pair == b.by_pair == {("open", "X"): "b"}


def test_format_vqa_table() -> None:
    r = vqa_accuracy(
        ["yes", "no", "left"],
        ["yes", "yes", "left"],
        ["closed", "closed", "open"],
        ["PRES", "PRES", "POS"],
        bootstrap=50,
    )
    text = format_vqa(
        r, {"majority": vqa_accuracy(["yes"] * 3, ["yes", "yes", "left"], ["closed", "closed", "open"], bootstrap=0)}
    )
    lines = text.splitlines()
    assert lines[1].split()[-2:] == ["model", "majority"]
    assert lines[2].split()[:3] == ["overall", "3", "66.7"] and lines[2].split()[-1] == "66.7"
    assert lines[3].split()[:3] == ["closed", "2", "50.0"] and lines[3].split()[-1] == "100.0"
    assert any(line.split()[:3] == ["POS", "1", "100.0"] for line in lines)
