"""Scoring as a whole: the metrics.json contract, bootstrap intervals, the CheXpert labeler against the synthetic
ground truth and on real IU X-ray text, and `medvl score` with good and bad input files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medvl.cli import main
from medvl.evaluate.chexpert import CHEXPERT, CHEXPERT_5, CHEXPERT_14
from medvl.evaluate.clinical import clinical_metrics, clinical_resampled
from medvl.evaluate.inputs import ReportFileError, pair_reports, read_reports
from medvl.evaluate.labeler import binary_labels, label_report
from medvl.evaluate.scoring import score_corpus
from medvl.findings import FINDINGS

from .conftest import SHARED_DATA

IU = SHARED_DATA / "iu_xray_reports" / "annotation.json"
# The synthetic findings as CheXpert observations.
AS_CHEXPERT = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "nodule_mass": "Lung Lesion",
    "atelectasis": "Atelectasis",
    "edema": "Edema",
    "support_devices": "Support Devices",
}


def _quickstart_test_split() -> tuple[list[str], np.ndarray]:
    """The reports and ground-truth labels of the quickstart's test split (2,500 studies, seed 0), without images:
    the generator draws each study's labels and report before its pixels from the same per-study stream."""
    from medvl.data.synth import sample_study, write_report
    from medvl.data.synth.generate import assign_splits

    splits = assign_splits(2500, 0, (0.8, 0.1, 0.1))
    reports, truth = [], []
    for i in (i for i, s in enumerate(splits) if s == "test"):
        rng = np.random.default_rng([0, i])
        spec = sample_study(rng)
        reports.append(write_report(spec, rng))
        truth.append([spec.labels[f] for f in FINDINGS])
    return reports, np.array(truth)


def test_chexpert_labeler_reads_the_synthetic_test_split() -> None:
    reports, truth = _quickstart_test_split()
    assert len(reports) == 250
    labels = binary_labels(reports, label_set=CHEXPERT)
    predicted = labels[:, [CHEXPERT_14.index(AS_CHEXPERT[f]) for f in FINDINGS]]
    # "No Finding" is true when nothing but devices is present.
    no_finding = (np.delete(truth, FINDINGS.index("support_devices"), axis=1).sum(1) == 0).astype(int)
    truth9 = np.column_stack([truth, no_finding])
    predicted9 = np.column_stack([predicted, labels[:, CHEXPERT_14.index("No Finding")]])
    micro_f1 = clinical_metrics(truth9, predicted9, [*FINDINGS, "no_finding"])["micro"]["f1"]
    assert micro_f1 >= 0.98, micro_f1
    assert truth.sum(0).min() > 0 and no_finding.sum() > 0  # every label occurs, so every label was checked


def test_real_iu_xray_label_distribution_has_no_anomalies() -> None:
    if not IU.is_file():
        pytest.skip("../shared/data/iu_xray_reports is not present")
    reports = [r["report"] for split in json.loads(IU.read_text()).values() for r in split]
    labels = [label_report(r, CHEXPERT) for r in reports]
    share = {name: Counter(lab[name] for lab in labels) for name in CHEXPERT_14}
    distribution = {name: {str(k): v for k, v in c.items()} for name, c in share.items()}
    print(json.dumps(distribution, indent=1))  # shown with -s, and on failure
    n = len(reports)
    # Anomalies the labeler must never produce.
    for lab in labels:
        assert lab["No Finding"] in ("positive", None)
        if lab["No Finding"] == "positive":
            assert all(lab[k] not in ("positive", "uncertain") for k in CHEXPERT_14[:-2])
    # IU X-ray is mostly normal outpatients: about 40% normal, heart and pleura stated in most reports, each
    # pathology present in a minority, and "not mentioned" never universal.
    assert 0.3 < share["No Finding"]["positive"] / n < 0.6
    assert share["Cardiomegaly"][None] / n < 0.4 and share["Pneumothorax"][None] / n < 0.4
    assert share["Pleural Effusion"]["negative"] / n > 0.6
    for name in CHEXPERT_14[:-1]:
        assert share[name]["positive"] / n < 0.25, name
        assert share[name]["positive"] + share[name]["uncertain"] + share[name]["negative"] > 0, name


