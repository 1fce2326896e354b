"""MIMIC-CXR, in the official MIMIC-CXR-JPG layout (PhysioNet; credentialed access, medvl never downloads it):

    ROOT/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    ROOT/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train | validate | test)
    ROOT/mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, the 14 CheXpert columns (optional)
    ROOT/files/p10/p10000032/s50414267/02aa804e-....jpg   the images
    ROOT/files/p10/p10000032/s50414267.txt                the free-text report (from mimic-cxr-reports.zip)

Each study_id of the split file is a study, id `s<study_id>`, its images the dicom_ids listed for it, frontal
(PA/AP) first by ViewPosition; the report is the `data.reports.section` part of the .txt file, as R2Gen builds its
MIMIC annotation. CheXpert labels are kept in `Study.meta["chexpert"]` (1.0 / 0.0 / -1.0, None when blank).

The R2Gen layout of MIMIC-CXR (`annotation.json` + `images/`, one record per image) is read by
`medvl.data.sources.read_r2gen` under the source name `mimic_cxr`.
"""

from __future__ import annotations

from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.reports import select_section
from medvl.data.study import Study, TextEncodingError, decode_text, frontal_first, group_splits, read_csv, split_name

LAYOUT = (
    "ROOT/mimic-cxr-2.0.0-metadata.csv, ROOT/mimic-cxr-2.0.0-split.csv, optional "
    "ROOT/mimic-cxr-2.0.0-chexpert.csv, ROOT/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg and the reports "
    "ROOT/files/pXX/pSUBJECT/sSTUDY.txt"
)
_SKIP = {"subject_id", "study_id", "_line"}


def study_dir(root: Path, subject_id: str, study_id: str) -> Path:
    """files/pXX/pSUBJECT/sSTUDY, where XX are the first two digits of the subject id."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _label(value: str) -> float | None:
    return float(value) if value else None


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a MIMIC-CXR-JPG directory (see the module docstring)."""
    root = Path(cfg.root)
    split_rows = read_csv(root / "mimic-cxr-2.0.0-split.csv", ("dicom_id", "study_id", "subject_id", "split"), LAYOUT)
    meta_rows = read_csv(root / "mimic-cxr-2.0.0-metadata.csv", ("dicom_id", "study_id", "ViewPosition"), LAYOUT)
    view_of = {r["dicom_id"]: r["ViewPosition"] for r in meta_rows}
    chexpert: dict[str, dict[str, float | None]] = {}
    if any((root / f"mimic-cxr-2.0.0-chexpert.csv{gz}").is_file() for gz in ("", ".gz")):
        for r in read_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ("study_id",), LAYOUT):
            chexpert[r["study_id"]] = {k: _label(v) for k, v in r.items() if k not in _SKIP}
    grouped: dict[str, list[dict[str, str]]] = {}
    for r in split_rows:
        grouped.setdefault(r["study_id"], []).append(r)
    studies = []
    for study_id, rows in grouped.items():
        subject = rows[0]["subject_id"]
        where = study_dir(root, subject, study_id)
        report_file = where.with_suffix(".txt")
        problem = ""
        if report_file.is_file():
            try:  # undecodable bytes make the study unusable (counted, or fatal under data.strict), never U+FFFD
                report, problem = select_section(
                    decode_text(report_file.read_bytes(), report_file), cfg.reports.section
                )
            except TextEncodingError as e:
                report, problem = "", str(e)
        else:
            report, problem = "", f"no report file {report_file} (unpack mimic-cxr-reports.zip into ROOT)"
        unknown = [r["dicom_id"] for r in rows if r["dicom_id"] not in view_of]
        if unknown and not problem:
            problem = f"dicom_id {unknown[0]} is in the split CSV but not in mimic-cxr-2.0.0-metadata.csv"
        paths, view_ids = frontal_first(
            [where / f"{r['dicom_id']}.jpg" for r in rows], [view_of.get(r["dicom_id"]) or None for r in rows]
        )
        meta = {
            "subject_id": subject,
            "study_id": study_id,
            "chexpert": chexpert.get(study_id),
            "views": [view_of.get(p.stem, "") for p in paths],
        }
        studies.append(
            Study(
                f"s{study_id}",
                paths,
                report,
                split_name(rows[0]["split"], str(root)),
                view_ids,
                None,
                problem=problem,
                meta=meta,
            )
        )
    return group_splits(studies)
