"""IU X-ray in the CSV layout (the Kaggle "Chest X-rays (Indiana University)" data set):

    ROOT/indiana_reports.csv       uid, MeSH, Problems, image, indication, comparison, findings, impression
    ROOT/indiana_projections.csv   uid, filename, projection (Frontal | Lateral)
    ROOT/images/images_normalized/1_IM-0001-4001.dcm.png ...   (also accepted: images_normalized/, images/, ROOT)

A report row is a study, id `CXR<uid>` (the OpenI id, so both layouts give the same studies), its views the
projection rows with that uid, frontal first. The split is `HASH_SPLIT` of the id, as for `openi`.
"""

from __future__ import annotations

from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.reports import select_section
from medvl.data.study import Study, frontal_first, group_splits, hash_split, read_csv

LAYOUT = (
    "ROOT/indiana_reports.csv (uid, MeSH, Problems, image, indication, comparison, findings, impression), "
    "ROOT/indiana_projections.csv (uid, filename, projection) and the PNGs in ROOT/images/images_normalized/"
)
REPORT_COLUMNS = ("uid", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")


def image_dir(root: Path) -> Path:
    """The first of the folders the Kaggle archive and its common re-packs use that exists (else ROOT)."""
    for cand in (root / "images" / "images_normalized", root / "images_normalized", root / "images"):
        if cand.is_dir():
            return cand
    return root


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of an IU X-ray CSV-layout directory (see the module docstring)."""
    root = Path(cfg.root)
    reports = read_csv(root / "indiana_reports.csv", REPORT_COLUMNS, LAYOUT)
    projections = read_csv(root / "indiana_projections.csv", PROJECTION_COLUMNS, LAYOUT)
    images = image_dir(root)
    views: dict[str, list[tuple[str, str]]] = {}
    for row in projections:
        views.setdefault(row["uid"], []).append((row["filename"], row["projection"]))
    studies = []
    for row in reports:
        sid = f"CXR{row['uid']}"
        text = " ".join(
            f"{k.upper()}: {row[k]}" for k in ("indication", "comparison", "findings", "impression") if row.get(k)
        )
        report, problem = select_section(text, cfg.reports.section, row["findings"], row["impression"])
        mine = views.get(row["uid"], [])
        if not mine and not problem:
            problem = f"uid {row['uid']} has no image in indiana_projections.csv"
        paths, view_ids = frontal_first([images / f for f, _ in mine], [p for _, p in mine])
        meta = {
            "uid": row["uid"],
            "mesh": row.get("MeSH", ""),
            "problems": row.get("Problems", ""),
            "indication": row.get("indication", ""),
            "comparison": row.get("comparison", ""),
        }
        studies.append(Study(sid, paths, report, hash_split(sid), view_ids, None, problem=problem, meta=meta))
    return group_splits(studies)
