"""Report grammar of the synthetic data set: "FINDINGS: <sentences> IMPRESSION: <sentences>".

Contract, relied on by the rule-based labeler and the tests:
- A positive finding is always mentioned in a sentence without negation words, using its standard keyword:
  cardiomegaly | enlarged heart / enlarged cardiac silhouette; pleural effusion(s); pneumothorax; consolidation;
  nodule | mass; atelectasis | atelectatic; edema; endotracheal tube | catheter | nasogastric tube | pacemaker |
  PICC line.
- An absent finding is either not mentioned or mentioned only in a sentence with clear negation ("No ...",
  "There is no ...", "... is normal", "... not enlarged"); a sentence never mixes a positive and a negated finding.
- Nothing is hedged (labels are certain) and attributes appear in the text (side, size, lobe, severity, devices).
Phrasing is chosen with the study's rng, so the same study always gets the same report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medvl.data.synth.sampling import StudySpec


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _a(number: int | str) -> str:
    """The article before a spoken number: "an 8 mm", "an 11 mm", "an 18 mm", "a 5 mm"."""
    text = str(number).split(".")[0]
    return "an" if text.startswith("8") or text in ("11", "18") else "a"


_ADVERB = {"mild": "mildly", "moderate": "moderately", "marked": "markedly", "severe": "severely"}

# ------------------------------------------------------------------------------------------------ positive findings


def _cardiomegaly(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    sev, adv = d["severity"], _ADVERB[d["severity"]]
    finding = _choice(
        rng,
        [
            f"{_cap(sev)} cardiomegaly.",
            f"There is {sev} cardiomegaly.",
            f"{_cap(adv)} enlarged cardiac silhouette.",
            f"{_cap(adv)} enlarged heart.",
            f"{_cap(sev)} cardiomegaly with an enlarged cardiac silhouette.",
        ],
    )
    impression = _choice(rng, [f"{_cap(sev)} cardiomegaly.", "Cardiomegaly."])
    return finding, impression


def _effusion(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    size, side = d["size"], d["side"]
    noun = "pleural effusions" if side == "bilateral" else "pleural effusion"
    article = "" if side == "bilateral" else "a "
    options = [
        f"{_cap(size)} {side} {noun}.",
        f"There {'are' if side == 'bilateral' else 'is'} {article}{size} {side} {noun}.",
        _cap(f"{article}{size} {side} {noun} {'are' if side == 'bilateral' else 'is'} present."),
    ]
    if size == "small":
        angles = "both costophrenic angles" if side == "bilateral" else f"the {side} costophrenic angle"
        options.append(f"Blunting of {angles} due to {article}small {side} {noun}.")
    if size == "large":
        options.append(f"Large {side} {noun} with opacification of the lower hemithorax.")
    finding = _choice(rng, options)
    impression = _choice(rng, [f"{_cap(size)} {side} {noun}.", f"{_cap(side)} {noun}."])
    return finding, impression


def _pneumothorax(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    side = d["side"]
    if d["size"] == "small":
        finding = _choice(
            rng,
            [
                f"Small {side} apical pneumothorax.",
                f"There is a small {side} apical pneumothorax.",
                f"{_cap(side)} apical pneumothorax with a visible pleural line.",
            ],
        )
        impression = _choice(rng, [f"Small {side} apical pneumothorax.", f"{_cap(side)} apical pneumothorax."])
    else:
        finding = _choice(
            rng,
            [
                f"Large {side} pneumothorax.",
                f"There is a large {side} pneumothorax.",
                f"Large {side} pneumothorax with a visible pleural line.",
            ],
        )
        impression = _choice(rng, [f"Large {side} pneumothorax.", f"{_cap(side)} pneumothorax, large."])
    return finding, impression


def _consolidation(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    lobe, pattern = d["lobe"], d["pattern"]
    finding = _choice(
        rng,
        [
            f"{_cap(pattern)} consolidation in the {lobe}.",
            f"There is {pattern} consolidation in the {lobe}.",
            f"{_cap(lobe)} consolidation.",
            f"Airspace consolidation involving the {lobe}.",
        ],
    )
    impression = _choice(rng, [f"{_cap(lobe)} consolidation.", f"Consolidation in the {lobe}."])
    return finding, impression


def _nodule_mass(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    lobe, mm = d["lobe"], d["size_mm"]
    if d["kind"] == "nodule":
        finding = _choice(
            rng,
            [
                f"{mm} mm nodule in the {lobe}.",
                f"There is {_a(mm)} {mm} mm nodule in the {lobe}.",
                f"{_cap(_a(mm))} {mm} mm pulmonary nodule is present in the {lobe}.",
                f"{mm} mm {lobe} nodule.",
            ],
        )
        impression = _choice(rng, [f"{mm} mm {lobe} nodule.", f"{_cap(lobe)} pulmonary nodule."])
    else:
        cm = f"{mm / 10:.1f}"
        finding = _choice(
            rng,
            [
                f"{cm} cm mass in the {lobe}.",
                f"There is {_a(cm)} {cm} cm mass in the {lobe}.",
                f"{_cap(lobe)} mass measuring {cm} cm.",
                f"Lobulated mass in the {lobe}.",
            ],
        )
        impression = _choice(rng, [f"{_cap(lobe)} mass.", f"{cm} cm mass in the {lobe}."])
    return finding, impression


def _atelectasis(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    loc, pattern = d["location"], d["pattern"]
    if loc == "bibasilar":
        finding = _choice(
            rng,
            [
                f"Bibasilar {pattern} atelectasis.",
                f"There is bibasilar {pattern} atelectasis.",
                f"{_cap(pattern)} atelectasis at both lung bases.",
            ],
        )
        impression = _choice(rng, ["Bibasilar atelectasis.", f"Bibasilar {pattern} atelectasis."])
        return finding, impression
    finding = _choice(
        rng,
        [
            f"{_cap(pattern)} atelectasis in the {loc}.",
            f"{_cap(loc)} {pattern} atelectasis.",
            f"There is {pattern} atelectasis in the {loc}.",
            f"The {loc} is partially atelectatic.",
        ],
    )
    if d["volume_loss"]:
        finding = finding[:-1] + " with volume loss."
    impression = _choice(rng, [f"{_cap(loc)} atelectasis.", f"{_cap(pattern)} atelectasis in the {loc}."])
    return finding, impression


def _edema(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    sev = d["severity"]
    finding = _choice(
        rng,
        [
            f"{_cap(sev)} pulmonary edema.",
            f"There is {sev} pulmonary edema.",
            f"{_cap(sev)} interstitial pulmonary edema with vascular congestion.",
            f"{_cap(sev)} pulmonary edema with perihilar haziness.",
        ],
    )
    impression = _choice(rng, [f"{_cap(sev)} pulmonary edema.", "Pulmonary edema."])
    return finding, impression


def _device_phrases(d: dict[str, Any]) -> list[str]:
    names = []
    for dev in d["devices"]:
        if dev == "central venous catheter":
            names.append(f"{d['cvc_site']} central venous catheter")
        elif dev == "pacemaker":
            names.append(f"{d['pacemaker_side']} chest wall pacemaker")
        elif dev == "picc line":
            names.append(f"{d['picc_side']} PICC line")
        else:
            names.append(dev)
    return names


def _devices(d: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    names = _device_phrases(d)
    listed = _join(names)
    verb = "are" if len(names) > 1 else "is"
    sentences = [
        _choice(
            rng,
            [
                f"{_cap(listed)} in place.",
                f"{_cap(listed)} {verb} in satisfactory position.",
                f"Lines and tubes: {listed}.",
            ],
        )
    ]
    if "endotracheal tube" in d["devices"] and rng.random() < 0.5:
        sentences.append(f"The endotracheal tube terminates {int(rng.integers(3, 7))} cm above the carina.")
    if "nasogastric tube" in d["devices"] and rng.random() < 0.4:
        sentences.append("The nasogastric tube courses below the diaphragm into the stomach.")
    if "pacemaker" in d["devices"] and rng.random() < 0.4:
        sentences.append("Pacemaker leads terminate in the right atrium and right ventricle.")
    return " ".join(sentences), _choice(rng, [f"{_cap(listed)} in place.", f"{_cap(listed)} as described."])


_POSITIVE = {
    "cardiomegaly": _cardiomegaly,
    "pleural_effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "consolidation": _consolidation,
    "nodule_mass": _nodule_mass,
    "atelectasis": _atelectasis,
    "edema": _edema,
    "support_devices": _devices,
}

# ------------------------------------------------------------------------------------------------ negative statements
NEGATIVES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiomediastinal silhouette is within normal limits.",
        "The heart is not enlarged.",
        "The cardiac silhouette is not enlarged.",
        "No cardiomegaly.",
    ),
    "pleural_effusion": (
        "No pleural effusion.",
        "There is no pleural effusion.",
        "No pleural effusions.",
        "No effusion.",
    ),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    "consolidation": ("There is no focal consolidation.", "No focal consolidation.", "No consolidation."),
    "nodule_mass": ("No pulmonary nodule or mass.", "There is no nodule or mass.", "No suspicious pulmonary nodules."),
    "atelectasis": ("No atelectasis.", "There is no atelectasis."),
    "edema": ("No pulmonary edema.", "There is no pulmonary edema.", "No edema."),
}
# Probability of stating each absent finding explicitly (radiologists name the common ones).
_NEGATE_P = {
    "cardiomegaly": 0.8,
    "pleural_effusion": 0.65,
    "pneumothorax": 0.65,
    "consolidation": 0.5,
    "nodule_mass": 0.15,
    "atelectasis": 0.1,
    "edema": 0.3,
}
_PLEURAL_BOTH = (
    "No pleural effusion or pneumothorax.",
    "There is no pleural effusion or pneumothorax.",
    "No pneumothorax or pleural effusion.",
)
_LUNGS_CLEAR = (
    "The lungs are clear.",
    "Lungs are clear bilaterally.",
    "The lungs are well expanded and clear.",
    "Clear lungs.",
)
_MEDIASTINUM = (
    "The mediastinal contours are unremarkable.",
    "Mediastinal contours are within normal limits.",
    "The hilar and mediastinal contours are unremarkable.",
)
_BONES = (
    "No acute osseous abnormality.",
    "The visualized osseous structures are unremarkable.",
    "No acute bony abnormality.",
)
NORMAL_IMPRESSIONS: tuple[str, ...] = (
    "No acute cardiopulmonary abnormality.",
    "Normal chest.",
    "No acute cardiopulmonary disease.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
)
_IMPRESSION_ORDER = (
    "pneumothorax",
    "pleural_effusion",
    "consolidation",
    "edema",
    "nodule_mass",
    "cardiomegaly",
    "atelectasis",
    "support_devices",
)
_LUNG_FINDINGS = ("consolidation", "nodule_mass", "atelectasis", "edema")


def write_report(spec: StudySpec, rng: np.random.Generator) -> str:
    """The report of one study, with findings and impression consistent with `spec.labels`."""
    labels = spec.labels
    positive = {name: _POSITIVE[name](spec.details[name], rng) for name in _POSITIVE if labels[name]}

    def negate(name: str) -> list[str]:
        return [_choice(rng, NEGATIVES[name])] if not labels[name] and rng.random() < _NEGATE_P[name] else []

    findings: list[str] = []
    if "support_devices" in positive:
        findings.append(positive["support_devices"][0])
    findings += [positive["cardiomegaly"][0]] if "cardiomegaly" in positive else negate("cardiomegaly")
    if rng.random() < 0.45:
        findings.append(_choice(rng, _MEDIASTINUM))
    lung_pos = [name for name in _LUNG_FINDINGS if name in positive]
    rng.shuffle(lung_pos)
    findings += [positive[name][0] for name in lung_pos]
    if not lung_pos and not labels["pneumothorax"] and rng.random() < 0.75:
        findings.append(_choice(rng, _LUNGS_CLEAR))
    for name in ("consolidation", "edema", "nodule_mass", "atelectasis"):
        findings += negate(name)
    pleural = [positive[name][0] for name in ("pleural_effusion", "pneumothorax") if name in positive]
    if not pleural and rng.random() < 0.45:
        pleural.append(_choice(rng, _PLEURAL_BOTH))
    else:
        pleural += negate("pleural_effusion") + negate("pneumothorax")
    findings += pleural
    if rng.random() < 0.4:
        findings.append(_choice(rng, _BONES))

    impression = [positive[name][1] for name in _IMPRESSION_ORDER if name in positive and name != "support_devices"]
    if not impression:
        if "support_devices" in positive:
            impression.append(positive["support_devices"][1])
        impression.append(_choice(rng, NORMAL_IMPRESSIONS))
    else:
        if "support_devices" in positive and rng.random() < 0.5:
            impression.append(positive["support_devices"][1])
        if not labels["pneumothorax"] and rng.random() < 0.2:
            impression.append("No pneumothorax.")
    return "FINDINGS: " + " ".join(findings) + " IMPRESSION: " + " ".join(impression)
