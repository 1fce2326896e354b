"""NIH ChestX-ray14 (Wang et al. 2017): one frontal image per study, 14 finding labels.

    ROOT/Data_Entry_2017*.csv    Image Index, Finding Labels ("Effusion|Mass" or "No Finding"), Follow-up #,
                                 Patient ID, Patient Age, Patient Gender, View Position, ... (the 2017 file, the
                                 v2020 re-release, or a subset of either; .csv.gz too)
    ROOT/**/<Image Index>        the images, anywhere under ROOT (images_001/images/, a flat images/, split folders)
    ROOT/train_val_list.txt      the official split, one Image Index a line (optional; with test_list.txt)
    ROOT/test_list.txt

With several label files the last in name order is read (Data_Entry_2017_v2020.csv, NIH's corrected labels, over
Data_Entry_2017.csv); `data.manifest` names another. A CSV row repeated verbatim is read once. The tree under ROOT is
indexed once by file name; a listed image with no file is kept as a study with `problem` "image file not found", so it
is counted. When a file name is found at several places, the copy inside a split-named folder is used (else the first
in path order) and the others are listed in `meta["other_copies"]`: the nih1000 set holds four training images a
second time, at 128 px, in compact256/images/, so its 1,004 files give 1,000 studies.

Study id: the Image Index without suffix ("00000001_000"). View: `View Position` (PA/AP: frontal). Labels
(`Study.labels`): each of `FINDINGS` (NIH's names) 1 when in Finding Labels else 0, "No Finding" 0/1, and
"Abnormal" = 1 - "No Finding", so the normal/abnormal task and the 14-finding task read the same studies. A finding
name outside NIH's 15 makes the study unusable (the CSV is not ChestX-ray14's). Meta: patient_id, age, sex,
follow_up, view.

Split, the first rule that applies:
1. train_val_list.txt and test_list.txt present: the official split; train_val is divided patient-wise, about 1/8 of
   the patients (by a hash of the patient id) to val, the rest to train. An image in neither list is unusable.
2. Some image lies in a split-named folder (train, val|valid|validation, test... as `split_name` reads them, the
   innermost one counts): that folder's split. An image outside such folders is then unusable (its patient could
   sit in another split), as is one whose copies sit in different splits' folders.
3. Otherwise `hash_split` of the patient id: all images of a patient fall in one split.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.study import (
    SPLIT_NAMES,
    DataSourceError,
    Study,
    group_splits,
    hash_split,
    read_csv,
    require_file,
    view_id,
)

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 ChestX-ray14 findings, spelled as in Data_Entry_2017.csv."""
NO_FINDING, ABNORMAL = "No Finding", "Abnormal"
LABELS = (*FINDINGS, NO_FINDING, ABNORMAL)
VAL_SHARE = 1 / 8
"""Share of the official train_val patients that go to val."""
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
LAYOUT = (
    "ROOT/Data_Entry_2017*.csv (Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, "
    "Patient Gender, View Position), the images anywhere under ROOT by their Image Index, optional "
    "ROOT/train_val_list.txt + ROOT/test_list.txt"
)
LISTS = ("train_val_list.txt", "test_list.txt")


def find_labels_csv(cfg: DataConfig) -> Path:
    """The label file: `data.manifest` (relative to ROOT), else the last ROOT/Data_Entry_2017*.csv[.gz] by name."""
    root = Path(cfg.root)
    if cfg.manifest:
        return require_file(root / cfg.manifest, "label CSV (data.manifest)", LAYOUT)
    found = sorted([*root.glob("Data_Entry_2017*.csv"), *root.glob("Data_Entry_2017*.csv.gz")])
    if not found:
        raise DataSourceError(f"missing label CSV: no Data_Entry_2017*.csv in {root}. Expected layout: {LAYOUT}")
    return found[-1]


def index_files(root: Path, names: set[str]) -> dict[str, list[Path]]:
    """Every file under `root` whose name is in `names`, by name, in path order (one walk; followed symlinked
    folders are visited once)."""
    found: dict[str, list[Path]] = {}
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            if name in names:
                found.setdefault(name, []).append(Path(top) / name)
    return found


def split_folder(path: Path, root: Path) -> str | None:
    """medvl's name of the innermost split-named folder on `path` below `root` (train, val, test), or None."""
    for part in reversed(path.relative_to(root).parts[:-1]):
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return None


