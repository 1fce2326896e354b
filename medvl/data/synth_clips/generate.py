"""Generating the synthetic satellite clips on disk, in the clip layout that `data.source=clips` reads.

Contract of `generate_clips(out_dir, n, ...)`:
- Writes out_dir/clips/synth_NNNNNN/img_00001.png ... (RGB PNG for 3 bands, .npy [H, W, C] otherwise), then
  out_dir/centres.json ({clip id: [[x, y] per frame] or null: the vortex centre in tile pixels}), then the clip CSVs
  out_dir/train.csv, val.csv, test.csv (path,start,end,label,x_pix,y_pix,cyclone; x_pix,y_pix: the centre at the
  last frame, for positive clips only, as the seed's tracking CSVs), then out_dir/dataset_info.json with
  "complete": true. A marker dataset_info.json ("complete": false) is written first; a non-empty directory that is
  not a previous output is refused (FileExistsError), a previous output is replaced.
- Clip i is drawn from `np.random.default_rng([seed, i])` alone, so files are bit-identical for any worker count.
- Motion: clip i follows cyclone i mod K: the real tracks of `tracks` (K = 18 for medicanes_new_windows.csv) or K
  built-in random tracks; T frames from a random start of the track resampled to `minutes`, scaled from frame to
  tile pixels (tile_size / 224, so a tile spans what a real 224 px tile does, 784 km) and placed in the tile.
- Kinds (the label is always the seed's rule on the drawn centres, `clip_label`): 50% vortex centred in the tile,
  20% no vortex, 20% vortex outside the tile (its bands may reach in), 10% vortex leaving or entering across an edge
  (in the tile in at most a third of the frames: negative).
- Splits by cyclone: a seeded permutation of the K cyclones, 70% / 15% / 15% of them (at least one each) to train /
  val / test; every clip of a cyclone is in its split.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.layouts.clips import LABEL, TILE, clip_label, write_clip_csv
from medvl.data.synth_clips.render import render_clip
from medvl.data.synth_clips.tracks import clip_centres, random_tracks, real_tracks, resample
from medvl.data.workers import default_workers, map_in_order

GENERATOR = "medvl.data.synth_clips"
VERSION = 1
SPLITS = ("train", "val", "test")
FRACTIONS = (0.7, 0.15, 0.15)
KINDS = (("centred", 0.5), ("absent", 0.2), ("outside", 0.2), ("leaving", 0.1))
_SPLIT_TAG = 0x5C11


def km_per_pixel(tile_size: int) -> float:
    """Kilometres per tile pixel: a tile spans what a real 224 px tile of 3.5 km pixels does."""
    return 3.5 * TILE / tile_size


def load_tracks(tracks: str | Path | None, seed: int) -> tuple[list[tuple[str, np.ndarray]], str]:
    """(the cyclone tracks, where they come from): the real ones of `tracks` when that file exists, else random."""
    if tracks and Path(tracks).is_file():
        return real_tracks(tracks), f"real:{Path(tracks).name}"
    return random_tracks(seed), "random"


def _kind(rng: np.random.Generator) -> str:
    u, total = rng.uniform(), 0.0
    for name, share in KINDS:
        total += share
        if u < total:
            return name
    return KINDS[-1][0]


def place(rng: np.random.Generator, kind: str, fine: np.ndarray, frames: int, tile: int) -> np.ndarray | None:
    """Vortex centres [frames, 2] in tile pixels for a clip of `kind` (None: no vortex), following `fine`."""
    if kind == "absent":
        return None
    start = int(rng.integers(0, len(fine) - frames + 1))
    scale = tile / TILE
    first = lambda lo, hi: rng.uniform(lo, hi, size=2)  # noqa: E731
    path = clip_centres(fine, start, frames, scale, np.zeros(2))
    if kind == "leaving":
        reach = float(np.abs(path).max()) + 0.5
        for _ in range(200):
            c = path + first(-reach, tile + reach)
            inside = sum(0 <= x < tile and 0 <= y < tile for x, y in c)
            if 0 < inside <= frames / 3:
                return c
        kind = "outside"  # too slow to cross an edge in this clip
    for _ in range(200):
        if kind == "centred":
            c = path + first(0.1 * tile, 0.9 * tile) - path.mean(0) + path[0]
        else:
            c = path + first(-0.45 * tile, 1.45 * tile)
        if clip_label([tuple(p) for p in c], (0, 0), tile) == int(kind == "centred"):
            return c
    return c


def make_clip(
    seed: int, index: int, fine: np.ndarray, tile: int, frames: int, channels: int
) -> tuple[dict[str, Any], np.ndarray]:
    """(record, uint8 [frames, tile, tile, channels]) of clip `index`; deterministic in its arguments."""
    rng = np.random.default_rng([seed, index])
    kind = _kind(rng)
    centres = place(rng, kind, fine, frames, tile)
    pixels = render_clip(rng, tile, frames, centres, channels, band_seed=seed)
    label = clip_label([tuple(c) for c in centres], (0, 0), tile) if centres is not None else 0
    last = [round(float(v), 3) for v in centres[-1]] if centres is not None and label else [None, None]
    record = {
        "id": clip_id(index),
        "kind": kind,
        "label": label,
        "x_pix": last[0],
        "y_pix": last[1],
        "centres": None if centres is None else [[round(float(a), 3), round(float(b), 3)] for a, b in centres],
    }
    return record, pixels


def clip_id(index: int) -> str:
    return f"synth_{index + 1:06d}"


def _write_clip(task: tuple[int, int, np.ndarray, int, int, int, str]) -> dict[str, Any]:
    seed, index, fine, tile, frames, channels, clips_dir = task
    from PIL import Image

    record, pixels = make_clip(seed, index, fine, tile, frames, channels)
    folder = Path(clips_dir) / record["id"]
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(pixels):
        name = folder / f"img_{t + 1:05d}"
        if channels == 3:
            Image.fromarray(frame, "RGB").save(name.with_suffix(".png"), compress_level=1)
        elif channels == 1:
            Image.fromarray(frame[..., 0], "L").save(name.with_suffix(".png"), compress_level=1)
        else:
            np.save(name.with_suffix(".npy"), frame)
    return record


def cyclone_splits(names: list[str], seed: int) -> dict[str, str]:
    """Cyclone -> split: a seeded permutation cut 70 / 15 / 15 %, at least one cyclone per split when there are 3."""
    k = len(names)
    n_val = max(1, round(FRACTIONS[1] * k)) if k >= 3 else 0
    n_test = max(1, round(FRACTIONS[2] * k)) if k >= 3 else 0
    order = np.random.default_rng([seed, k, _SPLIT_TAG]).permutation(k)
    out = {}
    for rank, i in enumerate(order):
        out[names[int(i)]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def _is_ours(root: Path) -> bool:
    try:
        return json.loads((root / "dataset_info.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _prepare(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not _is_ours(root):
            raise FileExistsError(
                f"{root} is not empty and holds no clip set written by {GENERATOR}; pick an empty or "
                "new directory, so no files of yours are overwritten"
            )
        for name in (*[f"{s}.csv" for s in SPLITS], "centres.json"):
            (root / name).unlink(missing_ok=True)
        if (root / "clips").is_dir():
            shutil.rmtree(root / "clips")
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "dataset_info.json", {"generator": GENERATOR, "version": VERSION, "complete": False})


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def generate_clips(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    tile_size: int = 64,
    frames: int = 16,
    minutes: int = 5,
    channels: int = 3,
    tracks: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Draw `n` synthetic satellite clips into `out_dir` (see the module docstring).

    Args:
        out_dir: new, empty, or previous-output directory.
        n: number of clips.
        seed: the same seed (and settings) give bit-identical files.
        tile_size: side of the frames in pixels (>= 16).
        frames: frames per clip (>= 2).
        minutes: minutes between frames (a divisor of 60).
        channels: bands per frame.
        tracks: real tracks CSV (medicanes_new_windows.csv); None, empty or absent: built-in random tracks.
        workers: processes (None: min(cpu count, 4)); the output does not depend on it.
        progress: show a progress bar.

    Returns:
        The info dict written to out_dir/dataset_info.json.
    """
    checks = (
        ("n", n, 1),
        ("tile_size", tile_size, 16),
        ("frames", frames, 2),
        ("channels", channels, 1),
        ("seed", seed, 0),
    )
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(minutes, int) or minutes < 1 or 60 % minutes:
        raise ValueError(f"minutes must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60), got {minutes!r}")
    track_list, track_source = load_tracks(tracks, seed)
    fine = [(cid, resample(hourly, minutes)) for cid, hourly in track_list]
    fine = [(cid, f) for cid, f in fine if len(f) >= frames]
    if not fine:
        raise ValueError(f"no track is long enough for {frames} frames at {minutes} minutes")
    root = Path(out_dir)
    _prepare(root)
    clips_dir = root / "clips"
    clips_dir.mkdir()
    tasks = [
        (int(seed), i, fine[i % len(fine)][1], int(tile_size), int(frames), int(channels), str(clips_dir))
        for i in range(n)
    ]
    workers = default_workers(workers, n)
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = map_in_order(
        _write_clip, tasks, workers, "synthetic clips", "clip", progress, max_chunk=16
    )
    seconds = time.perf_counter() - t0
    split_of = cyclone_splits([cid for cid, _ in fine], seed)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for i, r in enumerate(records):
        cyclone = fine[i % len(fine)][0]
        rows[split_of[cyclone]].append(
            {
                "path": f"clips/{r['id']}",
                "start": 1,
                "end": frames,
                "label": r["label"],
                "x_pix": r["x_pix"],
                "y_pix": r["y_pix"],
                "cyclone": cyclone,
            }
        )
    _write_json(root / "centres.json", {r["id"]: r["centres"] for r in records})
    for split in SPLITS:
        write_clip_csv(root / f"{split}.csv", rows[split])
    info = {
        "generator": GENERATOR,
        "version": VERSION,
        "n": int(n),
        "seed": int(seed),
        "tile_size": int(tile_size),
        "frames": int(frames),
        "minutes": int(minutes),
        "channels": int(channels),
        "tracks": track_source,
        "cyclones": {s: sorted({r["cyclone"] for r in rows[s]}) for s in SPLITS},
        "splits": {s: len(rows[s]) for s in SPLITS},
        "positives": {s: sum(r["label"] for r in rows[s]) for s in SPLITS},
        "kinds": {k: sum(r["kind"] == k for r in records) for k, _ in KINDS},
        "label": LABEL,
        "km_per_pixel": km_per_pixel(int(tile_size)),
        "seconds": round(seconds, 2),
        "complete": True,
    }
    _write_json(root / "dataset_info.json", info)
    return info
