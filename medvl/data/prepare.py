"""`medvl data prepare`: read any source once, decode and resize every view once, write a fast on-disk data set.

Output (read back by the `prepared` source, `medvl.data.layouts.prepared`):

    OUT/images.npy       uint8 [rows, S, S], one row per image file (np.lib.format, memory-mappable; the questions
                         of a VQA set that share an image share its row); the rows of a study
                         found unusable while decoding stay zero and are referenced by no study
    OUT/studies.jsonl    one usable study per line: id, split, report, rows, view_ids, image_paths, labels, meta,
                         sizes (the original [H, W] of each view), and when present question, answer, references,
                         targets (a text-only study has no rows)
    OUT/problems.jsonl   one line per unusable study: id, split, kind, reason (nothing is dropped silently)
    OUT/prepared.json    format/version, source, src, image_size, the report rules, counts per split and per problem
                         kind, statistics (report words, original image sizes, views per study)

A study is unusable when its layout says so (`Study.problem`: missing section, duplicated id, unmatched image id...),
it has no target text (no report, and no answer for a VQA or summarization study), it has no image (unless it is a
text-only study: a question and an answer, no image paths), or any of its views is missing, empty or cannot be
decoded; with `strict` the first one raises `StudyError` instead. Views are decoded in `workers` processes with the
same functions training uses (`load_grayscale`, `resize_square`), so a prepared set gives the same pixels as decoding
on the fly.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.config import DataConfig
from medvl.data.dataset import StudyError
from medvl.data.images import decode_task
from medvl.data.layouts.prepared import FORMAT, VERSION
from medvl.data.reports import rules_metadata
from medvl.data.sources import Study, load_studies

STRICT_HINT = "run without --strict to skip unusable studies and list them in problems.jsonl"
_KINDS = (
    ("missing image", r"image file not found"),
    ("empty image file", r"image file is empty"),
    ("DICOM without pixel data", r"no pixel data"),
    ("undecodable image", r"cannot (decode|read)"),
    ("duplicated id", r"duplicated study id"),
    ("missing section", r"has no [A-Z]+( or [A-Z]+)? section"),
    ("missing report", r"no report"),
    ("unmatched image id", r"has no file in"),
    ("empty report", r"empty report"),
    ("missing answer", r"no question or no answer"),
    ("missing summary", r"no summary|no text to summarize"),
)


def problem_kind(reason: str) -> str:
    """A short category of an unusable study's reason, for the counts in prepared.json."""
    return next((kind for kind, pattern in _KINDS if re.search(pattern, reason)), "other")


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "min": float(a.min()),
        "mean": round(float(a.mean()), 2),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose a new --out directory or pass --overwrite")
        if not (out / "prepared.json").is_file():
            raise FileExistsError(f"{out} is not empty and is not a previous prepare output; refusing to overwrite")
    out.mkdir(parents=True, exist_ok=True)


