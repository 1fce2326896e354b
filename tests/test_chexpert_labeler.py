"""An independent, hand-written corpus for the CheXpert-style labeler (`label_report` with `CHEXPERT`).

The expected labels below were written by a human reading each sentence or report, following the CheXpert
labeler's conventions (mentions, negation, uncertainty, "No Finding"), NOT copied from the implementation's
output. They check the labeler against a reader, not against itself.

Conventions in brief: each observation is "positive", "negative", "uncertain" or None (not mentioned); several
mentions combine as positive > uncertain > negative; "No Finding" is "positive" when nothing but Support Devices
is positive/uncertain and no other abnormality (emphysema, granuloma, scoliosis, ...) is mentioned positively,
and None otherwise (never "negative").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvl.evaluate.chexpert import CHEXPERT_MESH
from medvl.evaluate.labeler import CHEXPERT, binary_labels, label_report

P, N, U = "positive", "negative", "uncertain"

ECM = "Enlarged Cardiomediastinum"
CM = "Cardiomegaly"
LO = "Lung Opacity"
LL = "Lung Lesion"
ED = "Edema"
CO = "Consolidation"
PN = "Pneumonia"
AT = "Atelectasis"
PX = "Pneumothorax"
PE = "Pleural Effusion"
PO = "Pleural Other"
FX = "Fracture"
SD = "Support Devices"
NF = "No Finding"

NAMES = (ECM, CM, LO, LL, ED, CO, PN, AT, PX, PE, PO, FX, SD, NF)
VALUES = {P, N, U, None}

_SHORT = {ECM: "ECM", CM: "CM", LO: "LO", LL: "LL", ED: "ED", CO: "CO", PN: "PN", AT: "AT", PX: "PX", PE: "PE",
          PO: "PO", FX: "FX", SD: "SD", NF: "NF"}


# --------------------------------------------------------------------------------------------------------------
# 1. Sentence-level cases: (text, observation, expected)
# --------------------------------------------------------------------------------------------------------------

CASES: list[tuple[str, str, str | None]] = [
    # ---- Enlarged Cardiomediastinum -------------------------------------------------------------------------
    ("The mediastinum is widened.", ECM, P),
    ("Widened mediastinum.", ECM, P),
    ("Mediastinal widening is noted.", ECM, P),
    ("Stable widening of the mediastinum.", ECM, P),
    ("The cardiomediastinal silhouette is enlarged.", ECM, P),
    ("Enlarged cardiomediastinal silhouette.", ECM, P),
    ("The mediastinal contours are normal.", ECM, N),
    ("Cardiomediastinal silhouette is within normal limits.", ECM, N),
    ("The cardiomediastinal silhouette is normal.", ECM, N),
    ("Normal cardiomediastinal contours.", ECM, N),
    ("The mediastinum is unremarkable.", ECM, N),
    ("No mediastinal widening.", ECM, N),
    ("The mediastinum is not widened.", ECM, N),
    ("Possible mediastinal widening.", ECM, U),
    ("Questionable widening of the mediastinum.", ECM, U),
    ("Mediastinal widening cannot be excluded.", ECM, U),
    ("No acute bony abnormality.", ECM, None),
    ("Small left pleural effusion.", ECM, None),
    # ---- Cardiomegaly ---------------------------------------------------------------------------------------
    ("The heart is enlarged.", CM, P),
    ("Moderate cardiomegaly.", CM, P),
    ("Cardiomegaly is again noted.", CM, P),
    ("Stable mild cardiomegaly.", CM, P),
    ("Heart size is enlarged.", CM, P),
    ("The cardiac silhouette is enlarged.", CM, P),
    ("Mild cardiac enlargement.", CM, P),
    ("Enlarged heart.", CM, P),
    ("Heart size is normal.", CM, N),
    ("Normal heart size.", CM, N),
    ("The heart is not enlarged.", CM, N),
    ("The heart is normal in size.", CM, N),
    ("No cardiomegaly.", CM, N),
    ("No evidence of cardiomegaly.", CM, N),
    ("Negative for cardiomegaly.", CM, N),
    ("Borderline cardiomegaly.", CM, U),
    ("Heart size is borderline.", CM, U),
    ("Possible mild cardiomegaly.", CM, U),
    ("Cardiomegaly cannot be excluded.", CM, U),
    ("Questionable cardiomegaly.", CM, U),
    ("Findings may represent congestive heart failure.", CM, U),  # CHF rule
    ("Mild CHF.", CM, U),  # positive CHF -> Cardiomegaly uncertain
    ("Calcified granuloma in the right upper lobe.", CM, None),
    ("No pneumothorax.", CM, None),
    # ---- Lung Opacity ---------------------------------------------------------------------------------------
    ("Patchy opacity in the left lower lobe.", LO, P),
    ("Bilateral interstitial opacities.", LO, P),
    ("Right basilar opacification.", LO, P),
    ("There are bilateral infiltrates.", LO, P),
    ("Left basilar airspace disease.", LO, P),
    ("Increased density in the right lower lobe.", LO, P),
    ("Increased interstitial markings.", LO, P),
    ("Coarse reticular markings at the lung bases.", LO, P),
    ("Peribronchial thickening is present.", LO, P),
    ("Mild parenchymal scarring at the left base.", LO, P),
    ("Lungs are clear without focal airspace disease.", LO, N),
    ("No focal airspace opacity.", LO, N),
    ("No evidence of infiltrate.", LO, N),
    ("The lungs are free of focal airspace disease.", LO, N),
    ("The lungs are clear of infiltrates.", LO, N),
    ("Negative for infiltrate.", LO, N),
    ("No focal opacity is seen.", LO, N),
    ("The previously seen right basilar opacity has resolved.", LO, N),
    ("The lungs are well expanded without focal opacity.", LO, N),
    ("Questionable opacity at the right base.", LO, U),
    ("Possible infiltrate in the left lower lobe.", LO, U),
    ("A subtle left basilar opacity cannot be excluded.", LO, U),
    ("Findings may represent an early infiltrate.", LO, U),
    ("Right basilar opacity versus overlapping soft tissue.", LO, U),
    ("Probable left basilar airspace disease.", LO, U),
    ("Degenerative changes of the thoracic spine.", LO, None),
    ("Heart size is normal.", LO, None),
    # ---- Lung Lesion ----------------------------------------------------------------------------------------
    ("A 1.5 cm nodule in the right upper lobe.", LL, P),
    ("Left hilar mass.", LL, P),
    ("Multiple pulmonary nodules are present.", LL, P),
    ("Nodular opacity in the left lower lobe.", LL, P),
    ("Spiculated mass in the left upper lobe.", LL, P),
    ("Cavitary lesion in the right upper lobe.", LL, P),
    ("Right upper lobe mass consistent with known carcinoma.", LL, P),
    ("Innumerable pulmonary nodules consistent with metastatic disease.", LL, P),
    ("No pulmonary nodules.", LL, N),
    ("No evidence of mass.", LL, N),
    ("Negative for pulmonary nodule.", LL, N),
    ("No focal nodule or mass is seen.", LL, N),
    ("No suspicious pulmonary nodules or masses.", LL, N),  # "no" scopes over "suspicious"
    ("The previously noted nodule is not seen.", LL, N),
    ("Without discrete nodule.", LL, N),
    ("Possible nodule in the right mid lung.", LL, U),
    ("Questionable left upper lobe nodule.", LL, U),
    ("A right lower lobe nodule cannot be excluded.", LL, U),
    ("Mass versus vascular structure at the left hilum.", LL, U),
    ("Right hilar fullness, possibly a mass.", LL, U),
    ("Calcified granuloma in the right upper lobe.", LL, None),  # granuloma is not a CheXpert Lung Lesion
    ("Moderate cardiomegaly.", LL, None),
    # ---- Edema ----------------------------------------------------------------------------------------------
    ("Mild pulmonary edema.", ED, P),
    ("Interstitial edema.", ED, P),
    ("Alveolar edema in both lungs.", ED, P),
    ("Moderate pulmonary vascular congestion.", ED, U),  # CheXpert: congestion is uncertain
    ("Pulmonary vascular congestion is present.", ED, U),
    ("Findings consistent with congestive heart failure.", ED, P),
    ("Mild interstitial pulmonary edema has increased.", ED, P),
    ("CHF.", ED, P),
    ("No pulmonary edema.", ED, N),
    ("No evidence of vascular congestion.", ED, N),
    ("Pulmonary edema has resolved.", ED, N),
    ("Without evidence of edema.", ED, N),
    ("Negative for pulmonary edema.", ED, N),
    ("The lungs are free of edema.", ED, N),
    ("There is no pulmonary edema or vascular congestion.", ED, N),
    ("Interval resolution of pulmonary edema.", ED, N),
    ("Possible mild pulmonary edema.", ED, U),
    ("Mild interstitial edema cannot be excluded.", ED, U),
    ("Findings may represent mild pulmonary edema.", ED, U),
    ("Likely mild interstitial edema.", ED, U),
    ("Findings suggestive of pulmonary edema.", ED, U),
    ("Mild interstitial edema versus atypical infection.", ED, U),
    ("Soft tissue edema of the left chest wall.", ED, None),
    ("Subcutaneous edema is noted.", ED, None),
    ("Small bilateral pleural effusions.", ED, None),
    # ---- Consolidation --------------------------------------------------------------------------------------
    ("Right lower lobe consolidation.", CO, P),
    ("Dense consolidation in the left lower lobe.", CO, P),
    ("Consolidative opacity in the right middle lobe.", CO, P),
    ("There is focal consolidation at the left base.", CO, P),
    ("Multifocal consolidations.", CO, P),
    ("Left lower lobe consolidation compatible with pneumonia.", CO, P),
    ("No focal consolidation.", CO, N),
    ("No evidence of consolidation.", CO, N),
    ("The lungs are clear without focal consolidation.", CO, N),
    ("The lungs are free of consolidation.", CO, N),
    ("The lungs are clear of focal consolidation.", CO, N),
    ("Negative for consolidation.", CO, N),
    ("No consolidation is seen.", CO, N),
    ("The previously seen left lower lobe consolidation has resolved.", CO, N),
    ("No focal consolidation to suggest pneumonia.", CO, N),
    ("Possible consolidation at the right base.", CO, U),
    ("Consolidation cannot be excluded.", CO, U),
    ("Atelectasis versus consolidation at the left base.", CO, U),
    ("Early consolidation is not excluded.", CO, U),
    ("Questionable consolidation in the lingula.", CO, U),
    ("Heart size is normal.", CO, None),
    ("Small right pleural effusion.", CO, None),
    # ---- Pneumonia ------------------------------------------------------------------------------------------
    ("Right lower lobe pneumonia.", PN, P),
    ("Findings consistent with pneumonia.", PN, P),
    ("Left lower lobe consolidation compatible with pneumonia.", PN, P),
    ("Multifocal pneumonia.", PN, P),
    ("There is a right upper lobe pneumonia.", PN, P),
    ("Infectious process in the right lower lobe.", PN, P),
    ("No evidence of pneumonia.", PN, N),
    ("No focal consolidation to suggest pneumonia.", PN, N),
    ("Negative for pneumonia.", PN, N),
    ("The previously seen right lower lobe pneumonia has resolved.", PN, N),
    ("No radiographic evidence of pneumonia.", PN, N),
    ("Without evidence of infection.", PN, N),
    ("Opacity at the right base may represent pneumonia.", PN, U),
    ("Pneumonia cannot be excluded.", PN, U),
    ("Cannot exclude early pneumonia.", PN, U),
    ("Possible early pneumonia.", PN, U),
    ("Atelectasis versus pneumonia.", PN, U),
    ("Findings suspicious for pneumonia.", PN, U),
    ("Right lower lobe opacity concerning for infection.", PN, U),
    ("Right lower lobe opacity, likely pneumonia.", PN, U),
    ("Small left pleural effusion.", PN, None),
    ("Moderate cardiomegaly.", PN, None),
    # ---- Atelectasis ----------------------------------------------------------------------------------------
    ("Bibasilar atelectasis.", AT, P),
    ("Mild left basilar atelectasis.", AT, P),
    ("Subsegmental atelectasis at the right base.", AT, P),
    ("Plate-like atelectasis in the left lower lobe.", AT, P),
    ("Linear atelectatic changes at the lung bases.", AT, P),
    ("Collapse of the left lower lobe.", AT, P),
    ("Right upper lobe collapse.", AT, P),
    ("Minimal bibasilar atelectasis.", AT, P),
    ("No atelectasis.", AT, N),
    ("No evidence of atelectasis.", AT, N),
    ("The previously seen left basilar atelectasis has resolved.", AT, N),
    ("No focal atelectasis is seen.", AT, N),
    ("Without atelectasis.", AT, N),
    ("No lobar collapse.", AT, N),
    ("Possible left basilar atelectasis.", AT, U),
    ("Left basilar opacity, likely atelectasis.", AT, U),
    ("Atelectasis versus pneumonia.", AT, U),
    ("Probable subsegmental atelectasis.", AT, U),
    ("Findings may represent atelectasis.", AT, U),
    ("Questionable atelectasis at the left base.", AT, U),
    ("No pneumothorax.", AT, None),
    ("Mild pulmonary edema.", AT, None),
    # ---- Pneumothorax ---------------------------------------------------------------------------------------
    ("Small right apical pneumothorax.", PX, P),
    ("Large left pneumothorax.", PX, P),
    ("There is a tiny left apical pneumothorax.", PX, P),
    ("Right hydropneumothorax.", PX, P),
    ("Bilateral pneumothoraces.", PX, P),
    ("Small right pneumothorax is unchanged.", PX, P),
    ("No pneumothorax.", PX, N),
    ("There is no pneumothorax.", PX, N),
    ("No evidence of pneumothorax.", PX, N),
    ("Negative for pneumothorax.", PX, N),
    ("No pneumothorax is seen.", PX, N),
    ("A pneumothorax is not seen.", PX, N),
    ("Without pneumothorax.", PX, N),
    ("The previously seen right pneumothorax has resolved.", PX, N),
    ("No pleural effusion or pneumothorax.", PX, N),
    ("Possible tiny right apical pneumothorax.", PX, U),
    ("A small pneumothorax cannot be excluded.", PX, U),
    ("Cannot exclude pneumothorax.", PX, U),
    ("Questionable left apical pneumothorax.", PX, U),
    ("Tiny pneumothorax versus skin fold.", PX, U),
    ("Moderate cardiomegaly.", PX, None),
    ("Bibasilar atelectasis.", PX, None),
    # ---- Pleural Effusion -----------------------------------------------------------------------------------
    ("Small left pleural effusion.", PE, P),
    ("Bilateral pleural effusions.", PE, P),
    ("Moderate right effusion.", PE, P),
    ("Small bilateral effusions are again seen.", PE, P),
    ("Blunting of the left costophrenic angle.", PE, None),  # CheXpert: blunting is not a mention
    ("Blunting of the costophrenic angles.", PE, None),
    ("Small amount of pleural fluid on the right.", PE, P),
    ("Large layering left pleural effusion.", PE, P),
    ("No pleural effusion.", PE, N),
    ("No effusion.", PE, N),
    ("The costophrenic angles are sharp.", PE, N),
    ("The pleural spaces are clear.", PE, N),
    ("No evidence of pleural effusion.", PE, N),
    ("Negative for pleural effusion.", PE, N),
    ("No pleural effusion is seen.", PE, N),
    ("Without pleural effusion.", PE, N),
    ("The left pleural effusion has resolved.", PE, N),
    ("Possible small left pleural effusion.", PE, U),
    ("Small right pleural effusion cannot be excluded.", PE, U),
    ("Cannot exclude a small left effusion.", PE, U),
    ("Questionable trace left effusion.", PE, U),
    ("Probable small left effusion.", PE, U),
    ("Likely small bilateral effusions.", PE, U),
    ("Small effusion versus pleural thickening.", PE, U),
    ("Small pericardial effusion.", PE, None),  # pericardial, not pleural
    ("Moderate cardiomegaly.", PE, None),
    # ---- Pleural Other --------------------------------------------------------------------------------------
    ("Right apical pleural thickening.", PO, P),
    ("Biapical pleural thickening.", PO, P),
    ("Left pleural scarring.", PO, P),
    ("Pleuroparenchymal scarring at the left apex.", PO, P),
    ("Chronic left fibrothorax.", PO, P),
    ("No pleural thickening.", PO, N),
    ("No evidence of pleural thickening.", PO, N),
    ("Possible pleural thickening at the left base.", PO, U),
    ("Questionable left apical pleural thickening.", PO, U),
    ("Small effusion versus pleural thickening.", PO, U),
    ("No pleural effusion.", PO, None),
    ("Small left pleural effusion.", PO, None),
    # ---- Fracture -------------------------------------------------------------------------------------------
    ("Healed left rib fracture.", FX, P),
    ("Acute displaced fracture of the right clavicle.", FX, P),
    ("Old healed fractures of the left posterior ribs.", FX, P),
    ("Compression fracture of a lower thoracic vertebral body.", FX, P),
    ("Nondisplaced right sixth rib fracture.", FX, P),
    ("No acute fracture.", FX, N),
    ("No displaced fracture.", FX, N),
    ("No fracture is seen.", FX, N),
    ("No evidence of acute rib fracture.", FX, N),
    ("Negative for fracture.", FX, N),
    ("Possible nondisplaced left rib fracture.", FX, U),
    ("Questionable fracture of the right seventh rib.", FX, U),
    ("A nondisplaced rib fracture cannot be excluded.", FX, U),
    ("No acute bony abnormality.", FX, None),  # "bony abnormality" is not a fracture mention
    ("Degenerative changes of the thoracic spine.", FX, None),
    # ---- Support Devices ------------------------------------------------------------------------------------
    ("Endotracheal tube terminates 4 cm above the carina.", SD, P),
    ("Nasogastric tube extends into the stomach.", SD, P),
    ("Left-sided chest tube in place.", SD, P),
    ("Right PICC line tip in the SVC.", SD, P),
    ("Left subclavian central line with tip in the SVC.", SD, P),
    ("Dual-lead left chest wall pacemaker.", SD, P),
    ("Feeding tube tip in the duodenum.", SD, P),
    ("Right chest port with catheter tip at the cavoatrial junction.", SD, P),
    ("AICD leads in the right ventricle.", SD, P),
    ("Swan-Ganz catheter tip in the right pulmonary artery.", SD, P),
    ("The endotracheal tube has been removed.", SD, N),
    ("The nasogastric tube has been removed.", SD, N),
    ("The left PICC line has been removed.", SD, N),
    ("The right internal jugular central line has been removed.", SD, N),
    ("Linear density over the right hemithorax may represent a catheter.", SD, U),
    ("Moderate right pleural effusion.", SD, None),
    ("No acute bony abnormality.", SD, None),
    # ---- No Finding (sentence level) ------------------------------------------------------------------------
    ("Heart size is normal.", NF, P),
    ("No acute cardiopulmonary abnormality.", NF, P),
    ("No pneumothorax. No pleural effusion.", NF, P),
    ("Endotracheal tube in good position. No pneumothorax.", NF, P),  # devices do not count
    ("No evidence of emphysema. Heart size is normal.", NF, P),  # negated "other" abnormality
    ("Moderate cardiomegaly.", NF, None),
    ("Borderline cardiomegaly.", NF, None),  # uncertain counts as a finding
    ("Possible small left pleural effusion.", NF, None),
    ("Healed left rib fracture.", NF, None),
    ("Calcified granuloma in the right upper lobe.", NF, None),
    ("Degenerative changes of the thoracic spine.", NF, None),
    ("Hyperinflated lungs consistent with emphysema.", NF, None),
    ("Small hiatal hernia.", NF, None),
    ("Tortuous aorta.", NF, None),
    ("Atherosclerotic aorta.", NF, None),
    ("Elevated right hemidiaphragm.", NF, None),
    ("Mild scoliosis.", NF, None),
    # ---- Negation / uncertainty scope and combination across mentions -------------------------------------
    ("No pneumothorax. Small left effusion.", PX, N),
    ("No pneumothorax. Small left effusion.", PE, P),
    ("No pneumothorax, but there is a small left pleural effusion.", PE, P),
    ("No pneumothorax, but there is a small left pleural effusion.", PX, N),
    ("There is no pneumothorax; small bilateral effusions persist.", PE, P),
    ("No pleural effusion; mild bibasilar atelectasis.", AT, P),
    ("No pleural effusion; mild bibasilar atelectasis.", PE, N),
    ("Heart size is normal, however there is a small right pleural effusion.", PE, P),
    ("No acute fracture. Stable cardiomegaly.", CM, P),
    ("No evidence of pneumothorax. Right chest tube in place.", SD, P),
    ("No pneumothorax is seen. Mild pulmonary edema.", ED, P),
    ("No pleural effusion, pneumothorax, or focal consolidation.", PE, N),
    ("No pleural effusion, pneumothorax, or focal consolidation.", PX, N),
    ("No pleural effusion, pneumothorax, or focal consolidation.", CO, N),
    ("There is no focal consolidation, pleural effusion or pneumothorax.", CO, N),
    ("There is no focal consolidation, pleural effusion or pneumothorax.", PE, N),
    ("There is no focal consolidation, pleural effusion or pneumothorax.", PX, N),
    ("Negative for pneumothorax or pleural effusion.", PE, N),
    ("Small left pleural effusion. No right effusion.", PE, P),  # positive > negative
    ("Possible small left effusion. No right effusion.", PE, U),  # uncertain > negative
    ("Left basilar atelectasis. No atelectasis on the right.", AT, P),
    ("Possible left basilar atelectasis. Right basilar atelectasis.", AT, P),  # positive > uncertain
    ("Atelectasis versus consolidation at the left base.", AT, U),
    ("Opacity at the right base may represent atelectasis or pneumonia.", AT, U),
    ("Opacity at the right base may represent atelectasis or pneumonia.", PN, U),
    # ---- Case, headers and anonymization tokens ------------------------------------------------------------
    ("NO PNEUMOTHORAX.", PX, N),
    ("BILATERAL PLEURAL EFFUSIONS.", PE, P),
    ("FINDINGS: Small right pleural effusion. IMPRESSION: Small right effusion.", PE, P),
    ("IMPRESSION: No acute cardiopulmonary abnormality.", NF, P),
    ("The heart is normal in size. XXXX XXXX are intact.", CM, N),
    ("XXXX right lower lobe opacity.", LO, P),
    ("No XXXX pleural effusion.", PE, N),
]


def _case_id(case: tuple[str, str, str | None]) -> str:
    text, obs, expected = case
    return f"{_SHORT[obs]}={expected}:{text[:70]}"


@pytest.mark.parametrize("text,observation,expected", CASES, ids=[_case_id(c) for c in CASES])
def test_sentence(text: str, observation: str, expected: str | None) -> None:
    got = label_report(text, CHEXPERT)
    assert got[observation] == expected, f"{text!r}: {observation} expected {expected!r}, got {got[observation]!r}"


def test_case_coverage() -> None:
    """The corpus itself: enough cases, and each observation has every kind of expectation."""
    assert len(CASES) >= 200
    for name in NAMES:
        kinds = {exp for _, obs, exp in CASES if obs == name}
        count = sum(1 for _, obs, _ in CASES if obs == name)
        assert count >= 6, name
        if name == NF:
            assert kinds == {P, None}
        else:
            assert kinds == {P, N, U, None}, name


# --------------------------------------------------------------------------------------------------------------
# 2. Whole reports with the full 14-label expectation
# --------------------------------------------------------------------------------------------------------------


def _expect(**labels: str | None) -> dict[str, str | None]:
    """The full 14-label dict: the given short names (CM=..., PE=...), None for everything else."""
    out: dict[str, str | None] = {name: None for name in NAMES}
    for short, value in labels.items():
        name = next(n for n, s in _SHORT.items() if s == short)
        out[name] = value
    return out


REPORTS: list[tuple[str, str, dict[str, str | None]]] = [
    (
        "iu-normal",
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear without focal airspace "
        "disease. No pleural effusion or pneumothorax. No acute bony abnormality.",
        _expect(ECM=N, CM=N, LO=N, PX=N, PE=N, NF=P),
    ),
    (
        "iu-normal-xxxx",
        "Heart size and mediastinal contours are within normal limits. No focal consolidation, pleural effusion, or "
        "pneumothorax. No acute bony abnormalities. The XXXX are intact.",
        _expect(ECM=N, CM=N, CO=N, PX=N, PE=N, NF=P),
    ),
    (
        "mimic-normal",
        "FINDINGS: PA and lateral views of the chest. The cardiomediastinal silhouette is within normal limits. "
        "Heart size is normal. There is no pulmonary edema. No focal consolidation, pleural effusion, or "
        "pneumothorax.\nIMPRESSION: No acute cardiopulmonary process.",
        _expect(ECM=N, CM=N, ED=N, CO=N, PX=N, PE=N, NF=P),
    ),
    (
        "lowercase-telegraphic-normal",
        "heart size normal. lungs clear. no effusion or pneumothorax.",
        _expect(CM=N, PX=N, PE=N, NF=P),
    ),
    (
        "icu-devices-only",
        "Endotracheal tube terminates 5 cm above the carina. Nasogastric tube courses below the diaphragm with tip "
        "in the stomach. Right internal jugular central venous catheter tip in the mid SVC. Heart size is normal. "
        "No pleural effusion or pneumothorax. No focal airspace disease.",
        _expect(SD=P, CM=N, LO=N, PX=N, PE=N, NF=P),
    ),
    (
        "pacemaker-only",
        "Left chest wall dual-chamber pacemaker with leads in the right atrium and right ventricle. The heart is "
        "normal in size. The mediastinal contours are normal. Lungs are clear without focal consolidation. No "
        "pleural effusion. No pneumothorax.",
        _expect(SD=P, ECM=N, CM=N, CO=N, PX=N, PE=N, NF=P),
    ),
    (
        "devices-removed",
        "The endotracheal tube and nasogastric tube have been removed. The previously seen left lower lobe "
        "consolidation has resolved. No pneumothorax. Heart size is normal.",
        _expect(SD=N, CO=N, PX=N, CM=N, NF=P),
    ),
    (
        "chf",
        "FINDINGS: The heart is enlarged. There is mild pulmonary vascular congestion with interstitial edema. Small "
        "bilateral pleural effusions. No pneumothorax.\nIMPRESSION: Cardiomegaly and mild congestive heart failure.",
        _expect(CM=P, ED=P, PE=P, PX=N),
    ),
    (
        "pneumonia",
        "There is a focal consolidation in the right lower lobe concerning for pneumonia. No pleural effusion. No "
        "pneumothorax. The heart size is normal. IMPRESSION: Right lower lobe pneumonia.",
        _expect(CO=P, PN=P, PE=N, PX=N, CM=N),
    ),
    (
        "atelectasis-vs-pneumonia",
        "Left basilar opacity, likely atelectasis, although pneumonia cannot be excluded. Heart size is normal. No "
        "pleural effusion.",
        _expect(LO=P, AT=U, PN=U, CM=N, PE=N),
    ),
    (
        "pneumothorax-chest-tube",
        "Right-sided chest tube in place. Small right apical pneumothorax is unchanged. Subcutaneous emphysema in "
        "the right chest wall. Heart size is normal. No consolidation.",
        _expect(SD=P, PX=P, CM=N, CO=N),
    ),
    (
        "effusion-atelectasis-cardiomegaly",
        "Moderate left pleural effusion with adjacent compressive atelectasis. No pneumothorax. Stable mild "
        "cardiomegaly.",
        _expect(PE=P, AT=P, PX=N, CM=P),
    ),
    (
        "nodule",
        "A 2 cm spiculated nodule is seen in the right upper lobe, suspicious for malignancy. No pleural effusion. "
        "No pneumothorax. Normal heart size. The mediastinum is not widened.",
        _expect(LL=P, PE=N, PX=N, CM=N, ECM=N),
    ),
    (
        "chronic-changes-only",
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are hyperinflated with flattening "
        "of the diaphragms, consistent with emphysema. Calcified granuloma in the left upper lobe. No pneumothorax "
        "or pleural effusion. Degenerative changes of the thoracic spine.",
        _expect(CM=N, ECM=N, PX=N, PE=N),  # No Finding None: emphysema, granuloma, degenerative changes
    ),
    (
        "picc-healed-fractures",
        "Right PICC line tip at the cavoatrial junction. Healed left posterior rib fractures. The cardiac "
        "silhouette is normal in size. No focal airspace opacity. No pleural effusion.",
        _expect(SD=P, FX=P, CM=N, LO=N, PE=N),
    ),
    (
        "edema-resolved",
        "Pulmonary edema has resolved. Persistent small right pleural effusion. Mild bibasilar atelectasis. No "
        "pneumothorax. Moderate cardiomegaly is unchanged.",
        _expect(ED=N, PE=P, AT=P, PX=N, CM=P),
    ),
    (
        "uncertain-only",
        "Possible small left pleural effusion. Heart size is normal. No pneumothorax. No focal consolidation.",
        _expect(PE=U, CM=N, PX=N, CO=N),  # an uncertain finding removes No Finding
    ),
    (
        "trauma",
        "The mediastinum is widened. Acute displaced fracture of the left clavicle. Left apical pneumothorax "
        "cannot be excluded. No pleural effusion.",
        _expect(ECM=P, FX=P, PX=U, PE=N),
    ),
    (
        "icu-multifocal",
        "Swan-Ganz catheter tip in the right pulmonary artery. Left chest tube in place; no pneumothorax. Bilateral "
        "airspace opacities, worse on the right, may represent edema or pneumonia. Small bilateral pleural "
        "effusions.",
        _expect(SD=P, PX=N, LO=P, ED=U, PN=U, PE=P),
    ),
    (
        "hilar-mass-collapse",
        "Large left hilar mass. Left upper lobe collapse. Small left pleural effusion. No pneumothorax. Heart size "
        "is normal.",
        _expect(LL=P, AT=P, PE=P, PX=N, CM=N),
    ),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in REPORTS], ids=[i for i, _, _ in REPORTS])
def test_report(text: str, expected: dict[str, str | None]) -> None:
    got = label_report(text, CHEXPERT)
    diff = {name: (expected[name], got.get(name)) for name in NAMES if got.get(name) != expected[name]}
    assert not diff, f"(expected, got) per differing observation: {diff}"


# --------------------------------------------------------------------------------------------------------------
# 3. binary_labels
# --------------------------------------------------------------------------------------------------------------

_NORMAL = "Heart size normal. Lungs clear. No effusion or pneumothorax."
_UNCERTAIN = "Possible small left pleural effusion. No pneumothorax."
_POSITIVE = "Moderate cardiomegaly. No pneumothorax."
_DEVICE = "Endotracheal tube terminates 4 cm above the carina. No pneumothorax. No pleural effusion."


def _col(name: str) -> int:
    return NAMES.index(name)


def test_label_set_names() -> None:
    assert tuple(CHEXPERT.names) == NAMES


def test_binary_labels_shape_and_dtype() -> None:
    texts = [_NORMAL, _UNCERTAIN, _POSITIVE, _DEVICE]
    out = binary_labels(texts, uncertain_as=1, label_set=CHEXPERT)
    assert isinstance(out, np.ndarray)
    assert out.shape == (4, 14)
    assert out.dtype == np.int8
    assert set(np.unique(out).tolist()) <= {0, 1}


def test_binary_labels_empty_input() -> None:
    out = binary_labels([], uncertain_as=1, label_set=CHEXPERT)
    assert out.shape == (0, 14)
    assert out.dtype == np.int8


def test_binary_labels_uncertain_mapping() -> None:
    texts = [_NORMAL, _UNCERTAIN, _POSITIVE, _DEVICE]
    ones = binary_labels(texts, uncertain_as=1, label_set=CHEXPERT)
    zeros = binary_labels(texts, uncertain_as=0, label_set=CHEXPERT)
    pe, px, cm, nf, sd = _col(PE), _col(PX), _col(CM), _col(NF), _col(SD)
    # uncertain -> uncertain_as
    assert ones[1, pe] == 1
    assert zeros[1, pe] == 0
    # negative -> 0 either way
    assert ones[1, px] == 0 and zeros[1, px] == 0
    assert ones[2, px] == 0 and zeros[2, px] == 0
    # positive -> 1 either way
    assert ones[2, cm] == 1 and zeros[2, cm] == 1
    # not mentioned -> 0
    assert ones[1, cm] == 0 and zeros[1, cm] == 0
    assert ones[0, _col(FX)] == 0
    # No Finding: 1 for the normal and the devices-only report, 0 where something is positive or uncertain
    assert ones[0, nf] == 1 and zeros[0, nf] == 1
    assert ones[3, nf] == 1 and ones[3, sd] == 1
    assert ones[1, nf] == 0 and zeros[1, nf] == 0
    assert ones[2, nf] == 0
    # the normal report: only No Finding is set
    assert ones[0].tolist() == [0] * 13 + [1]
    # uncertain_as only changes uncertain entries
    assert (ones != zeros).sum() == 1


def test_binary_labels_matches_label_report() -> None:
    texts = [t for t, _, _ in CASES[:40]] + [t for _, t, _ in REPORTS]
    out = binary_labels(texts, uncertain_as=1, label_set=CHEXPERT)
    for row, text in zip(out, texts):
        labels = label_report(text, CHEXPERT)
        expected = [1 if labels[name] in (P, U) else 0 for name in NAMES]
        assert row.tolist() == expected, text


# --------------------------------------------------------------------------------------------------------------
# 4. Output contract over the whole corpus
# --------------------------------------------------------------------------------------------------------------

_ODD_TEXTS = [
    "",
    "   ",
    "XXXX XXXX XXXX.",
    "Heart size XXXX.",
    "FINDINGS:\nIMPRESSION:",
    "No acute cardiopulmonary abnormality",  # no final period
    "Findings: heart size normal... lungs clear!! no effusion?",
]


def test_output_contract() -> None:
    texts = sorted({t for t, _, _ in CASES} | {t for _, t, _ in REPORTS} | set(_ODD_TEXTS))
    for text in texts:
        got = label_report(text, CHEXPERT)
        assert isinstance(got, dict), text
        assert set(got) == set(NAMES), text
        assert all(v in VALUES for v in got.values()), (text, got)
        assert got[NF] != N, text  # No Finding is never negative


def test_deterministic_and_case_insensitive() -> None:
    for _, text, _ in REPORTS:
        assert label_report(text, CHEXPERT) == label_report(text, CHEXPERT)
        assert label_report(text.upper(), CHEXPERT) == label_report(text.lower(), CHEXPERT)


# --------------------------------------------------------------------------------------------------------------
# 4. Kinds of error found on real reports: tests/data/chexpert_real_report_kinds.tsv
# --------------------------------------------------------------------------------------------------------------

KINDS_TABLE = Path(__file__).parent / "data" / "chexpert_real_report_kinds.tsv"


def _kind_rows() -> list[tuple[str, str, str, str | None, str]]:
    lines = [line for line in KINDS_TABLE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    header, *rows = [line.split("\t") for line in lines]
    assert header == ["label_set", "sentence", "observation", "expected", "reason"], header
    return [(ls, text, obs, None if exp == "none" else exp, reason) for ls, text, obs, exp, reason in rows]


@pytest.mark.parametrize("label_set,text,observation,expected,reason", _kind_rows(),
                         ids=[f"{r[0]}:{_SHORT[r[2]]}={r[3]}:{r[1][:60]}" for r in _kind_rows()])
def test_real_report_kind(label_set: str, text: str, observation: str, expected: str | None, reason: str) -> None:
    labels = label_report(text, {"chexpert": CHEXPERT, "chexpert-mesh": CHEXPERT_MESH}[label_set])
    assert labels[observation] == expected, f"{text!r}: {observation} expected {expected!r} ({reason})"


def test_real_report_kinds_table_is_well_formed() -> None:
    rows = _kind_rows()
    assert len(rows) >= 30
    assert {r[0] for r in rows} == {"chexpert", "chexpert-mesh"}
    assert all(r[2] in NAMES and r[3] in VALUES and r[4] for r in rows)
