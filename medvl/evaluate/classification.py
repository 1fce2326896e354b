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
class and per mean would take minutes, so the bootstrap instead turns each resample into a count per example
(weights [B, N]) and computes every metric for all resamples at once: confusion counts as matrix products, AUROC as
the weighted Mann-Whitney statistic over tie groups of the sorted scores, AP as sklearn's step sum over the same
groups. A resample with duplicates equals the original examples weighted by their counts, so the results are the
same numbers; tests check them against scikit-learn on resampled data to 1e-12.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

ROC_POINTS = 200  # the most points kept per ROC curve in the result (it is written as JSON and drawn in report.html)
CI_LEVEL = 0.95
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
# Resamples are processed in chunks so that the pooled (micro) arrays stay near this many elements.
_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------------- validation


def _check_inputs(probs: Any, targets: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets)
    if p.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"probs and targets must both be [N, C] arrays of the same shape; got {p.shape} and {t.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"probs has {p.shape[1]} classes but {n_classes} class names were given")
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"probs must be probabilities in [0, 1] (apply sigmoid or softmax to logits); got values in "
            f"[{np.nanmin(p):.4g}, {np.nanmax(p):.4g}]{'' if np.isfinite(p).all() else ' and NaN/inf'}"
        )
    if t.size and not np.isin(t, (-1, 0, 1)).all():
        bad = sorted({float(v) for v in np.unique(t)} - {-1.0, 0.0, 1.0})[:5]
        raise ValueError(f"targets must be 1 (positive), 0 (negative) or -1 (ignored); found {bad}")
    return p, t.astype(np.int64)


def _check_one_hot(targets: np.ndarray) -> np.ndarray:
    """The rows kept for multi-class: one-hot rows are kept, all -1 rows ignored, anything else is an error."""
    ignored = (targets == -1).all(axis=1)
    kept = ~ignored
    rows = targets[kept]
    bad = np.flatnonzero(((rows == -1).any(axis=1)) | (rows.sum(axis=1) != 1) | ((rows == 1).sum(axis=1) != 1))
    if bad.size:
        i = int(np.flatnonzero(kept)[bad[0]])
        raise ValueError(
            f"multi-class targets must be one-hot rows (or all -1 to ignore the example); row {i} is "
            f"{targets[i].tolist()} ({bad.size} such rows)"
        )
    return kept


# ------------------------------------------------------------------------------------------ vectorized bootstrap


def _resample_weights(n: int, bootstrap: int, seed: int) -> np.ndarray:
    """[bootstrap, n] counts: how often each example is drawn in each resample (the rows of `scoring.score_corpus`)."""
    rows = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n))
    offsets = (np.arange(bootstrap) * n)[:, None]
    return np.bincount((rows + offsets).ravel(), minlength=bootstrap * n).reshape(bootstrap, n).astype(np.float64)


def ranked_metrics(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of one score column under many example weightings at once.

    With integer weights (bootstrap counts) the values equal scikit-learn's `roc_auc_score` and
    `average_precision_score` on the data with each example repeated `weight` times (ties handled as sklearn does:
    tied scores form one threshold).

    Args:
        scores: [n] scores (higher means more likely positive).
        positive: [n] bool, True for positive examples.
        weights: [B, n] non-negative weight of each example in each of B weightings (0 drops it).

    Returns:
        (auroc [B], ap [B]); NaN where the weighting has no positive or no negative weight.
    """
    if not len(scores):
        return np.full(len(weights), np.nan), np.full(len(weights), np.nan)
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # one group per distinct score, ascending
    w = weights[:, order]
    is_pos = positive[order]
    pos = np.add.reduceat(w * is_pos, starts, axis=1)  # [B, groups]
    neg = np.add.reduceat(w * ~is_pos, starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)
    # Mann-Whitney: each positive beats the negatives below its score and ties with half of those at it.
    wins = (pos * (np.cumsum(neg, axis=1) - 0.5 * neg)).sum(axis=1)
    # AP: thresholds from the highest score down; each group adds its recall step times the precision there.
    pos_desc, neg_desc = pos[:, ::-1], neg[:, ::-1]
    tp, fp = np.cumsum(pos_desc, axis=1), np.cumsum(neg_desc, axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    steps = (pos_desc * precision).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = np.where(defined, wins / (n_pos * n_neg), np.nan)
        ap = np.where(defined, steps / n_pos, np.nan)
    return auroc, ap


def _prf_counts(tp: np.ndarray, fp: np.ndarray, n_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from counts; NaN where there is no positive, precision 0 when nothing is predicted."""
    with np.errstate(divide="ignore", invalid="ignore"):
        has_pos = n_pos > 0
        precision = np.where(has_pos, np.where(tp + fp > 0, tp / (tp + fp), 0.0), np.nan)
        recall = np.where(has_pos, tp / n_pos, np.nan)
        f1 = np.where(has_pos, 2 * tp / (2 * tp + fp + (n_pos - tp)), np.nan)
    return precision, recall, f1


def detection_scores(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, np.ndarray]:
    """POD, FAR, CSI and HSS from contingency counts (arrays of any shape, or numbers); NaN where undefined."""
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    denom = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "pod": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
            "far": np.where(tp + fp > 0, fp / (tp + fp), np.nan),
            "csi": np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan),
            "hss": np.where(denom > 0, 2 * (tp * tn - fn * fp) / denom, np.nan),
        }


