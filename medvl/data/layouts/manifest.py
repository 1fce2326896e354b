"""A generic manifest: one record per study, in JSON Lines or CSV.

    ROOT/manifest.jsonl  {"id", "image_paths": [...] | "path", "text" | "report", "labels", "split", "views"}
    ROOT/manifest.csv    columns id, image_paths (";"-separated), text | report, labels, split, views (";")

(`data.manifest` names another file, relative to ROOT.) Image paths are relative to the manifest's folder. Only `id`
and `image_paths` are required: a record without text has an empty report (fine for classification, counted as
unusable for report generation); without a split it gets `HASH_SPLIT` of its id. Split names are normalized
(valid/validate -> val); others (e.g. "extra") are kept. `labels` are kept as given in `Study.meta["labels"]` (in a
CSV, a JSON object/list or "a|b|c"); when they are exactly the synthetic findings (`medvl.findings.FINDINGS` -> 0/1)
they are also `Study.labels`, the ground truth evaluation scores against. Views come from `views`, else from a
`view` entry of the labels (the NIH manifest's "PA"/"AP").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvl.data.config import DataConfig
from medvl.data.study import (DataSourceError, Study, decode_text, group_splits, hash_split, read_csv, split_name,
                              view_id)
from medvl.findings import FINDINGS
from medvl.jsonl import jsonl_records

LAYOUT = ("ROOT/manifest.jsonl or ROOT/manifest.csv, one study per record: id, image_paths, text, labels, split "
          "(paths relative to the manifest)")


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    return [str(v) for v in value]


def _csv_labels(value: str) -> Any:
    if not value:
        return None
    if value[0] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return [v.strip() for v in value.split("|") if v.strip()]


def _records(path: Path) -> list[dict[str, Any]]:
    if path.suffix in (".csv", ".tsv"):
        rows = read_csv(path, ("id", "image_paths"), LAYOUT, delimiter="\t" if path.suffix == ".tsv" else ",")
        return [{**r, "labels": _csv_labels(r.get("labels", ""))} for r in rows]
    records = []
    for n, rec in jsonl_records(decode_text(path.read_bytes(), path), str(path), DataSourceError):
        if "id" not in rec:
            raise DataSourceError(f"{path} line {n} has no 'id' field. Expected layout: {LAYOUT}")
        records.append(rec | {"_line": str(n)})
    return records


def find_manifest(cfg: DataConfig) -> Path:
    """The manifest file: `data.manifest` (relative to ROOT), else ROOT/manifest.jsonl or ROOT/manifest.csv."""
    root = Path(cfg.root)
    if cfg.manifest:
        path = root / cfg.manifest
        if not path.is_file():
            raise DataSourceError(f"missing manifest {path} (data.manifest). Expected layout: {LAYOUT}")
        return path
    for name in ("manifest.jsonl", "manifest.csv"):
        if (root / name).is_file():
            return root / name
    raise DataSourceError(f"no manifest.jsonl or manifest.csv in {root} (or set data.manifest). "
                          f"Expected layout: {LAYOUT}")


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a manifest (see the module docstring)."""
    path = find_manifest(cfg)
    base = path.parent
    studies = []
    for rec in _records(path):
        sid = str(rec["id"])
        paths = _list(rec.get("image_paths", rec.get("path")))
        labels = rec.get("labels")
        views = _list(rec.get("views"))
        if not views and isinstance(labels, dict) and isinstance(labels.get("view"), str):
            views = [labels["view"]] * len(paths)
        view_ids = tuple(view_id(views[k] if k < len(views) else None, k) for k in range(len(paths)))
        truth = None
        if isinstance(labels, dict) and set(labels) == set(FINDINGS):
            truth = {name: int(labels[name]) for name in FINDINGS}
        split = split_name(rec["split"], f"{path} line {rec['_line']}", known_only=False) if rec.get("split") \
            else hash_split(sid)
        problem = "" if paths else f"record at line {rec['_line']} of {path.name} has no image_paths"
        meta = {k: v for k, v in rec.items() if k not in ("id", "image_paths", "path", "text", "report", "split",
                                                          "views", "_line")}
        studies.append(Study(sid, tuple(base / p for p in paths), str(rec.get("text") or rec.get("report") or ""),
                             split, view_ids, truth, problem=problem, meta=meta))
    return group_splits(studies)
