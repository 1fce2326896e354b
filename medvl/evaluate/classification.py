"""Metrics of an image classifier: per-class AUROC and average precision, F1 at chosen thresholds, accuracy and
balanced accuracy, macro and micro means, bootstrap 95% confidence intervals.

Contract: `classification_metrics(probs, targets, class_names, multi_label=...)` returns one JSON-ready dict (the
metrics.json of a classification evaluation). Inputs are `probs` float [N, C] in [0, 1] and `targets` int [N, C]:

- multi-label (sigmoid outputs): each entry is 1 (positive), 0 (negative) or -1 (ignored: missing, or uncertain
  under CheXpert's U-Ignore policy). Each class is scored on its own labelled entries; decisions are
  `probs >= threshold` per class (0.5 unless `thresholds` are given, e.g. from `choose_thresholds` on validation).
  Binary classification (normal/abnormal) is the case C = 1: its headline is `auroc`.
- multi-class (softmax outputs): each row is one-hot, or all -1 (the whole example is ignored); the decision is the
  argmax. Per-class AUROC/AP are one-vs-rest.

Which classes a metric is defined for (undefined values are None, never NaN, with the reason in `unavailable`):
AUROC, AP and balanced accuracy need a positive and a negative; precision, recall and F1 need a positive
(precision is 0 when nothing is predicted positive, sklearn's `zero_division=0`, as in `medvl.evaluate.clinical`);
accuracy needs a labelled entry. A macro mean is the unweighted mean over the classes where the metric is defined;
a micro value pools every labelled (example, class) entry. Multi-label `accuracy` and `balanced_accuracy` are the
macro means of the per-class values. For multi-class, `accuracy` is the share of examples whose argmax is the true
class, `balanced_accuracy` is sklearn's (the mean recall over the classes present), `f1_macro` is over the same
classes, and `f1_micro` equals `accuracy`. `n_examples` counts the examples with at least one label; `n_ignored`
counts the ignored entries (multi-label) or rows (multi-class).

Binary detection (C = 1, the medicane seed's scores, at the decision threshold): `pod` (probability of detection,
hits / (hits + misses), the recall), `far` (false alarm ratio, false alarms / (hits + false alarms)), `csi` (critical
success index, hits / (hits + misses + false alarms)), `hss` (Heidke skill score, 2 (H C - M F) / ((H + M)(M + C) +
(H + F)(F + C)), 0 for a chance forecast, 1 perfect), each with its interval as the other flat keys, and
`contingency` {hits, misses, false_alarms, correct_negatives}. `far` is undefined when nothing is called positive,
`pod` when there is no positive, `hss` when the denominator is 0 (a constant forecast of a one-class set).

Flat keys: `auroc_macro`, `auroc_micro`, `ap_macro`, `ap_micro`, `f1_macro`, `f1_micro`, `accuracy`,
`balanced_accuracy` (binary adds `auroc`, `ap`, `f1`); `headline` names the one to quote first. With `bootstrap` > 0
each has `_ci_low` / `_ci_high`: a percentile 95% interval over seeded resamples of examples (drawn as in
`medvl.evaluate.scoring`), each resample recomputing the metric; resamples where it is undefined (no positive of a
class drawn, say) are dropped and counted in `bootstrap["dropped"]`. Also: `per_class` {name: {support_pos,
support_neg, auroc, auroc_ci_low, auroc_ci_high, ap, precision, recall, f1, accuracy, balanced_accuracy,
threshold}}, `roc_curves` {name: {fpr, tpr}} (at most `ROC_POINTS` points), `confusion_matrix` (multi-class: rows
true, columns predicted), `n_examples`, `n_ignored`, `multi_label`, `class_names`, `unavailable`.

Why two implementations: the point estimates come from scikit-learn (`roc_auc_score`, `average_precision_score`,
`precision_recall_fscore_support`, `balanced_accuracy_score`, `confusion_matrix`). Calling those 1,000 times per
class and per mean would take minutes, so the bootstrap instead computes every metric for all resamples at once from
counts weighted by how often each example is drawn (`medvl.evaluate.classification_core`, which also checks the
inputs and makes the decisions): the same numbers, checked against scikit-learn on resampled data to 1e-12.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# choose_thresholds, detection_scores and ranked_metrics live in classification_core; they are re-exported here, where
# they have always been imported from (and are listed in __all__).
from medvl.evaluate.classification_core import (
    CI_LEVEL,
    _bootstrap,
    _check_inputs,
    _check_one_hot,
    _decisions,
    _interval,
    choose_thresholds,
    detection_scores,
    ranked_metrics,
)

ROC_POINTS = 200  # the most points kept per ROC curve in the result (it is written as JSON and drawn in report.html)
# The flat metric keys in display order; binary (C = 1) adds `auroc`, `ap` and `f1` in front.
BINARY_KEYS = ("auroc", "ap", "f1")
DETECTION_KEYS = ("pod", "far", "csi", "hss")
MEAN_KEYS = (
    "auroc_macro",
    "auroc_micro",
    "ap_macro",
    "ap_micro",
    "f1_macro",
    "f1_micro",
    "accuracy",
    "balanced_accuracy",
)


# ------------------------------------------------------------------------------------------------ point estimates


def _float_or_none(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _thin(fpr: np.ndarray, tpr: np.ndarray, points: int = ROC_POINTS) -> dict[str, list[float]]:
    if len(fpr) > points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, points).round().astype(int))  # keeps both ends
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


def _class_scores(p: np.ndarray, y: np.ndarray, decided: np.ndarray) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The per-class point estimates (scikit-learn) of one class's labelled entries, and its ROC curve."""
    from sklearn.metrics import (
        average_precision_score,
        balanced_accuracy_score,
        precision_recall_fscore_support,
        roc_auc_score,
        roc_curve,
    )

    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    scores: dict[str, Any] = dict.fromkeys(
        ("auroc", "ap", "precision", "recall", "f1", "accuracy", "balanced_accuracy")
    )
    curve = None
    if n_pos + n_neg:
        scores["accuracy"] = float((decided == y).mean())
    if n_pos:
        precision, recall, f1, _ = precision_recall_fscore_support(y, decided, average="binary", zero_division=0)
        scores.update(precision=float(precision), recall=float(recall), f1=float(f1))
    if n_pos and n_neg:
        scores["auroc"] = float(roc_auc_score(y, p))
        scores["ap"] = float(average_precision_score(y, p))
        scores["balanced_accuracy"] = float(balanced_accuracy_score(y, decided))
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
        curve = _thin(fpr, tpr)
    return {"support_pos": n_pos, "support_neg": n_neg, **scores}, curve


