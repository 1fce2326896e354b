"""What one synthetic study shows: finding labels and their attributes, drawn from the study's rng.

Contract: `sample_study(rng)` draws every finding independently with probability `PREVALENCE[finding]` (one uniform per
finding, in `medvl.findings.FINDINGS` order, so the labels depend only on the first 8 draws), then the attributes of
each positive finding. The result is plain data (`StudySpec`): the drawing code (`anatomy`, `lesions`) and the report
grammar (`reports`) read the same attributes, so image, text and labels can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvl.findings import FINDINGS

PREVALENCE: dict[str, float] = {
    "cardiomegaly": 0.25,
    "pleural_effusion": 0.20,
    "pneumothorax": 0.08,
    "consolidation": 0.15,
    "nodule_mass": 0.12,
    "atelectasis": 0.15,
    "edema": 0.12,
    "support_devices": 0.20,
}

LOBES: tuple[str, ...] = (
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "lingula",
    "left lower lobe",
)
# Where each lobe projects on the frontal view: (u, v) ranges, u = medial (0) -> lateral (1) across the hemithorax,
# v = apex (0) -> costophrenic angle (1).
LOBE_ZONES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "right upper lobe": ((0.30, 0.75), (0.14, 0.36)),
    "left upper lobe": ((0.30, 0.75), (0.14, 0.36)),
    "right middle lobe": ((0.12, 0.45), (0.56, 0.72)),
    "lingula": ((0.30, 0.60), (0.55, 0.70)),
    "right lower lobe": ((0.35, 0.80), (0.70, 0.86)),
    "left lower lobe": ((0.35, 0.80), (0.70, 0.86)),
}
DEVICES: tuple[str, ...] = (
    "endotracheal tube",
    "central venous catheter",
    "nasogastric tube",
    "pacemaker",
    "picc line",
)
_DEVICE_P = (0.45, 0.5, 0.35, 0.3, 0.15)
CVC_SITES: tuple[str, ...] = ("right internal jugular", "left internal jugular", "right subclavian", "left subclavian")


@dataclass
class StudySpec:
    """Ground truth of one study: 0/1 label per finding and the attributes of each positive finding."""

    labels: dict[str, int]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def side_of(self, finding: str) -> str | None:
        """The side ("right", "left", "bilateral") of a positive finding, or None."""
        return self.details.get(finding, {}).get("side")


def lobe_side(lobe: str) -> str:
    """ "right" for right-lung lobes, "left" otherwise (the lingula belongs to the left upper lobe)."""
    return "right" if lobe.startswith("right") else "left"


def sample_labels(rng: np.random.Generator) -> dict[str, int]:
    """Independent Bernoulli draw per finding (one uniform each, in FINDINGS order)."""
    u = rng.random(len(FINDINGS))
    return {name: int(u[k] < PREVALENCE[name]) for k, name in enumerate(FINDINGS)}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str], p: list[float] | None = None) -> str:
    return str(options[int(rng.choice(len(options), p=p))])


def sample_study(rng: np.random.Generator) -> StudySpec:
    """Labels, then attributes of each positive finding (always the same number of draws per positive finding)."""
    labels = sample_labels(rng)
    details: dict[str, dict[str, Any]] = {}
    if labels["cardiomegaly"]:
        severity = _pick(rng, ("mild", "moderate", "marked"), [0.45, 0.35, 0.20])
        lo, hi = {"mild": (0.52, 0.56), "moderate": (0.56, 0.62), "marked": (0.62, 0.70)}[severity]
        details["cardiomegaly"] = {"severity": severity, "cardiothoracic_ratio": round(float(rng.uniform(lo, hi)), 3)}
    if labels["pleural_effusion"]:
        details["pleural_effusion"] = {
            "side": _pick(rng, ("right", "left", "bilateral"), [0.35, 0.35, 0.30]),
            "size": _pick(rng, ("small", "moderate", "large"), [0.40, 0.40, 0.20]),
        }
    if labels["pneumothorax"]:
        side = _pick(rng, ("right", "left"))
        size = _pick(rng, ("small", "large"), [0.55, 0.45])
        details["pneumothorax"] = {"side": side, "size": size, "location": "apical" if size == "small" else "diffuse"}
    if labels["consolidation"]:
        lobe = _pick(rng, LOBES, [0.15, 0.15, 0.22, 0.13, 0.12, 0.23])
        details["consolidation"] = {
            "lobe": lobe,
            "side": lobe_side(lobe),
            "pattern": _pick(rng, ("patchy", "confluent", "focal")),
        }
    if labels["nodule_mass"]:
        lobe = _pick(
            rng, ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe")
        )
        is_mass = bool(rng.random() < 0.35)
        u = float(rng.random())
        # Nodules skew small (many 5-12 mm, the hard cases); masses 30-75 mm.
        size_mm = int(30 + 45 * u) if is_mass else int(5 + 24.99 * u**1.6)
        details["nodule_mass"] = {
            "lobe": lobe,
            "side": lobe_side(lobe),
            "size_mm": size_mm,
            "kind": "mass" if is_mass else "nodule",
        }
    if labels["atelectasis"]:
        location = _pick(
            rng,
            ("right lower lobe", "left lower lobe", "bibasilar", "right middle lobe", "lingula"),
            [0.28, 0.28, 0.24, 0.10, 0.10],
        )
        side = "bilateral" if location == "bibasilar" else lobe_side(location)
        volume_loss = bool(rng.random() < 0.35) and "lower" in location
        details["atelectasis"] = {
            "location": location,
            "side": side,
            "pattern": _pick(rng, ("linear", "plate-like", "subsegmental")),
            "volume_loss": volume_loss,
        }
    if labels["edema"]:
        details["edema"] = {"severity": _pick(rng, ("mild", "moderate", "severe"), [0.40, 0.40, 0.20])}
    if labels["support_devices"]:
        chosen = [name for name, p, u in zip(DEVICES, _DEVICE_P, rng.random(len(DEVICES))) if u < p]
        fallback = _pick(rng, DEVICES, [0.3, 0.3, 0.2, 0.15, 0.05])
        devices = chosen or [fallback]
        info: dict[str, Any] = {"devices": devices}
        cvc_site = _pick(rng, CVC_SITES, [0.5, 0.15, 0.2, 0.15])
        pacer_side = "left" if rng.random() < 0.8 else "right"
        picc_side = "right" if rng.random() < 0.6 else "left"
        if "central venous catheter" in devices:
            info["cvc_site"] = cvc_site
        if "pacemaker" in devices:
            info["pacemaker_side"] = pacer_side
        if "picc line" in devices:
            info["picc_side"] = picc_side
        details["support_devices"] = info
    return StudySpec(labels=labels, details=details)