def test_score_corpus_contract_and_bootstrap() -> None:
    reports, truth = _quickstart_test_split()
    refs, hyps = reports[:60], reports[60:120]
    score = score_corpus(refs, hyps, true_labels=truth[:60], tokenizer="python", meteor=False, bootstrap=200, seed=3)
    m = score.metrics
    keys = [*(f"bleu_{k}" for k in range(1, 5)), "meteor", "rouge_l", "cider"]
    keys += [
        f"{p}_{avg}_{k}"
        for p in ("ce_14", "ce_5", "gt")
        for avg in ("micro", "macro", "example")
        for k in ("precision", "recall", "f1")
    ]
    for key in keys:
        assert key in m and f"{key}_ci_low" in m and f"{key}_ci_high" in m, key
        if m[key] is not None:
            assert m[f"{key}_ci_low"] <= m[key] + 1e-9 <= m[f"{key}_ci_high"] + 2e-9, key
    assert m["meteor"] is None and m["meteor_ci_low"] is None and "disabled" in score.unavailable["meteor"]
    assert m["cider_ci_high"] - m["cider_ci_low"] > 0.0  # resampling 60 different pairs does move CIDEr
    again = score_corpus(refs, hyps, true_labels=truth[:60], tokenizer="python", meteor=False, bootstrap=200, seed=3)
    assert again.metrics == m  # seeded: same inputs, same intervals
    other = score_corpus(refs, hyps, tokenizer="python", meteor=False, bootstrap=200, seed=4).metrics
    assert other["bleu_4"] == m["bleu_4"] and other["bleu_4_ci_low"] != m["bleu_4_ci_low"]
    assert "gt_micro_f1" not in other
    assert set(score.per_finding["ce_14"]) == set(CHEXPERT_14) and set(score.per_finding["gt"]) == set(FINDINGS)
    assert len(score.per_study) == 60 and {
        "id",
        "example_f1",
        "bleu_4",
        "rouge_l",
        "cider",
        "reference_labels",
        "generated_labels",
    } <= set(score.per_study[0])
    none = score_corpus(refs[:5], hyps[:5], tokenizer="python", meteor=False, bootstrap=0).metrics
    assert not any(k.endswith("_ci_low") for k in none)
    with pytest.raises(ValueError, match="uncertain must be one of"):
        score_corpus(refs[:2], hyps[:2], meteor=False, uncertain="maybe")


def test_ce_5_and_uncertain_policy() -> None:
    refs = ["Possible small left pleural effusion. Heart size normal.", "Moderate cardiomegaly."]
    hyps = ["Small left pleural effusion. Heart size normal.", "Heart size normal."]
    ones = score_corpus(refs, hyps, tokenizer="python", meteor=False, bootstrap=0).metrics
    zeros = score_corpus(refs, hyps, tokenizer="python", meteor=False, bootstrap=0, uncertain="negative").metrics
    # U-ones: effusion agreed (1 of 2 true findings); U-zeros: the reference's effusion does not count.
    assert ones["ce_5_micro_recall"] == pytest.approx(0.5) and ones["ce_5_micro_precision"] == pytest.approx(1.0)
    assert zeros["ce_5_micro_recall"] == 0.0 and zeros["ce_5_micro_precision"] == 0.0
    assert len(CHEXPERT_5) == 5 and set(CHEXPERT_5) < set(CHEXPERT_14)


def test_clinical_resampled_identity_equals_clinical_metrics() -> None:
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 2, (40, 6)), rng.integers(0, 2, (40, 6))
    truth[3] = pred[3] = 0  # an agreed normal study
    full = clinical_metrics(truth, pred, list("abcdef"))
    resampled = clinical_resampled(truth, pred, np.arange(40)[None])
    for avg in ("micro", "macro", "example_based"):
        for key in ("precision", "recall", "f1"):
            assert resampled[f"{avg}_{key}"][0] == pytest.approx(full[avg][key], abs=1e-12), (avg, key)


# ------------------------------------------------------------------------------------------------ medvl score
def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def report_files(tmp_path: Path) -> tuple[Path, Path]:
    reports, _ = _quickstart_test_split()
    refs = _write_jsonl(tmp_path / "refs.jsonl", [{"id": f"s{i}", "report": r} for i, r in enumerate(reports[:12])])
    hyps = _write_csv(tmp_path / "hyps.csv", [{"id": f"s{i}", "generated": r} for i, r in enumerate(reports[12:24])])
    return refs, hyps


