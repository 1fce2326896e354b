"""The synthetic chest X-ray generator: layout, determinism, label statistics, report/label agreement, image
evidence of findings, and refusal to touch foreign directories."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medvl.data.synth import (
    PREVALENCE,
    StudySpec,
    generate_dataset,
    make_study,
    render_study,
    sample_labels,
    sample_study,
    write_report,
)
from medvl.findings import FINDINGS

N, SIZE, SEED = 40, 64, 3

# What a simple rule-based labeler looks for (the report grammar's contract).
KEYWORDS = {
    "cardiomegaly": r"cardiomegaly|enlarged (heart|cardiac silhouette)",
    "pleural_effusion": r"effusion",
    "pneumothorax": r"pneumothorax",
    "consolidation": r"consolidation",
    "nodule_mass": r"\bnodules?\b|\bmass(es)?\b",
    "atelectasis": r"atelectasis|atelectatic",
    "edema": r"edema",
    "support_devices": r"endotracheal tube|catheter|nasogastric tube|pacemaker|picc line",
}
NEGATION = re.compile(
    r"^(no|there is no)\b|\bwithout\b|\bfree of\b|\bis normal\b|\bnot enlarged\b|"
    r"\bwithin normal limits\b",
    re.IGNORECASE,
)


def _sentences(report: str) -> list[str]:
    assert report.startswith("FINDINGS: ") and " IMPRESSION: " in report
    body = report.replace("FINDINGS: ", "").replace(" IMPRESSION: ", " ")
    # Split after a period that ends a sentence (not the decimal point of "4.5 cm").
    return [s.strip() for s in re.split(r"(?<=\.)\s+(?=[A-Z0-9])", body) if s.strip()]


def _mentions(sentence: str) -> set[str]:
    return {name for name, pattern in KEYWORDS.items() if re.search(pattern, sentence, re.IGNORECASE)}


def _check_report(report: str, labels: dict[str, int]) -> None:
    positively_mentioned: set[str] = set()
    for sentence in _sentences(report):
        mentioned = _mentions(sentence)
        if NEGATION.search(sentence):
            assert all(labels[m] == 0 for m in mentioned), f"negated a present finding: {sentence!r} {labels}"
        else:
            assert all(labels[m] == 1 for m in mentioned), f"mentioned an absent finding: {sentence!r} {labels}"
            positively_mentioned |= mentioned
    missing = {name for name, v in labels.items() if v} - positively_mentioned
    assert not missing, f"positive findings not reported: {missing} in {report!r}"
    assert not re.search(
        r"\b(possible|possibly|may|might|cannot be excluded|suspicious for|likely|"
        r"question of)\b",
        report,
        re.IGNORECASE,
    ), report


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("synth_a") / "set"
    info = generate_dataset(root, n=N, seed=SEED, image_size=SIZE, lateral=True, workers=1)
    return root, info


def _records(root: Path) -> list[dict[str, Any]]:
    annotation = json.loads((root / "annotation.json").read_text())
    return [r for split in ("train", "val", "test") for r in annotation[split]]


# ---------------------------------------------------------------------------------------------------- layout / info
def test_layout_and_records(dataset: tuple[Path, dict[str, Any]]) -> None:
    root, _ = dataset
    annotation = json.loads((root / "annotation.json").read_text())
    assert set(annotation) == {"train", "val", "test"}
    records = _records(root)
    ids = [r["id"] for r in records]
    assert sorted(ids) == [f"synth_{i:06d}" for i in range(1, N + 1)]  # every study in exactly one split
    for split, items in annotation.items():
        for r in items:
            assert r["split"] == split
            assert r["image_path"] == [f"{r['id']}/0.png", f"{r['id']}/1.png"]
            assert r["views"] == ["PA", "LATERAL"]
            assert set(r["labels"]) == set(FINDINGS) and set(r["labels"].values()) <= {0, 1}
            assert set(r["findings_detail"]) == {f for f, v in r["labels"].items() if v}
            assert r["report"].startswith("FINDINGS: ") and " IMPRESSION: " in r["report"]
            for rel in r["image_path"]:
                with Image.open(root / "images" / rel) as img:
                    assert img.mode == "L" and img.size == (SIZE, SIZE)
                    arr = np.asarray(img)
                assert arr.dtype == np.uint8 and arr.std() > 10  # an actual picture, not a blank
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(ids)


def test_return_value_matches_dataset_info(dataset: tuple[Path, dict[str, Any]]) -> None:
    root, info = dataset
    assert json.loads((root / "dataset_info.json").read_text()) == info
    assert info["generator"] == "medvl.data.synth" and info["version"] == 1
    assert (info["n"], info["seed"], info["image_size"], info["lateral"]) == (N, SEED, SIZE, True)
    assert info["split_fractions"] == [0.8, 0.1, 0.1]
    assert info["splits"] == {"train": 32, "val": 4, "test": 4}
    records = _records(root)
    for name in FINDINGS:
        assert info["prevalence"][name] == pytest.approx(sum(r["labels"][name] for r in records) / N, abs=1e-4)
    assert info["seconds"] >= 0


def test_frontal_only_and_custom_splits(tmp_path: Path) -> None:
    info = generate_dataset(
        tmp_path / "f", n=10, seed=1, image_size=64, lateral=False, split_fractions=(0.5, 0.3, 0.2), workers=1
    )
    assert info["splits"] == {"train": 5, "val": 3, "test": 2} and info["lateral"] is False
    for r in _records(tmp_path / "f"):
        assert r["image_path"] == [f"{r['id']}/0.png"] and r["views"] == ["PA"]
        assert sorted(p.name for p in (tmp_path / "f" / "images" / r["id"]).iterdir()) == ["0.png"]


# ---------------------------------------------------------------------------------------------------- determinism
def test_workers_do_not_change_output(dataset: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = dataset
    other = tmp_path / "b"
    generate_dataset(other, n=N, seed=SEED, image_size=SIZE, lateral=True, workers=2)
    assert (other / "annotation.json").read_bytes() == (root / "annotation.json").read_bytes()
    files = sorted(p.relative_to(root) for p in (root / "images").rglob("*.png"))
    assert len(files) == 2 * N
    for rel in files:
        assert (other / rel).read_bytes() == (root / rel).read_bytes(), rel


def test_seed_changes_everything_but_not_itself() -> None:
    rec_a, views_a = make_study(SEED, 5, SIZE)
    rec_b, views_b = make_study(SEED, 5, SIZE)
    rec_c, views_c = make_study(SEED + 1, 5, SIZE)
    assert rec_a == rec_b and all(np.array_equal(a, b) for a, b in zip(views_a, views_b))
    assert not np.array_equal(views_a[0], views_c[0])
    reports = {make_study(s, 0, SIZE)[0]["report"] for s in range(6)}
    assert len(reports) > 1


# ---------------------------------------------------------------------------------------------------- labels / text
def test_prevalence_and_independence() -> None:
    draws = np.array([[sample_labels(np.random.default_rng([0, i]))[f] for f in FINDINGS] for i in range(5000)])
    for k, name in enumerate(FINDINGS):
        assert draws[:, k].mean() == pytest.approx(PREVALENCE[name], abs=0.025), name
    # Independent draws: the joint rate of two findings is the product of their rates.
    both = (draws[:, 0] & draws[:, 1]).mean()
    assert both == pytest.approx(PREVALENCE["cardiomegaly"] * PREVALENCE["pleural_effusion"], abs=0.015)


def test_attributes_are_consistent() -> None:
    for i in range(400):
        spec = sample_study(np.random.default_rng([1, i]))
        d = spec.details
        if "cardiomegaly" in d:
            assert d["cardiomegaly"]["severity"] in ("mild", "moderate", "marked")
            assert d["cardiomegaly"]["cardiothoracic_ratio"] > 0.5
        if "nodule_mass" in d:
            kind, mm = d["nodule_mass"]["kind"], d["nodule_mass"]["size_mm"]
            assert (kind == "mass") == (mm >= 30) and mm >= 5
        if "pleural_effusion" in d:
            assert d["pleural_effusion"]["side"] in ("left", "right", "bilateral")
            assert d["pleural_effusion"]["size"] in ("small", "moderate", "large")
        if "support_devices" in d:
            assert d["support_devices"]["devices"]


def test_reports_agree_with_labels(dataset: tuple[Path, dict[str, Any]]) -> None:
    root, _ = dataset
    for r in _records(root):
        _check_report(r["report"], r["labels"])
    impressions = set()
    for i in range(600):  # the grammar alone is cheap: check many more studies
        rng = np.random.default_rng([2, i])
        spec = sample_study(rng)
        report = write_report(spec, rng)
        _check_report(report, spec.labels)
        if not any(spec.labels.values()):
            impressions.add(report.split("IMPRESSION: ")[1])
    assert len(impressions) >= 3  # normal studies are phrased several ways


def test_report_attributes_in_text() -> None:
    spec = StudySpec(
        labels={f: int(f in ("pleural_effusion", "nodule_mass", "support_devices")) for f in FINDINGS},
        details={
            "pleural_effusion": {"side": "left", "size": "small"},
            "nodule_mass": {"lobe": "right upper lobe", "side": "right", "size_mm": 8, "kind": "nodule"},
            "support_devices": {
                "devices": ["endotracheal tube", "central venous catheter"],
                "cvc_site": "right internal jugular",
            },
        },
    )
    for i in range(10):
        report = write_report(spec, np.random.default_rng(i)).lower()
        assert "small left pleural effusion" in report
        assert "8 mm" in report and "right upper lobe" in report
        assert "endotracheal tube" in report and "right internal jugular central venous catheter" in report


# ---------------------------------------------------------------------------------------------------- image evidence
def _spec(**details: dict[str, Any]) -> StudySpec:
    return StudySpec(labels={f: int(f in details) for f in FINDINGS}, details=dict(details))


def _frontal(spec: StudySpec, i: int, size: int = 128) -> np.ndarray:
    return render_study(spec, np.random.default_rng([9, i]), size, lateral=False)[0].astype(np.float64)


def test_findings_leave_visible_evidence() -> None:
    normal = _spec()
    effusion = _spec(pleural_effusion={"side": "left", "size": "large"})
    pneumothorax = _spec(pneumothorax={"side": "right", "size": "large", "location": "diffuse"})
    cardiomegaly = _spec(cardiomegaly={"severity": "marked", "cardiothoracic_ratio": 0.66})
    for i in range(4):
        base = _frontal(normal, i)
        # Patient's left lung base = image right, lower lung zone: denser (brighter) with a large effusion.
        diff = _frontal(effusion, i) - base
        assert diff[70:90, 75:105].mean() > 15
        assert abs(diff[:, :50]).mean() < 1  # the other side is untouched
        # Large right pneumothorax: the lateral rim of the image-left lung turns darker.
        diff = _frontal(pneumothorax, i) - base
        assert diff[30:80, 10:40].min() < -15 and diff[30:80, 10:40].mean() < 0
        # Cardiomegaly: the region just beyond the normal left heart border gets brighter.
        diff = _frontal(cardiomegaly, i) - base
        assert diff[60:85, 80:100].mean() > 10
    # Every finding changes the picture of the same patient.
    examples = {
        "consolidation": {"lobe": "right lower lobe", "side": "right", "pattern": "patchy"},
        "nodule_mass": {"lobe": "left upper lobe", "side": "left", "size_mm": 40, "kind": "mass"},
        "atelectasis": {"location": "left lower lobe", "side": "left", "pattern": "plate-like", "volume_loss": False},
        "edema": {"severity": "moderate"},
        "support_devices": {"devices": ["endotracheal tube", "pacemaker"], "pacemaker_side": "left"},
    }
    base = _frontal(normal, 0)
    for name, detail in examples.items():
        assert abs(_frontal(_spec(**{name: detail}), 0) - base).mean() > 0.3, name


# ---------------------------------------------------------------------------------------------------- errors / reuse
def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate_dataset(tmp_path / "x", n=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_dataset(tmp_path / "x", n=2, image_size=32)
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(tmp_path / "x", n=2, seed=-1)
    with pytest.raises(ValueError, match="split_fractions"):
        generate_dataset(tmp_path / "x", n=2, image_size=64, split_fractions=(0.5, 0.5, 0.5))
    assert not (tmp_path / "x").exists()


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="empty or new directory"):
        generate_dataset(target, n=2, image_size=64, workers=1)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "precious"


def test_replaces_previous_synthetic_set(tmp_path: Path) -> None:
    target = tmp_path / "s"
    generate_dataset(target, n=6, seed=0, image_size=64, workers=1)
    info = generate_dataset(target, n=3, seed=1, image_size=64, lateral=False, workers=1)
    assert info["n"] == 3
    assert sorted(p.name for p in (target / "images").iterdir()) == [f"synth_{i:06d}" for i in (1, 2, 3)]
    assert len(_records(target)) == 3
    assert not list(target.glob("*.tmp"))
