"""The rule-based finding labeler: mentions, negation, uncertainty, report idioms, and the synthetic reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medvl.evaluate.labeler import binary_labels, label_report
from medvl.findings import FINDINGS

from .conftest import SHARED_DATA

P, N, U = "positive", "negative", "uncertain"

CASES = [
    # cardiomegaly
    ("The heart is enlarged.", "cardiomegaly", P),
    ("Moderate cardiomegaly.", "cardiomegaly", P),
    ("Moderately enlarged cardiac silhouette.", "cardiomegaly", P),
    ("There is enlargement of the cardiac silhouette.", "cardiomegaly", P),
    ("The heart is not enlarged.", "cardiomegaly", N),
    ("Heart size is normal.", "cardiomegaly", N),
    ("The heart is normal in size.", "cardiomegaly", N),
    ("The cardiomediastinal silhouette is within normal limits.", "cardiomegaly", N),
    ("No cardiomegaly.", "cardiomegaly", N),
    ("Borderline cardiomegaly.", "cardiomegaly", U),
    ("The heart may be mildly enlarged.", "cardiomegaly", U),
    # pleural effusion
    ("There is a small left pleural effusion.", "pleural_effusion", P),
    ("Bilateral pleural effusions.", "pleural_effusion", P),
    ("Blunting of the right costophrenic angle.", "pleural_effusion", P),
    ("No pleural effusion.", "pleural_effusion", N),
    ("There is no pleural effusion or pneumothorax.", "pleural_effusion", N),
    ("Negative for pneumothorax, pleural effusion.", "pleural_effusion", N),
    ("The previously seen effusion has resolved.", "pleural_effusion", N),
    ("Small pericardial effusion.", "pleural_effusion", None),
    ("A small effusion cannot be excluded.", "pleural_effusion", U),
    ("Possible small left effusion.", "pleural_effusion", U),
    # pneumothorax
    ("Small right apical pneumothorax.", "pneumothorax", P),
    ("No pneumothorax.", "pneumothorax", N),
    ("No pleural effusions or pneumothoraces.", "pneumothorax", N),
    ("Without evidence of pneumothorax.", "pneumothorax", N),
    ("Pneumothorax is not seen.", "pneumothorax", N),
    ("Cannot exclude a tiny pneumothorax.", "pneumothorax", U),
    # consolidation
    ("Right lower lobe consolidation.", "consolidation", P),
    ("Focal airspace opacity in the left base.", "consolidation", P),
    ("The lungs are free of focal airspace disease.", "consolidation", N),
    ("No focal consolidation.", "consolidation", N),
    ("Lungs are clear without focal consolidation.", "consolidation", N),
    ("Opacity may represent consolidation.", "consolidation", U),
    ("Findings suspicious for pneumonia with consolidation.", "consolidation", U),
    # nodule / mass
    ("An 8 mm nodule is seen in the right upper lobe.", "nodule_mass", P),
    ("A 4 cm mass in the left lower lobe.", "nodule_mass", P),
    ("No suspicious pulmonary nodules or masses.", "nodule_mass", N),
    ("No airspace disease, effusion or noncalcified nodule.", "nodule_mass", N),
    ("Questionable nodule in the left midlung.", "nodule_mass", U),
    # atelectasis
    ("Mild subsegmental atelectasis at the left base.", "atelectasis", P),
    ("Bibasilar atelectatic changes.", "atelectasis", P),
    ("No atelectasis.", "atelectasis", N),
    ("Atelectasis versus scarring in the lingula.", "atelectasis", U),
    # edema
    ("Moderate pulmonary edema.", "edema", P),
    ("Mild interstitial edema with vascular congestion.", "edema", P),
    ("No pulmonary edema.", "edema", N),
    ("Clear of edema.", "edema", N),
    ("Findings may represent mild edema.", "edema", U),
    # support devices
    ("Endotracheal tube terminates 3 cm above the carina.", "support_devices", P),
    ("Right internal jugular central venous catheter in place.", "support_devices", P),
    ("Left-sided pacemaker with leads in the right atrium and ventricle.", "support_devices", P),
    ("The nasogastric tube has been removed.", "support_devices", N),
    # idioms that mention nothing
    ("No acute cardiopulmonary abnormality.", "pneumothorax", None),
    ("The lungs are clear.", "consolidation", None),
    ("XXXX XXXX are intact.", "cardiomegaly", None),
    ("No interval change in the appearance of the chest.", "edema", None),
]


@pytest.mark.parametrize(("text", "finding", "expected"), CASES)
def test_sentence(text: str, finding: str, expected: str | None) -> None:
    assert label_report(text)[finding] == expected, label_report(text)


def test_cues_stop_at_clause_and_sentence_boundaries() -> None:
    labels = label_report(
        "No pneumothorax. There is a small right pleural effusion; no consolidation, but there is "
        "atelectasis at the right base."
    )
    assert labels["pneumothorax"] == N and labels["pleural_effusion"] == P
    assert labels["consolidation"] == N and labels["atelectasis"] == P


def test_positive_wins_over_uncertain_and_negative() -> None:
    text = "FINDINGS: Possible small left effusion. IMPRESSION: Small left pleural effusion. No right effusion."
    assert label_report(text)["pleural_effusion"] == P


def test_binary_uncertain_policy() -> None:
    texts = ["Possible small pneumothorax.", "No pneumothorax.", "Large pneumothorax."]
    k = FINDINGS.index("pneumothorax")
    assert binary_labels(texts)[:, k].tolist() == [1, 0, 1]
    assert binary_labels(texts, uncertain_as=0)[:, k].tolist() == [0, 0, 1]
    assert binary_labels([]).shape == (0, len(FINDINGS))


def test_synthetic_reports_are_labeled_exactly_as_their_ground_truth(synth_root: Path) -> None:
    raw = json.loads((synth_root / "annotation.json").read_text())
    records = [r for split in raw.values() for r in split]
    truth = np.array([[r["labels"][f] for f in FINDINGS] for r in records])
    predicted = binary_labels([r["report"] for r in records])
    wrong = [(r["id"], r["report"]) for r, t, p in zip(records, truth, predicted, strict=True) if (t != p).any()]
    assert not wrong, wrong[:3]
    assert truth.sum() > 0


@pytest.mark.real_data
def test_real_iu_xray_reports_label_distribution() -> None:
    src = SHARED_DATA / "iu_xray_reports" / "annotation.json"
    if not src.is_file():
        pytest.skip("../shared/data/iu_xray_reports is not present")
    reports = [r["report"] for r in json.loads(src.read_text())["train"]]
    labels = [label_report(r) for r in reports]
    positive = {f: np.mean([lab[f] == P for lab in labels]) for f in FINDINGS}
    mentioned = {f: np.mean([lab[f] is not None for lab in labels]) for f in FINDINGS}
    # IU X-ray is mostly normal outpatient studies: findings are rare, but pneumothorax and effusion are routinely
    # negated, so a labeler that misses negation would show them as common.
    assert all(0.0 < positive[f] < 0.15 for f in FINDINGS), positive
    assert mentioned["pneumothorax"] > 0.5 and positive["pneumothorax"] < 0.02
    assert mentioned["pleural_effusion"] > 0.5 and positive["pleural_effusion"] < 0.1
