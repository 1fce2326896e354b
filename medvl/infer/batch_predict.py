"""`medvl predict` on many studies: batched inference, one output row per study, errors counted instead of fatal.

Contract of `predict_studies(loaded, studies, gen, writer)`: studies are decoded `gen.batch_size` at a time; the ones
that decode go through the model in one batch, then every study of the chunk gets one row, in input order:
    {"id", "images", "views", <the task's prediction record>, "seconds"}   or   {"id", "images", "error", "seconds"}
(plus "ignored_views": N in JSON rows when a study had N more views than the model's `max_views`, left out)
The prediction record is the task's (`task.predict`, fields in `task.prediction_fields`): for report tasks
{"report", "findings"}, `findings` being the CheXpert observations the rule-based labeler reads in the report (name
-> positive / negative / uncertain; unmentioned ones are left out); for classification {"probabilities", "labels"}.
`seconds` is the study's own decoding time plus its share of the batch's generation time. A study whose image is
missing or corrupt gets an error row and is counted; with `strict` it stops the run instead (`StudyError`). Returns a
summary: studies, reports, failed, with_ignored_views, seconds, reports_per_second.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from medvl.data.dataset import StudyError
from medvl.data.images import DEFAULT_MAX_PIXELS, ImageLoadError
from medvl.infer.config import GenerationConfig
from medvl.infer.inputs import StudyInput
from medvl.infer.predictor import LoadedModel, PreparedStudy, load_study, predict_prepared

CSV_COLUMNS = ("id", "images", "views", "report", "findings", "seconds", "error")
"""The CSV columns of a report task; other tasks put their own prediction fields between views and seconds."""


def report_findings(report: str) -> dict[str, str]:
    """CheXpert observations mentioned in a report -> "positive" / "negative" / "uncertain"."""
    from medvl.evaluate.chexpert import CHEXPERT
    from medvl.evaluate.labeler import label_report

    return {name: label for name, label in label_report(report, CHEXPERT).items() if label is not None}


class RowWriter:
    """Writes prediction rows as JSONL or CSV to an open text stream (flushed per row, so a kill keeps the rows)."""

    def __init__(self, stream: TextIO, fmt: str = "jsonl", fields: Sequence[str] = ("report", "findings")) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown output format {fmt!r}: use jsonl or csv")
        self.stream, self.fmt = stream, fmt
        self._csv: csv.DictWriter | None = None
        if fmt == "csv":
            columns = ("id", "images", "views", *fields, "seconds", "error")
            self._csv = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is None:
            self.stream.write(json.dumps(row) + "\n")
        else:
            flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
            flat |= {
                "images": ";".join(row.get("images", [])),
                "views": ";".join(v or "" for v in row.get("views", [])),
            }
            self._csv.writerow(flat)
        self.stream.flush()


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None turns the bar off when stderr is not a terminal (logs, CI) unless asked for.
    return tqdm(total=total, unit="study", file=sys.stderr, disable=not enabled or None, dynamic_ncols=True)


def predict_studies(
    loaded: LoadedModel,
    studies: Sequence[StudyInput],
    gen: GenerationConfig,
    writer: RowWriter,
    strict: bool = False,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    question: str = "",
) -> dict[str, Any]:
    """Generate and write a row per study (`question` asked of every study, for tasks that answer one); see the
    module docstring.

    Raises:
        StudyError: with `strict`, at the first study whose images cannot be loaded.
    """
    t_start = time.perf_counter()
    failed: dict[str, str] = {}
    ignored = 0  # studies with more views than the model takes
    bar = _progress(len(studies), progress)
    try:
        for start in range(0, len(studies), gen.batch_size):
            chunk = studies[start : start + gen.batch_size]
            prepared: list[PreparedStudy] = []
            rows: list[dict[str, Any]] = []
            for study in chunk:
                t0 = time.perf_counter()
                row: dict[str, Any] = {"id": study.id, "images": [str(p) for p in study.paths]}
                try:
                    prepared.append(
                        dataclasses.replace(
                            load_study(loaded, study.id, study.paths, study.views, max_pixels), question=question
                        )
                    )
                    row["views"] = prepared[-1].views
                    if prepared[-1].ignored_views:
                        row["ignored_views"] = prepared[-1].ignored_views
                        ignored += 1
                except ImageLoadError as err:
                    if strict:
                        raise StudyError(
                            f"study {study.id}: {err} (without --strict it is recorded and the run goes on)"
                        ) from err
                    row["error"] = str(err)
                    failed[study.id] = str(err)
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
            t0 = time.perf_counter()
            records = predict_prepared(loaded, prepared, gen.batch_size) if prepared else []
            share = (time.perf_counter() - t0) / max(len(prepared), 1)
            by_id = dict(zip((p.id for p in prepared), records, strict=True))
            for row in rows:
                if row["id"] in by_id and "error" not in row:
                    row.update(by_id[row["id"]])
                    row["seconds"] += share
                row["seconds"] = round(row["seconds"], 4)
                first = {k: row.pop(k) for k in ("id", "images", "views", "ignored_views") if k in row}
                last = {k: row.pop(k) for k in ("seconds", "error") if k in row}
                writer.write(first | row | last)
            bar.update(len(chunk))
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    done = len(studies) - len(failed)
    return {
        "studies": len(studies),
        "reports": done,
        "failed": failed,
        "with_ignored_views": ignored,
        "seconds": round(seconds, 3),
        "reports_per_second": round(done / seconds, 2) if seconds > 0 else None,
    }
