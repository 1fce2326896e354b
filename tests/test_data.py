"""Data layer: the R2Gen/IU X-ray source, skipping and counting bad studies, batching, epoch order."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.data.config import DataConfig, SynthConfig
from medvl.data.dataset import ReportDataset, Skipped, StudyError, check_studies, collate, epoch_batches
from medvl.data.images import ImageLoadError, load_grayscale, resize_square
from medvl.data.sources import DataSourceError, Study, load_studies, view_id
from medvl.data.tokenizer import train_bpe_tokenizer
from medvl.findings import FINDINGS

from .conftest import SHARED_DATA


@pytest.fixture(scope="module")
def tok():  # noqa: ANN201
    return train_bpe_tokenizer(["FINDINGS: The heart is enlarged. No pneumothorax."] * 10, vocab_size=300)


def test_iu_xray_source_reads_the_synthetic_layout(synth_root: Path) -> None:
    studies = load_studies(DataConfig(source="iu_xray", root=str(synth_root)))
    assert set(studies) == {"train", "val", "test"}
    assert sum(len(v) for v in studies.values()) == 40
    study = studies["train"][0]
    assert len(study.image_paths) == 2 and all(p.is_file() for p in study.image_paths)
    assert study.view_ids == (0, 1)
    assert study.report.strip() and set(study.labels) == set(FINDINGS)


def test_synthetic_source_refuses_mismatched_settings(synth_root: Path) -> None:
    cfg = DataConfig(source="synthetic", root=str(synth_root), synth=SynthConfig(n=40, seed=3, image_size=64))
    assert len(load_studies(cfg)["train"]) > 0  # matching settings: reuses what is on disk
    with pytest.raises(DataSourceError, match="other settings.*seed"):
        load_studies(replace(cfg, synth=SynthConfig(n=40, seed=4, image_size=64)))


def test_missing_annotation_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no annotation.json.*R2Gen layout"):
        load_studies(DataConfig(source="iu_xray", root=str(tmp_path)))


def test_unknown_source_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="iu_xray"):
        load_studies(DataConfig(source="iu-xray"))


def test_view_names() -> None:
    assert view_id("PA", 1) == 0 and view_id("lateral", 0) == 1 and view_id(None, 1) == 1 and view_id("??", 0) == 0


def _study(tmp_path: Path, sid: str, report: str = "No pneumothorax.", files: int = 1) -> Study:
    paths = []
    for i in range(files):
        path = tmp_path / f"{sid}_{i}.png"
        Image.fromarray(np.full((40, 48), 100 + i, dtype=np.uint8)).save(path)
        paths.append(path)
    return Study(sid, tuple(paths), report, "train", tuple(range(files)), None)


def test_unusable_studies_are_counted_or_fatal_under_strict(tmp_path: Path) -> None:
    good = _study(tmp_path, "good")
    empty = _study(tmp_path, "empty", report="   ")
    missing = replace(_study(tmp_path, "missing"), image_paths=(tmp_path / "gone.png",))
    kept, skipped = check_studies([good, empty, missing], strict=False)
    assert [s.id for s in kept] == ["good"]
    assert {s.id: s.reason for s in skipped} == {
        "empty": "empty report",
        "missing": f"image file not found: {tmp_path / 'gone.png'}",
    }
    with pytest.raises(StudyError, match="empty report.*data.strict"):
        check_studies([good, empty], strict=True)


def test_corrupt_png_is_skipped_in_the_batch_or_fatal_under_strict(tmp_path: Path, tok) -> None:  # noqa: ANN001
    good = _study(tmp_path, "good")
    bad = _study(tmp_path, "bad")
    bad.image_paths[0].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    ds = ReportDataset([good, bad], tok, image_size=32, max_views=2, max_tokens=32)
    batch = collate([ds[0], ds[1]], max_views=2)
    assert batch.ids == ["good"] and len(batch.skipped) == 1 and "cannot decode" in batch.skipped[0].reason
    strict = ReportDataset([bad], tok, image_size=32, max_views=2, max_tokens=32, strict=True)
    with pytest.raises(StudyError, match="bad"):
        strict[0]


def test_collate_pads_views_and_tokens(tmp_path: Path, tok) -> None:  # noqa: ANN001
    one = _study(tmp_path, "one", files=1)
    two = _study(tmp_path, "two", report="FINDINGS: The heart is enlarged. No pneumothorax. " * 3, files=2)
    ds = ReportDataset([one, two], tok, image_size=32, max_views=2, max_tokens=64)
    batch = collate([ds[0], ds[1]], max_views=2)
    assert batch.images.shape == (2, 2, 1, 32, 32) and batch.images.dtype.is_floating_point
    assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
    assert batch.view_mask.tolist() == [[True, False], [True, True]]
    assert float(batch.images[0, 1].abs().sum()) == 0.0  # the missing view is zeros, and masked
    lengths = batch.attention_mask.sum(1).tolist()
    assert lengths[0] < lengths[1] and batch.input_ids[0, lengths[0] :].eq(0).all()
    assert batch.labels is None


def test_empty_batch_when_everything_is_skipped() -> None:
    batch = collate([Skipped("a", "x")], max_views=2)
    assert len(batch) == 0 and batch.skipped[0].id == "a"


def test_epoch_batches_are_a_function_of_seed_and_epoch() -> None:
    a = epoch_batches(10, 3, epoch=1, seed=0, shuffle=True, drop_last=True)
    assert a == epoch_batches(10, 3, epoch=1, seed=0, shuffle=True, drop_last=True)
    assert a != epoch_batches(10, 3, epoch=2, seed=0, shuffle=True, drop_last=True)
    assert len(a) == 3 and all(len(b) == 3 for b in a)
    assert epoch_batches(5, 2, 0, 0, shuffle=False, drop_last=False) == [[0, 1], [2, 3], [4]]


def test_image_loading(tmp_path: Path) -> None:
    path16 = tmp_path / "16bit.png"
    Image.fromarray(np.linspace(0, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)).save(path16)
    img = load_grayscale(path16)
    assert img.dtype == np.uint8 and img.min() == 0 and img.max() == 255
    rgb = tmp_path / "rgb.jpg"
    Image.fromarray(np.full((20, 30, 3), 128, dtype=np.uint8)).save(rgb)
    assert load_grayscale(rgb).shape == (20, 30)
    assert resize_square(img, 16).shape == (16, 16)
    with pytest.raises(ImageLoadError, match="not found"):
        load_grayscale(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_grayscale(tmp_path / "text.png")


@pytest.mark.real_data
def test_real_iu_xray_annotation_loads(tmp_path: Path) -> None:
    src = SHARED_DATA / "iu_xray_reports" / "annotation.json"
    if not src.is_file():
        pytest.skip("../shared/data/iu_xray_reports is not present")
    shutil.copy(src, tmp_path / "annotation.json")
    studies = load_studies(DataConfig(source="iu_xray", root=str(tmp_path)))
    assert len(studies["train"]) == 2069 and len(studies["val"]) == 296
    assert all(len(s.image_paths) == 2 for s in studies["train"] + studies["val"])
    assert all(s.report.strip() for s in studies["train"])
    raw = json.loads(src.read_text())
    first = studies["train"][0]
    assert first.id == raw["train"][0]["id"]
    assert first.image_paths[0] == tmp_path / "images" / raw["train"][0]["image_path"][0]
    # The images are not shipped: every study is reported as skipped, with the path, rather than crashing.
    kept, skipped = check_studies(studies["val"], strict=False)
    assert not kept and len(skipped) == 296 and "image file not found" in skipped[0].reason
