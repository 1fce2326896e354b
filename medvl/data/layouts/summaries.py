"""Text-only summarization studies (`report_summaries`): a text to summarize and its summary, no image.

A study has `image_paths=()`, `question` = the text to summarize, `answer` = the summary and meta
{"task": "summarization"}; tasks that take images skip it ("no image"), a text-only task reads it. Layouts, the first
that ROOT holds:

    manifest   ROOT/<data.manifest> (.jsonl, one JSON object a line, or .csv): text, summary, and optional id and
               split (train/val/test; without one, `hash_split` of the id)
    iu_csv     ROOT/indiana_reports.csv (uid, findings, impression): FINDINGS -> IMPRESSION (layouts/iu_csv)
    openi      ROOT/ecgen-radiology/*.xml (or reports/): FINDINGS -> IMPRESSION (layouts/openi)

The IU X-ray layouts give the radiologist's impression as the summary of the findings, the usual radiology report
summarization setup (e.g. BiomedGPT's MIMIC-CXR/IU findings -> impression task). A report without either section is
kept with `problem` set, so it is counted. Report ids and splits are those of the image sources (`CXR<uid>`,
`HASH_SPLIT`), so a study's summary lands in the split of its images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvl.data.config import DataConfig
from medvl.data.layouts import iu_csv, openi
from medvl.data.study import (
    DataSourceError,
    Study,
    decode_text,
    group_splits,
    hash_split,
    read_csv,
    require_file,
    split_name,
)

LAYOUT = (
    "ROOT/<data.manifest> (.jsonl or .csv: text, summary[, id, split]), ROOT/indiana_reports.csv (uid, "
    "findings, impression), or ROOT/ecgen-radiology/*.xml (OpenI)"
)
META = {"task": "summarization"}


def summary_study(sid: str, split: str, text: str, summary: str, problem: str = "") -> Study:
    """A text-only study: `question` the text, `answer` the summary."""
    text, summary = " ".join(str(text).split()), " ".join(str(summary).split())
    if not problem and not (text and summary):
        problem = f"no {'text' if not text else 'summary'} to summarize" if not text else "no summary"
    return Study(sid, (), "", split, (), None, problem=problem, meta=dict(META), question=text, answer=summary)


def _manifest(path: Path) -> list[Study]:
    if path.suffix.lower() == ".csv":
        rows: list[dict[str, Any]] = read_csv(path, ("text", "summary"), LAYOUT)
    else:
        rows = []
        for n, line in enumerate(decode_text(path.read_bytes(), path).splitlines(), start=1):
            if line.strip():
                try:
                    rows.append({**json.loads(line), "_line": str(n)})
                except json.JSONDecodeError as e:
                    raise DataSourceError(f"{path} line {n} is not JSON: {e}") from e
    studies = []
    for r in rows:
        missing = [k for k in ("text", "summary") if k not in r]
        if missing:
            raise DataSourceError(f"{path} line {r['_line']} has no {' or '.join(missing)} field. Expected: {LAYOUT}")
        sid = str(r.get("id") or f"line{r['_line']}")
        split = split_name(r["split"], f"{path} line {r['_line']}") if r.get("split") else hash_split(sid)
        studies.append(summary_study(sid, split, r["text"], r["summary"]))
    return studies


def _iu_csv(root: Path) -> list[Study]:
    rows = read_csv(root / "indiana_reports.csv", ("uid", "findings", "impression"), iu_csv.LAYOUT)
    return [summary_study(f"CXR{r['uid']}", hash_split(f"CXR{r['uid']}"), r["findings"], r["impression"]) for r in rows]


def _openi(root: Path) -> list[Study]:
    """FINDINGS -> IMPRESSION of every OpenI XML report (the images are not needed, nor looked for)."""
    folder = root / "ecgen-radiology" if (root / "ecgen-radiology").is_dir() else root / "reports"
    out = []
    for path in sorted(folder.glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
        f, i = (openi.read_xml(path, root, section) for section in ("findings", "impression"))
        problem = "" if f.report and i.report else (f.problem or i.problem)
        out.append(summary_study(f.id, f.split, f.report, i.report, problem))
    return out


def read(cfg: DataConfig) -> dict[str, list[Study]]:
    """Summarization studies of ROOT (see the module docstring)."""
    root = Path(cfg.root)
    if cfg.manifest:
        studies = _manifest(require_file(root / cfg.manifest, "summary manifest (data.manifest)", LAYOUT))
    elif (root / "indiana_reports.csv").is_file():
        studies = _iu_csv(root)
    elif (root / "ecgen-radiology").is_dir() or (root / "reports").is_dir():
        studies = _openi(root)
    else:
        raise DataSourceError(f"no summaries in {root}: expected {LAYOUT}")
    return group_splits(studies)