def _nanmean(values: np.ndarray, axis: int = 1) -> np.ndarray:
    """Mean over the defined (non-NaN) entries; NaN where none is defined."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _weighted_metrics(
    probs: np.ndarray, truth: np.ndarray, mask: np.ndarray, decided: np.ndarray, weights: np.ndarray, multi_label: bool
) -> dict[str, np.ndarray]:
    """Every metric under each weighting of the examples: per-class arrays [B, C] and means [B] (NaN = undefined).

    `truth` and `decided` are 0/1 [n, C] (the labels and the decisions), `mask` marks the labelled entries.
    """
    lab = mask.astype(np.float64)
    y = truth * lab
    d = decided * lab
    n_pos = weights @ y
    n_neg = weights @ (lab - y)
    tp = weights @ (y * d)
    fp = weights @ ((lab - y) * d)
    tn = n_neg - fp
    out: dict[str, np.ndarray] = {}
    out["precision"], out["recall"], out["f1"] = _prf_counts(tp, fp, n_pos)
    out.update(detection_scores(tp, fp, n_pos - tp, tn))
    with np.errstate(divide="ignore", invalid="ignore"):
        total = n_pos + n_neg
        out["accuracy"] = np.where(total > 0, (tp + tn) / total, np.nan)
        both = (n_pos > 0) & (n_neg > 0)
        out["balanced_accuracy"] = np.where(both, (tp / n_pos + tn / n_neg) / 2, np.nan)
    n_classes = probs.shape[1]
    auroc = np.empty((len(weights), n_classes))
    ap = np.empty_like(auroc)
    for c in range(n_classes):
        keep = mask[:, c]
        auroc[:, c], ap[:, c] = ranked_metrics(probs[keep, c], truth[keep, c].astype(bool), weights[:, keep])
    out["auroc"], out["ap"] = auroc, ap
    pooled_weights = np.repeat(weights, n_classes, axis=1)[:, mask.ravel()]
    out["auroc_micro"], out["ap_micro"] = ranked_metrics(probs[mask], truth[mask].astype(bool), pooled_weights)
    out["auroc_macro"], out["ap_macro"], out["f1_macro"] = _nanmean(auroc), _nanmean(ap), _nanmean(out["f1"])
    out["f1_micro"] = _prf_counts(tp.sum(axis=1), fp.sum(axis=1), n_pos.sum(axis=1))[2]
    if multi_label:
        out["accuracy_mean"] = _nanmean(out["accuracy"])
        out["balanced_accuracy_mean"] = _nanmean(out["balanced_accuracy"])
    else:  # one true and one decided class per row: accuracy is the pooled hit rate, balanced accuracy mean recall
        out["accuracy_mean"] = tp.sum(axis=1) / weights.sum(axis=1)
        out["balanced_accuracy_mean"] = _nanmean(out["recall"])
    return out


def _bootstrap(
    probs: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    decided: np.ndarray,
    multi_label: bool,
    bootstrap: int,
    seed: int,
) -> dict[str, np.ndarray]:
    weights = _resample_weights(len(probs), bootstrap, seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, int(mask.sum())))
    parts = [
        _weighted_metrics(probs, truth, mask, decided, weights[i : i + chunk], multi_label)
        for i in range(0, bootstrap, chunk)
    ]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# ------------------------------------------------------------------------------------------------ point estimates


def _float_or_none(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _interval(values: np.ndarray) -> tuple[float | None, float | None, int]:
    """(low, high, dropped): the percentile interval over the defined resamples, and how many were undefined."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return None, None, len(values)
    tail = (1 - CI_LEVEL) / 2 * 100
    return float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail)), len(values) - defined.size


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