def test_score_command_writes_the_contract(
    report_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs, hyps = report_files
    out = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                "--refs",
                str(refs),
                "--hyps",
                str(hyps),
                "--out",
                str(out),
                "--no-meteor",
                "--bootstrap",
                "100",
                "--tokenizer",
                "python",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ce_14_micro_f1" in printed and "95% CI" in printed and "meteor: unavailable" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_studies"] == 12 and metrics["labeler"] and metrics["versions"]["pycocoevalcap"] == "1.2"
    assert metrics["meteor"] is None and "disabled" in metrics["unavailable"]["meteor"]
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(12)]
    assert "s0" in (out / "report.html").read_text()
    # medvl's own predictions.jsonl works as either side (reference / generated columns).
    again = tmp_path / "again"
    assert (
        main(
            [
                "score",
                "--refs",
                str(out / "predictions.jsonl"),
                "--hyps",
                str(out / "predictions.jsonl"),
                "--out",
                str(again),
                "--no-meteor",
                "--bootstrap",
                "0",
                "--tokenizer",
                "python",
            ]
        )
        == 0
    )
    assert json.loads((again / "metrics.json").read_text())["bleu_4"] == pytest.approx(metrics["bleu_4"])


def test_score_bad_inputs_give_clear_errors(
    report_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs, hyps = report_files
    ref_rows = [json.loads(x) for x in refs.read_text().splitlines()]

    def fails(ref_path: Path, hyp_path: Path, *extra: str) -> str:
        assert (
            main(
                [
                    "score",
                    "--refs",
                    str(ref_path),
                    "--hyps",
                    str(hyp_path),
                    "--no-meteor",
                    "--bootstrap",
                    "0",
                    "--tokenizer",
                    "python",
                    *extra,
                ]
            )
            == 2
        )
        return capsys.readouterr().err

    short = _write_jsonl(
        tmp_path / "short.jsonl", [{"id": f"s{i}", "generated": "No acute disease."} for i in range(10)]
    )
    assert "2 of 12 references have no generated report ('s10', 's11')" in fails(refs, short)
    assert "--missing-as-empty" in fails(refs, short)
    assert (
        main(
            [
                "score",
                "--refs",
                str(refs),
                "--hyps",
                str(short),
                "--no-meteor",
                "--bootstrap",
                "0",
                "--tokenizer",
                "python",
                "--missing-as-empty",
            ]
        )
        == 0
    )
    assert "2 studies had no generated report" in capsys.readouterr().err

    extra = _write_jsonl(tmp_path / "extra.jsonl", [*ref_rows, {"id": "zz", "report": "x"}])
    assert "ids have no reference ('zz')" in fails(refs, extra, "--hyp-field", "report")
    dup = _write_jsonl(tmp_path / "dup.jsonl", [*ref_rows, ref_rows[0]])
    assert "1 duplicated ids: 's0 (lines 1 and 13)'" in fails(dup, hyps)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "s0", "report": "caf\xe9"}\n')
    assert "is not UTF-8 text (byte 0xe9 at line 1)" in fails(latin, hyps)
    no_id = _write_jsonl(tmp_path / "noid.jsonl", [{"name": "a", "report": "x"}])
    assert "no id column" in fails(no_id, hyps)
    no_text = _write_jsonl(tmp_path / "notext.jsonl", [{"id": "s0", "words": "x"}])
    assert "no reference text column" in fails(no_text, hyps)
    empty_ref = _write_jsonl(tmp_path / "emptyref.jsonl", [{"id": "s0", "report": " "}])
    assert "1 empty reference reports ('s0')" in fails(empty_ref, hyps)
    assert "no such file" in fails(tmp_path / "missing.jsonl", hyps)
    (tmp_path / "x.txt").write_text("s0 report")
    assert "unknown format '.txt'" in fails(tmp_path / "x.txt", hyps)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": "s0", "report": "x"}\n{oops\n')
    assert "bad.jsonl line 2: not valid JSON" in fails(bad_json, hyps)


def test_empty_generated_reports_are_scored_and_listed(tmp_path: Path) -> None:
    refs = {"a": "Heart size normal. No effusion.", "b": "Moderate cardiomegaly."}
    pairs = pair_reports(refs, {"a": "", "b": "Moderate cardiomegaly."})
    assert pairs.empty_hypotheses == ["a"] and pairs.hypotheses == ["", "Moderate cardiomegaly."]
    path = _write_jsonl(tmp_path / "h.jsonl", [{"id": "a", "generated": None}, {"id": "b", "generated": "x"}])
    assert read_reports(path, "generated") == {"a": "", "b": "x"}
    with pytest.raises(ReportFileError, match="is a int, not text"):
        read_reports(_write_jsonl(tmp_path / "n.jsonl", [{"id": "a", "generated": 3}]), "generated")
    json_dict = tmp_path / "d.json"
    json_dict.write_text(json.dumps({"a": "one", "b": "two"}))
    assert read_reports(json_dict, "reference") == {"a": "one", "b": "two"}