def official_split(patient: str, listed: dict[str, str], name: str) -> str | None:
    """The split of image `name` under the official lists (train_val divided by patient), None when not listed."""
    if listed.get(name) == "test":
        return "test"
    if listed.get(name) != "train_val":
        return None
    x = int(hashlib.sha256(patient.encode()).hexdigest()[:8], 16) / 0x100000000
    return "val" if x < VAL_SHARE else "train"


def _read_lists(root: Path) -> dict[str, str] | None:
    present = [n for n in LISTS if (root / n).is_file()]
    if not present:
        return None
    if len(present) == 1:
        other = next(n for n in LISTS if n not in present)
        require_file(root / other, f"official split list (ROOT has {present[0]})", LAYOUT)
    listed: dict[str, str] = {}
    for file, split in zip(LISTS, ("train_val", "test"), strict=True):
        for line in (root / file).read_text(encoding="utf-8").split():
            listed[line.strip()] = split
    return listed


def _labels(text: str) -> tuple[dict[str, int], str]:
    named = {n.strip() for n in text.split("|") if n.strip()}
    unknown = sorted(named - {*FINDINGS, NO_FINDING})
    labels = {f: int(f in named) for f in FINDINGS}
    normal = int(NO_FINDING in named or not named & set(FINDINGS))
    labels |= {NO_FINDING: normal, ABNORMAL: 1 - normal}
    problem = (
        f"unknown finding {unknown[0]!r} in Finding Labels (ChestX-ray14 names: {', '.join(FINDINGS)}, {NO_FINDING})"
        if unknown
        else ""
    )
    return labels, problem


def _number(value: str) -> int | str:
    """An age or follow-up number as an int ("058Y", as the first release wrote ages, is 58); else the text."""
    digits = value.removesuffix("Y")
    return int(digits) if digits.isdigit() else value


def _choose(copies: list[Path], root: Path) -> tuple[Path, list[Path]]:
    """The copy to use (one in a split folder first, else the first) and the others."""
    best = next((p for p in copies if split_folder(p, root)), copies[0])
    return best, [p for p in copies if p != best]


def _split(
    name: str, patient: str, copies: list[Path], root: Path, listed: dict[str, str] | None, by_folder: bool
) -> tuple[str, str]:
    """(split, problem) of one image by the rules of the module docstring; an unusable image is put in train."""
    if listed is not None:
        split = official_split(patient, listed, name)
        return (split, "") if split else ("train", f"{name} is in neither {LISTS[0]} nor {LISTS[1]}")
    if not by_folder:
        return hash_split(patient), ""
    folders = sorted({s for p in copies if (s := split_folder(p, root))})
    if len(folders) > 1:
        return folders[0], f"copies of {name} sit in the split folders of {', '.join(folders)}"
    if not folders and copies:
        return "train", (
            f"{copies[0].relative_to(root)} is outside the split folders (train/val/test) the other "
            "images are in, so its split is unknown"
        )
    return (folders or ["train"])[0], ""


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a ChestX-ray14 directory (see the module docstring)."""
    root = Path(cfg.root)
    csv_path = find_labels_csv(cfg)
    rows, seen = [], set()
    for r in read_csv(csv_path, COLUMNS, LAYOUT):
        key = tuple(v for k, v in r.items() if k != "_line")
        if key not in seen:  # the same row twice (a subset built by concatenation) is one study
            seen.add(key)
            rows.append(r)
    files = index_files(root, {r["Image Index"] for r in rows})
    listed = _read_lists(root)
    by_folder = listed is None and any(split_folder(p, root) for copies in files.values() for p in copies)
    studies = []
    for r in rows:
        name, patient = r["Image Index"], r["Patient ID"]
        labels, bad_label = _labels(r["Finding Labels"])
        meta = {
            "patient_id": patient,
            "age": _number(r.get("Patient Age", "")),
            "sex": r.get("Patient Gender", ""),
            "follow_up": _number(r.get("Follow-up #", "")),
            "view": r["View Position"],
        }
        copies = files.get(name, [])
        path, others = _choose(copies, root) if copies else (root / name, [])
        if others:
            meta["other_copies"] = [p.relative_to(root).as_posix() for p in others]
        split, bad_split = _split(name, patient, copies, root, listed, by_folder)
        missing = (
            ""
            if copies
            else f"image file not found: {name} (line {r['_line']} of {csv_path.name}) is under no folder of {root}"
        )
        studies.append(
            Study(
                Path(name).stem,
                (path,),
                "",
                split,
                (view_id(r["View Position"], 0),),
                labels,
                problem=missing or bad_label or bad_split,
                meta=meta,
            )
        )
    return group_splits(studies)
