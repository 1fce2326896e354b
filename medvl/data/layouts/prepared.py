"""A data set written by `medvl data prepare` (`medvl.data.prepare`), read back as studies:

    ROOT/prepared.json    format, version, source, image_size, report rules, counts, statistics
    ROOT/studies.jsonl    one usable study per line: id, split, report, rows, view_ids, image_paths, labels, meta
                          [, question, answer, references, targets]
    ROOT/images.npy       uint8 [rows, S, S], every view decoded and resized once (memory-mapped when read)
    ROOT/problems.jsonl   the studies prepare could not use, with the reason (not read here)

Studies point at images.npy through `Study.image_store` / `Study.image_rows`, so `ReportDataset` reads views from
the memory map instead of decoding files; `image_paths` keep the original file names for reference. Reports are
already processed by the rules recorded in prepared.json, so they are not processed again.
"""

from __future__ import annotations

import json
from pathlib import Path

from medvl.data.config import DataConfig
from medvl.data.study import DataSourceError, Study, group_splits, require_file

FORMAT, VERSION = "medvl-prepared", 1
LAYOUT = "ROOT/prepared.json, ROOT/studies.jsonl and ROOT/images.npy, as written by `medvl data prepare`"


def read_info(root: str | Path) -> dict:
    """prepared.json of a prepared directory, checked for format and version."""
    path = require_file(Path(root) / "prepared.json", "prepared.json (is this a `medvl data prepare` output?)", LAYOUT)
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise DataSourceError(
            f"{path} is not a {FORMAT} v{VERSION} data set (found {info.get('format')} "
            f"v{info.get('version')}); prepare it again with this medvl"
        )
    return info


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Studies of a prepared directory (see the module docstring)."""
    root = Path(cfg.root)
    read_info(root)
    store = require_file(root / "images.npy", "images.npy", LAYOUT)
    studies = []
    lines = require_file(root / "studies.jsonl", "studies.jsonl", LAYOUT).read_text(encoding="utf-8").splitlines()
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        studies.append(
            Study(
                r["id"],
                tuple(Path(p) for p in r["image_paths"]),
                r["report"],
                r["split"],
                tuple(r["view_ids"]),
                r.get("labels"),
                meta=r.get("meta"),
                image_store=store if r["rows"] else None,
                image_rows=tuple(r["rows"]),
                references=tuple(r.get("references", ())),
                question=r.get("question", ""),
                answer=r.get("answer", ""),
                targets=tuple(r.get("targets", ())),
            )
        )
    return group_splits(studies)
