"""CheXpert (Irvin et al. 2019), full or CheXpert-v1.0-small: studies of frontal and lateral views, 14 observations
labelled positive, negative, uncertain or not mentioned.

    ROOT/train.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, Enlarged Cardiomediastinum, Cardiomegaly,
                     Lung Opacity, Lung Lesion, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax,
                     Pleural Effusion, Pleural Other, Fracture, Support Devices   (1.0 / 0.0 / -1.0 / blank)
    ROOT/valid.csv   the same columns
    ROOT/test.csv    the same columns (optional)
    ROOT/train/patient00001/study1/view1_frontal.jpg   the images

`Path` is written with the archive's folder in front ("CheXpert-v1.0-small/train/patient00001/..."): when ROOT has
that first folder inside it (or the path starts with train/, valid/ or test/), paths are relative to ROOT; otherwise
ROOT is taken to be that folder, whatever it is called now, and the first part is dropped. Image files are not
checked here (there are 224,316); a missing one is counted when the views are loaded.

train.csv is the train split, valid.csv val, test.csv test. The rows of one patient/study folder are one study, id
"patient00001_study1" ("val_patient00001_study1" when another CSV file already has that folder), its views
frontal first (`Frontal/Lateral`; `meta["views"]` keeps AP/PA/LL per view).
Labels (`Study.labels`): each of `OBSERVATIONS` 1 / 0 / -1 (uncertain) as written; a blank is left out (not
mentioned = missing), which the uncertainty policies of the classification task then read. CheXpert gives labels per
study, repeated on each view's row; should the rows of a study disagree, the first frontal row's labels are used and
`meta["label_rows_differ"]` is true. A value other than 1, 0, -1 or blank makes the study unusable. Meta: patient_id,
sex, age, views.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from medvl.data.config import DataConfig
from medvl.data.study import FRONTAL, Study, frontal_first, group_splits, read_csv, require_file

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""CheXpert's 14 observations, spelled as its CSV columns."""
FILES = (("train.csv", "train"), ("valid.csv", "val"), ("test.csv", "test"))
LAYOUT = (
    "ROOT/train.csv and ROOT/valid.csv (optional ROOT/test.csv) with columns Path, Sex, Age, Frontal/Lateral, "
    "AP/PA and the 14 observations (1.0 / 0.0 / -1.0 / blank); Path as in the archive "
    "(CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg), relative to ROOT or to its parent"
)
_SPLIT_FOLDERS = ("train", "valid", "test")
_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1}


def _labels(row: dict[str, str]) -> tuple[dict[str, int], str]:
    labels, bad = {}, ""
    for name in OBSERVATIONS:
        value = row[name]
        if value in _VALUES:
            labels[name] = _VALUES[value]
        elif value and not bad:
            bad = f"{name} is {value!r} at line {row['_line']}; CheXpert labels are 1.0, 0.0, -1.0 or blank"
    return labels, bad


class _Resolver:
    """Image path of a CSV `Path`: under ROOT when the path starts with train/valid/test or ROOT holds its first
    folder, else with that folder dropped (ROOT is the archive's folder). Decided once per first folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inside: dict[str, bool] = {}

    def __call__(self, path: str) -> Path:
        parts = PurePosixPath(path).parts
        if parts[0] not in self.inside:
            self.inside[parts[0]] = len(parts) == 1 or parts[0] in _SPLIT_FOLDERS or (self.root / parts[0]).is_dir()
        return self.root.joinpath(*parts) if self.inside[parts[0]] else self.root.joinpath(*parts[1:])


def _study(key: tuple[str, str], rows: list[dict[str, str]], split: str, resolve: _Resolver) -> Study:
    row_of = {resolve(r["Path"]): r for r in rows}
    paths, view_ids = frontal_first(row_of, [r["Frontal/Lateral"] or None for r in row_of.values()])
    rows = [row_of[p] for p in paths]
    first = next((r for r, v in zip(rows, view_ids, strict=True) if v == FRONTAL), rows[0])
    labels, problem = _labels(first)
    others = [_labels(r)[0] for r in rows if r is not first]
    meta = {
        "patient_id": key[0],
        "sex": first["Sex"],
        "age": int(first["Age"]) if first["Age"].isdigit() else first["Age"],
        "views": [r["AP/PA"] or r["Frontal/Lateral"] for r in rows],
        "label_rows_differ": any(o != labels for o in others),
    }
    return Study(f"{key[0]}_{key[1]}", paths, "", split, view_ids, labels, problem=problem, meta=meta)


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a CheXpert directory (see the module docstring)."""
    root = Path(cfg.root)
    require_file(root / "train.csv", "CSV file", LAYOUT)
    resolve = _Resolver(root)
    studies = []
    for name, split in FILES:
        if split == "test" and not (root / name).is_file():
            continue
        groups: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in read_csv(root / name, ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS), LAYOUT):
            parts = PurePosixPath(row["Path"]).parts
            if len(parts) < 3:
                studies.append(
                    Study(
                        f"{name}:{row['_line']}",
                        (),
                        "",
                        split,
                        (),
                        None,
                        problem=f"Path {row['Path']!r} at line {row['_line']} of {name} is not "
                        "<patient>/<study>/<view image>",
                    )
                )
                continue
            groups.setdefault((parts[-3], parts[-2]), []).append(row)
        studies += [_study(key, rows, split, resolve) for key, rows in groups.items()]
    return group_splits(_unique_ids(studies))


def _unique_ids(studies: list[Study]) -> list[Study]:
    """The official CSVs never share a patient between files, but a user's own subset may (the same
    patient/study folder under train/ and valid/): a study whose id an earlier file already used is renamed
    "<split>_<id>" so both are kept and told apart, and the count is said once."""
    from dataclasses import replace

    seen: dict[str, str] = {}
    out, renamed = [], 0
    for study in studies:
        if study.id in seen and seen[study.id] != study.split:
            study = replace(study, id=f"{study.split}_{study.id}")
            renamed += 1
        seen.setdefault(study.id, study.split)
        out.append(study)
    if renamed:
        print(
            f"note: {renamed} CheXpert studies have the patient/study folder of a study in another CSV file; they "
            "are named <split>_<patient>_<study> (the same patient in two splits leaks between them)",
            file=sys.stderr,
        )
    return out
