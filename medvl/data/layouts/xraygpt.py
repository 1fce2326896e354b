"""XrayGPT's caption layout, used for both its MIMIC-CXR and its OpenI sets:

    ROOT/filter_cap.json   {"annotations": [{"image_id": "...", "caption": "..."}, ...]}  (or `data.manifest`)
    ROOT/image/<image_id>.jpg

One image per study, id = image_id, report = caption; the split is `HASH_SPLIT` of the id (XrayGPT trains on all of
it). XrayGPT's OpenI ids do not always match the file names: an id is also tried with .png/.jpeg and without regard
to case, and an id that still has no file is kept as an unusable study whose problem names the id and what was
tried, so the prepare report lists every one.
"""

from __future__ import annotations

from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.study import DataSourceError, Study, group_splits, hash_split, read_json, view_id

LAYOUT = 'ROOT/filter_cap.json ({"annotations": [{"image_id", "caption"}, ...]}) and ROOT/image/<image_id>.jpg'
_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of an XrayGPT filter_cap.json directory (see the module docstring)."""
    root = Path(cfg.root)
    index = root / (cfg.manifest or "filter_cap.json")
    raw = read_json(index, LAYOUT)
    if not isinstance(raw, dict) or not isinstance(raw.get("annotations"), list):
        raise DataSourceError(f'{index} must hold {{"annotations": [...]}}. Expected layout: {LAYOUT}')
    images = root / "image"
    if not images.is_dir():
        raise DataSourceError(f"missing image folder {images}. Expected layout: {LAYOUT}")
    by_lower = {p.stem.lower(): p for p in images.iterdir()}
    studies = []
    for k, rec in enumerate(raw["annotations"]):
        if not isinstance(rec, dict) or "image_id" not in rec:
            studies.append(
                Study(
                    f"record:{k}",
                    (),
                    "",
                    "train",
                    (),
                    None,
                    problem=f"annotation {k} in {index} has no image_id: {str(rec)[:80]}",
                )
            )
            continue
        sid = str(rec["image_id"])
        path = next((images / f"{sid}{s}" for s in _SUFFIXES if (images / f"{sid}{s}").is_file()), None)
        path = path or by_lower.get(sid.lower())
        problem = (
            ""
            if path
            else (
                f"XrayGPT image id {sid!r} has no file in {images} (tried {sid}.jpg/.png/.jpeg and "
                "any case); XrayGPT's OpenI ids do not always match file names: rename the file "
                "or fix the id"
            )
        )
        studies.append(
            Study(
                sid,
                (path or images / f"{sid}.jpg",),
                str(rec.get("caption") or "").strip(),
                hash_split(sid),
                (view_id(None, 0),),
                None,
                problem=problem,
            )
        )
    return group_splits(studies)
