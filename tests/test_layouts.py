"""Every layout reader on tiny fixtures: the same studies, reports and splits, and clear errors for what is missing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from medvl.data.config import DataConfig, ReportConfig
from medvl.data.dataset import StudyError, check_studies
from medvl.data.sources import SOURCES, DataSourceError, load_studies
from medvl.data.study import hash_split

from . import data_fixtures as fx
from .conftest import SHARED_DATA


def _load(source: str, root: Path, **kw: object) -> dict:
    return load_studies(DataConfig(source=source, root=str(root), **kw))


def _flat(studies: dict) -> dict:
    return {s.id: s for split in studies.values() for s in split}


def test_every_layout_is_registered() -> None:
    assert {
        "iu_xray",
        "openi",
        "iu_csv",
        "mimic_cxr",
        "mimic_cxr_jpg",
        "xraygpt",
        "coco_captions",
        "flickr_captions",
        "manifest",
        "dicom",
        "prepared",
        "synthetic",
    } <= set(SOURCES.names())


def test_openi_and_csv_layouts_give_the_same_studies(tmp_path: Path) -> None:
    openi = _flat(_load("openi", fx.write_openi(tmp_path / "openi")))
    csv_ = _flat(_load("iu_csv", fx.write_iu_csv(tmp_path / "csv")))
    r2gen = _flat(_load("iu_xray", fx.write_r2gen(tmp_path / "r2gen")))
    assert set(openi) == set(csv_) == {f"CXR{u}" for u in fx.IU}
    for sid, a in openi.items():
        b = csv_[sid]
        assert (a.report, a.split, a.view_ids, a.problem) == (b.report, b.split, b.view_ids, b.problem)
        assert a.split == hash_split(sid)
        assert [p.name.removesuffix(".png") for p in a.image_paths] == [
            p.name.removesuffix(".dcm.png") for p in b.image_paths
        ]  # frontal first in both
        assert all(p.is_file() for p in a.image_paths + b.image_paths)
    assert openi["CXR1"].view_ids == (0, 1) and openi["CXR1"].report == fx.IU["1"][0]
    assert openi["CXR1"].meta["mesh"] == ["normal"]
    # R2Gen's annotation holds the studies with findings: the same reports.
    assert {s: r.report for s, r in r2gen.items()} == {s: r.report for s, r in openi.items() if not r.problem}


def test_missing_findings_section_is_counted_with_its_reason(tmp_path: Path) -> None:
    studies = _load("openi", fx.write_openi(tmp_path / "openi"))
    bad = _flat(studies)["CXR3"]
    assert bad.report == "" and "no FINDINGS section" in bad.problem and "findings|impression" in bad.problem
    kept, skipped = check_studies([s for v in studies.values() for s in v], strict=False)
    assert len(kept) == 3 and [s.id for s in skipped] == ["CXR3"] and "FINDINGS" in skipped[0].reason
    with pytest.raises(StudyError, match="CXR3.*FINDINGS"):
        check_studies([s for v in studies.values() for s in v], strict=True)
    fallback = _flat(
        _load("iu_csv", fx.write_iu_csv(tmp_path / "csv"), reports=ReportConfig(section="findings|impression"))
    )
    assert fallback["CXR3"].report == "No acute disease." and not fallback["CXR3"].problem
    both = _flat(_load("iu_csv", tmp_path / "csv", reports=ReportConfig(section="findings+impression")))
    assert both["CXR1"].report == f"{fx.IU['1'][0]} {fx.IU['1'][1]}"


def test_missing_csv_names_the_file_and_the_layout(tmp_path: Path) -> None:
    root = fx.write_iu_csv(tmp_path / "csv")
    (root / "indiana_projections.csv").unlink()
    with pytest.raises(DataSourceError, match=r"indiana_projections.csv does not exist.*Expected layout"):
        _load("iu_csv", root)
    with pytest.raises(DataSourceError, match="lacks the column"):
        (root / "indiana_projections.csv").write_text("uid,file\n1,a.png\n")
        _load("iu_csv", root)
    with pytest.raises(DataSourceError, match="OpenI XML reports"):
        _load("openi", tmp_path)


def test_duplicated_study_id_keeps_the_first_and_counts_the_other(tmp_path: Path) -> None:
    root = fx.write_r2gen(tmp_path / "r2gen")
    ann = json.loads((root / "annotation.json").read_text())
    ann["val"] = [dict(ann["train"][0], split="val")]
    (root / "annotation.json").write_text(json.dumps(ann))
    studies = _load("iu_xray", root)
    assert not studies["train"][0].problem
    assert "duplicated study id 'CXR1'" in studies["val"][0].problem
    _, skipped = check_studies(studies["val"], strict=False)
    assert "duplicated" in skipped[0].reason


def test_mimic_cxr_jpg(tmp_path: Path) -> None:
    root = fx.write_mimic_jpg(tmp_path / "mimic")
    studies = _load("mimic_cxr_jpg", root)
    assert {k: [s.id for s in v] for k, v in studies.items()} == {
        "train": ["s50414267"],
        "val": ["s53189527"],
        "test": ["s57375967"],
    }
    s = studies["train"][0]
    assert s.report.startswith("There is no focal consolidation") and s.report.endswith("normal in size.")
    assert [p.stem for p in s.image_paths] == ["02aa", "174c"] and s.view_ids == (0, 1)
    assert s.meta["chexpert"] == {"Atelectasis": None, "Cardiomegaly": -1.0, "No Finding": 1.0}
    assert "no FINDINGS section" in studies["test"][0].problem
    impression = _load("mimic_cxr_jpg", root, reports=ReportConfig(section="impression"))
    assert impression["test"][0].report == "No acute process." and not impression["test"][0].problem
    assert impression["train"][0].report == "No acute cardiopulmonary process."
    (root / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DataSourceError, match="mimic-cxr-2.0.0-split.csv"):
        _load("mimic_cxr_jpg", root)


def test_mimic_r2gen_layout_keeps_study_and_subject(tmp_path: Path) -> None:
    (tmp_path / "images" / "p10").mkdir(parents=True)
    rec = {
        "id": "02aa",
        "study_id": 504,
        "subject_id": 100,
        "report": "No effusion.",
        "image_path": ["p10/a.jpg"],
        "split": "train",
    }
    (tmp_path / "annotation.json").write_text(json.dumps({"train": [rec], "val": [], "test": []}))
    s = _load("mimic_cxr", tmp_path)["train"][0]
    assert s.meta == {"study_id": 504, "subject_id": 100} and s.image_paths == (tmp_path / "images" / "p10/a.jpg",)


def test_xraygpt_reports_unmatched_ids(tmp_path: Path) -> None:
    studies = _flat(_load("xraygpt", fx.write_xraygpt(tmp_path / "x")))
    assert studies["a1"].image_paths[0].name == "a1.jpg" and studies["a1"].report == "the heart is normal."
    assert studies["b2"].image_paths[0].name == "B2.png" and not studies["b2"].problem
    assert "XrayGPT image id 'CXR99_IM-9' has no file" in studies["CXR99_IM-9"].problem


def test_coco_and_flickr_captions(tmp_path: Path) -> None:
    coco = _load("coco_captions", fx.write_coco(tmp_path / "coco"))
    assert [s.id for s in coco["train"]] == ["1"] and [s.id for s in coco["test"]] == ["2"]
    assert coco["train"][0].report == "A dog." and coco["train"][0].meta["captions"] == ["A dog.", "A brown dog."]
    second = _flat(_load("coco_captions", tmp_path / "coco", caption=1))
    assert second["1"].report == "A brown dog." and "data.caption=1 does not exist" in second["2"].problem
    flickr = _flat(_load("flickr_captions", fx.write_flickr(tmp_path / "flickr")))
    assert flickr["2.jpg"].meta["captions"] == ["A cat sits .", "A cat ."]  # the row without "|" is recovered
    assert flickr["1.jpg"].report == "A dog runs ." and flickr["1.jpg"].image_paths[0].is_file()


def test_generic_manifest_jsonl_and_csv(tmp_path: Path) -> None:
    fx.png(tmp_path / "img" / "a.png")
    fx.png(tmp_path / "img" / "b.png")
    recs = [
        {
            "id": "a",
            "image_paths": ["img/a.png", "img/b.png"],
            "text": "No effusion.",
            "split": "valid",
            "views": ["PA", "LATERAL"],
            "labels": {"findings": ["Effusion"]},
        },
        {"id": "b", "image_paths": "img/b.png", "report": "Clear.", "labels": {"view": "LL"}},
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    s = _flat(_load("manifest", tmp_path))
    assert s["a"].split == "val" and s["a"].view_ids == (0, 1) and s["a"].meta["labels"] == {"findings": ["Effusion"]}
    assert s["b"].split == hash_split("b") and s["b"].view_ids == (1,) and s["b"].report == "Clear."
    (tmp_path / "m.csv").write_text(
        "id,image_paths,text,labels,split\na,img/a.png;img/b.png,No effusion.,Effusion|Mass,train\n"
    )
    c = _load("manifest", tmp_path, manifest="m.csv")["train"][0]
    assert c.meta["labels"] == ["Effusion", "Mass"] and len(c.image_paths) == 2
    with pytest.raises(DataSourceError, match="no manifest.jsonl or manifest.csv"):
        _load("manifest", tmp_path / "img")


def test_dicom_folder_groups_by_study_uid(tmp_path: Path) -> None:
    from medvl.data.images import ImageLoadError, load_grayscale

    root = tmp_path / "dcm"
    fx.write_dicom(root / "a" / "lat.dcm", "1.2.3", "LL")
    fx.write_dicom(root / "a" / "pa.dcm", "1.2.3", "PA")
    fx.write_dicom(root / "b" / "x.dcm", "1.2.4", "AP", pixels=False)
    (root / "reports.csv").write_text('StudyInstanceUID,report\n1.2.3,"Heart normal.  No effusion."\n')
    s = _flat(_load("dicom", root))
    assert [p.name for p in s["1.2.3"].image_paths] == ["pa.dcm", "lat.dcm"] and s["1.2.3"].view_ids == (0, 1)
    assert s["1.2.3"].report == "Heart normal. No effusion." and s["1.2.3"].meta["Modality"] == "DX"
    assert "no report for StudyInstanceUID 1.2.4" in s["1.2.4"].problem
    img = load_grayscale(s["1.2.3"].image_paths[0])
    assert img.shape == (16, 12) and img.dtype.name == "uint8" and img.min() == 0 and img.max() == 255
    with pytest.raises(ImageLoadError, match="no pixel data"):
        load_grayscale(s["1.2.4"].image_paths[0])


def test_report_rules_apply_to_every_source(tmp_path: Path) -> None:
    root = fx.write_iu_csv(tmp_path / "csv")
    rules = ReportConfig(clean="r2gen", deid="unify", max_words=5)
    s = _flat(_load("iu_csv", root, reports=rules))["CXR2"]
    assert s.report == "mild cardiomegaly . xxxx opacity"
    assert (
        _flat(_load("iu_csv", root, reports=replace(rules, deid="drop", max_words=0)))["CXR2"].report
        == "mild cardiomegaly . opacity in the left base ."
    )


@pytest.mark.real_data
def test_real_iu_xray_and_nih_manifest(tmp_path: Path) -> None:
    iu = SHARED_DATA / "iu_xray_reports" / "annotation.json"
    nih = SHARED_DATA / "nih1000"
    if not iu.is_file() or not (nih / "manifest.jsonl").is_file():
        pytest.skip("../shared/data is not present")
    shutil.copy(iu, tmp_path / "annotation.json")
    studies = _load("iu_xray", tmp_path)
    both = studies["train"] + studies["val"]
    assert len(both) == 2365 and all(len(s.image_paths) == 2 and s.view_ids == (0, 1) for s in both)
    assert not any(s.problem for s in both)
    nih_studies = _load("manifest", nih)
    assert {k: len(v) for k, v in nih_studies.items()} == {"train": 600, "val": 200, "test": 200, "extra": 4}
    assert all("duplicated study id" in s.problem for s in nih_studies["extra"])  # they repeat 4 train ids
    s = nih_studies["test"][0]
    assert s.id == "00000231_013" and s.meta["labels"]["findings"] == ["No Finding"] and s.view_ids == (0,)
    from medvl.data.images import load_grayscale

    assert load_grayscale(s.image_paths[0]).shape == (64, 64)
    assert all(p.is_file() for v in nih_studies.values() for st in v for p in st.image_paths)


# --------------------------------------------------------------------- text encodings (issue 16, items 14 and 15)
def _add_bom(path: Path) -> None:
    import gzip

    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(b"\xef\xbb\xbf" + gzip.decompress(path.read_bytes())))
    else:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _manifest_csv(root: Path) -> Path:
    fx.png(root / "img" / "a.png")
    (root / "m.csv").write_text("id,image_paths,text,split\na,img/a.png,No effusion.,train\n")
    return root


def _dicom_folder(root: Path) -> Path:
    fx.write_dicom(root / "a" / "pa.dcm", "1.2.3", "PA")
    (root / "reports.csv").write_text('StudyInstanceUID,report\n1.2.3,"Heart normal."\n')
    return root


CSV_LAYOUTS = [  # (source, writer, the CSV files of the layout, load options)
    ("iu_csv", fx.write_iu_csv, ["indiana_reports.csv", "indiana_projections.csv"], {}),
    (
        "mimic_cxr_jpg",
        fx.write_mimic_jpg,
        ["mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv"],
        {},
    ),
    ("manifest", _manifest_csv, ["m.csv"], {"manifest": "m.csv"}),
    ("dicom", _dicom_folder, ["reports.csv"], {}),
    ("flickr_captions", fx.write_flickr, ["results.csv"], {}),
]


@pytest.mark.parametrize(("source", "write", "files", "options"), CSV_LAYOUTS, ids=[c[0] for c in CSV_LAYOUTS])
def test_every_csv_layout_reads_utf8_with_a_byte_order_mark(
    tmp_path: Path, source: str, write, files: list[str], options: dict
) -> None:  # noqa: ANN001
    plain = _flat(_load(source, write(tmp_path / "plain"), **options))
    root = write(tmp_path / "bom")
    for name in files:
        _add_bom(root / name)
    with_bom = _flat(_load(source, root, **options))
    assert plain and {k: (s.report, s.split, s.view_ids, s.problem) for k, s in with_bom.items()} == {
        k: (s.report, s.split, s.view_ids, s.problem) for k, s in plain.items()
    }


@pytest.mark.parametrize(("source", "write", "files", "options"), CSV_LAYOUTS, ids=[c[0] for c in CSV_LAYOUTS])
def test_a_cp1252_csv_is_refused_naming_the_file_and_line(
    tmp_path: Path, source: str, write, files: list[str], options: dict
) -> None:  # noqa: ANN001
    import gzip

    root = write(tmp_path / "cp")
    target = root / files[-1]
    text = (gzip.decompress(target.read_bytes()) if target.suffix == ".gz" else target.read_bytes()).decode()
    lines = text.splitlines()
    lines[1] = lines[1][:-1] + "\u2013" + lines[1][-1:]  # an en dash, 0x96 in cp1252
    data = ("\n".join(lines) + "\n").encode("cp1252")
    target.write_bytes(gzip.compress(data) if target.suffix == ".gz" else data)
    with pytest.raises(DataSourceError) as err:
        _load(source, root, **options)
    assert str(err.value).startswith(f"{target} line 2 is not UTF-8 (byte 0x96 at column ")
    assert "iconv -f cp1252" in str(err.value) and "\n" not in str(err.value)


def test_a_cp1252_mimic_report_is_counted_or_refused_under_strict(tmp_path: Path) -> None:
    root = fx.write_mimic_jpg(tmp_path / "mimic")
    report = root / "files" / "p10" / "p10000032" / "s50414267.txt"
    report.write_bytes(fx.MIMIC_REPORT.replace("No acute", "No acute \u2013").encode("cp1252"))
    studies = _flat(_load("mimic_cxr_jpg", root))
    problem = studies["s50414267"].problem
    assert problem.startswith(f"{report} line ") and "is not UTF-8 (byte 0x96" in problem
    assert studies["s50414267"].report == ""  # never kept with U+FFFD replacement characters
    kept, skipped = check_studies(studies.values(), strict=False)
    assert {s.id: s.reason for s in skipped}["s50414267"] == problem  # counted, with why
    assert "s50414267" not in {s.id for s in kept}
    with pytest.raises(StudyError, match="is not UTF-8"):
        check_studies(studies.values(), strict=True)
