"""Clinical-finding agreement of generated reports: precision, recall and F1, per finding, micro, macro and
example-based.

Contract: `clinical_metrics(truth, predicted, names)` takes two 0/1 matrices [studies, findings] and returns
{"per_finding": {name: {"precision", "recall", "f1", "support", "predicted"}}, "micro": {...}, "macro": {...},
"example_based": {...}} with Python floats (and Python ints for the counts). Papers differ on the zero-division
cases, so the conventions are fixed here:

- per finding and micro: precision = 0 when nothing is predicted, recall = 0 when there is no support, F1 = 0 when
  precision + recall = 0 (sklearn's `zero_division=0`). "support" counts the studies that have the finding,
  "predicted" the studies predicted to have it.
- macro: the unweighted mean of the per-finding precision, recall and F1 over all findings (sklearn
  `average="macro"`; F1 is the mean of per-finding F1s, not the F1 of the mean P and R).
- example-based: precision, recall and F1 of each study's finding set, averaged over studies. This is the
  PromptMRG / CheXbert "ce_precision/recall/f1" metric, whose label set includes "No Finding": a study with no true
  and no predicted finding agrees on "normal" and scores 1 for P, R and F1; a study with findings on one side only
  scores 0 for all three (a wrong "normal" or a false alarm). It equals sklearn's
  `precision_recall_fscore_support(average="samples", zero_division=0)` with a "no finding" column appended to both
  matrices; sklearn's plain `zero_division=1` would instead give a false alarm recall 1 and a missed study
  precision 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_KEYS = ("precision", "recall", "f1")


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    """Precision, recall and F1 with 0 for every 0/0."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _binary(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.size and not np.isin(array, (0, 1)).all():
        bad = sorted({v.item() for v in np.unique(array)} - {0, 1})[:5]
        raise ValueError(f"{what} must hold only 0 and 1, found {bad}: map uncertain or missing labels to 0 or 1 first")
    return array.astype(bool)


def clinical_metrics(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Agreement of predicted finding labels with the true ones.

    Args:
        truth: 0/1 array [studies, findings], the reference labels.
        predicted: 0/1 array of the same shape, the labels of the generated reports.
        names: the finding names, one per column.

    Returns:
        {"per_finding": {name: {"precision", "recall", "f1", "support", "predicted"}}, "micro": {...},
        "macro": {...}, "example_based": {...}} under the conventions of the module docstring.

    Raises:
        ValueError: on shapes that differ or do not match `names`, values other than 0/1, or no studies.
    """
    truth, predicted = _binary(truth, "truth"), _binary(predicted, "predicted")
    if truth.shape != predicted.shape or truth.ndim != 2 or truth.shape[1] != len(names):
        raise ValueError(
            f"truth {truth.shape} and predictions {predicted.shape} must both be [studies, {len(names)}] "
            f"(one column per name in {list(names)})"
        )
    if truth.shape[0] == 0:
        raise ValueError("no studies to score: truth and predictions have 0 rows")
    hits = truth & predicted
    tp, n_true, n_pred = hits.sum(0), truth.sum(0), predicted.sum(0)
    per_finding = {}
    for k, name in enumerate(names):
        per_finding[name] = {
            **_prf(int(tp[k]), int(n_pred[k]), int(n_true[k])),
            "support": int(n_true[k]),
            "predicted": int(n_pred[k]),
        }
    micro = _prf(int(tp.sum()), int(n_pred.sum()), int(n_true.sum()))
    macro = {key: float(np.mean([v[key] for v in per_finding.values()])) for key in _KEYS}

    # Per study; a study with nothing on either side agrees on "normal" (see the module docstring).
    tp_s, true_s, pred_s = hits.sum(1), truth.sum(1), predicted.sum(1)
    normal = (true_s == 0) & (pred_s == 0)
    p = tp_s / np.maximum(pred_s, 1)  # 0 when nothing is predicted (then tp is 0 too)
    r = tp_s / np.maximum(true_s, 1)
    f = 2 * p * r / np.where(p + r > 0, p + r, 1.0)
    p, r, f = (np.where(normal, 1.0, x) for x in (p, r, f))
    example = {key: float(x.mean()) for key, x in zip(_KEYS, (p, r, f), strict=True)}
    return {"per_finding": per_finding, "micro": micro, "macro": macro, "example_based": example}


def clinical_resampled(truth: np.ndarray, predicted: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The micro, macro and example-based precision/recall/F1 of many resamples of studies at once.

    Args:
        truth, predicted: 0/1 arrays [studies, findings], as for `clinical_metrics`.
        rows: int array [B, m] of study indices, one resample per row.

    Returns:
        {"micro_precision", ..., "example_based_f1"}: arrays [B], the same conventions as `clinical_metrics`.
    """
    truth, predicted = _binary(truth, "truth"), _binary(predicted, "predicted")
    hits = truth & predicted
    tp_s, true_s, pred_s = hits.sum(1), truth.sum(1), predicted.sum(1)
    normal = (true_s == 0) & (pred_s == 0)
    p = np.where(normal, 1.0, tp_s / np.maximum(pred_s, 1))
    r = np.where(normal, 1.0, tp_s / np.maximum(true_s, 1))
    f = np.where(normal, 1.0, 2 * p * r / np.where(p + r > 0, p + r, 1.0))
    out = {
        "example_based_precision": p[rows].mean(1),
        "example_based_recall": r[rows].mean(1),
        "example_based_f1": f[rows].mean(1),
    }

    def prf(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> tuple[np.ndarray, ...]:
        precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)
        recall = np.where(n_true > 0, tp / np.maximum(n_true, 1), 0.0)
        denom = precision + recall
        return precision, recall, np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)

    # Per-resample column sums [B, findings] by counting how often each study is drawn.
    counts = np.zeros((rows.shape[0], truth.shape[0]), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(rows.shape[0]), rows.shape[1]), rows.ravel()), 1.0)
    tp, n_true, n_pred = counts @ hits, counts @ truth, counts @ predicted
    for key, value in zip(_KEYS, prf(tp.sum(1), n_pred.sum(1), n_true.sum(1)), strict=True):
        out[f"micro_{key}"] = value
    for key, value in zip(_KEYS, prf(tp, n_pred, n_true), strict=True):
        out[f"macro_{key}"] = value.mean(1)
    return out


__all__ = ["clinical_metrics", "clinical_resampled"]