def _class_reason(name: str, n_pos: int, n_neg: int) -> str | None:
    if n_pos and n_neg:
        return None
    if not n_pos and not n_neg:
        return f"{name} has no labelled example: every metric of it is None"
    missing, given = ("positive", f"{n_neg} negative") if not n_pos else ("negative", f"{n_pos} positive")
    lost = "AUROC, AP, balanced accuracy, precision, recall and F1" if not n_pos else "AUROC, AP and balanced accuracy"
    return f"{name} has no {missing} example ({given}): its {lost} are None"


def _mean_of(per_class: dict[str, dict[str, Any]], key: str) -> float | None:
    values = [v[key] for v in per_class.values() if v[key] is not None]
    return float(np.mean(values)) if values else None


def _micro(probs: np.ndarray, truth: np.ndarray, mask: np.ndarray, decided: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    y, p, d = truth[mask], probs[mask], decided[mask]
    out: dict[str, float | None] = {"auroc_micro": None, "ap_micro": None, "f1_micro": None}
    if y.any():
        out["f1_micro"] = float(f1_score(y, d, zero_division=0))
        if not y.all():
            out["auroc_micro"] = float(roc_auc_score(y, p))
            out["ap_micro"] = float(average_precision_score(y, p))
    return out


# ------------------------------------------------------------------------------------------------------ public API


def classification_metrics(
    probs: Any,
    targets: Any,
    class_names: Sequence[str],
    multi_label: bool,
    thresholds: Any = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """All classification metrics of one split, with bootstrap 95% intervals (see the module docstring for keys).

    Args:
        probs: float [N, C] probabilities in [0, 1] (sigmoid outputs for multi-label, softmax for multi-class).
        targets: int [N, C]. Multi-label: 1, 0, or -1 (ignored) per entry. Multi-class: one-hot rows, or rows of -1
            (the example is ignored).
        class_names: C names, in column order.
        multi_label: True for independent sigmoid outputs (binary is C = 1), False for one softmax over classes.
        thresholds: multi-label only: C decision thresholds (default 0.5 each), e.g. `choose_thresholds` on
            validation. Multi-class decides by argmax.
        bootstrap: number of resamples of examples for the 95% intervals; 0 for none (no `_ci_` keys).
        seed: seed of the resampling (the same inputs and seed give the same intervals).

    Returns:
        The metrics dict; JSON-serializable, with None (and a reason in `unavailable`) where a value is undefined.

    Raises:
        ValueError: on mismatched shapes or names, probabilities outside [0, 1], targets other than 1/0/-1, a
            multi-class row that is not one-hot, fewer than 2 classes for multi-class, thresholds for multi-class or
            of the wrong length, a negative `bootstrap`, or no labelled example at all.
    """
    from sklearn.metrics import confusion_matrix

    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique; got {names}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    p, t = _check_inputs(probs, targets, len(names))
    p, truth, mask, decided, th, n_ignored = _decisions(p, t, multi_label, thresholds)

    unavailable: dict[str, str] = {}
    per_class: dict[str, dict[str, Any]] = {}
    roc_curves: dict[str, dict[str, list[float]]] = {}
    for c, name in enumerate(names):
        keep = mask[:, c]
        scores, curve = _class_scores(p[keep, c], truth[keep, c], decided[keep, c])
        if th is not None:
            scores["threshold"] = float(th[c])
        per_class[name] = scores
        if curve is not None:
            roc_curves[name] = curve
        reason = _class_reason(name, scores["support_pos"], scores["support_neg"])
        if reason:
            unavailable[f"per_class.{name}"] = reason
    point = _point_means(per_class, p, truth, mask, decided, multi_label)
    binary = multi_label and len(names) == 1
    result: dict[str, Any] = {
        "multi_label": bool(multi_label),
        "n_examples": int(len(p)),
        "n_ignored": n_ignored,
        "class_names": names,
        "headline": "auroc" if binary else "auroc_macro" if multi_label else "accuracy",
    }
    resampled = (
        _bootstrap(p, truth.astype(np.float64), mask, decided.astype(np.float64), multi_label, bootstrap, seed)
        if bootstrap
        else None
    )
    dropped: dict[str, int] = {}
    for key in (*BINARY_KEYS, *MEAN_KEYS) if binary else MEAN_KEYS:
        result[key] = point[key]
        if point[key] is None:
            unavailable[key] = _undefined_reason(key)
        if resampled is not None:
            values = resampled[key][:, 0] if key in BINARY_KEYS else resampled[_RESAMPLED.get(key, key)]
            interval = _interval(values) if point[key] is not None else (None, None, 0)
            result[f"{key}_ci_low"], result[f"{key}_ci_high"] = interval[:2]
            if interval[2]:
                dropped[key] = interval[2]
            if point[key] is not None and interval[0] is None:
                unavailable[f"{key}_ci"] = f"{key} is undefined in every bootstrap resample"
    if binary:
        _add_detection(result, truth[mask[:, 0], 0], decided[mask[:, 0], 0], resampled, unavailable, dropped)
    for c, name in enumerate(names):
        if resampled is not None:
            pc = per_class[name]
            interval = _interval(resampled["auroc"][:, c]) if pc["auroc"] is not None else (None, None, 0)
            pc["auroc_ci_low"], pc["auroc_ci_high"] = interval[:2]
            if interval[2]:
                dropped[f"per_class.{name}.auroc"] = interval[2]
    result["per_class"] = per_class
    result["roc_curves"] = roc_curves
    if not multi_label:
        result["confusion_matrix"] = confusion_matrix(
            truth.argmax(axis=1), decided.argmax(axis=1), labels=list(range(len(names)))
        ).tolist()
    result["bootstrap"] = {
        "resamples": int(bootstrap),
        "seed": int(seed),
        "method": "percentile",
        "level": CI_LEVEL,
        "unit": "example",
        "dropped": dropped,
    }
    result["unavailable"] = unavailable
    return result


def _add_detection(
    result: dict[str, Any],
    y: np.ndarray,
    d: np.ndarray,
    resampled: dict[str, np.ndarray] | None,
    unavailable: dict[str, str],
    dropped: dict[str, int],
) -> None:
    """The binary detection scores (`DETECTION_KEYS`) and the contingency table, with their intervals."""
    hits, misses = int(((y == 1) & (d == 1)).sum()), int(((y == 1) & (d == 0)).sum())
    false_alarms, correct = int(((y == 0) & (d == 1)).sum()), int(((y == 0) & (d == 0)).sum())
    result["contingency"] = {"hits": hits, "misses": misses, "false_alarms": false_alarms, "correct_negatives": correct}
    point = detection_scores(hits, false_alarms, misses, correct)
    for key in DETECTION_KEYS:
        value = _float_or_none(float(point[key]))
        result[key] = value
        if value is None:
            unavailable[key] = f"{key} is undefined for this contingency table {result['contingency']}"
        if resampled is not None:
            interval = _interval(resampled[key][:, 0]) if value is not None else (None, None, 0)
            result[f"{key}_ci_low"], result[f"{key}_ci_high"] = interval[:2]
            if interval[2]:
                dropped[key] = interval[2]


# The bootstrap arrays behind flat keys whose name differs (the per-class arrays `accuracy` etc. are [B, C]).
_RESAMPLED = {"accuracy": "accuracy_mean", "balanced_accuracy": "balanced_accuracy_mean"}


def _point_means(
    per_class: dict[str, dict[str, Any]],
    p: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    decided: np.ndarray,
    multi_label: bool,
) -> dict[str, float | None]:
    """The macro, micro and accuracy point estimates (binary adds the single class's auroc, ap and f1)."""
    point: dict[str, float | None] = {f"{key}_macro": _mean_of(per_class, key) for key in ("auroc", "ap", "f1")}
    point.update(_micro(p, truth, mask, decided))
    if multi_label:
        point["accuracy"] = _mean_of(per_class, "accuracy")
        point["balanced_accuracy"] = _mean_of(per_class, "balanced_accuracy")
        if len(per_class) == 1:
            only = next(iter(per_class.values()))
            point.update(auroc=only["auroc"], ap=only["ap"], f1=only["f1"])
    else:
        from sklearn.metrics import balanced_accuracy_score

        y_true, y_pred = truth.argmax(axis=1), decided.argmax(axis=1)
        point["accuracy"] = float((y_true == y_pred).mean())
        with warnings.catch_warnings():  # a class predicted but absent is left out of the mean recall, as documented
            warnings.simplefilter("ignore")
            point["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    return point


def _undefined_reason(key: str) -> str:
    first = key.split("_")[0]
    need = {"f1": "a positive", "accuracy": "a labelled entry"}.get(first, "a positive and a negative")
    if key.endswith("_micro"):
        return f"{key} is undefined: the pooled labelled entries lack {need}"
    return f"{key} is undefined: no class has {need}"


def baseline_probs(train_targets: Any, n: int, multi_label: bool = True) -> np.ndarray:
    """The prevalence baseline: the same training-set class frequencies for every one of `n` examples.

    Multi-label: each class's prevalence among its labelled training entries (-1 ignored; 0.5 for a class with
    none), so its AUROC is 0.5 and its AP the test prevalence. Multi-class: the training class frequencies, whose
    argmax is the majority class (ties: the first), so accuracy is the majority-class rate. Score it with
    `classification_metrics` like a model and put it "next to the baseline".

    Args:
        train_targets: int [N_train, C] in the target format of `classification_metrics`.
        n: how many examples to predict for (the size of the evaluated split).
        multi_label: the target format (see `classification_metrics`).

    Returns:
        float [n, C] probabilities.

    Raises:
        ValueError: on a bad target array, a negative `n`, or multi-class targets with no labelled row.
    """
    t = np.asarray(train_targets)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if t.ndim != 2:
        raise ValueError(f"train_targets must be an [N, C] array, got shape {t.shape}")
    _, t = _check_inputs(np.zeros(t.shape), t)
    if multi_label:
        labelled = (t >= 0).sum(axis=0)
        prevalence = np.divide((t == 1).sum(axis=0), labelled, out=np.full(t.shape[1], 0.5), where=labelled > 0)
    else:
        kept = _check_one_hot(t)
        if not kept.any():
            raise ValueError("no labelled training row to take class frequencies from: every row is -1")
        prevalence = t[kept].mean(axis=0)
    return np.tile(prevalence.astype(np.float64), (n, 1))


__all__ = [
    "BINARY_KEYS",
    "DETECTION_KEYS",
    "MEAN_KEYS",
    "ROC_POINTS",
    "baseline_probs",
    "choose_thresholds",
    "detection_scores",
    "classification_metrics",
    "ranked_metrics",
]
