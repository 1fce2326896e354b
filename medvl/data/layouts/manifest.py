"""A generic manifest: one record per study, in JSON Lines or CSV.

    ROOT/manifest.jsonl  {"id", "image_paths": [...] | "path", "text" | "report", "labels", "split", "views"}
    ROOT/manifest.csv    columns id, image_paths (";"-separated), text | report, labels, split, views (";")

(`data.manifest` names another file, relative to ROOT.) Image paths are relative to the manifest's folder. Only `id`
and `image_paths` are required: a record without text has an empty report (fine for classification, counted as
unusable for report generation); without a split it gets `HASH_SPLIT` of its id. Split names are normalized
(valid/validate -> val); others (e.g. "extra") are kept. Views come from `views`, else from a `view` entry of the
labels (the NIH manifest's "PA"/"AP").

`labels` are kept as given in `Study.meta["labels"]` (in a CSV: a JSON object or list, or "a|b|c") and become
`Study.labels` (name -> 1 / 0 / -1 uncertain; a name left out is missing) in three forms:

    {"Effusion": 1, "Mass": 0, "Edema": -1, "Hernia": null}   flat: 1/0/-1 or true/false; null = missing, left out
    ["Effusion", "Mass"]                                      the positive names
    {"findings": ["Effusion"], "view": "PA", "age": "56"}     the positive names under "findings", the rest metadata
                                                              (the NIH manifest of ../shared/data/nih1000)

With positive names, the vocabulary is every name positive in some record of the manifest: a record's other names are
0, and when the vocabulary holds "No Finding" an "Abnormal" label is added, 1 - "No Finding". A dict of another shape
(e.g. {"view": "LL"}) is metadata only. The synthetic set's findings (`medvl.findings.FINDINGS` -> 0/1) are the flat
form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvl.data.config import DataConfig
from medvl.data.study import (
    DataSourceError,
    Study,
    decode_text,
    group_splits,
    hash_split,
    read_csv,
    split_name,
    view_id,
)
from medvl.jsonl import jsonl_records

LAYOUT = (
    "ROOT/manifest.jsonl or ROOT/manifest.csv, one study per record: id, image_paths, text, labels, split "
    "(paths relative to the manifest)"
)


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


_LABEL_VALUES = {1: 1, 0: 0, -1: -1}  # true and false are 1 and 0; 1.0 is 1
NO_FINDING, ABNORMAL = "No Finding", "Abnormal"


def _positives(labels: Any) -> list[str] | None:
    """The positive names of a list or {"findings": [...]} label form, else None."""
    if isinstance(labels, dict) and isinstance(labels.get("findings"), list):
        labels = labels["findings"]
    if isinstance(labels, list) and all(isinstance(v, str) for v in labels):
        return labels
    return None


def _flat(labels: Any) -> dict[str, int] | None:
    """name -> 1/0/-1 of a flat label dict (nulls left out), None for a dict of another shape."""
    if not isinstance(labels, dict) or not labels:
        return None
    if not all(v is None or (isinstance(v, (bool, int, float)) and v in _LABEL_VALUES) for v in labels.values()):
        return None
    return {str(k): _LABEL_VALUES[v] for k, v in labels.items() if v is not None}


def study_labels(labels: Any, vocabulary: list[str]) -> dict[str, int] | None:
    """`Study.labels` of one record's `labels` (see the module docstring); `vocabulary`: the names positive anywhere
    in the manifest, for the positive-names forms."""
    names = _positives(labels)
    if names is None:
        return _flat(labels)
    out = {name: int(name in names) for name in vocabulary}
    if NO_FINDING in out:
        out[ABNORMAL] = 1 - out[NO_FINDING]
    return out


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
    raise DataSourceError(
        f"no manifest.jsonl or manifest.csv in {root} (or set data.manifest). Expected layout: {LAYOUT}"
    )


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a manifest (see the module docstring)."""
    path = find_manifest(cfg)
    base = path.parent
    records = _records(path)
    vocabulary = sorted({n for rec in records for n in _positives(rec.get("labels")) or ()})
    studies = []
    for rec in records:
        sid = str(rec["id"])
        paths = _list(rec.get("image_paths", rec.get("path")))
        labels = rec.get("labels")
        views = _list(rec.get("views"))
        if not views and isinstance(labels, dict) and isinstance(labels.get("view"), str):
            views = [labels["view"]] * len(paths)
        view_ids = tuple(view_id(views[k] if k < len(views) else None, k) for k in range(len(paths)))
        truth = study_labels(labels, vocabulary)
        split = (
            split_name(rec["split"], f"{path} line {rec['_line']}", known_only=False)
            if rec.get("split")
            else hash_split(sid)
        )
        problem = "" if paths else f"record at line {rec['_line']} of {path.name} has no image_paths"
        meta = {
            k: v
            for k, v in rec.items()
            if k not in ("id", "image_paths", "path", "text", "report", "split", "views", "_line")
        }
        studies.append(
            Study(
                sid,
                tuple(base / p for p in paths),
                str(rec.get("text") or rec.get("report") or ""),
                split,
                view_ids,
                truth,
                problem=problem,
                meta=meta,
            )
        )
    return group_splits(studies)
