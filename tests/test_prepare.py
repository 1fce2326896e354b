"""`medvl data prepare`: one decode into images.npy, problems counted and listed, read back by the `prepared` source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medvl.data.config import DataConfig, ReportConfig, SynthConfig
from medvl.data.dataset import ReportDataset, StudyError, check_studies, collate
from medvl.data.images import load_grayscale, resize_square
from medvl.data.prepare import prepare, problem_kind
from medvl.data.sources import DataSourceError, load_studies
from medvl.data.tokenizer import train_bpe_tokenizer

from . import data_fixtures as fx
from .conftest import SHARED_DATA, tiny_overrides


@pytest.fixture(scope="module")
def tok():  # noqa: ANN201
    return train_bpe_tokenizer(["The heart is normal in size. No pleural effusion."] * 10, vocab_size=300)


def test_prepared_set_reads_the_same_pixels_through_the_dataset(tmp_path: Path, tok) -> None:  # noqa: ANN001
    src = fx.write_iu_csv(tmp_path / "csv")
    info = prepare("iu_csv", src, tmp_path / "out", image_size=16, workers=0, progress=False)
    assert info["studies_read"] == 4 and info["studies"] == 3 and info["problems"] == 1
    assert info["problem_kinds"] == {"missing section": 1} and info["rows"] == 6
    assert info["report_rules"]["section"] == "findings" and info["statistics"]["image_height"]["max"] == 24
    assert np.load(tmp_path / "out" / "images.npy", mmap_mode="r").shape == (6, 16, 16)
    problems = [json.loads(x) for x in (tmp_path / "out" / "problems.jsonl").read_text().splitlines()]
    assert problems[0]["id"] == "CXR3" and "FINDINGS" in problems[0]["reason"]
    raw = {s.id: s for v in load_studies(DataConfig(source="iu_csv", root=str(src))).values() for s in v}
    prepared = load_studies(DataConfig(source="prepared", root=str(tmp_path / "out")))
    flat = [s for v in prepared.values() for s in v]
    assert sorted(s.id for s in flat) == ["CXR1", "CXR2", "CXR4"]
    kept, skipped = check_studies(flat, strict=False)
    assert len(kept) == 3 and not skipped
    ds = ReportDataset(flat, tok, image_size=16, max_views=2, max_tokens=32, cache_images=False)
    for i, study in enumerate(flat):
        r = raw[study.id]
        assert (study.report, study.split, study.view_ids) == (r.report, r.split, r.view_ids)
        expected = np.stack([resize_square(load_grayscale(p), 16) for p in r.image_paths])
        assert np.array_equal(ds[i].images, expected)
    assert collate([ds[0], ds[1]], max_views=2).images.shape == (2, 2, 1, 16, 16)


def test_bad_input_is_counted_and_listed_or_fatal_under_strict(tmp_path: Path) -> None:
    src = fx.write_iu_csv(tmp_path / "csv")
    zero = next((src / "images" / "images_normalized").glob("CXR2_*1001.dcm.png"))
    zero.write_bytes(b"")
    broken = next((src / "images" / "images_normalized").glob("CXR4_*2001.dcm.png"))
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with open(src / "indiana_reports.csv", "a") as f:
        f.write("1,normal,normal,x,Cough.,None.,Duplicate row.,Normal.\n")
    info = prepare("iu_csv", src, tmp_path / "out", image_size=16, workers=0, progress=False)
    assert info["problem_kinds"] == {
        "missing section": 1,
        "duplicated id": 1,
        "empty image file": 1,
        "undecodable image": 1,
    }
    assert info["studies"] == 1 and info["problems"] == 4
    reasons = {
        json.loads(x)["id"]: json.loads(x)["reason"]
        for x in (tmp_path / "out" / "problems.jsonl").read_text().splitlines()
    }
    assert "0 bytes" in reasons["CXR2"] and str(zero) in reasons["CXR2"] and "cannot decode" in reasons["CXR4"]
    with pytest.raises(StudyError, match="CXR.*--strict"):
        prepare("iu_csv", src, tmp_path / "strict", image_size=16, workers=0, strict=True, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare("iu_csv", src, tmp_path / "out", image_size=16, workers=0, progress=False)
    (src / "indiana_reports.csv").unlink()
    with pytest.raises(DataSourceError, match="indiana_reports.csv"):
        prepare("iu_csv", src, tmp_path / "out2", image_size=16, workers=0, progress=False)


def test_dicom_without_pixels_is_counted(tmp_path: Path) -> None:
    root = tmp_path / "dcm"
    fx.write_dicom(root / "a.dcm", "1.1", "PA")
    fx.write_dicom(root / "b.dcm", "1.2", "PA", pixels=False)
    (root / "reports.csv").write_text("StudyInstanceUID,report\n1.1,No effusion.\n1.2,Clear.\n")
    info = prepare("dicom", root, tmp_path / "out", image_size=8, workers=0, progress=False)
    assert info["studies"] == 1 and info["problem_kinds"] == {"DICOM without pixel data": 1}


def test_pool_decoding_and_report_rules_are_recorded(tmp_path: Path) -> None:
    fx.write_r2gen(tmp_path / "r2gen")
    root = tmp_path / "many"
    # 70 image files (over the 64 views a pool is started for) and 10 more studies sharing them: one row per file
    recs = [
        {"id": f"s{i}", "image_paths": [f"i{i % 70}.png"], "text": "No  effusion. XXXX.", "split": "train"}
        for i in range(80)
    ]
    for k in range(70):
        fx.png(root / f"i{k}.png", k)
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    data = DataConfig(reports=ReportConfig(clean="r2gen", deid="unify"))
    info = prepare("manifest", root, tmp_path / "out", image_size=8, workers=2, data=data, progress=False)
    assert info["studies"] == 80 and info["rows"] == 70 and info["report_rules"]["clean"] == "r2gen"
    assert info["report_rules"]["order"] == ["section", "deid", "clean", "max_words"]
    s = load_studies(DataConfig(source="prepared", root=str(tmp_path / "out")))["train"][5]
    assert s.report == "no effusion . xxxx ."
    arr = np.load(tmp_path / "out" / "images.npy")
    assert np.array_equal(arr[s.image_rows[0]], resize_square(load_grayscale(root / "i5.png"), 8))
    shared = load_studies(DataConfig(source="prepared", root=str(tmp_path / "out")))["train"][75]
    assert shared.image_rows == s.image_rows


def test_problem_kinds() -> None:
    assert problem_kind("report has no IMPRESSION section") == "missing section"
    assert problem_kind("XrayGPT image id 'x' has no file in /a") == "unmatched image id"
    assert problem_kind("something else") == "other"


def test_prepared_source_needs_a_prepare_output(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="prepared.json"):
        load_studies(DataConfig(source="prepared", root=str(tmp_path)))


def test_training_reads_a_prepared_set(synth_root: Path, tmp_path: Path) -> None:
    from medvl.config.experiment import load_experiment
    from medvl.train.loop import train

    info = prepare(
        "synthetic",
        synth_root,
        tmp_path / "prep",
        image_size=32,
        workers=0,
        progress=False,
        data=DataConfig(synth=SynthConfig(n=40, seed=3, image_size=64)),
    )
    assert info["studies"] == 40 and info["problems"] == 0
    overrides = tiny_overrides(tmp_path / "prep", tmp_path / "run", "train.max_steps=2", "data.source=prepared")
    summary = train(load_experiment("quickstart", overrides))
    assert summary["steps"] == 2


@pytest.mark.real_data
def test_real_nih_images_prepare_with_their_labels(tmp_path: Path) -> None:
    nih = SHARED_DATA / "nih1000"
    if not (nih / "manifest.jsonl").is_file():
        pytest.skip("../shared/data/nih1000 is not present")
    info = prepare("manifest", nih, tmp_path / "nih", image_size=32, workers=2, require_report=False, progress=False)
    # The 4 "extra" records repeat train ids (128 px copies of the same radiographs): counted as duplicates.
    assert info["studies"] == 1000 and info["problem_kinds"] == {"duplicated id": 4}
    assert info["splits"] == {"train": 600, "val": 200, "test": 200}
    assert info["statistics"]["image_height"]["max"] == 64
    s = load_studies(DataConfig(source="prepared", root=str(tmp_path / "nih")))["test"][0]
    assert s.meta["labels"]["findings"] == ["No Finding"] and s.image_store is not None
    raw = np.load(tmp_path / "nih" / "images.npy", mmap_mode="r")[s.image_rows[0]]
    assert np.array_equal(
        raw, resize_square(load_grayscale(nih / "compact256/NIH1000/test/0_normal/00000231_013.png"), 32)
    )
    strict_default = prepare("manifest", nih, tmp_path / "nih2", image_size=8, workers=0, progress=False)
    assert strict_default["studies"] == 0 and strict_default["problem_kinds"] == {
        "empty report": 1000,
        "duplicated id": 4,
    }
