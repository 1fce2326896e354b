"""Clinical-finding agreement: precision, recall and F1, micro, macro and example-based, each named.

Conventions (stated because papers differ, see R2GenCMN issue 12):
- per finding and micro: precision = 0 when nothing is predicted, recall = 0 when there is no support, F1 = 0 when
  precision + recall = 0 (sklearn's zero_division=0);
- macro: the unweighted mean of the per-finding figures over all findings;
- example-based: P/R/F1 per study, averaged over studies; a study with no true and no predicted finding counts as
  full agreement (1, 1, 1), one with findings on one side only as (0, 0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _prf(tp: float, n_pred: float, n_true: float) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return float(p), float(r), float(f)


def clinical_metrics(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    truth, predicted = np.asarray(truth).astype(bool), np.asarray(predicted).astype(bool)
    if truth.shape != predicted.shape or truth.ndim != 2 or truth.shape[1] != len(names):
        raise ValueError(f"truth {truth.shape} and predictions {predicted.shape} must both be [studies, {len(names)}]")
    tp = (truth & predicted).sum(0)
    per_finding = {}
    for k, name in enumerate(names):
        p, r, f = _prf(tp[k], predicted[:, k].sum(), truth[:, k].sum())
        per_finding[name] = {"precision": p, "recall": r, "f1": f, "support": int(truth[:, k].sum()),
                             "predicted": int(predicted[:, k].sum())}
    micro = dict(zip(("precision", "recall", "f1"), _prf(tp.sum(), predicted.sum(), truth.sum()), strict=True))
    macro = {key: float(np.mean([v[key] for v in per_finding.values()])) for key in ("precision", "recall", "f1")}
    rows = []
    for t, pr in zip(truth, predicted, strict=True):
        if not t.any() and not pr.any():
            rows.append((1.0, 1.0, 1.0))
        else:
            rows.append(_prf((t & pr).sum(), pr.sum(), t.sum()))
    example = dict(zip(("precision", "recall", "f1"), map(float, np.mean(rows, axis=0)), strict=True))
    return {"per_finding": per_finding, "micro": micro, "macro": macro, "example_based": example}
