"""Score generated reports against references: NLG metrics plus clinical-finding agreement.

Clinical labels of the generated text always come from the rule-based labeler. The reference side uses the data
set's ground-truth labels when it has them (the synthetic set does) and the labeler on the reference text otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medvl.evaluate.clinical import clinical_metrics
from medvl.evaluate.labeler import binary_labels
from medvl.evaluate.nlg import nlg_metrics
from medvl.findings import FINDINGS


def score_reports(references: Sequence[str], hypotheses: Sequence[str],
                  true_labels: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (headline metrics as a flat dict, the full clinical breakdown)."""
    predicted = binary_labels(hypotheses)
    truth = true_labels if true_labels is not None else binary_labels(references)
    clinical = clinical_metrics(np.asarray(truth), predicted, FINDINGS)
    headline = dict(nlg_metrics(references, hypotheses))
    for avg in ("micro", "macro", "example_based"):
        for key in ("precision", "recall", "f1"):
            headline[f"clinical_{avg}_{key}"] = float(clinical[avg][key])
    return headline, clinical
