"""The classification sources (nih, chexpert, image_folder) and the manifest's label forms, on tiny fixtures written
here, and nih on the real ../shared/data/nih1000 set when it is present."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import pytest

from medvl.data.config import DataConfig
from medvl.data.layouts import chexpert, nih
from medvl.data.sources import SOURCES, DataSourceError, check_provides, load_studies
from medvl.data.study import hash_split

from . import data_fixtures as fx
from .conftest import SHARED_DATA

NIH_HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]
CHEX_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *chexpert.OBSERVATIONS]


def _load(source: str, root: Path, **kw: object) -> dict:
    return load_studies(DataConfig(source=source, root=str(root), **kw))


def _flat(studies: dict) -> dict:
    return {s.id: s for split in studies.values() for s in split}


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _nih_row(name: str, findings: str, patient: int, view: str = "PA", age: str = "58", follow: int = 0) -> list:
    return [name, findings, follow, patient, age, "F", view, 2048, 2500, 0.14, 0.14]


def _positives(labels: dict) -> set[str]:
    return {k for k, v in labels.items() if v == 1}


# NIH ChestX-ray14


def test_nih_split_folders_labels_missing_image_and_second_copy(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    rows = [
        _nih_row("00000001_000.png", "Cardiomegaly|Effusion", 1),
        _nih_row("00000002_000.png", "No Finding", 2, view="AP", age="058Y", follow=3),
        _nih_row("00000003_000.png", "Hernia", 3),
        _nih_row("00000004_000.png", "No Finding", 4),  # listed, no file
        _nih_row("00000005_000.png", "Mass", 5),
    ]
    _write_csv(root / "Data_Entry_2017_v2020.csv", NIH_HEADER, [*rows, rows[0]])  # a row repeated verbatim
    fx.png(root / "NIH" / "train" / "1_abnormal" / "00000001_000.png", 1)
    fx.png(root / "NIH" / "valid" / "0_normal" / "00000002_000.png", 2)
    fx.png(root / "NIH" / "test" / "1_abnormal" / "00000003_000.png", 3)
    fx.png(root / "images" / "00000001_000.png", 11, shape=(48, 40))  # a second copy, outside the split folders
    fx.png(root / "images" / "00000005_000.png", 5)  # only outside the split folders
    studies = _load("nih", root)
    s = _flat(studies)
    assert {k: [x.id for x in v] for k, v in studies.items()} == {
        "train": ["00000001_000", "00000004_000", "00000005_000"],
        "val": ["00000002_000"],
        "test": ["00000003_000"],
    }
    a = s["00000001_000"]
    assert a.image_paths == (root / "NIH" / "train" / "1_abnormal" / "00000001_000.png",) and a.view_ids == (0,)
    assert _positives(a.labels) == {"Cardiomegaly", "Effusion", "Abnormal"} and set(a.labels) == set(nih.LABELS)
    assert a.meta == {
        "patient_id": "1",
        "age": 58,
        "sex": "F",
        "follow_up": 0,
        "view": "PA",
        "other_copies": ["images/00000001_000.png"],
    }
    b = s["00000002_000"]
    assert _positives(b.labels) == {"No Finding"} and b.labels["Abnormal"] == 0 and b.view_ids == (0,)
    assert b.meta["age"] == 58 and b.meta["follow_up"] == 3 and b.meta["view"] == "AP"
    assert _positives(s["00000003_000"].labels) == {"Hernia", "Abnormal"}
    assert "image file not found: 00000004_000.png" in s["00000004_000"].problem
    assert "images/00000005_000.png is outside the split folders" in s["00000005_000"].problem
    assert sorted(k for k, x in s.items() if x.problem) == ["00000004_000", "00000005_000"]


def test_nih_official_lists_split_train_val_by_patient(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    rows, train_val, test = [], [], []
    for patient in range(1, 81):
        for k in range(2):
            name = f"{patient:08d}_{k:03d}.png"
            rows.append(_nih_row(name, "No Finding" if patient % 2 else "Nodule", patient, follow=k))
            fx.png(root / f"images_00{patient % 3 + 1}" / "images" / name, patient)
            (test if patient > 72 else train_val).append(name)
    rows.append(_nih_row("00000099_000.png", "Edema", 99))
    fx.png(root / "images_001" / "images" / "00000099_000.png", 99)
    _write_csv(root / "Data_Entry_2017.csv", NIH_HEADER, rows)
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    studies = _load("nih", root)
    by_patient = collections.defaultdict(set)
    for split, v in studies.items():
        for x in v:
            if not x.problem:
                by_patient[int(x.meta["patient_id"])].add(split)
    assert all(len(splits) == 1 for splits in by_patient.values())  # a patient's images stay together
    assert {x.id for x in studies["test"]} == {f"{p:08d}_{k:03d}" for p in range(73, 81) for k in range(2)}
    # About 1/8 of the 72 train_val patients (by a hash of the patient id) are val.
    assert sorted(p for p, splits in by_patient.items() if splits == {"val"}) == [9, 39, 49, 50, 51, 55, 65]
    assert len(studies["val"]) == 14 and len(studies["train"]) == 2 * 65 + 1
    assert "neither train_val_list.txt nor test_list.txt" in _flat(studies)["00000099_000"].problem
    (root / "test_list.txt").unlink()
    with pytest.raises(DataSourceError, match=r"test_list.txt does not exist.*Expected layout"):
        _load("nih", root)


def test_nih_without_split_folders_splits_by_patient_hash(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    rows = [
        _nih_row(f"{p:08d}_{k:03d}.png", "Atelectasis|Infiltration" if k else "No Finding", p)
        for p in range(1, 21)
        for k in range(2)
    ]
    for r in rows:
        fx.png(root / "images" / r[0], 1)
    _write_csv(root / "Data_Entry_2017.csv", NIH_HEADER, rows)
    s = _flat(_load("nih", root))
    assert len(s) == 40 and not any(x.problem for x in s.values())
    assert all(x.split == hash_split(x.meta["patient_id"]) for x in s.values())
    assert _positives(s["00000007_001"].labels) == {"Atelectasis", "Infiltration", "Abnormal"}


def test_nih_errors_name_the_missing_file_and_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    root.mkdir()
    with pytest.raises(DataSourceError, match=r"no Data_Entry_2017\*\.csv in .*Expected layout: ROOT/Data_Entry"):
        _load("nih", root)
    _write_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels"], [["a.png", "Mass"]])
    with pytest.raises(DataSourceError, match="lacks the column.*Patient ID"):
        _load("nih", root)
    with pytest.raises(DataSourceError, match=r"other\.csv does not exist.*Expected layout"):
        _load("nih", root, manifest="other.csv")
    _write_csv(root / "Data_Entry_2017.csv", NIH_HEADER, [_nih_row("a.png", "Effusion|Lung Lesion", 1)])
    fx.png(root / "a.png")
    s = _load("nih", root)
    assert "unknown finding 'Lung Lesion'" in _flat(s)["a"].problem


# CheXpert


def _chex_row(path: str, view: str, appa: str, **labels: str) -> list[str]:
    return [path, "Female", "68", view, appa, *(labels.get(n.replace(" ", "_"), "") for n in chexpert.OBSERVATIONS)]


def _write_chexpert(root: Path, prefix: str) -> None:
    p = f"{prefix}/" if prefix else ""
    train = [
        _chex_row(f"{p}train/patient00001/study1/view2_lateral.jpg", "Lateral", "", Edema="0.0", Cardiomegaly="1.0"),
        _chex_row(
            f"{p}train/patient00001/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            Edema="-1.0",
            Cardiomegaly="1.0",
            Pleural_Effusion="0.0",
        ),
        _chex_row(f"{p}train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", No_Finding="1.0"),
        _chex_row(f"{p}train/patient00002/study2/view1_frontal.jpg", "Frontal", "PA", Fracture="yes"),
        _chex_row("", "Frontal", "PA"),
    ]
    valid = [
        _chex_row(
            f"{p}valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", Pneumonia="1.0", Lung_Opacity="0.0"
        )
    ]
    _write_csv(root / "train.csv", CHEX_HEADER, train)
    _write_csv(root / "valid.csv", CHEX_HEADER, valid)


@pytest.mark.parametrize("where", ["root_is_prefix", "renamed_root", "prefix_inside_root", "no_prefix"])
def test_chexpert_studies_views_and_uncertain_labels(tmp_path: Path, where: str) -> None:
    root = tmp_path / ("chex" if where == "renamed_root" else "CheXpert-v1.0-small")
    _write_chexpert(root, "" if where == "no_prefix" else "CheXpert-v1.0-small")
    images = root / "CheXpert-v1.0-small" if where == "prefix_inside_root" else root
    fx.jpg(images / "train" / "patient00001" / "study1" / "view1_frontal.jpg")
    studies = _load("chexpert", root)
    assert {k: [x.id for x in v] for k, v in studies.items()} == {
        "train": ["train.csv:6", "patient00001_study1", "patient00002_study1", "patient00002_study2"],
        "val": ["patient64541_study1"],
    }
    s = _flat(studies)
    a = s["patient00001_study1"]
    assert [p.name for p in a.image_paths] == ["view1_frontal.jpg", "view2_lateral.jpg"] and a.view_ids == (0, 1)
    assert a.image_paths[0] == images / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    assert a.image_paths[0].is_file()
    # The frontal row's labels (the lateral row says Edema 0.0): -1 kept, blanks left out (missing).
    assert a.labels == {"Cardiomegaly": 1, "Edema": -1, "Pleural Effusion": 0}
    assert a.meta == {
        "patient_id": "patient00001",
        "sex": "Female",
        "age": 68,
        "views": ["AP", "Lateral"],
        "label_rows_differ": True,
    }
    assert (
        s["patient00002_study1"].labels == {"No Finding": 1} and not s["patient00002_study1"].meta["label_rows_differ"]
    )
    assert s["patient64541_study1"].labels == {"Lung Opacity": 0, "Pneumonia": 1}
    assert "Fracture is 'yes'" in s["patient00002_study2"].problem
    assert s["train.csv:6"].problem == "Path '' at line 6 of train.csv is not <patient>/<study>/<view image>"
    assert sorted(k for k, x in s.items() if x.problem) == ["patient00002_study2", "train.csv:6"]


def test_chexpert_test_csv_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "CheXpert-v1.0-small"
    _write_chexpert(root, "CheXpert-v1.0-small")
    _write_csv(
        root / "test.csv",
        CHEX_HEADER,
        [_chex_row("CheXpert-v1.0-small/test/patient64741/study1/view1_frontal.jpg", "Frontal", "AP", Edema="1.0")],
    )
    studies = _load("chexpert", root)
    assert [x.id for x in studies["test"]] == ["patient64741_study1"] and studies["test"][0].labels == {"Edema": 1}
    # A user's subset with the same patient/study folder under train/ and valid/: both kept, told apart, said.
    _write_csv(
        root / "valid.csv",
        CHEX_HEADER,
        [_chex_row("CheXpert-v1.0-small/valid/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", Edema="0.0")],
    )
    studies = _load("chexpert", root)
    assert [x.id for x in studies["val"]] == ["val_patient00001_study1"]
    assert "patient00001_study1" in [x.id for x in studies["train"]]
    assert "1 CheXpert studies have the patient/study folder of a study in another CSV" in capsys.readouterr().err
    (root / "valid.csv").unlink()
    with pytest.raises(DataSourceError, match=r"valid.csv does not exist.*Expected layout: ROOT/train.csv"):
        _load("chexpert", root)
    (root / "train.csv").unlink()
    with pytest.raises(DataSourceError, match=r"train.csv does not exist.*Expected layout"):
        _load("chexpert", root)
    _write_csv(root / "train.csv", ["Path", "Sex"], [["a.jpg", "Male"]])
    (root / "valid.csv").write_text("Path\n")
    with pytest.raises(DataSourceError, match="lacks the column.*Frontal/Lateral"):
        _load("chexpert", root)


# Image folder


def test_image_folder_with_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    fx.png(root / "train" / "normal" / "a.png", 1)
    fx.png(root / "train" / "pneumonia" / "batch1" / "b.png", 2)
    fx.jpg(root / "Valid" / "normal" / "c.jpg", 3)
    fx.png(root / "test" / "effusion" / "d.png", 4)
    fx.png(root / "test" / "loose.png", 5)  # no class folder
    (root / "train" / "normal" / "notes.txt").write_text("not an image")
    (root / "train" / "normal" / ".DS_Store").write_text("hidden")
    studies = _load("image_folder", root)
    assert {k: [x.id for x in v] for k, v in studies.items()} == {
        "test": ["test/effusion/d.png", "test/loose.png"],
        "train": ["train/normal/a.png", "train/normal/notes.txt", "train/pneumonia/batch1/b.png"],
        "val": ["Valid/normal/c.jpg"],
    }
    s = _flat(studies)
    assert s["train/normal/a.png"].labels == {"effusion": 0, "normal": 1, "pneumonia": 0}
    assert s["train/pneumonia/batch1/b.png"].labels == {"effusion": 0, "normal": 0, "pneumonia": 1}
    assert s["test/effusion/d.png"].labels == {"effusion": 1, "normal": 0, "pneumonia": 0}
    assert s["Valid/normal/c.jpg"].meta == {"class": "normal"} and s["Valid/normal/c.jpg"].view_ids == (0,)
    assert s["train/normal/notes.txt"].problem == "not an image file: train/normal/notes.txt"
    assert "test/loose.png is not in a class folder" in s["test/loose.png"].problem
    assert s["test/loose.png"].labels is None
    assert sorted(k for k, x in s.items() if x.problem) == ["test/loose.png", "train/normal/notes.txt"]


def test_image_folder_without_splits_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for k in range(6):
        fx.png(root / ("cat" if k % 2 else "dog") / f"{k}.png", k)
    s = _flat(_load("image_folder", root))
    assert len(s) == 6 and all(x.split == hash_split(x.id) for x in s.values())
    assert s["cat/1.png"].labels == {"cat": 1, "dog": 0} and s["dog/0.png"].labels == {"cat": 0, "dog": 1}
    fx.png(root / "train" / "x" / "y.png")
    with pytest.raises(
        DataSourceError,
        match=r"mixes split folders \(train\) with other folders \(cat, dog\): "
        r"unknown split 'cat'.*Expected layout",
    ):
        _load("image_folder", root)
    split_root = tmp_path / "splits"
    fx.png(split_root / "train" / "a" / "1.png")
    fx.png(split_root / "holdout" / "a" / "2.png")
    with pytest.raises(DataSourceError, match=r"unknown split 'holdout'"):
        _load("image_folder", split_root)
    with pytest.raises(DataSourceError, match=r"is not a directory. Expected layout: ROOT/<split>/<class>/<image>"):
        _load("image_folder", tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no images in class folders"):
        _load("image_folder", tmp_path / "empty")


# The manifest's label forms


def _manifest(root: Path, labels: list[object], name: str = "manifest.jsonl") -> dict:
    recs = [
        {"id": f"r{k}", "image_paths": [f"img/{k}.png"], "labels": lab, "split": "train"}
        for k, lab in enumerate(labels)
    ]
    (root / name).write_text("\n".join(json.dumps(r) for r in recs))
    return _flat(_load("manifest", root, manifest=name))


def test_manifest_label_forms(tmp_path: Path) -> None:
    flat = _manifest(
        tmp_path,
        [
            {"Effusion": 1, "Mass": 0, "Edema": -1, "Hernia": None},
            {"Effusion": True, "Mass": False, "Edema": 1.0},
            {"view": "LL"},
            None,
        ],
    )
    assert flat["r0"].labels == {"Effusion": 1, "Mass": 0, "Edema": -1}  # null = missing, left out
    assert flat["r1"].labels == {"Effusion": 1, "Mass": 0, "Edema": 1}
    assert flat["r2"].labels is None and flat["r2"].meta["labels"] == {"view": "LL"} and flat["r2"].view_ids == (1,)
    assert flat["r3"].labels is None
    listed = _manifest(tmp_path, [["Effusion", "Mass"], ["Nodule"], []], "list.jsonl")
    assert listed["r0"].labels == {"Effusion": 1, "Mass": 1, "Nodule": 0}
    assert listed["r1"].labels == {"Effusion": 0, "Mass": 0, "Nodule": 1}
    assert listed["r2"].labels == {"Effusion": 0, "Mass": 0, "Nodule": 0}
    nihlike = _manifest(
        tmp_path,
        [
            {"binary": "normal", "findings": ["No Finding"], "view": "AP", "age": "56"},
            {"binary": "abnormal", "findings": ["Effusion", "Mass"], "view": "PA"},
        ],
        "nih.jsonl",
    )
    assert nihlike["r0"].labels == {"Effusion": 0, "Mass": 0, "No Finding": 1, "Abnormal": 0}
    assert nihlike["r1"].labels == {"Effusion": 1, "Mass": 1, "No Finding": 0, "Abnormal": 1}
    assert nihlike["r0"].meta["labels"]["age"] == "56" and nihlike["r0"].view_ids == (0,)
    from medvl.findings import FINDINGS

    synth = {name: int(k % 3 == 0) for k, name in enumerate(FINDINGS)}
    assert _manifest(tmp_path, [synth], "synth.jsonl")["r0"].labels == synth
    (tmp_path / "m.csv").write_text(
        "id,image_paths,labels,split\na,img/a.png,Effusion|Mass,train\n"
        'b,img/b.png,Mass,train\nc,img/c.png,"{""Edema"": -1}",train\n'
    )
    c = _flat(_load("manifest", tmp_path, manifest="m.csv"))
    assert c["a"].labels == {"Effusion": 1, "Mass": 1} and c["b"].labels == {"Effusion": 0, "Mass": 1}
    assert c["c"].labels == {"Edema": -1}


# Registration


def test_classification_sources_are_registered_with_labels() -> None:
    for name in ("nih", "chexpert", "image_folder"):
        assert SOURCES.get(name).provides == frozenset({"labels"}) and not SOURCES.get(name).may_provide
    check_provides("nih", ["labels"], "classification")
    with pytest.raises(DataSourceError, match="task report_generation needs report; source chexpert provides labels"):
        check_provides("chexpert", ["report"], "report_generation")


# The real NIH set


@pytest.mark.real_data
def test_real_nih1000_splits_and_labels_match_its_manifest() -> None:
    root = SHARED_DATA / "nih1000"
    if not (root / "manifest.jsonl").is_file() or not list(root.glob("Data_Entry_2017*.csv")):
        pytest.skip("../shared/data/nih1000 is not present")
    studies = _load("nih", root)
    assert {k: len(v) for k, v in studies.items()} == {"train": 600, "val": 200, "test": 200}
    s = _flat(studies)
    assert not any(x.problem for x in s.values()) and all(x.image_paths[0].is_file() for x in s.values())
    # The 4 "extra" files are 128 px second copies of 4 training images: one study each, the copy noted.
    copies = {k: x.meta["other_copies"] for k, x in s.items() if "other_copies" in x.meta}
    assert copies == {f"0000000{n}_000": [f"compact256/images/0000000{n}_000.png"] for n in (1, 2, 3, 5)}
    assert all(s[k].split == "train" and "/NIH1000/train/" in s[k].image_paths[0].as_posix() for k in copies)
    manifest = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    for rec in manifest:
        x = s[rec["id"]]
        assert _positives(x.labels) - {"Abnormal"} == set(rec["labels"]["findings"]), rec["id"]
        assert x.labels["Abnormal"] == int("No Finding" not in rec["labels"]["findings"])
        assert x.meta["patient_id"] == rec["labels"]["patient_id"] and x.meta["view"] == rec["labels"]["view"]
        if rec["split"] != "extra":
            assert x.split == {"valid": "val"}.get(rec["split"], rec["split"])
            assert x.image_paths[0] == root / rec["image_paths"][0]
    from_manifest = {x.id: x.labels for v in _load("manifest", root).values() for x in v if not x.problem}
    assert from_manifest == {k: x.labels for k, x in s.items()}
    positives = {
        split: collections.Counter(n for x in v for n, y in x.labels.items() if y == 1) for split, v in studies.items()
    }
    assert [positives[k]["Abnormal"] for k in ("train", "val", "test")] == [300, 101, 100]
    assert sum(p["Effusion"] for p in positives.values()) == 170 and positives["train"]["Hernia"] == 9