def prepare(
    source: str,
    src: str | Path,
    out: str | Path,
    image_size: int = 256,
    strict: bool = False,
    data: DataConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    require_report: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate, decode and resize a data set once into `out` (see the module docstring).

    Args:
        source: a source name of `medvl.data.sources.SOURCES` (not `prepared`).
        src: the data set's directory, in that source's layout.
        out: the output directory (new or empty, or a previous output with `overwrite`).
        image_size: side of the stored square views in pixels.
        strict: raise on the first unusable study instead of listing it.
        data: other data settings (report rules, manifest, caption); `source` and `root` are taken from the arguments.
        workers: decoding processes (default min(CPUs, 4); 0 = in this process).
        overwrite: replace a previous prepare output in `out`.
        require_report: count a study without report text as unusable (false for image-only sets such as a
            classification manifest; training a report generator still skips such studies).
        progress: print progress lines.

    Returns:
        The content of prepared.json.

    Raises:
        DataSourceError: the layout is not there (a missing CSV, an index file...).
        StudyError: with `strict`, the first unusable study.
        FileExistsError: `out` holds something else.
    """
    if source == "prepared":
        raise ValueError("the source is already prepared; prepare reads a raw data set")
    if image_size < 8:
        raise ValueError(f"--image-size must be >= 8, got {image_size}")
    t0 = time.time()
    cfg = replace(data or DataConfig(), source=source, root=str(src), max_studies=0)
    out = Path(out)
    studies = [s for split in load_studies(cfg).values() for s in split]
    if not overwrite and out.exists() and any(out.iterdir()):
        _prepare_out(out, overwrite)  # fail before any work
    problems: list[dict[str, str]] = []
    usable: list[Study] = []

    def unusable(study: Study, reason: str) -> None:
        if strict:
            raise StudyError(f"study {study.id}: {reason} ({STRICT_HINT})")
        problems.append({"id": study.id, "split": study.split, "kind": problem_kind(reason), "reason": reason})

    for study in studies:
        # the target text: a report, or a question's answer (VQA) / a text's summary (text-only studies)
        has_text = bool(study.report.strip() or study.answer.strip())
        text_only = not study.image_paths and bool(study.question.strip() and study.answer.strip())
        reason = (
            study.problem
            or ("empty report" if require_report and not has_text else "")
            or ("no image" if not study.image_paths and not text_only else "")
        )
        if reason:
            unusable(study, reason)
        else:
            usable.append(study)
    _prepare_out(out, overwrite)
    tasks, study_rows = [], []
    row_of: dict[str, int] = {}  # one row per image file: VQA sets ask many questions about one image
    for study in usable:
        rows = []
        for p in study.image_paths:
            if str(p) not in row_of:
                row_of[str(p)] = len(tasks)
                tasks.append((len(tasks), str(p), image_size))
            rows.append(row_of[str(p)])
        study_rows.append(rows)
    images = np.lib.format.open_memmap(
        out / "images.npy", mode="w+", dtype=np.uint8, shape=(len(tasks), image_size, image_size)
    )
    sizes: list[list[int]] = [[] for _ in tasks]
    errors: dict[int, str] = {}
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    pool = mp.get_context("spawn").Pool(workers) if workers > 0 and len(tasks) > 64 else None
    try:
        results = pool.imap(decode_task, tasks, chunksize=32) if pool else map(decode_task, tasks)
        for done, (row, arr, shape, err) in enumerate(results, start=1):
            if arr is None:
                errors[row] = err
            else:
                images[row], sizes[row] = arr, shape
            if progress and (done % 2000 == 0 or done == len(tasks)):
                print(f"  decoded {done}/{len(tasks)} views ({time.time() - t0:.0f}s)", flush=True)
    finally:
        if pool:
            pool.close()
            pool.join()
    images.flush()
    del images
    kept: list[dict[str, Any]] = []
    for study, rows in zip(usable, study_rows, strict=True):
        bad = next((errors[r] for r in rows if r in errors), None)
        if bad:
            unusable(study, bad)
            continue
        kept.append(
            {
                "id": study.id,
                "split": study.split,
                "report": study.report,
                "rows": rows,
                "view_ids": list(study.view_ids),
                "image_paths": [str(p) for p in study.image_paths],
                "labels": study.labels,
                "meta": study.meta,
                "sizes": [sizes[r] for r in rows],
                **{
                    k: v
                    for k, v in (
                        ("question", study.question),
                        ("answer", study.answer),
                        ("references", list(study.references)),
                        ("targets", list(study.targets)),
                    )
                    if v
                },
            }
        )
    with open(out / "studies.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    with open(out / "problems.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "source": source,
        "src": str(Path(src).resolve()),
        "image_size": image_size,
        "images": "images.npy",
        "rows": len(tasks),
        "report_rules": rules_metadata(cfg.reports),
        "require_report": require_report,
        "manifest": cfg.manifest,
        "caption": cfg.caption,
        "studies_read": len(studies),
        "studies": len(kept),
        "splits": dict(Counter(r["split"] for r in kept)),
        "problems": len(problems),
        "problem_kinds": dict(Counter(p["kind"] for p in problems)),
        "statistics": {
            "report_words": _summary([len(r["report"].split()) for r in kept]),
            "views_per_study": dict(sorted(Counter(len(r["rows"]) for r in kept).items())),
            "image_height": _summary([s[0] for r in kept for s in r["sizes"]]),
            "image_width": _summary([s[1] for r in kept for s in r["sizes"]]),
        },
        "seconds": round(time.time() - t0, 2),
    }
    (out / "prepared.json").write_text(json.dumps(info, indent=1))
    return info
