"""Satellite clips (the medicane data of seed 004): a clip is a folder of T frames of one tile, listed in CSVs.

    ROOT/train.csv, val.csv, test.csv   (`data.clips.train|val|test`; only train is required)
        path,start,end,label            classification: label 1 = a cyclone centre in the tile (the rule below)
        path,start,end,x_pix,y_pix      regression: the centre at the last frame, in pixels of the tile
        (both kinds of columns in one CSV give both; optional `cyclone`, `id_cyc_unico` or `id_final` column)
    FRAMES/<path>/img_00001.png ...     the frames, sorted by name (PNG/JPEG, or .npy for N-band frames); FRAMES is
                                        `data.clips.frames_root` (default ROOT); absolute paths are kept

`start` and `end` are 1-based and inclusive (the seed writes 1 and 16 for 16-frame clips). As in the seed's tracking
set, a row with `label` 0 carries no regression target. Folder names follow the seed, `DD-MM-YYYY_HHMM_X_Y`: the
clip's last frame time and its tile offset in the full frame (`parse_clip_name`).

One study per row: id the `path` (with `@start-end` when a path is listed more than once), its frames as its views
(view id 0 each; the model takes `model.max_views` = T of them), labels {"cyclone": 0 | 1}, targets (x, y), meta
{"cyclone": id, "tile_offset", "end_time"}. A missing folder, or one with fewer frames than `end`, is kept as an
unusable study with the reason.

Splits by cyclone, so no cyclone is seen in training and scored in test. The cyclone of a clip is its CSV column when
there is one; else, with `data.clips.tracks` (medicanes_new_windows.csv), the cyclone whose track is nearest the
tile at the clip's end time among those active then; else the day of its end time (clips of one day stay together);
else the path. `data.clips.split=files`: each CSV is its split, and a cyclone in two of them is an error;
`cyclone`: all rows pooled and split by `hash_split` of the cyclone id.

The seed's tiling and labelling rule, for building clip CSVs from full frames: a 1290x420 frame is cut into 224x224
tiles at strides 213 (x) and 196 (y) (`tile_offsets`: 6 x 2 = 12 tiles covering the frame); a clip is positive when
the cyclone centre lies in its tile in more than a third of its frames (`clip_label`).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.images import IMAGE_SUFFIXES
from medvl.data.study import DataSourceError, Study, group_splits, hash_split, read_csv

FRAME_WIDTH, FRAME_HEIGHT = 1290, 420
"""The full Airmass-RGB frame of the seed (latitude 30-48, longitude -7 to 46)."""
TILE = 224
STRIDE_X, STRIDE_Y = 213, 196
KM_PER_PIXEL = 3.5
"""About 3.5 km per pixel of the full frame (../shared/data/README.md, medicane_tracks)."""
LABEL = "cyclone"
"""The label name of a clip: 1 when a cyclone centre is in its tile (`clip_label`)."""
CYCLONE_COLUMNS = ("cyclone", "id_cyc_unico", "id_final")
FRAME_SUFFIXES = (*IMAGE_SUFFIXES, ".npy")
LAYOUT = (
    "ROOT/train.csv (+ val.csv, test.csv) with columns path,start,end and label and/or x_pix,y_pix; each path "
    "a folder of frames img_00001.png ... (or .npy) under data.clips.frames_root (default ROOT)"
)
_NAME = re.compile(r"(\d{2})-(\d{2})-(\d{4})_(\d{2})(\d{2})_(\d+)_(\d+)$")


# ------------------------------------------------------------------------------------------ tiling and labelling
def tile_offsets(
    width: int = FRAME_WIDTH,
    height: int = FRAME_HEIGHT,
    tile: int = TILE,
    stride_x: int = STRIDE_X,
    stride_y: int = STRIDE_Y,
) -> list[tuple[int, int]]:
    """(x, y) offsets of the tiles of a frame, row by row: every position at the strides that fits inside it."""
    return [(x, y) for y in range(0, height - tile + 1, stride_y) for x in range(0, width - tile + 1, stride_x)]


def in_tile(x: float, y: float, offset: tuple[float, float] = (0, 0), tile: int = TILE) -> bool:
    """Whether the point (x, y) of the frame lies in the tile at `offset` (half-open: [x0, x0 + tile))."""
    return offset[0] <= x < offset[0] + tile and offset[1] <= y < offset[1] + tile


def clip_label(
    centres: Sequence[tuple[float, float] | None], offset: tuple[float, float] = (0, 0), tile: int = TILE
) -> int:
    """The seed's rule: 1 when the centre is in the tile in more than a third of the clip's frames, else 0.

    Args:
        centres: the cyclone centre in each frame, in frame pixels; None where there is no cyclone.
        offset: the tile's offset in the frame.
        tile: the tile's side.
    """
    inside = sum(1 for c in centres if c is not None and in_tile(c[0], c[1], offset, tile))
    return int(inside > len(centres) / 3)


def clip_name(end_time: datetime, offset: tuple[int, int]) -> str:
    """The seed's folder name of a clip: DD-MM-YYYY_HHMM_X_Y (last frame time, tile offset)."""
    return f"{end_time:%d-%m-%Y_%H%M}_{int(offset[0])}_{int(offset[1])}"


