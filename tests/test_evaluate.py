"""Evaluation metrics: NLG scores through pycocoevalcap, the rule-based finding labeler, clinical P/R/F1 and the
majority-report baseline."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from medvl.evaluate.baseline import majority_report
from medvl.evaluate.clinical import clinical_metrics
from medvl.evaluate.labeler import binary_labels, label_report
from medvl.findings import FINDINGS

from .conftest import SHARED_DATA

P, N, U = "positive", "negative", "uncertain"

REFS = [
    "FINDINGS: The heart is mildly enlarged. There is a small left pleural effusion. No pneumothorax. "
    "IMPRESSION: Mild cardiomegaly. Small left pleural effusion.",
    "FINDINGS: Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax. "
    "IMPRESSION: No acute cardiopulmonary abnormality.",
    "FINDINGS: An 8 mm nodule is seen in the right upper lobe. The lungs are otherwise clear. "
    "IMPRESSION: Right upper lobe nodule.",
    "FINDINGS: Endotracheal tube in place. Moderate pulmonary edema. IMPRESSION: Moderate pulmonary edema.",
]
GOOD = [
    "FINDINGS: The heart is mildly enlarged. There is a small right pleural effusion. "
    "IMPRESSION: Mild cardiomegaly. Small right pleural effusion.",
    "FINDINGS: Heart size is normal. The lungs are clear. No pneumothorax. IMPRESSION: Normal chest.",
    "FINDINGS: A 6 mm nodule is seen in the left upper lobe. IMPRESSION: Left upper lobe nodule.",
    "FINDINGS: Endotracheal tube in place. Mild pulmonary edema. IMPRESSION: Mild pulmonary edema.",
]


# ------------------------------------------------------------------------------------------------------- labeler

LABELER_CASES = [
    # cardiomegaly: positive phrasings
    ("Cardiomegaly.", "cardiomegaly", P),
    ("Mild cardiomegaly.", "cardiomegaly", P),
    ("The heart is mildly enlarged.", "cardiomegaly", P),
    ("Heart size is enlarged.", "cardiomegaly", P),
    ("Markedly enlarged cardiac silhouette.", "cardiomegaly", P),
    ("Moderately enlarged heart.", "cardiomegaly", P),
    ("There is cardiac enlargement.", "cardiomegaly", P),
    ("Stable enlargement of the cardiac silhouette.", "cardiomegaly", P),
    ("The heart is large.", "cardiomegaly", P),
    ("Stable cardiomegaly.", "cardiomegaly", P),
    ("No change in moderate cardiomegaly.", "cardiomegaly", P),
    ("Cardiomegaly is consistent with the known cardiomyopathy.", "cardiomegaly", P),
    # cardiomegaly: negation and normal statements
    ("No cardiomegaly.", "cardiomegaly", N),
    ("The heart is not enlarged.", "cardiomegaly", N),
    ("The cardiac silhouette is not significantly enlarged.", "cardiomegaly", N),
    ("Negative for cardiac enlargement.", "cardiomegaly", N),
    ("Heart size is normal.", "cardiomegaly", N),
    ("Normal heart size.", "cardiomegaly", N),
    ("The heart is normal in size.", "cardiomegaly", N),
    ("The cardiomediastinal silhouette is within normal limits.", "cardiomegaly", N),
    ("The cardiomediastinal silhouette is normal.", "cardiomegaly", N),
    ("Heart and mediastinum are unremarkable.", "cardiomegaly", N),
    ("Heart size and pulmonary vascularity appear within normal limits.", "cardiomegaly", N),
    ("Cardio mediastinal silhouette is unremarkable.", "cardiomegaly", N),
    ("Heart size is upper limits of normal.", "cardiomegaly", N),
    # cardiomegaly: uncertain
    ("Borderline cardiomegaly.", "cardiomegaly", U),
    ("Borderline enlarged heart.", "cardiomegaly", U),
    ("The heart may be mildly enlarged.", "cardiomegaly", U),
    ("Possible mild cardiomegaly.", "cardiomegaly", U),
    ("Cardiomegaly and/or pericardial effusion.", "cardiomegaly", U),
    # cardiomegaly: not mentioned
    ("Stable cardiomediastinal silhouette.", "cardiomegaly", None),
    ("No acute cardiopulmonary abnormality.", "cardiomegaly", None),
    ("External cardiac monitor leads overlie the chest.", "cardiomegaly", None),
    ("Mediastinal contours are within normal limits.", "cardiomegaly", None),
    # pleural effusion
    ("There is a small left pleural effusion.", "pleural_effusion", P),
    ("Small bilateral pleural effusions.", "pleural_effusion", P),
    ("Right effusion.", "pleural_effusion", P),
    ("Blunting of the left costophrenic angle.", "pleural_effusion", P),
    ("The costophrenic XXXX are blunted.", "pleural_effusion", P),
    ("Left costophrenic XXXX blunting.", "pleural_effusion", P),
    ("Large right pleural effusion with opacification of the lower hemithorax.", "pleural_effusion", P),
    ("No pleural effusion.", "pleural_effusion", N),
    ("No effusion.", "pleural_effusion", N),
    ("There is no pleural effusion.", "pleural_effusion", N),
    ("Without pleural effusion.", "pleural_effusion", N),
    ("Free of pleural effusion.", "pleural_effusion", N),
    ("Clear of effusion.", "pleural_effusion", N),
    ("Negative for pleural effusion.", "pleural_effusion", N),
    ("No evidence of pleural effusion.", "pleural_effusion", N),
    ("Absence of pleural effusion.", "pleural_effusion", N),
    ("Resolved left pleural effusion.", "pleural_effusion", N),
    ("The left pleural effusion has resolved.", "pleural_effusion", N),
    ("The pleural effusion is no longer seen.", "pleural_effusion", N),
    ("Pleural effusion is not identified.", "pleural_effusion", N),
    ("Atelectasis rather than effusion.", "pleural_effusion", N),
    ("Neither pneumothorax nor effusion.", "pleural_effusion", N),
    ("No large pleural effusion.", "pleural_effusion", N),
    ("No visible pleural fluid.", "pleural_effusion", N),
    ("The pleural spaces are clear.", "pleural_effusion", N),
    ("The costophrenic angles are sharp.", "pleural_effusion", N),
    ("Possible small left pleural effusion.", "pleural_effusion", U),
    ("A small effusion cannot be excluded.", "pleural_effusion", U),
    ("Cannot exclude a small effusion.", "pleural_effusion", U),
    ("Small right pleural effusion versus pleural thickening.", "pleural_effusion", U),
    ("Blunting of the right costophrenic XXXX which may represent a small effusion.", "pleural_effusion", U),
    ("There may be a small left effusion.", "pleural_effusion", U),
    ("Small pericardial effusion.", "pleural_effusion", None),
    ("No acute fracture or joint effusion.", "pleural_effusion", None),
    # pneumothorax
    ("Small right apical pneumothorax.", "pneumothorax", P),
    ("There is a large left pneumothorax.", "pneumothorax", P),
    ("Left apical pneumothorax with a visible pleural line.", "pneumothorax", P),
    ("Left hydropneumothorax.", "pneumothorax", P),
    ("No pneumothorax.", "pneumothorax", N),
    ("No evidence of pneumothorax.", "pneumothorax", N),
    ("There is no pneumothorax.", "pneumothorax", N),
    ("Pneumothorax is not seen.", "pneumothorax", N),
    ("The previously seen pneumothorax has resolved.", "pneumothorax", N),
    ("No pleural effusions or pneumothoraces.", "pneumothorax", N),
    ("No pleural air collections.", "pneumothorax", N),
    ("There is no pleural line to suggest pneumothorax.", "pneumothorax", N),
    ("Cannot exclude a tiny pneumothorax.", "pneumothorax", U),
    ("Questionable small apical pneumothorax.", "pneumothorax", U),
    ("Probable small residual pneumothorax.", "pneumothorax", U),
    ("Small pneumothorax is suspected.", "pneumothorax", U),
    ("Possible pneumothorax?", "pneumothorax", U),
    # consolidation
    ("Right lower lobe consolidation.", "consolidation", P),
    ("Patchy consolidation in the lingula.", "consolidation", P),
    ("Focal airspace opacity in the left base.", "consolidation", P),
    ("There is left lower lobe airspace disease.", "consolidation", P),
    ("Air space opacities in both bases.", "consolidation", P),
    ("No focal consolidation.", "consolidation", N),
    ("The lungs are free of focal airspace disease.", "consolidation", N),
    ("Lungs are clear without focal consolidation.", "consolidation", N),
    ("Previously present left base airspace disease has cleared.", "consolidation", N),
    ("Opacity may represent consolidation.", "consolidation", U),
    ("Findings suspicious for consolidation.", "consolidation", U),
    ("Concerning for right lower lobe consolidation.", "consolidation", U),
    ("Likely consolidation in the right base.", "consolidation", U),
    ("Findings suggest early consolidation.", "consolidation", U),
    ("The lungs are clear.", "consolidation", None),
    # nodule / mass
    ("An 8 mm nodule is seen in the right upper lobe.", "nodule_mass", P),
    ("4.5 cm mass in the left lower lobe.", "nodule_mass", P),
    ("Right upper lobe mass measuring 3.2 cm.", "nodule_mass", P),
    ("Nodular opacity in the left midlung.", "nodule_mass", P),
    ("Calcified nodules consistent with prior granulomatous disease.", "nodule_mass", P),
    ("No pulmonary nodule or mass.", "nodule_mass", N),
    ("There are no nodules or masses.", "nodule_mass", N),
    ("No suspicious pulmonary nodules.", "nodule_mass", N),
    ("The previously noted nodule is not well seen on today's study.", "nodule_mass", N),
    ("Questionable nodule in the left midlung.", "nodule_mass", U),
    ("Another mass on the left cannot be excluded.", "nodule_mass", U),
    ("Calcified granuloma in the left lower lobe.", "nodule_mass", None),
    # atelectasis
    ("Mild subsegmental atelectasis at the left base.", "atelectasis", P),
    ("Bibasilar atelectasis.", "atelectasis", P),
    ("The right lower lobe is partially atelectatic with volume loss.", "atelectasis", P),
    ("Complete collapse of the left lung.", "atelectasis", P),
    ("No atelectasis.", "atelectasis", N),
    ("There is no atelectasis.", "atelectasis", N),
    ("Atelectasis versus scarring in the lingula.", "atelectasis", U),
    ("Atelectasis vs. scarring in the lingula.", "atelectasis", U),
    ("Streaky opacity, likely atelectasis.", "atelectasis", U),
    ("Basilar opacity may represent atelectasis or pneumonia.", "atelectasis", U),
    ("Patchy opacity favored as atelectasis.", "atelectasis", U),
    ("Mild left-sided volume loss.", "atelectasis", None),
    ("There is redemonstration without significant interval change of left basilar atelectasis.", "atelectasis", P),
    # edema
    ("Moderate pulmonary edema.", "edema", P),
    ("Mild interstitial pulmonary edema with vascular congestion.", "edema", P),
    ("Alveolar edema.", "edema", P),
    ("Mild central vascular congestion.", "edema", P),
    ("No pulmonary edema.", "edema", N),
    ("No edema.", "edema", N),
    ("No typical findings of pulmonary edema.", "edema", N),
    ("Negative for vascular congestion.", "edema", N),
    ("Resolved interstitial edema.", "edema", N),
    ("Findings may represent mild edema.", "edema", U),
    ("Cannot exclude early pulmonary edema.", "edema", U),
    ("Soft tissue edema of the chest wall.", "edema", None),
    # support devices
    ("Endotracheal tube terminates 4 cm above the carina.", "support_devices", P),
    ("ET tube in place.", "support_devices", P),
    ("Right internal jugular central venous catheter in place.", "support_devices", P),
    ("Left PICC line with tip in the SVC.", "support_devices", P),
    ("The nasogastric tube courses below the diaphragm.", "support_devices", P),
    ("NG tube and feeding tube in place.", "support_devices", P),
    ("Left chest wall pacemaker with leads in the right atrium and ventricle.", "support_devices", P),
    ("AICD in place.", "support_devices", P),
    ("Tracheostomy tube in stable position.", "support_devices", P),
    ("Lines and tubes: endotracheal tube and nasogastric tube.", "support_devices", P),
    ("The nasogastric tube has been removed.", "support_devices", N),
    ("Interval removal of the right PICC line.", "support_devices", N),
    ("Catheter tip may be within the azygos vein.", "support_devices", P),  # the position is hedged, not the device
    ("Median sternotomy wires are intact.", "support_devices", None),
    ("Surgical clips in the right upper quadrant.", "support_devices", None),
    # IU X-ray anonymization tokens
    ("XXXX XXXX are intact.", "cardiomegaly", None),
    ("No XXXX pleural effusion.", "pleural_effusion", N),
    ("Heart size XXXX borderline enlarged.", "cardiomegaly", U),
    ("The heart and pulmonary XXXX are normal.", "cardiomegaly", N),
]


@pytest.mark.parametrize(("text", "finding", "expected"), LABELER_CASES)
def test_labeler_sentence(text: str, finding: str, expected: str | None) -> None:
    labels = label_report(text)
    assert labels[finding] == expected, labels


@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax, pleural effusion, or focal consolidation.",
        "There is no pneumothorax, pleural effusion or focal consolidation.",
        "Without evidence of pneumothorax, pleural effusion, or consolidation.",
        "Negative for pneumothorax, pleural effusion, consolidation.",
        "Pneumothorax, pleural effusion and consolidation are not seen.",
        "Pneumothorax, pleural effusion and consolidation have resolved.",
    ],
)
def test_coordinated_lists_share_the_cue(text: str) -> None:
    labels = label_report(text)
    assert (labels["pneumothorax"], labels["pleural_effusion"], labels["consolidation"]) == (N, N, N), labels
    assert {f for f, v in labels.items() if v is not None} == {"pneumothorax", "pleural_effusion", "consolidation"}


def test_cues_stop_at_sentence_and_clause_boundaries() -> None:
    labels = label_report(
        "No pneumothorax. Small right pleural effusion; no consolidation, but there is atelectasis "
        "at the right base. Possible small left nodule. Edema."
    )
    assert labels["pneumothorax"] == N and labels["pleural_effusion"] == P and labels["consolidation"] == N
    assert labels["atelectasis"] == P and labels["nodule_mass"] == U and labels["edema"] == P
    labels = label_report("Heart size is normal and there is a small left effusion.")
    assert labels["cardiomegaly"] == N and labels["pleural_effusion"] == P
    labels = label_report("Possible small left effusion, no pneumothorax.")
    assert labels["pleural_effusion"] == U and labels["pneumothorax"] == N
    labels = label_report("No pneumothorax, likely atelectasis at the bases.")
    assert labels["pneumothorax"] == N and labels["atelectasis"] == U
    labels = label_report("Mild cardiomegaly, lungs are clear.")
    assert labels["cardiomegaly"] == P
    labels = label_report("The heart is not enlarged, small left pleural effusion.")
    assert labels["cardiomegaly"] == N and labels["pleural_effusion"] == P
    labels = label_report("No effusion (small pneumothorax on the prior study).")
    assert labels["pleural_effusion"] == N and labels["pneumothorax"] == P


def test_mentions_combine_positive_over_uncertain_over_negative() -> None:
    assert label_report("No effusion on the right. Possible small left effusion.")["pleural_effusion"] == U
    assert label_report("Possible left effusion. Small right pleural effusion. No effusion.")["pleural_effusion"] == P
    assert label_report("No left effusion. IMPRESSION: Small right pleural effusion.")["pleural_effusion"] == P
    assert label_report("No pneumothorax. No pneumothorax is seen.")["pneumothorax"] == N


def test_headers_split_sentences() -> None:
    labels = label_report("FINDINGS: no pneumothorax IMPRESSION: large right pleural effusion")
    assert labels["pneumothorax"] == N and labels["pleural_effusion"] == P


def test_every_finding_is_always_present() -> None:
    for text in ("", "   ", "XXXX", "Normal chest.", REFS[0]):
        labels = label_report(text)
        assert tuple(labels) == FINDINGS
    assert set(label_report("").values()) == {None}


BRIEF_ABNORMAL = (
    "FINDINGS: The heart is mildly enlarged. There is a small left pleural effusion. No pneumothorax. "
    "There is no focal consolidation. An 8 mm nodule is seen in the right upper lobe. Endotracheal tube "
    "and right internal jugular central venous catheter in place. IMPRESSION: Mild cardiomegaly. Small "
    "left pleural effusion. Right upper lobe nodule."
)
BRIEF_NORMAL = (
    "FINDINGS: Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax. "
    "IMPRESSION: No acute cardiopulmonary abnormality."
)


def test_example_reports_exactly() -> None:
    assert label_report(BRIEF_ABNORMAL) == {
        "cardiomegaly": P,
        "pleural_effusion": P,
        "pneumothorax": N,
        "consolidation": N,
        "nodule_mass": P,
        "atelectasis": None,
        "edema": None,
        "support_devices": P,
    }
    assert label_report(BRIEF_NORMAL) == {
        "cardiomegaly": N,
        "pleural_effusion": N,
        "pneumothorax": N,
        "consolidation": None,
        "nodule_mass": None,
        "atelectasis": None,
        "edema": None,
        "support_devices": None,
    }


def test_synthetic_grammar_is_labeled_exactly() -> None:
    """Every report the synthetic grammar writes is labeled exactly as its ground truth, with nothing uncertain."""
    from medvl.data.synth import sample_study, write_report

    reports, truth = [], []
    for i in range(600):
        rng = np.random.default_rng([11, i])
        spec = sample_study(rng)
        reports.append(write_report(spec, rng))
        truth.append([spec.labels[f] for f in FINDINGS])
    truth_arr = np.array(truth)
    predicted = binary_labels(reports)
    wrong = [(reports[i], truth_arr[i].tolist()) for i in np.nonzero((predicted != truth_arr).any(1))[0]]
    assert not wrong, wrong[:3]
    assert not any(U in label_report(r).values() for r in reports[:200])
    assert truth_arr.sum(0).min() > 0  # every finding occurs, so every finding was checked


def test_binary_labels_policy() -> None:
    texts = ["Possible small pneumothorax.", "No pneumothorax.", "Large pneumothorax.", "Normal chest."]
    k = FINDINGS.index("pneumothorax")
    ones = binary_labels(texts)
    assert ones.dtype == np.int8 and ones.shape == (4, len(FINDINGS))
    assert ones[:, k].tolist() == [1, 0, 1, 0]
    assert binary_labels(texts, uncertain_as=0)[:, k].tolist() == [0, 0, 1, 0]
    assert ones.sum() == 2  # nothing else is mentioned, so every other cell is 0
    assert binary_labels([]).shape == (0, len(FINDINGS))
    row = binary_labels([BRIEF_ABNORMAL])[0]
    assert [FINDINGS[j] for j in np.nonzero(row)[0]] == [
        "cardiomegaly",
        "pleural_effusion",
        "nodule_mass",
        "support_devices",
    ]
    with pytest.raises(ValueError, match="uncertain_as must be 0/1"):
        binary_labels(texts, uncertain_as=2)


def test_labeler_is_fast_and_does_not_backtrack() -> None:
    reports = [BRIEF_ABNORMAL, BRIEF_NORMAL, *REFS] * 334
    start = time.perf_counter()
    binary_labels(reports[:2000])
    # The labeler runs at thousands of reports/s; this loose bound only catches a pathological slowdown.
    assert time.perf_counter() - start < 5.0
    nasty = "no " + "pleural effusion, " * 400 + "x " * 2000  # one 10k-character sentence
    start = time.perf_counter()
    assert label_report(nasty)["pleural_effusion"] == N
    assert time.perf_counter() - start < 2.0


@pytest.mark.real_data
def test_real_iu_xray_reports_look_plausible() -> None:
    src = SHARED_DATA / "iu_xray_reports" / "annotation.json"
    if not src.is_file():
        pytest.skip("../shared/data/iu_xray_reports is not present")
    reports = [r["report"] for split in json.loads(src.read_text()).values() for r in split]
    labels = [label_report(r) for r in reports]
    share = {f: {v: np.mean([lab[f] == v for lab in labels]) for v in (P, N, U, None)} for f in FINDINGS}
    # IU X-ray is mostly normal outpatient studies: heart size, effusion and pneumothorax are stated (and mostly
    # normal) in most reports, every finding occurs but none is common.
    assert share["cardiomegaly"][N] > 0.7 and 0.03 < share["cardiomegaly"][P] < 0.15
    assert share["pleural_effusion"][N] > 0.6 and share["pneumothorax"][N] > 0.6
    assert share["pneumothorax"][P] < 0.02
    assert all(0.0 < share[f][P] < 0.1 for f in FINDINGS if f != "cardiomegaly"), share
    assert all(share[f][U] < 0.03 for f in FINDINGS), share


# ------------------------------------------------------------------------------------------------------ clinical


def test_clinical_metrics_by_hand() -> None:
    names = ("a", "b", "c")
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]])
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    m = clinical_metrics(truth, pred, names)
    # a: tp 1, predicted 2, support 2; b: tp 1, predicted 2, support 2; c: nothing anywhere
    assert m["per_finding"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert m["per_finding"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert m["per_finding"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    assert m["micro"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert m["macro"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    # studies (P, R, F1): (1/2, 1, 2/3), (1, 1/2, 2/3), normal agreed (1, 1, 1), false alarm (0, 0, 0), miss (0, 0, 0)
    assert m["example_based"]["precision"] == pytest.approx((0.5 + 1 + 1) / 5)
    assert m["example_based"]["recall"] == pytest.approx((1 + 0.5 + 1) / 5)
    assert m["example_based"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 5)


def test_clinical_metrics_types_and_extremes() -> None:
    truth = np.array([[1, 0], [0, 1], [0, 0]], dtype=np.int8)
    perfect = clinical_metrics(truth, truth.copy(), ("a", "b"))
    for avg in ("micro", "macro", "example_based"):
        assert perfect[avg] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
        assert all(type(v) is float for v in perfect[avg].values())
    assert type(perfect["per_finding"]["a"]["support"]) is int
    assert type(perfect["per_finding"]["a"]["predicted"]) is int
    silent = clinical_metrics(truth, np.zeros_like(truth), ("a", "b"))
    assert silent["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert silent["example_based"]["f1"] == pytest.approx(1 / 3)  # only the normal study agrees
    assert json.loads(json.dumps(silent)) == silent


def test_clinical_metrics_errors() -> None:
    truth = np.zeros((3, 2), dtype=int)
    with pytest.raises(ValueError, match="must both be"):
        clinical_metrics(truth, truth[:, :1], ("a", "b"))
    with pytest.raises(ValueError, match="must both be"):
        clinical_metrics(truth, truth, ("a", "b", "c"))
    with pytest.raises(ValueError, match="only 0 and 1"):
        clinical_metrics(truth, truth - 1, ("a", "b"))
    with pytest.raises(ValueError, match="no studies"):
        clinical_metrics(truth[:0], truth[:0], ("a", "b"))


def test_clinical_metrics_match_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = (rng.random((200, 8)) < 0.2).astype(int)
    pred = (rng.random((200, 8)) < 0.2).astype(int)
    pred[:20] = truth[:20]  # some exact agreement, including normal studies
    truth[:, 7] = 0  # a finding with no support
    m = clinical_metrics(truth, pred, FINDINGS)
    p, r, f, support = metrics.precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
    for k, name in enumerate(FINDINGS):
        got = m["per_finding"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[k], r[k], f[k]), abs=1e-12)
        assert got["support"] == support[k] and got["predicted"] == pred[:, k].sum()
    for avg in ("micro", "macro"):
        ref = metrics.precision_recall_fscore_support(truth, pred, average=avg, zero_division=0)[:3]
        assert tuple(m[avg].values()) == pytest.approx(ref, abs=1e-12), avg
    # Example-based = sklearn's per-sample average once a "no finding" column makes every row non-empty.
    truth_nf = np.hstack([truth, (truth.sum(1) == 0)[:, None].astype(int)])
    pred_nf = np.hstack([pred, (pred.sum(1) == 0)[:, None].astype(int)])
    ref = metrics.precision_recall_fscore_support(truth_nf, pred_nf, average="samples", zero_division=0)[:3]
    assert tuple(m["example_based"].values()) == pytest.approx(ref, abs=1e-12)


# ------------------------------------------------------------------------------------------------------ baseline


def test_majority_report() -> None:
    assert majority_report(["b", "a  x", "a x", "b", "c"]) == "b"  # tie between "b" and "a x": the first seen
    assert majority_report(["a x", "b", "b", " a\n x "]) == "a x"
    assert majority_report(["No  acute disease.", "Other.", "No acute disease.\n"]) == "No acute disease."
    assert majority_report(["only one"]) == "only one"
    assert majority_report(["", "  ", "x"]) == "x"
    with pytest.raises(ValueError, match="no training reports"):
        majority_report([])
    with pytest.raises(ValueError, match="no training reports"):
        majority_report(["", " \n"])
