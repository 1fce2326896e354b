"""Images sorted into a folder per class (torchvision's ImageFolder), with or without split folders:

    ROOT/<split>/<class>/<image>   split folders train, val|valid|validation, test... (`split_name`)
    ROOT/<class>/<image>           no split: `hash_split` of the image's path relative to ROOT

The split layout is taken when every top folder holding images is a split name; a mix of split names and other
names is an error naming both. An image may sit deeper inside its class folder (ROOT/train/normal/batch1/x.png: class
"normal"). One study per image, id its path relative to ROOT ("train/normal/x.png"), one view. Labels
(`Study.labels`): one-hot over the class names of the whole data set, sorted ({"abnormal": 0, "normal": 1}), so every
study states every class, also one absent from its split; `meta["class"]` is its class.

Images are the files `medvl.data.images.is_image_file` accepts (by suffix, or DICOM without one). Hidden files and
folders (".DS_Store", ".ipynb_checkpoints") are ignored; any other file is counted as an unusable study with
`problem` "not an image file", so `check_studies` and `medvl data prepare` report how many there were and which. An
image outside a class folder (directly in ROOT or in a split folder) is unusable too.
"""

from __future__ import annotations

import os
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.images import is_image_file
from medvl.data.study import SPLIT_NAMES, DataSourceError, Study, group_splits, hash_split, split_name

LAYOUT = "ROOT/<split>/<class>/<image> (split: train, val, test) or ROOT/<class>/<image>"


def _files(root: Path) -> list[Path]:
    """Every non-hidden file under `root`, relative to it, in path order."""
    out = []
    for top, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [(Path(top) / f).relative_to(root) for f in sorted(files) if not f.startswith(".")]
    return sorted(out)


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of an image-folder directory (see the module docstring)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataSourceError(f"missing image folder: {root} is not a directory. Expected layout: {LAYOUT}")
    files = _files(root)
    images = {rel: is_image_file(root / rel) for rel in files}
    tops = sorted({rel.parts[0] for rel, ok in images.items() if ok and len(rel.parts) > 1})
    if not tops:
        raise DataSourceError(f"no images in class folders under {root}. Expected layout: {LAYOUT}")
    splits = [t for t in tops if t.lower() in SPLIT_NAMES]
    if splits and len(splits) < len(tops):
        others = [t for t in tops if t not in splits]
        raise DataSourceError(
            f"{root} mixes split folders ({', '.join(splits)}) with other folders "
            f"({', '.join(others)}): unknown split {others[0]!r} (split names: "
            f"{', '.join(sorted(SPLIT_NAMES))}). Expected layout: {LAYOUT}"
        )
    depth = 1 if splits else 0  # where the class folder is in a relative path
    classes = sorted({rel.parts[depth] for rel, ok in images.items() if ok and len(rel.parts) > depth + 1})
    studies = []
    for rel, ok in images.items():
        sid = rel.as_posix()
        in_split = splits and len(rel.parts) > 1 and rel.parts[0].lower() in SPLIT_NAMES
        split = split_name(rel.parts[0], str(root)) if in_split else hash_split(sid)
        cls = rel.parts[depth] if ok and len(rel.parts) > depth + 1 else None
        problem = "" if ok else f"not an image file: {sid}"
        if ok and cls is None:
            problem = f"image {sid} is not in a class folder. Expected layout: {LAYOUT}"
        labels = {c: int(c == cls) for c in classes} if cls is not None else None
        studies.append(
            Study(
                sid,
                (root / rel,),
                "",
                split,
                (0,),
                labels,
                problem=problem,
                meta={"class": cls} if cls is not None else None,
            )
        )
    return group_splits(studies)
