"""Data sources: where studies come from, chosen by name (`data.source`).

Every source returns `{split: [Study, ...]}`; `load_studies` then applies the report rules (`data.reports`:
placeholders, cleaning, length; section extraction happens in the sources that read whole reports), except to a
prepared data set, whose reports were processed when it was prepared. Sources and their layouts (each module's docstring has details):

    iu_xray, mimic_cxr   R2Gen layout (below)                     openi            OpenI XML + PNG (layouts/openi)
    iu_csv               Kaggle indiana_*.csv (layouts/iu_csv)    mimic_cxr_jpg    MIMIC-CXR-JPG (layouts/mimic)
    xraygpt              filter_cap.json + image/ (layouts/xraygpt)
    coco_captions        Karpathy JSON     flickr_captions   results.csv (layouts/captions)
    manifest             JSONL/CSV (layouts/manifest)             dicom            *.dcm folders (layouts/dicom)
    prepared             `medvl data prepare` output (layouts/prepared)
    synthetic            generated R2Gen layout

Classification sources (labels, no reports):

    nih                  ChestX-ray14 Data_Entry_2017*.csv + images (layouts/nih)
    chexpert             CheXpert train.csv / valid.csv + images (layouts/chexpert)
    image_folder         ROOT/[split/]class/image (layouts/image_folder)

The R2Gen layout (IU X-ray, and MIMIC-CXR with one record per image plus study_id/subject_id):

    ROOT/annotation.json   {"train": [{"id", "report", "image_path": ["ID/0.png", "ID/1.png"], "split"}, ...],
                            "val": [...], "test": [...]}
    ROOT/images/ID/0.png   the views, frontal first

`synthetic` generates that layout with `medvl.data.synth` when ROOT has no data set yet, so the quickstart runs the
same loading code as real IU X-ray. Records may also carry `labels` (finding -> 0/1, the synthetic ground truth) and
`views` (view names such as "PA" or "LATERAL").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medvl.data.config import DataConfig
from medvl.data.layouts import (captions, chexpert, dicom, image_folder, iu_csv, manifest, mimic, nih, openi,
                                prepared, xraygpt)
from medvl.data.reports import apply_rules
from medvl.data.study import (FRONTAL, LATERAL, RECORD_FIELDS, DataSourceError, Study, decode_text, group_splits,
                              view_id)
from medvl.findings import FINDINGS
from medvl.registry import Registry

__all__ = ["FRONTAL", "LATERAL", "SOURCES", "DataSourceError", "Source", "Study", "check_provides", "load_studies",
           "read_r2gen", "require_split", "view_id"]

def read_r2gen(root: str | Path) -> dict[str, list[Study]]:
    """Studies of an R2Gen-layout directory."""
    root = Path(root)
    annotation = root / "annotation.json"
    if not annotation.is_file():
        raise DataSourceError(f"no annotation.json in {root}: data.root must be a directory in the R2Gen layout "
                              "(annotation.json + images/); for the synthetic set use data.source=synthetic")
    try:
        raw = json.loads(decode_text(annotation.read_bytes(), annotation))
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{annotation} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise DataSourceError(f"{annotation} must map split names to lists of studies")
    return group_splits(_study(r, split, root / "images", annotation) for split, records in raw.items()
                        for r in records)


def _study(record: dict[str, Any], split: str, images: Path, where: Path) -> Study:
    for key in ("id", "image_path"):
        if key not in record:
            raise DataSourceError(f"a {split!r} record in {where} has no {key!r} field: {str(record)[:120]}")
    paths = record["image_path"]
    paths = [paths] if isinstance(paths, str) else list(paths)
    names = record.get("views") or [None] * len(paths)
    labels = record.get("labels")
    if labels is not None:
        labels = {name: int(labels.get(name, 0)) for name in FINDINGS}
    meta = {k: record[k] for k in ("study_id", "subject_id") if k in record} or None
    return Study(id=str(record["id"]), image_paths=tuple(images / p for p in paths),
                 report=str(record.get("report") or ""), split=split,
                 view_ids=tuple(view_id(n, i) for i, n in enumerate(names)), labels=labels, meta=meta)


def _iu_xray(cfg: DataConfig) -> dict[str, list[Study]]:
    return read_r2gen(cfg.root)


def _synthetic(cfg: DataConfig) -> dict[str, list[Study]]:
    root = Path(cfg.root)
    info_path = root / "dataset_info.json"
    wanted = {"n": cfg.synth.n, "seed": cfg.synth.seed, "image_size": cfg.synth.image_size,
              "lateral": cfg.synth.lateral}
    if not (root / "annotation.json").is_file():
        from medvl.data.synth import generate_dataset

        print(f"generating the synthetic data set in {root} ({cfg.synth.n} studies, seed {cfg.synth.seed})", flush=True)
        generate_dataset(root, progress=True, **wanted)
    elif not info_path.is_file():
        raise DataSourceError(f"{root} holds an annotation.json but no dataset_info.json, so it is not a synthetic "
                              "set; use data.source=iu_xray to read it, or another data.root")
    else:
        info = json.loads(info_path.read_text())
        differ = [f"{k}={info.get(k)} on disk vs {v} asked" for k, v in wanted.items() if info.get(k) != v]
        if differ:
            raise DataSourceError(f"the synthetic set in {root} was generated with other settings ({'; '.join(differ)});"
                                  " choose another data.root, delete that directory, or match data.synth.*")
    return read_r2gen(root)


@dataclass(frozen=True)
class Source:
    """A data source: its reader and the record fields (`medvl.data.study.RECORD_FIELDS`) its studies carry, so a
    task that needs something the source lacks is refused before any work ("task classification needs labels;
    source iu_xray provides report only")."""

    read: Callable[[DataConfig], dict[str, list[Study]]]
    provides: frozenset[str]
    """Fields every study of the source carries when its files have them."""
    may_provide: frozenset[str] = frozenset()
    """Fields that depend on the files (a manifest with or without labels): checked per study, not up front."""


REPORTS = frozenset({"report", "references"})
SOURCES: Registry[Source] = Registry("data source")
SOURCES.add("iu_xray", Source(_iu_xray, REPORTS))
SOURCES.add("mimic_cxr", Source(_iu_xray, REPORTS))  # R2Gen's MIMIC-CXR annotation.json is the same layout
SOURCES.add("synthetic", Source(_synthetic, REPORTS | {"labels"}))
SOURCES.add("openi", Source(openi.read, REPORTS))
SOURCES.add("iu_csv", Source(iu_csv.read, REPORTS))
SOURCES.add("mimic_cxr_jpg", Source(mimic.read, REPORTS, frozenset({"labels"})))
SOURCES.add("xraygpt", Source(xraygpt.read, REPORTS))
SOURCES.add("coco_captions", Source(captions.read_coco, REPORTS))
SOURCES.add("flickr_captions", Source(captions.read_flickr, REPORTS))
SOURCES.add("manifest", Source(manifest.read, frozenset(), frozenset(RECORD_FIELDS)))
SOURCES.add("dicom", Source(dicom.read, frozenset(), REPORTS))
SOURCES.add("prepared", Source(prepared.read, frozenset(), frozenset(RECORD_FIELDS)))
SOURCES.add("nih", Source(nih.read, frozenset({"labels"})))
SOURCES.add("chexpert", Source(chexpert.read, frozenset({"labels"})))
SOURCES.add("image_folder", Source(image_folder.read, frozenset({"labels"})))


def check_provides(source: str, needs: Iterable[str], task: str) -> None:
    """Refuse, before any work, a task that needs record fields the source cannot provide.

    Raises:
        DataSourceError: e.g. "task classification needs labels; source iu_xray provides report, references only".
    """
    entry = SOURCES.get(source)
    can = entry.provides | entry.may_provide
    lacking = [f for f in needs if f not in can]
    if lacking:
        have = ", ".join(sorted(entry.provides | entry.may_provide)) or "no fields besides images"
        raise DataSourceError(f"task {task} needs {', '.join(lacking)}; source {source} provides {have} only. "
                              f"Choose a source with {', '.join(lacking)} (data.source=...) or a recipe for another "
                              "task")


def load_studies(cfg: DataConfig) -> dict[str, list[Study]]:
    """All splits of the configured source, reports processed by `data.reports`, each cut to `data.max_studies`."""
    studies = SOURCES.get(cfg.source).read(cfg)
    if cfg.source != "prepared":
        studies = {k: [replace(s, report=apply_rules(s.report, cfg.reports)) if s.report else s for s in v]
                   for k, v in studies.items()}
    if cfg.max_studies:
        studies = {k: v[: cfg.max_studies] for k, v in studies.items()}
    return studies


def require_split(studies: dict[str, list[Study]], split: str) -> list[Study]:
    if not studies.get(split):
        have = ", ".join(f"{k} ({len(v)})" for k, v in studies.items()) or "none"
        raise DataSourceError(f"the data set has no {split!r} studies; splits present: {have}")
    return studies[split]
