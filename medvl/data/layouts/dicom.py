"""A folder of DICOM files, grouped into studies by their headers (read with pydicom):

    ROOT/**/*.dcm (or .dicom)   any folder structure; one study per StudyInstanceUID
    ROOT/reports.csv            optional: StudyInstanceUID, report

A study's id is its StudyInstanceUID, its views its files, frontal first by ViewPosition (PA/AP frontal, LL/LATERAL
lateral); the report is the row of reports.csv for that uid, used as written (no section extraction). The split is
`HASH_SPLIT` of the uid. A file whose header cannot be read becomes an unusable study named after the file; a study
without a report is kept and counted as unusable for report generation. Only headers are read here; pixels are
decoded when the image is loaded (`medvl.data.images.load_grayscale`), where a file without pixel data is reported.
"""

from __future__ import annotations

from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.study import DataSourceError, Study, frontal_first, group_splits, hash_split, read_csv

LAYOUT = "ROOT/**/*.dcm grouped by StudyInstanceUID, and optionally ROOT/reports.csv (StudyInstanceUID, report)"
SUFFIXES = (".dcm", ".dicom")


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a DICOM folder (see the module docstring)."""
    import pydicom  # a dependency only of DICOM sources
    from pydicom.errors import InvalidDicomError

    root = Path(cfg.root)
    if not root.is_dir():
        raise DataSourceError(f"{root} is not a directory. Expected layout: {LAYOUT}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise DataSourceError(f"no .dcm file under {root}. Expected layout: {LAYOUT}")
    reports = {}
    if (root / "reports.csv").is_file():
        reports = {
            r["StudyInstanceUID"]: r.get("report", "")
            for r in read_csv(root / "reports.csv", ("StudyInstanceUID", "report"), LAYOUT)
        }
    groups: dict[str, list[tuple[Path, str | None, dict[str, str]]]] = {}
    studies = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as e:
            studies.append(
                Study(
                    f"file:{path.relative_to(root)}",
                    (path,),
                    "",
                    hash_split(path.name),
                    (0,),
                    None,
                    problem=f"cannot read the DICOM header of {path}: {e}",
                )
            )
            continue
        uid = str(ds.get("StudyInstanceUID", "") or "")
        if not uid:
            studies.append(
                Study(
                    f"file:{path.relative_to(root)}",
                    (path,),
                    "",
                    hash_split(path.name),
                    (0,),
                    None,
                    problem=f"{path} has no StudyInstanceUID, so it cannot be grouped into a study",
                )
            )
            continue
        info = {"PatientID": str(ds.get("PatientID", "")), "Modality": str(ds.get("Modality", ""))}
        groups.setdefault(uid, []).append((path, str(ds.get("ViewPosition", "")) or None, info))
    for uid, items in groups.items():
        paths, view_ids = frontal_first([p for p, _, _ in items], [v for _, v, _ in items])
        report = " ".join(reports.get(uid, "").split())
        where = root / "reports.csv"
        problem = (
            ""
            if report
            else (
                f"no report for StudyInstanceUID {uid} in {where}"
                if reports
                else f"no report: add {where} (StudyInstanceUID, report)"
            )
        )
        meta = {**items[0][2], "views": [v for _, v, _ in items]}
        studies.append(Study(uid, paths, report, hash_split(uid), view_ids, None, problem=problem, meta=meta))
    return group_splits(studies)
