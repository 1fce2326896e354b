"""The array computations behind `medvl.evaluate.classification`: checking the probabilities and targets, deciding
(per-class thresholds, or the argmax), and every metric under many weightings of the examples at once, which is how
the bootstrap intervals are computed (the metrics report itself is `classification_metrics`).

Contract: inputs are `probs` float [N, C] in [0, 1] and `targets` int [N, C] in the format of
`medvl.evaluate.classification` (1 positive, 0 negative, -1 ignored; multi-class rows one-hot or all -1), and bad
ones raise ValueError naming the problem. `ranked_metrics(scores, positive, weights)` gives AUROC and average
precision [B] of one score column under B weightings; `detection_scores(tp, fp, fn, tn)` the binary detection
scores; `_bootstrap(...)` every metric over `bootstrap` seeded resamples of the examples (drawn by
`_resample_weights`, also used by `medvl.evaluate.regression` and `medvl.evaluate.vqa`), and `_interval` the
percentile `CI_LEVEL` interval over them; `choose_thresholds(probs, targets)` the per-class thresholds that
maximize F1 on validation data. Undefined values are NaN here; the report turns them into None with a reason.

Why weighted counts: a resample with duplicates equals the original examples weighted by how often each is drawn,
so every resample is a row of weights [B, N] and each metric is computed for all rows at once (confusion counts as
matrix products, AUROC as the weighted Mann-Whitney statistic over tie groups of the sorted scores, AP as
scikit-learn's step sum over the same groups), instead of calling scikit-learn 1,000 times per class and per mean.
The numbers are the same; tests check them against scikit-learn on resampled data to 1e-12.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CI_LEVEL = 0.95
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


def _interval(values: np.ndarray) -> tuple[float | None, float | None, int]:
    """(low, high, dropped): the percentile interval over the defined resamples, and how many were undefined."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return None, None, len(values)
    tail = (1 - CI_LEVEL) / 2 * 100
    return float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail)), len(values) - defined.size


# ----------------------------------------------------------------------------------------------------- decisions


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
