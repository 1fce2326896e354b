"""benchmarks/labeler_agreement.py: its keyword baseline and scoring by hand, and on the real reports when present."""

from __future__ import annotations

import importlib.util
import json

import pytest

from .conftest import REPO, SHARED_DATA

MESH = SHARED_DATA / "iu_xray_reports" / "mesh_labels.jsonl"


def _bench():
    spec = importlib.util.spec_from_file_location("labeler_agreement", REPO / "benchmarks" / "labeler_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keyword_baseline_and_scores_by_hand() -> None:
    bench = _bench()
    with_negation, without = bench.keyword_labeler(True), bench.keyword_labeler(False)
    text = "No pleural effusion. Mild cardiomegaly. Right PICC line in place."
    assert with_negation(text)["Pleural Effusion"] == "negative" and without(text)["Pleural Effusion"] == "positive"
    assert with_negation(text)["Cardiomegaly"] == "positive" and with_negation(text)["Support Devices"] == "positive"
    assert with_negation(text)["Edema"] is None
    truth = [{"Edema": 1}, {"Edema": 0}, {"Edema": 1}, {"Edema": 0}]
    labels = [{"Edema": "positive"}, {"Edema": "positive"}, {"Edema": "uncertain"}, {"Edema": None}]
    # uncertain as negative: tp 1, fp 1, fn 1; as positive: tp 2, fp 1, fn 0
    assert bench.score(truth, labels, 0, ["Edema"])["Edema"] == pytest.approx((0.5, 0.5, 0.5, 2))
    assert bench.score(truth, labels, 1, ["Edema"])["micro"] == pytest.approx((2 / 3, 1.0, 0.8, 2))


def test_disagreement_kinds() -> None:
    bench = _bench()
    kind = bench._disagreement_kind
    assert kind("Atelectasis", "fn-u", "stable scarring or atelectasis.").startswith("alternatives")
    assert kind("Cardiomegaly", "fn-u", "borderline heart size.").startswith("borderline heart size")
    assert kind("Atelectasis", "fn-u", "probable atelectasis.").startswith("hedge word")
    assert kind("Lung Opacity", "fp", "scarring").startswith("scar")
    assert kind("Lung Lesion", "fp", "scarring") == "positive mention"  # the scar kind is Lung Opacity's only
    assert kind("Support Devices", "fn-none", "overlying external cardiac monitor leads.").startswith("external")
    assert kind("Pneumonia", "fn-none", "consistent with pneumonitis.") == "no CheXpert mention"


def test_ceiling_counts_only_own_errors_as_fixable() -> None:
    """2 TP; FP: 1 scar (a CheXpert rule), 1 generic; FN: 2 "X or Y" (rule), 1 missed mention (generic)."""
    bench = _bench()
    kinds = bench.Counter(
        {
            "FP scar / scarring is Lung Opacity (CheXpert's list; indexers: Cicatrix)": 1,
            "FP positive mention": 1,
            "FN alternatives: 'X or Y', 'X versus Y', 'and/or' (CheXpert: uncertain; indexers code both)": 2,
            "FN no CheXpert mention": 1,
        }
    )
    c = bench.ceiling(2, kinds)
    assert (c["errors"], c["rule_kinds"]) == (5, 3)
    assert c["micro_f1_now"] == pytest.approx(4 / 9)  # 2 TP / (2 TP + 2 FP + 3 FN)
    assert c["micro_f1"] == pytest.approx(6 / 9)  # the missed mention found: TP 3, FP 1, FN 2
    assert bench._own_error("FP 'lines' in 'low lung lines' matches CheXpert's device phrase")


def test_main_skips_cleanly_without_the_data(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    bench = _bench()
    monkeypatch.setattr(bench, "MESH", tmp_path / "absent.jsonl")
    monkeypatch.setattr("sys.argv", ["labeler_agreement.py", "--no-medspacy"])
    bench.main()
    assert "skipped" in capsys.readouterr().out


@pytest.mark.real_data
def test_medvl_beats_the_keyword_baseline_on_radiologist_labels() -> None:
    if not MESH.is_file():
        pytest.skip("../shared/data/iu_xray_reports/mesh_labels.jsonl is not present")
    from medvl.evaluate.chexpert import CHEXPERT
    from medvl.evaluate.labeler import label_report

    bench = _bench()
    records = [json.loads(line) for line in MESH.read_text().splitlines() if line.strip()]
    truth = [r["labels"] for r in records]
    medvl = bench.score(truth, [label_report(r["report"], CHEXPERT) for r in records], 0)
    keyword = bench.score(truth, [bench.keyword_labeler(True)(r["report"]) for r in records], 0)
    assert medvl["micro"][2] > keyword["micro"][2] + 0.05, (medvl["micro"], keyword["micro"])
    assert medvl["micro"][2] > 0.86  # 0.872 measured; 0.860 before the narrower hedges, 0.836 before issue 15


@pytest.mark.real_data
def test_mesh_option_on_the_held_out_check_part() -> None:
    """CHEXPERT_MESH (the indexers' reading of "X or Y" and of scars) on R2Gen's val reports, whose errors were not
    studied: above 0.90 micro-F1 and above the keyword baseline in micro-F1."""
    if not MESH.is_file() or not (MESH.parent / "annotation.json").is_file():
        pytest.skip("../shared/data/iu_xray_reports is not present")
    from medvl.evaluate.chexpert import CHEXPERT_MESH
    from medvl.evaluate.labeler import label_report

    bench = _bench()
    records = [json.loads(line) for line in MESH.read_text().splitlines() if line.strip()]
    index = bench.parts(records)
    assert len(index["development"]) + len(index["check"]) == len(records)
    assert not set(index["development"]) & set(index["check"])
    check = [records[i] for i in index["check"]]
    truth = [r["labels"] for r in check]
    mesh = bench.score(truth, [label_report(r["report"], CHEXPERT_MESH) for r in check], 0)
    keyword = bench.score(truth, [bench.keyword_labeler(True)(r["report"]) for r in check], 0)
    assert mesh["micro"][2] > 0.90 and mesh["micro"][2] > keyword["micro"][2], (mesh["micro"], keyword["micro"])
