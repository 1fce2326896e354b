"""Classification metrics: hand-computed values, -1 semantics, thresholds, the vectorized bootstrap against
scikit-learn, JSON safety, the baseline, and the offline report."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from medvl.evaluate.classification import (
    ROC_POINTS,
    baseline_probs,
    choose_thresholds,
    classification_metrics,
)
from medvl.evaluate.classification_core import _resample_weights, _weighted_metrics, ranked_metrics
from medvl.evaluate.classification_report import (
    confident_errors,
    format_classification_tables,
    write_classification_report,
)


def _binary(scores, labels, **kwargs):
    return classification_metrics(
        np.asarray(scores, float)[:, None], np.asarray(labels)[:, None], ["abnormal"], multi_label=True, **kwargs
    )


def _random_multilabel(n=200, c=15, seed=0, ignore=0.1):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.25).astype(int)
    targets[rng.random((n, c)) < ignore] = -1
    probs = np.clip(0.35 * (targets == 1) + 0.65 * rng.random((n, c)), 0, 1).round(2)  # rounded: tied scores
    return probs, targets


# ---------------------------------------------------------------------------------------------- hand-computed


def test_binary_perfect_reversed_and_hand_computed_auroc():
    perfect = _binary([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], bootstrap=0)
    assert perfect["headline"] == "auroc"
    assert perfect["auroc"] == perfect["auroc_macro"] == perfect["auroc_micro"] == 1.0
    assert perfect["ap"] == 1.0 and perfect["f1"] == 1.0 and perfect["accuracy"] == 1.0
    assert _binary([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], bootstrap=0)["auroc"] == 0.0
    # Pairs (positive, negative): 0.35 > 0.1 wins, 0.35 < 0.4 loses, 0.8 beats both: 3 of 4.
    # AP: ranked 0.8 (pos, P=1, R=1/2), 0.4 (neg), 0.35 (pos, P=2/3, R=1): 1/2 * 1 + 1/2 * 2/3.
    # At 0.5: only 0.8 called positive: P = 1, R = 1/2, F1 = 2/3; accuracy 3/4; balanced (1/2 + 1) / 2.
    hand = _binary([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], bootstrap=0)
    assert hand["auroc"] == pytest.approx(0.75, abs=1e-12)
    assert hand["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    pc = hand["per_class"]["abnormal"]
    assert (pc["precision"], pc["recall"]) == (1.0, 0.5)
    assert pc["f1"] == pytest.approx(2 / 3) and pc["accuracy"] == 0.75 and pc["balanced_accuracy"] == 0.75
    assert (pc["support_pos"], pc["support_neg"], pc["threshold"]) == (2, 2, 0.5)
    # A tie between a positive and a negative counts half.
    assert _binary([0.5, 0.5, 0.9], [0, 1, 1], bootstrap=0)["auroc"] == pytest.approx(0.75)


def test_average_precision_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    scores = rng.random(50)  # distinct: AP is the mean over positives of the precision at their rank
    labels = (rng.random(50) < 0.4).astype(int)
    order = np.argsort(-scores)
    hits = np.cumsum(labels[order])
    direct = np.mean([hits[k] / (k + 1) for k in range(50) if labels[order][k]])
    assert _binary(scores, labels, bootstrap=0)["ap"] == pytest.approx(direct, abs=1e-12)


def test_multilabel_means_match_sklearn():
    probs, targets = _random_multilabel(n=120, c=5, ignore=0.0)
    r = classification_metrics(probs, targets, list("abcde"), multi_label=True, bootstrap=0)
    assert r["auroc_macro"] == pytest.approx(roc_auc_score(targets, probs, average="macro"), abs=1e-12)
    assert r["auroc_micro"] == pytest.approx(roc_auc_score(targets, probs, average="micro"), abs=1e-12)
    assert r["ap_macro"] == pytest.approx(average_precision_score(targets, probs, average="macro"), abs=1e-12)
    assert r["ap_micro"] == pytest.approx(average_precision_score(targets, probs, average="micro"), abs=1e-12)
    decided = (probs >= 0.5).astype(int)
    assert r["f1_macro"] == pytest.approx(f1_score(targets, decided, average="macro", zero_division=0), abs=1e-12)
    assert r["f1_micro"] == pytest.approx(f1_score(targets, decided, average="micro", zero_division=0), abs=1e-12)
    assert r["accuracy"] == pytest.approx((decided == targets).mean(), abs=1e-12)
    assert r["headline"] == "auroc_macro" and "auroc" not in r


def test_multiclass_crafted_confusion():
    # true 0 x4 (3 right, 1 called 1), true 1 x2 (1 right, 1 called 2), true 2 x4 (all right); one ignored row.
    truth = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    called = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    probs = np.full((11, 3), 0.1)
    probs[np.arange(10), called] = 0.8
    probs[:10] += np.linspace(0, 0.05, 10)[:, None] * np.eye(3)[truth]  # some spread for the AUROCs
    probs /= probs.sum(axis=1, keepdims=True)
    targets = np.vstack([np.eye(3, dtype=int)[truth], [[-1, -1, -1]]])
    r = classification_metrics(probs, targets, ["normal", "benign", "malignant"], multi_label=False, bootstrap=0)
    assert r["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [0, 0, 4]]
    assert r["accuracy"] == pytest.approx(0.8) and r["f1_micro"] == pytest.approx(0.8)
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, called))
    assert r["f1_macro"] == pytest.approx((6 / 7 + 1 / 2 + 8 / 9) / 3)
    assert r["f1_macro"] == pytest.approx(f1_score(truth, called, average="macro"))
    assert r["auroc_macro"] == pytest.approx(roc_auc_score(truth, probs[:10], multi_class="ovr"), abs=1e-12)
    assert (r["n_examples"], r["n_ignored"], r["headline"]) == (10, 1, "accuracy")
    assert r["per_class"]["benign"]["support_pos"] == 2 and "threshold" not in r["per_class"]["benign"]


# ----------------------------------------------------------------------------------------------- ignore (-1)


def test_ignored_entries_are_left_out_per_class():
    probs, targets = _random_multilabel(n=80, c=3, ignore=0.2)
    names = ["a", "b", "c"]
    r = classification_metrics(probs, targets, names, multi_label=True, bootstrap=0)
    for c, name in enumerate(names):
        keep = targets[:, c] >= 0
        alone = _binary(probs[keep, c], targets[keep, c], bootstrap=0)["per_class"]["abnormal"]
        got = r["per_class"][name]
        assert got["support_pos"] + got["support_neg"] == keep.sum()
        for key in ("auroc", "ap", "precision", "recall", "f1", "accuracy", "balanced_accuracy"):
            assert got[key] == pytest.approx(alone[key], abs=1e-12), (name, key)
    # The score of an ignored entry changes nothing.
    moved = probs.copy()
    moved[targets == -1] = 1.0 - moved[targets == -1]
    again = classification_metrics(moved, targets, names, multi_label=True, bootstrap=50)
    first = classification_metrics(probs, targets, names, multi_label=True, bootstrap=50)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert r["n_ignored"] == int((targets == -1).sum())


def test_ignored_multiclass_rows_equal_dropping_them():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    targets = np.eye(3, dtype=int)[truth]
    targets[::7] = -1
    r = classification_metrics(probs, targets, list("xyz"), multi_label=False, bootstrap=100)
    kept = targets[:, 0] >= 0
    d = classification_metrics(probs[kept], targets[kept], list("xyz"), multi_label=False, bootstrap=100)
    assert {k: v for k, v in r.items() if k != "n_ignored"} == {k: v for k, v in d.items() if k != "n_ignored"}
    with pytest.raises(ValueError, match="one-hot"):
        classification_metrics(probs[:2], [[1, 1, 0], [0, 1, 0]], list("xyz"), multi_label=False)
    with pytest.raises(ValueError, match="one-hot"):
        classification_metrics(probs[:1], [[1, -1, 0]], list("xyz"), multi_label=False)


# --------------------------------------------------------------------------------------------------- thresholds


def test_choose_thresholds_maximizes_f1():
    # Cuts from the top: F1 = 2TP / (called + positives) = 2/4, 4/5, 4/6, 6/7, 6/8, 6/9: best calls the top 4.
    scores = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2]
    labels = [1, 1, 0, 1, 0, 0]
    probs = np.column_stack([scores, scores, scores, scores])
    targets = np.column_stack([labels, [0] * 6, [1] * 6, labels])
    targets[4, 3] = -1  # ignored: the cut below 0.6 now falls between 0.6 and 0.2
    th = choose_thresholds(probs, targets)
    assert th[0] == pytest.approx(0.45) and th[3] == pytest.approx(0.4)
    assert th[1] == th[2] == 0.5  # no positive / no negative
    # No threshold does better on the same data (brute force over a fine grid).
    best = max(f1_score(labels, (np.array(scores) >= t).astype(int), zero_division=0) for t in np.linspace(0, 1, 1001))
    r = classification_metrics(probs[:, :1], targets[:, :1], ["a"], multi_label=True, thresholds=th[:1], bootstrap=0)
    assert r["f1"] == pytest.approx(best) == pytest.approx(6 / 7)
    assert r["per_class"]["a"]["threshold"] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="multi-label"):
        classification_metrics(np.full((2, 2), 0.5), [[1, 0], [0, 1]], ["a", "b"], multi_label=False, thresholds=th)


# ------------------------------------------------------------------------------------------- bootstrap and CIs


def test_vectorized_auroc_and_ap_equal_sklearn_on_resamples():
    rng = np.random.default_rng(3)
    scores = rng.random(40).round(1)  # many ties
    positive = rng.random(40) < 0.4
    weights = _resample_weights(40, 30, seed=5)
    auroc, ap = ranked_metrics(scores, positive, weights)
    rows = np.random.default_rng(5).integers(0, 40, size=(30, 40))  # the same draws as the weights
    for b in range(30):
        y, s = positive[rows[b]], scores[rows[b]]
        assert np.bincount(rows[b], minlength=40).tolist() == weights[b].astype(int).tolist()
        if y.all() or not y.any():
            assert math.isnan(auroc[b]) and math.isnan(ap[b])
            continue
        assert abs(auroc[b] - roc_auc_score(y, s)) < 1e-12
        assert abs(ap[b] - average_precision_score(y, s)) < 1e-12


@pytest.mark.parametrize("multi_label", [True, False])
def test_unit_weights_reproduce_the_point_estimates(multi_label):
    if multi_label:
        probs, targets = _random_multilabel(n=90, c=4)
    else:
        rng = np.random.default_rng(4)
        probs, targets = rng.dirichlet(np.ones(4), 90).round(2), np.eye(4, dtype=int)[rng.integers(0, 4, 90)]
        probs = np.clip(probs, 0, 1)
    names = list("abcd")
    th = np.array([0.3, 0.5, 0.6, 0.4])
    r = classification_metrics(probs, targets, names, multi_label, thresholds=th if multi_label else None, bootstrap=0)
    mask = targets >= 0 if multi_label else np.ones_like(targets, dtype=bool)
    decided = (probs >= th) if multi_label else np.eye(4)[probs.argmax(axis=1)]
    w = _weighted_metrics(
        probs, np.clip(targets, 0, 1).astype(float), mask, decided.astype(float), np.ones((1, len(probs))), multi_label
    )
    for key in ("auroc_macro", "auroc_micro", "ap_macro", "ap_micro", "f1_macro", "f1_micro"):
        assert abs(w[key][0] - r[key]) < 1e-12, key
    assert abs(w["accuracy_mean"][0] - r["accuracy"]) < 1e-12
    assert abs(w["balanced_accuracy_mean"][0] - r["balanced_accuracy"]) < 1e-12
    for c, name in enumerate(names):
        for key in ("auroc", "ap", "precision", "recall", "f1", "accuracy", "balanced_accuracy"):
            assert abs(w[key][0, c] - r["per_class"][name][key]) < 1e-12, (name, key)


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    probs, targets = _random_multilabel(n=100, c=4)
    names = list("abcd")
    r = classification_metrics(probs, targets, names, multi_label=True, bootstrap=300, seed=7)
    for key in (
        "auroc_macro",
        "auroc_micro",
        "ap_macro",
        "ap_micro",
        "f1_macro",
        "f1_micro",
        "accuracy",
        "balanced_accuracy",
    ):
        assert r[f"{key}_ci_low"] <= r[key] <= r[f"{key}_ci_high"], key
        assert r[f"{key}_ci_low"] < r[f"{key}_ci_high"], key
    for name in names:
        pc = r["per_class"][name]
        assert pc["auroc_ci_low"] <= pc["auroc"] <= pc["auroc_ci_high"]
    assert r == classification_metrics(probs, targets, names, multi_label=True, bootstrap=300, seed=7)
    other = classification_metrics(probs, targets, names, multi_label=True, bootstrap=300, seed=8)
    assert other["auroc_macro_ci_low"] != r["auroc_macro_ci_low"] and other["auroc_macro"] == r["auroc_macro"]
    assert r["bootstrap"] == {
        "resamples": 300,
        "seed": 7,
        "method": "percentile",
        "level": 0.95,
        "unit": "example",
        "dropped": {},
    }
    none = classification_metrics(probs, targets, names, multi_label=True, bootstrap=0)
    assert not any("_ci_" in k for k in none)
    assert not any("_ci_" in k for pc in none["per_class"].values() for k in pc)


def test_binary_bootstrap_drops_resamples_without_a_positive():
    r = _binary([0.1, 0.2, 0.3, 0.4, 0.9], [0, 0, 0, 0, 1], bootstrap=200)
    assert r["auroc"] == 1.0 and r["auroc_ci_low"] == r["auroc_ci_high"] == 1.0
    assert 0 < r["bootstrap"]["dropped"]["auroc"] < 200  # resamples missing the one positive
    assert r["bootstrap"]["dropped"]["auroc"] == r["bootstrap"]["dropped"]["per_class.abnormal.auroc"]


def test_bootstrap_speed_1000_resamples_200_by_15():
    probs, targets = _random_multilabel(n=200, c=15)
    names = [f"finding {i}" for i in range(15)]
    classification_metrics(probs[:20], targets[:20], names, multi_label=True, bootstrap=2)  # imports
    start = time.perf_counter()
    classification_metrics(probs, targets, names, multi_label=True, bootstrap=1000)
    assert time.perf_counter() - start < 5.0


# ------------------------------------------------------------------------------------------ JSON and undefined


def test_result_is_json_without_nan_and_explains_none():
    probs, targets = _random_multilabel(n=60, c=3)
    targets[:, 1] = np.where(targets[:, 1] == -1, -1, 0)  # no positive
    targets[:, 2] = -1  # nothing labelled
    r = classification_metrics(probs, targets, ["Edema", "Hernia", "Unlabelled"], multi_label=True, bootstrap=100)
    text = json.dumps(r, allow_nan=False)  # raises on NaN or inf
    assert "NaN" not in text
    assert r["per_class"]["Hernia"]["auroc"] is None and r["per_class"]["Hernia"]["f1"] is None
    assert r["per_class"]["Hernia"]["accuracy"] is not None  # defined: it has labelled negatives
    assert r["per_class"]["Hernia"]["auroc_ci_low"] is None
    assert "no positive" in r["unavailable"]["per_class.Hernia"]
    assert "no labelled" in r["unavailable"]["per_class.Unlabelled"]
    assert set(r["roc_curves"]) == {"Edema"}
    assert r["auroc_macro"] == r["per_class"]["Edema"]["auroc"]  # the macro mean over defined classes
    only_negative = _binary([0.1, 0.7], [0, 0], bootstrap=10)
    json.dumps(only_negative, allow_nan=False)
    assert only_negative["auroc"] is None and only_negative["auroc_ci_low"] is None
    assert "auroc" in only_negative["unavailable"] and "auroc_macro" in only_negative["unavailable"]


def test_roc_curves_are_thinned():
    rng = np.random.default_rng(6)
    labels = (rng.random(3000) < 0.5).astype(int)
    scores = np.clip(0.2 * labels + 0.8 * rng.random(3000), 0, 1)
    curve = _binary(scores, labels, bootstrap=0)["roc_curves"]["abnormal"]
    assert 2 < len(curve["fpr"]) == len(curve["tpr"]) <= ROC_POINTS
    assert (curve["fpr"][0], curve["tpr"][0], curve["fpr"][-1], curve["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _binary([-0.5, 2.0], [0, 1])
    with pytest.raises(ValueError, match="1 \\(positive\\), 0 \\(negative\\) or -1"):
        _binary([0.5, 0.5], [0, 2])
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(np.zeros((2, 2)), np.zeros((2, 2)), ["a"], multi_label=True)
    with pytest.raises(ValueError, match="every target is -1"):
        _binary([0.5, 0.5], [-1, -1])


# ---------------------------------------------------------------------------------------------------- baseline


def test_baseline_probs():
    train = np.array([[1, 0], [0, -1], [1, -1], [0, 1]])
    probs = baseline_probs(train, 3)
    assert probs.shape == (3, 2) and probs[:, 0].tolist() == [0.5] * 3 and probs[:, 1].tolist() == [0.5] * 3
    probs = baseline_probs(np.array([[1], [0], [0], [0]]), 5)
    assert probs.ravel().tolist() == [0.25] * 5
    assert _binary(probs.ravel(), [0, 1, 0, 1, 0], bootstrap=0)["auroc"] == 0.5
    multi = baseline_probs(np.eye(3, dtype=int)[[2, 2, 0, 1, 2]].tolist() + [[-1, -1, -1]], 4, multi_label=False)
    assert multi[0].tolist() == pytest.approx([0.2, 0.2, 0.6]) and multi.argmax(axis=1).tolist() == [2] * 4
    r = classification_metrics(multi, np.eye(3, dtype=int)[[2, 0, 2, 1]], list("abc"), multi_label=False, bootstrap=0)
    assert r["accuracy"] == 0.5 and r["auroc_macro"] == 0.5


# ------------------------------------------------------------------------------------------------------ report


def _rows(probs, targets, names, image):
    rows = []
    for i in range(len(probs)):
        rows.append(
            {
                "id": f"study-{i}",
                "image_paths": [str(image) if i % 2 else f"/absent/study-{i}.png"],
                "probabilities": {n: float(p) for n, p in zip(names, probs[i])},
                "labels": {n: int(v) for n, v in zip(names, targets[i])},
                "predicted": [n for n, p in zip(names, probs[i]) if p >= 0.5],
            }
        )
    return rows


def test_report_html_is_offline_and_complete(tmp_path: Path):
    probs, targets = _random_multilabel(n=40, c=3)
    names = ["Cardiomegaly", "Pleural <Effusion>", "Edema"]
    image = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8)).save(image)
    r = classification_metrics(probs, targets, names, multi_label=True, bootstrap=50)
    base = classification_metrics(baseline_probs(targets, 40), targets, names, multi_label=True, bootstrap=50)
    rows = _rows(probs, targets, names, image)
    path = write_classification_report(tmp_path / "out" / "report.html", r, rows, "NIH <test>", baseline=base)
    page = path.read_text(encoding="utf-8")
    assert "Cardiomegaly" in page and "Pleural &lt;Effusion&gt;" in page and "<Effusion>" not in page
    assert "NIH &lt;test&gt;" in page
    assert "<img" in page or "<svg" in page
    assert not re.search(r"https?://", page)
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # everything embedded
    assert "baseline" in page and "auroc_macro (headline)" in page
    assert "/absent/study-" in page  # missing images are shown as their paths
    thumbs = re.findall(r'<img class="thumb" width="(\d+)" height="(\d+)"', page)
    assert thumbs and all(max(int(w), int(h)) <= 128 for w, h in thumbs)  # downscaled
    ranked = confident_errors(rows)
    assert [c for c, _, _ in ranked] == sorted((c for c, _, _ in ranked), reverse=True)
    assert page.index(f'data-id="{ranked[0][1]["id"]}"') < page.index(f'data-id="{ranked[1][1]["id"]}"')


def test_report_multiclass_and_text_tables(tmp_path: Path):
    rng = np.random.default_rng(8)
    truth = rng.integers(0, 3, 50)
    probs = rng.dirichlet(np.ones(3), 50)
    targets = np.eye(3, dtype=int)[truth]
    names = ["normal", "benign", "malignant"]
    r = classification_metrics(probs, targets, names, multi_label=False, bootstrap=50)
    page = write_classification_report(tmp_path / "report.html", r, [], "multi-class").read_text(encoding="utf-8")
    assert "Confusion matrix" in page and all(n in page for n in names) and "<img" in page
    assert not re.search(r"https?://", page)
    base = classification_metrics(
        baseline_probs(targets, 50, multi_label=False), targets, names, multi_label=False, bootstrap=0
    )
    text = format_classification_tables(r, base)
    assert "accuracy *" in text and "baseline" in text and "malignant" in text
    assert f"[{r['accuracy_ci_low']:.4f}, {r['accuracy_ci_high']:.4f}]" in text
    binary = format_classification_tables(_binary([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], bootstrap=20))
    assert binary.splitlines()[2].startswith("auroc *")
