"""NLG metrics (through pycocoevalcap), clinical P/R/F1 conventions, the majority baseline, headline scoring."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.evaluate.baseline import majority_report
from medvl.evaluate.clinical import clinical_metrics
from medvl.evaluate.scoring import score_reports
from medvl.findings import FINDINGS

REFS = [
    "FINDINGS: The heart is enlarged. No pneumothorax. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Heart size is normal. The lungs are clear. IMPRESSION: Normal chest.",
    "FINDINGS: There is a small left pleural effusion. IMPRESSION: Small left pleural effusion.",
]
HYPS = [
    "FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Heart size is normal. The lungs are clear. No pneumothorax. IMPRESSION: Normal chest.",
    "FINDINGS: There is a large right pleural effusion. IMPRESSION: Pleural effusion.",
]


def test_clinical_metrics_by_hand() -> None:
    names = ("a", "b")
    truth = np.array([[1, 0], [1, 1], [0, 0], [0, 0]])
    pred = np.array([[1, 1], [0, 1], [0, 0], [1, 0]])
    m = clinical_metrics(truth, pred, names)
    # a: tp 1, predicted 2, support 2; b: tp 1, predicted 2, support 1
    assert m["per_finding"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert m["per_finding"]["b"]["recall"] == 1.0 and m["per_finding"]["b"]["f1"] == pytest.approx(2 / 3)
    assert m["micro"]["precision"] == 0.5 and m["micro"]["recall"] == pytest.approx(2 / 3)
    assert m["macro"]["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # studies: (P, R) = (1/2, 1), (1, 1/2), normal agreed = (1, 1), false alarm = (0, 0)
    assert m["example_based"]["precision"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert m["example_based"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)
    with pytest.raises(ValueError, match="must both be"):
        clinical_metrics(truth, pred[:, :1], names)


def test_clinical_micro_matches_sklearn_when_installed() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 2, (50, 8)), rng.integers(0, 2, (50, 8))
    m = clinical_metrics(truth, pred, FINDINGS)
    assert m["micro"]["f1"] == pytest.approx(metrics.f1_score(truth, pred, average="micro"))
    assert m["macro"]["f1"] == pytest.approx(metrics.f1_score(truth, pred, average="macro", zero_division=0))


def test_majority_report() -> None:
    assert majority_report(["b", "a  x", "a x", "b", "c"]) == "b"  # ties: first seen
    assert majority_report(["No  acute disease.", "Other.", "No acute disease."]) == "No acute disease."
    with pytest.raises(ValueError, match="no training reports"):
        majority_report(["", " "])


def test_score_reports_uses_ground_truth_when_given() -> None:
    truth = np.zeros((3, len(FINDINGS)), dtype=int)
    truth[0, FINDINGS.index("cardiomegaly")] = 1
    truth[2, FINDINGS.index("pleural_effusion")] = 1
    headline, per_finding = score_reports(REFS, HYPS, truth)
    assert headline["gt_micro_f1"] == 1.0 and per_finding["gt"]["cardiomegaly"]["support"] == 1
    assert {"bleu_4", "rouge_l", "cider", "gt_macro_f1", "gt_example_f1", "ce_14_micro_f1", "ce_5_macro_f1"} <= set(
        headline
    )
    assert "meteor" not in headline and not any(k.endswith("_ci_low") for k in headline)  # validation stays cheap
    baseline, _ = score_reports(REFS, [REFS[1]] * 3, truth)
    assert baseline["gt_micro_f1"] == 0.0