def choose_thresholds(probs: Any, targets: Any) -> np.ndarray:
    """Per-class decision thresholds that maximize F1 on validation data (decision: `prob >= threshold`).

    For each class the F1 of every cut between distinct validation scores is computed on the labelled entries; the
    best cut's threshold is the midpoint between the lowest score it calls positive and the next lower score (the
    lowest score itself when every entry is called positive), so it does not sit on a validation score. Ties in
    F1 go to the higher threshold (fewer positive calls).

    Args:
        probs: float [N, C] probabilities in [0, 1].
        targets: int [N, C]: 1 positive, 0 negative, -1 ignored (missing, or uncertain under U-Ignore).

    Returns:
        float [C] thresholds; 0.5 for a class without a labelled positive or a labelled negative.

    Raises:
        ValueError: on mismatched shapes, probabilities outside [0, 1], or targets other than 1, 0, -1.
    """
    p, t = _check_inputs(probs, targets)
    thresholds = np.full(p.shape[1], 0.5)
    for c in range(p.shape[1]):
        keep = t[:, c] >= 0
        scores, y = p[keep, c], t[keep, c]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            continue
        order = np.argsort(-scores, kind="stable")
        ranked, ranked_y = scores[order], y[order]
        ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # last index of each distinct score, descending
        tp = np.cumsum(ranked_y)[ends]
        called = ends + 1
        f1 = 2 * tp / (called + n_pos)  # 2TP / (2TP + FP + FN) with TP + FP = called and TP + FN = n_pos
        best = int(np.argmax(f1))  # the first maximum: the highest threshold
        lowest_called = ranked[ends[best]]
        below = ranked[ends[best] + 1] if ends[best] + 1 < len(ranked) else None
        thresholds[c] = lowest_called if below is None else (lowest_called + below) / 2
    return thresholds


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


def _decisions(
    p: np.ndarray, t: np.ndarray, multi_label: bool, thresholds: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, int]:
    """The scored examples: (probs, 0/1 truth, labelled mask, 0/1 decisions, thresholds or None, ignored count)."""
    n_classes = p.shape[1]
    if multi_label:
        th = np.full(n_classes, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64).ravel()
        if th.shape != (n_classes,) or not np.isfinite(th).all():
            raise ValueError(f"thresholds must be {n_classes} finite numbers, one per class; got {th.tolist()}")
        labelled = (t >= 0).any(axis=1)
        n_ignored = int((t[labelled] < 0).sum() + (~labelled).sum() * n_classes)  # ignored entries
        p, t = p[labelled], t[labelled]
        mask, truth, decided = t >= 0, np.clip(t, 0, 1), (p >= th).astype(np.int64)
    else:
        if n_classes < 2:
            raise ValueError("multi-class needs at least 2 classes; a single sigmoid output is multi_label=True, C=1")
        if thresholds is not None:
            raise ValueError("thresholds apply to multi-label outputs only; multi-class predicts the argmax")
        th = None
        kept = _check_one_hot(t)
        n_ignored = int((~kept).sum())  # ignored examples
        p, truth = p[kept], t[kept]
        mask = np.ones_like(truth, dtype=bool)
        decided = np.eye(n_classes, dtype=np.int64)[p.argmax(axis=1)] if len(p) else np.zeros_like(truth)
    if not len(p):
        raise ValueError("no labelled example to score: every target is -1")
    return p, truth, mask, decided, th, n_ignored


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