def parse_clip_name(name: str) -> tuple[datetime, tuple[int, int]] | None:
    """(end time, tile offset) from a folder named as `clip_name`, or None for another name."""
    m = _NAME.search(name.rstrip("/"))
    if not m:
        return None
    day, month, year, hour, minute, x, y = (int(g) for g in m.groups())
    try:
        return datetime(year, month, day, hour, minute), (x, y)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------------ tracks
def read_tracks(path: str | Path) -> dict[str, list[tuple[datetime, float, float]]]:
    """Cyclone id -> its centres [(time, x_pix, y_pix)] in time order, from a tracks CSV like
    medicanes_new_windows.csv (id column `id_final`, else `id_cyc_unico`)."""
    rows = read_csv(Path(path), ("time", "x_pix", "y_pix"), "id_final or id_cyc_unico, time, x_pix, y_pix")
    key = "id_final" if rows and "id_final" in rows[0] else "id_cyc_unico"
    tracks: dict[str, list[tuple[datetime, float, float]]] = {}
    for r in rows:
        if not r.get(key):
            raise DataSourceError(f"{path} line {r['_line']}: no cyclone id in column {key}")
        cid = r[key].removesuffix(".0")
        tracks.setdefault(cid, []).append((datetime.fromisoformat(r["time"]), float(r["x_pix"]), float(r["y_pix"])))
    return {k: sorted(v) for k, v in tracks.items()}


def cyclone_at(
    tracks: dict[str, list[tuple[datetime, float, float]]], when: datetime, offset: tuple[int, int], tile: int = TILE
) -> str | None:
    """The cyclone active at `when` whose centre then is nearest the tile's centre (None when none is active)."""
    best, best_d = None, math.inf
    cx, cy = offset[0] + tile / 2, offset[1] + tile / 2
    for cid, points in tracks.items():
        if not points[0][0] <= when <= points[-1][0]:
            continue
        _, x, y = min(points, key=lambda p: abs((p[0] - when).total_seconds()))
        d = math.hypot(x - cx, y - cy)
        if d < best_d:
            best, best_d = cid, d
    return best


# ------------------------------------------------------------------------------------------------------ reading
def _frames(folder: Path) -> list[Path]:
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(FRAME_SUFFIXES) and not n.startswith("."))
    except OSError:
        return []
    return [folder / n for n in names]


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _cyclone(row: dict[str, str], name: str, tracks: dict | None) -> str:
    for column in CYCLONE_COLUMNS:
        if row.get(column):
            return row[column].removesuffix(".0")
    parsed = parse_clip_name(name)
    if parsed is not None:
        when, offset = parsed
        if tracks:
            found = cyclone_at(tracks, when, offset)
            if found is not None:
                return found
        return f"day:{when:%Y-%m-%d}"
    return f"clip:{name}"


