"""Generic image captioning: COCO-style Karpathy JSON and the Flickr30k captions CSV. One study per image.

`coco_captions`:

    ROOT/dataset_coco.json   {"images": [{"filepath", "filename", "split", "sentences": [{"raw"}], "cocoid"|"imgid"}]}
    ROOT/<filepath>/<filename>   the images (ROOT/images/<filename> when a record has no filepath, as in
                                 dataset_flickr8k.json / dataset_flickr30k.json)

Splits are Karpathy's (restval counts as train). `flickr_captions`:

    ROOT/results.csv   image_name| comment_number| comment   ("|"-separated, as in the Kaggle Flickr30k archive)
    ROOT/flickr30k_images/<image_name>   (also accepted: ROOT/images/, ROOT)

with the split `HASH_SPLIT` of the image name. A row whose comment_number and comment are joined by a space instead of
"|" (one such row is in the Kaggle file) is read as intended.

Several captions per image: all are the study's `references` (evaluation scores against all of them, as
pycocoevalcap does; training samples one per image per epoch) and are kept in `Study.meta["captions"]`; `Study.report`
is caption number `data.caption` (default 0, the first). An image without that caption is unusable and counted.
"""

from __future__ import annotations

import re
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.study import DataSourceError, Study, group_splits, hash_split, read_csv, read_json, split_name

COCO_LAYOUT = (
    'ROOT/dataset_coco.json ({"images": [{"filepath", "filename", "split", "sentences": [{"raw"}], '
    '"cocoid"}]}) and the images at ROOT/<filepath>/<filename>'
)
FLICKR_LAYOUT = "ROOT/results.csv (image_name| comment_number| comment) and the images in ROOT/flickr30k_images/"
_JOINED = re.compile(r"^\s*(\d+)\s+(.*)$")


def _study(sid: str, path: Path, captions: list[str], split: str, choice: int) -> Study:
    problem = ""
    if not 0 <= choice < len(captions):
        problem = f"image has {len(captions)} caption(s), so data.caption={choice} does not exist"
    report = captions[choice] if not problem else ""
    return Study(
        sid,
        (path,),
        report,
        split,
        (0,),
        None,
        problem=problem,
        meta={"captions": captions},
        references=tuple(c for c in captions if c.strip()),
    )


def read_coco(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a Karpathy-split caption JSON (see the module docstring)."""
    root = Path(cfg.root)
    index = root / cfg.manifest if cfg.manifest else root / "dataset_coco.json"
    if not cfg.manifest and not index.is_file():
        index = next(iter(sorted(root.glob("dataset_*.json"))), index)
    raw = read_json(index, COCO_LAYOUT)
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list):
        raise DataSourceError(f'{index} must hold {{"images": [...]}}. Expected layout: {COCO_LAYOUT}')
    studies = []
    for k, rec in enumerate(raw["images"]):
        if "filename" not in rec:
            studies.append(
                Study(f"record:{k}", (), "", "train", (), None, problem=f"image record {k} in {index} has no filename")
            )
            continue
        sid = str(rec.get("cocoid", rec.get("imgid", Path(rec["filename"]).stem)))
        folder = root / rec["filepath"] if rec.get("filepath") else root / "images"
        captions = [str(s.get("raw", "")).strip() for s in rec.get("sentences", [])]
        split = split_name(rec.get("split", "train"), f"{index} image {sid}")
        studies.append(_study(sid, folder / rec["filename"], captions, split, cfg.caption))
    return group_splits(studies)


def read_flickr(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a Flickr30k results.csv directory (see the module docstring)."""
    root = Path(cfg.root)
    rows = read_csv(root / (cfg.manifest or "results.csv"), ("image_name",), FLICKR_LAYOUT, delimiter="|")
    images = next((d for d in (root / "flickr30k_images", root / "images") if d.is_dir()), root)
    captions: dict[str, dict[int, str]] = {}
    bad: dict[str, str] = {}
    for row in rows:
        name, number, comment = row["image_name"], row.get("comment_number", ""), row.get("comment", "")
        if not comment and (m := _JOINED.match(number)):
            number, comment = m.group(1), m.group(2)
        if not name:
            continue  # a blank line
        if not number.isdigit() or not comment:
            bad.setdefault(name, f"malformed caption row at line {row['_line']} of the captions CSV")
            continue
        captions.setdefault(name, {})[int(number)] = comment.strip()
    studies = []
    for name in dict.fromkeys([*captions, *bad]):
        ordered = [c for _, c in sorted(captions.get(name, {}).items())]
        study = _study(name, images / name, ordered, hash_split(name), cfg.caption)
        if name in bad and not study.problem:
            study = Study(
                study.id,
                study.image_paths,
                study.report,
                study.split,
                study.view_ids,
                None,
                problem=bad[name],
                meta=study.meta,
            )
        studies.append(study)
    return group_splits(studies)
