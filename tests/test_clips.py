"""Satellite clips: the seed's tiling and labelling rule, the clip CSV layouts, splits by cyclone, and the synthetic
clip generator (deterministic, driven by the real medicane tracks when they are there)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.data.config import ClipsConfig, DataConfig
from medvl.data.layouts import clips
from medvl.data.sources import DataSourceError, load_studies

from .conftest import CLIPS_SETTINGS, SHARED_DATA

TRACKS = SHARED_DATA / "medicane_tracks" / "medicanes_new_windows.csv"


# --------------------------------------------------------------------------------------- tiling and labelling
def test_the_seed_tiling_covers_the_frame_with_12_tiles() -> None:
    offsets = clips.tile_offsets()
    assert len(offsets) == 12
    assert sorted({x for x, _ in offsets}) == [0, 213, 426, 639, 852, 1065]
    assert sorted({y for _, y in offsets}) == [0, 196]
    assert max(x for x, _ in offsets) + 224 <= 1290 and max(y for _, y in offsets) + 224 == 420


def test_the_labelling_rule_needs_the_centre_in_the_tile_in_more_than_a_third_of_the_frames() -> None:
    inside, outside = (100.0, 100.0), (300.0, 100.0)
    assert clips.clip_label([inside] * 5 + [outside] * 11) == 0  # 5 of 16 is not more than 16/3
    assert clips.clip_label([inside] * 6 + [outside] * 10) == 1  # 6 of 16 is
    assert clips.clip_label([inside] * 6 + [None] * 10) == 1  # no cyclone in the other frames
    assert clips.clip_label([None] * 16) == 0
    assert clips.clip_label([(224.0, 10.0)] * 16) == 0 and clips.clip_label([(223.9, 0.0)] * 16) == 1  # half-open
    assert clips.clip_label([(300.0, 250.0)] * 3, offset=(213, 196)) == 1
    assert clips.clip_label([(1.0, 1.0)] * 2 + [(40.0, 1.0)], tile=32) == 1  # 2 of 3 frames in a 32 px tile


def test_clip_names_carry_the_end_time_and_the_tile_offset() -> None:
    name = clips.clip_name(datetime(2010, 10, 12, 19, 0), (213, 0))
    assert name == "12-10-2010_1900_213_0"
    assert clips.parse_clip_name(f"/data/airmass/{name}") == (datetime(2010, 10, 12, 19, 0), (213, 0))
    assert clips.parse_clip_name("synth_000001") is None


# ---------------------------------------------------------------------------------------------- the CSV layouts
def _clip_folder(root: Path, name: str, frames: int, size: int = 8) -> None:
    folder = root / "frames" / name
    folder.mkdir(parents=True)
    for t in range(frames):
        Image.fromarray(np.full((size, size, 3), 10 * t, np.uint8), "RGB").save(folder / f"img_{t + 1:05d}.png")


def _cfg(root: Path, **clips_fields: str) -> DataConfig:
    return DataConfig(
        source="clips", root=str(root), clips=ClipsConfig(frames_root=str(root / "frames"), **clips_fields)
    )


def test_the_classification_layout_reads_labels_frames_and_problems(tmp_path: Path) -> None:
    _clip_folder(tmp_path, "12-10-2010_1900_213_0", 16)
    _clip_folder(tmp_path, "12-10-2010_2000_213_0", 16)
    _clip_folder(tmp_path, "12-10-2010_2100_426_0", 3)
    (tmp_path / "train.csv").write_text(
        "path,start,end,label\n12-10-2010_1900_213_0,1,16,1\n"
        "12-10-2010_2000_213_0,5,12,0\n12-10-2010_2100_426_0,1,16,1\n"
        "missing_clip,1,16,0\n"
    )
    studies = {s.id: s for s in load_studies(_cfg(tmp_path))["train"]}
    first = studies["12-10-2010_1900_213_0"]
    assert first.labels == {"cyclone": 1} and len(first.image_paths) == 16 and first.view_ids == (0,) * 16
    assert first.image_paths[0].name == "img_00001.png" and first.targets == () and not first.problem
    assert first.meta["tile_offset"] == [213, 0] and first.meta["end_time"] == "2010-10-12T19:00:00"
    second = studies["12-10-2010_2000_213_0"]
    assert [p.name for p in second.image_paths] == [f"img_{t:05d}.png" for t in range(5, 13)]
    assert second.labels == {"cyclone": 0}
    assert "has 3 frames" in studies["12-10-2010_2100_426_0"].problem
    assert "clip folder not found" in studies["missing_clip"].problem
    assert first.meta["cyclone"] == "day:2010-10-12"  # no cyclone column and no tracks: the day


def test_the_tracking_layout_reads_the_last_frame_centre_and_drops_negative_rows_targets(tmp_path: Path) -> None:
    _clip_folder(tmp_path, "a", 4)
    _clip_folder(tmp_path, "b", 4)
    (tmp_path / "train.csv").write_text("path,start,end,x_pix,y_pix\na,1,4,75.0,160.0\nb,1,4,,\n")
    (tmp_path / "val.csv").write_text("path,start,end,label,x_pix,y_pix,cyclone\na,1,2,1,10,20,7\nb,1,3,0,3,4,7\n")
    cfg = _cfg(tmp_path, split="cyclone")
    studies = load_studies(cfg)
    flat = {s.id: s for split in studies.values() for s in split}
    assert flat["a@1-4"].targets == (75.0, 160.0) and flat["b@1-4"].targets == ()
    assert flat["a@1-2"].targets == (10.0, 20.0) and len(flat["a@1-2"].image_paths) == 2
    assert flat["b@1-4"].labels is None  # no label column in train.csv
    assert flat["b@1-3"].labels == {"cyclone": 0} and flat["b@1-3"].targets == ()  # label 0: no target (the seed)
    both = [s for s in flat.values() if s.meta["cyclone"] == "7"]
    assert len(both) == 2 and len({s.split for s in both}) == 1  # one cyclone, one split


def test_a_cyclone_in_two_split_files_is_refused_and_tracks_name_the_cyclones(tmp_path: Path) -> None:
    _clip_folder(tmp_path, "12-10-2010_1900_213_0", 2)
    _clip_folder(tmp_path, "13-10-2010_0100_213_0", 2)
    (tmp_path / "train.csv").write_text("path,start,end,label\n12-10-2010_1900_213_0,1,2,1\n")
    (tmp_path / "test.csv").write_text("path,start,end,label\n13-10-2010_0100_213_0,1,2,1\n")
    tracks = tmp_path / "tracks.csv"
    tracks.write_text(
        "id_final,time,x_pix,y_pix\n1283,2010-10-12 18:00:00,300,150\n1283,2010-10-13 02:00:00,290,150\n"
        "999,2010-10-12 18:00:00,1200,300\n999,2010-10-13 02:00:00,1200,300\n"
    )
    with pytest.raises(DataSourceError, match="1283 in test, train"):
        load_studies(_cfg(tmp_path, tracks=str(tracks)))
    studies = load_studies(_cfg(tmp_path, tracks=str(tracks), split="cyclone"))
    flat = [s for v in studies.values() for s in v]
    assert {s.meta["cyclone"] for s in flat} == {"1283"} and len(studies) == 1  # the nearer of the two active


def test_csvs_without_label_or_coordinates_are_refused(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("path,start,end\na,1,2\n")
    with pytest.raises(DataSourceError, match="neither a label column nor x_pix,y_pix"):
        load_studies(_cfg(tmp_path))


# ------------------------------------------------------------------------------------------------- the generator
def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "dataset_info.json"
    }


def test_the_generator_is_deterministic_per_seed_whatever_the_workers(tmp_path: Path) -> None:
    from medvl.data.synth_clips import generate_clips

    settings = {"n": 6, "tile_size": 24, "frames": 3, "tracks": ""}
    generate_clips(tmp_path / "a", seed=5, workers=1, **settings)
    generate_clips(tmp_path / "b", seed=5, workers=2, **settings)
    generate_clips(tmp_path / "c", seed=6, workers=1, **settings)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b and len(a) == 6 * 3 + 4  # frames, centres.json, three CSVs
    assert a != c
    assert np.asarray(Image.open(tmp_path / "a" / "clips" / "synth_000001" / "img_00001.png")).shape == (24, 24, 3)
    generate_clips(tmp_path / "d", seed=5, channels=5, workers=1, **settings)  # N bands: .npy frames
    assert np.load(tmp_path / "d" / "clips" / "synth_000001" / "img_00001.npy").shape == (24, 24, 5)


def test_synthetic_labels_and_targets_follow_the_rule_and_splits_keep_cyclones_apart(clips_root: Path) -> None:
    info = json.loads((clips_root / "dataset_info.json").read_text())
    assert info["tracks"] == "random" and info["km_per_pixel"] == pytest.approx(3.5 * 224 / 32)
    centres = json.loads((clips_root / "centres.json").read_text())
    cfg = DataConfig(source="clips_synthetic", root=str(clips_root))
    cfg.synth_clips.__dict__.update(CLIPS_SETTINGS)
    studies = load_studies(cfg)
    flat = [s for v in studies.values() for s in v]
    assert len(flat) == 80 and set(studies) == {"train", "val", "test"}
    tile = CLIPS_SETTINGS["tile_size"]
    for s in flat:
        c = centres[Path(s.id).name]
        expected = clips.clip_label([tuple(p) for p in c], (0, 0), tile) if c is not None else 0
        assert s.labels == {"cyclone": expected}, s.id
        assert s.targets == (tuple(pytest.approx(v, abs=1e-3) for v in c[-1]) if expected else ())
    labels = [s.labels["cyclone"] for s in flat]
    assert 0.3 < np.mean(labels) < 0.7
    kinds = info["kinds"]
    assert kinds["absent"] > 0 and kinds["outside"] > 0 and kinds["leaving"] > 0
    outside_negatives = [s for s in flat if s.labels["cyclone"] == 0 and centres[Path(s.id).name] is not None]
    assert outside_negatives  # negatives with a vortex outside or crossing the edge, besides empty ones
    by_split = {split: {s.meta["cyclone"] for s in v} for split, v in studies.items()}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])


def test_the_synthetic_source_refuses_a_set_drawn_with_other_settings(clips_root: Path) -> None:
    cfg = DataConfig(source="clips_synthetic", root=str(clips_root))
    cfg.synth_clips.__dict__.update({**CLIPS_SETTINGS, "frames": 8})
    with pytest.raises(DataSourceError, match="frames=4 on disk vs 8 asked"):
        load_studies(cfg)


@pytest.mark.skipif(not TRACKS.is_file(), reason="the real medicane tracks (../shared/data) are not here")
def test_clips_from_real_tracks_move_along_them() -> None:
    from medvl.data.synth_clips.generate import load_tracks, make_clip
    from medvl.data.synth_clips.tracks import resample

    tracks, source = load_tracks(TRACKS, seed=0)
    assert source == "real:medicanes_new_windows.csv" and len(tracks) == 18
    hourly = dict(tracks)["7001421"]
    fine = resample(hourly, 5)
    assert len(fine) == (len(hourly) - 1) * 12 + 1 and np.allclose(fine[::12], hourly)
    tile, frames = 64, 16
    scale = tile / 224
    steps = np.diff(fine, axis=0) * scale
    checked = 0
    for index in range(12):
        record, pixels = make_clip(0, index, fine, tile, frames, 3)
        assert pixels.shape == (frames, tile, tile, 3) and pixels.dtype == np.uint8
        if record["centres"] is None:
            continue
        moved = np.diff(np.array(record["centres"]), axis=0)  # the clip's motion, frame to frame
        # ... is a window of the real track's 5-minute motion, scaled from frame to tile pixels.
        misfit = min(np.abs(steps[s : s + frames - 1] - moved).max() for s in range(len(steps) - frames + 2))
        assert misfit < 2e-3, misfit
        assert 0.01 < np.hypot(*moved.sum(0)) < 15  # it moves, at a medicane's speed (about 11 px/h in this track)
        checked += 1
    assert checked >= 6


def test_medvl_data_synth_clips_writes_the_clip_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medvl.cli import main

    out = tmp_path / "clips"
    assert (
        main(
            [
                "data",
                "synth-clips",
                "--out",
                str(out),
                "--n",
                "5",
                "--tile-size",
                "24",
                "--frames",
                "3",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "wrote 5 synthetic clips" in capsys.readouterr().out
    header = (out / "train.csv").read_text().splitlines()[0]
    assert header == "path,start,end,label,x_pix,y_pix,cyclone"
    assert len(list((out / "clips").glob("synth_*/img_*.png"))) == 15