def _study(row: dict[str, str], split: str, frames_root: Path, csv_path: Path, sid: str, tracks: dict | None) -> Study:
    path = Path(row["path"])
    folder = path if path.is_absolute() else frames_root / path
    start, end = _number(row.get("start", "")), _number(row.get("end", ""))
    frames = _frames(folder)
    problem = ""
    if start is None or end is None or start < 1 or end < start:
        problem = f"{csv_path.name} line {row['_line']}: start/end must be 1-based frame numbers with start <= end"
    elif not folder.is_dir():
        problem = f"clip folder not found: {folder}"
    elif len(frames) < end:
        problem = (
            f"clip {folder} has {len(frames)} frames; {csv_path.name} line {row['_line']} asks for {int(start)}"
            f"..{int(end)}"
        )
    chosen = tuple(frames[int(start) - 1 : int(end)]) if not problem else ()
    labels = None
    label = _number(row.get("label", ""))
    if "label" in row and row["label"] != "":
        if label not in (0, 1):
            problem = problem or f"{csv_path.name} line {row['_line']}: label must be 0 or 1, got {row['label']!r}"
        else:
            labels = {LABEL: int(label)}
    x, y = _number(row.get("x_pix", "")), _number(row.get("y_pix", ""))
    targets = (x, y) if x is not None and y is not None and (labels is None or labels[LABEL] == 1) else ()
    parsed = parse_clip_name(path.name)
    meta = {"cyclone": _cyclone(row, path.name, tracks), "csv": csv_path.name}
    if parsed is not None:
        meta |= {"end_time": parsed[0].isoformat(), "tile_offset": list(parsed[1])}
    return Study(sid, chosen, "", split, (0,) * len(chosen), labels, problem=problem, meta=meta, targets=targets)


def read_clip_csvs(
    csvs: dict[str, Path], frames_root: Path, tracks: dict | None = None, by_cyclone: bool = False
) -> dict[str, list[Study]]:
    """Studies of clip CSVs given as {split: path} (see the module docstring); only "train" must exist."""
    rows: list[tuple[str, Path, dict[str, str]]] = []
    for split, path in csvs.items():
        if split != "train" and not path.is_file():
            continue
        for r in read_csv(path, ("path", "start", "end"), LAYOUT):
            rows.append((split, path, r))
    if not any("label" in r or ("x_pix" in r and "y_pix" in r) for _, _, r in rows):
        raise DataSourceError(
            f"the clip CSVs ({', '.join(str(p) for p in csvs.values())}) have neither a label "
            f"column nor x_pix,y_pix columns. Expected layout: {LAYOUT}"
        )
    counts: dict[str, int] = {}
    for _, _, r in rows:
        counts[r["path"]] = counts.get(r["path"], 0) + 1
    studies = []
    for split, path, r in rows:
        sid = r["path"] if counts[r["path"]] == 1 else f"{r['path']}@{r['start']}-{r['end']}"
        studies.append(_study(r, split, frames_root, path, sid, tracks))
    if by_cyclone:
        from dataclasses import replace

        studies = [replace(s, split=hash_split(s.meta["cyclone"])) for s in studies]
    else:
        where: dict[str, set[str]] = {}
        for s in studies:
            where.setdefault(s.meta["cyclone"], set()).add(s.split)
        shared = {c: sorted(v) for c, v in where.items() if len(v) > 1}
        if shared:
            first = next(iter(shared.items()))
            raise DataSourceError(
                f"{len(shared)} cyclone(s) have clips in several splits (e.g. {first[0]} in "
                f"{', '.join(first[1])}): a model would be scored on a cyclone it was trained on. "
                "Set data.clips.split=cyclone to split the pooled clips by cyclone, or fix the CSVs"
            )
    return group_splits(studies)


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of the clip CSVs of `data.clips` under `data.root` (see the module docstring)."""
    root = Path(cfg.root)
    cc = cfg.clips
    csvs = {"train": root / cc.train, "val": root / cc.val, "test": root / cc.test}
    frames_root = Path(cc.frames_root) if cc.frames_root else root
    tracks = read_tracks(cc.tracks) if cc.tracks else None
    return read_clip_csvs(csvs, frames_root, tracks, by_cyclone=cc.split == "cyclone")


def write_clip_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Write clip rows (path, start, end, label, x_pix, y_pix, cyclone; missing values empty) as a clip CSV."""
    columns = ("path", "start", "end", "label", "x_pix", "y_pix", "cyclone")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
