"""An independent, hand-written corpus for the CheXpert-style labeler (`label_report` with `CHEXPERT`).

The expected labels (the sentence table tests/data/chexpert_sentences.tsv, the reports below, and the kinds of
error found on real reports in tests/data/chexpert_real_report_kinds.tsv) were written by a human reading each
sentence or report, following the CheXpert labeler's conventions (mentions, negation, uncertainty, "No Finding"),
NOT copied from the implementation's output. They check the labeler against a reader, not against itself.

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

_SHORT = {
    ECM: "ECM",
    CM: "CM",
    LO: "LO",
    LL: "LL",
    ED: "ED",
    CO: "CO",
    PN: "PN",
    AT: "AT",
    PX: "PX",
    PE: "PE",
    PO: "PO",
    FX: "FX",
    SD: "SD",
    NF: "NF",
}


# --------------------------------------------------------------------------------------------------------------
# 1. Sentence-level cases: (text, observation, expected), from tests/data/chexpert_sentences.tsv
# --------------------------------------------------------------------------------------------------------------

SENTENCES = Path(__file__).parent / "data" / "chexpert_sentences.tsv"


def _read_table(path: Path, columns: list[str]) -> list[list[str]]:
    """The rows of a tab-separated table with a header line; "#" lines are comments."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    header, *rows = [line.split("\t") for line in lines]
    assert header == columns, (path, header)
    assert all(len(row) == len(columns) for row in rows), path
    return rows


def _expected(value: str) -> str | None:
    assert value in ("positive", "negative", "uncertain", "none"), value
    return None if value == "none" else value


CASES: list[tuple[str, str, str | None]] = [
    (text, obs, _expected(exp))
    for text, obs, exp, _ in _read_table(SENTENCES, ["sentence", "observation", "expected", "note"])
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
        _expect(LO=P, AT=P, PN=U, CM=N, PE=N),  # CheXpert hedges "less likely", not "likely"
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
    return [
        (ls, text, obs, _expected(exp), reason)
        for ls, text, obs, exp, reason in _read_table(
            KINDS_TABLE, ["label_set", "sentence", "observation", "expected", "reason"]
        )
    ]


@pytest.mark.parametrize(
    "label_set,text,observation,expected,reason",
    _kind_rows(),
    ids=[f"{r[0]}:{_SHORT[r[2]]}={r[3]}:{r[1][:60]}" for r in _kind_rows()],
)
def test_real_report_kind(label_set: str, text: str, observation: str, expected: str | None, reason: str) -> None:
    labels = label_report(text, {"chexpert": CHEXPERT, "chexpert-mesh": CHEXPERT_MESH}[label_set])
    assert labels[observation] == expected, f"{text!r}: {observation} expected {expected!r} ({reason})"


def test_real_report_kinds_table_is_well_formed() -> None:
    rows = _kind_rows()
    assert len(rows) >= 30
    assert {r[0] for r in rows} == {"chexpert", "chexpert-mesh"}
    assert all(r[2] in NAMES and r[3] in VALUES and r[4] for r in rows)
