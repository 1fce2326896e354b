"""The clinical findings the synthetic data set draws and the evaluation scores.

One list shared by the generator (ground truth), the rule-based labeler (what a report says)
and the clinical metrics, so the three can never disagree on names or order.
"""

from __future__ import annotations

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "nodule_mass",
    "atelectasis",
    "edema",
    "support_devices",
)

FINDING_TITLES: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "nodule_mass": "Nodule / mass",
    "atelectasis": "Atelectasis",
    "edema": "Pulmonary edema",
    "support_devices": "Support devices",
}
