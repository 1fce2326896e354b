"""`medvl predict`: the prediction of one study, or one row per study of folders, globs and listings."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from medvl.cli.common import generation_args, generation_overrides, sampling_args

ROW_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
"""`medvl predict --out` suffix -> row format."""


def _format_from_suffix(out: str | None) -> str:
    """The row format `--out`'s suffix names (standard output: jsonl); an unknown suffix is an error, so that a
    file called .txt or .xlsx never silently holds JSON lines."""
    if not out:
        return "jsonl"
    suffix = Path(out).suffix.lower()
    if suffix not in ROW_FORMATS:
        raise ValueError(
            f"--out {out}: cannot tell the format from the suffix {suffix or '(none)'!r}; name the file "
            f"{' or '.join(sorted(set(ROW_FORMATS)))}, or give --format jsonl|csv"
        )
    return ROW_FORMATS[suffix]


def cmd_predict(args: argparse.Namespace) -> int:
    import dataclasses

    from medvl.demo.app import text_of
    from medvl.infer.batch_predict import RowWriter, predict_studies
    from medvl.infer.inputs import collect_studies
    from medvl.infer.predictor import load_study, load_trained, predict_prepared
    from medvl.outputs import open_atomic, refuse_existing

    if args.out:  # before any model work
        refuse_existing(args.out, args.overwrite)
    fmt = args.format or _format_from_suffix(args.out)
    listed = collect_studies(args.images)
    loaded = load_trained(args.checkpoint, device=args.device)
    loaded.check_request(args.question or "")
    gen = dataclasses.replace(loaded.config.generation, **generation_overrides(args))
    loaded = loaded.with_generation(gen)
    fields = list(loaded.task.prediction_fields)
    if not listed.batch:  # the files of one study: print its prediction (and write its row with --out)
        study = listed.studies[0]
        t0 = time.perf_counter()
        prepared = dataclasses.replace(load_study(loaded, study.id, study.paths), question=args.question)
        record = predict_prepared(loaded, [prepared], 1)[0]
        if args.out:
            with open_atomic(args.out, args.overwrite) as fh:
                ignored = {"ignored_views": prepared.ignored_views} if prepared.ignored_views else {}
                RowWriter(fh, fmt, fields).write(
                    {
                        "id": study.id,
                        "images": [str(p) for p in study.paths],
                        "views": prepared.views,
                        **ignored,
                        **record,
                        "seconds": round(time.perf_counter() - t0, 4),
                    }
                )
            print(f"1 prediction written to {args.out}", file=sys.stderr)
        else:
            print(text_of(record))
        if prepared.ignored_views:
            print(
                f"note: {prepared.ignored_views} of the {len(study.paths)} images were left out: the model takes "
                f"at most {loaded.config.model.max_views} view(s) (model.max_views), frontal first",
                file=sys.stderr,
            )
        return 0
    with open_atomic(args.out, args.overwrite) if args.out else nullcontext(sys.stdout) as out:
        summary = predict_studies(
            loaded,
            listed.studies,
            gen,
            RowWriter(out, fmt, fields),
            strict=args.strict,
            progress=not args.no_progress,
            question=args.question,
        )
    failed = summary["failed"]
    if summary["with_ignored_views"]:
        print(
            f"note: {summary['with_ignored_views']} studies had more images than the model takes "
            f"(model.max_views={loaded.config.model.max_views}); the extra views were left out (ignored_views in "
            "their rows)",
            file=sys.stderr,
        )
    first = f" (first: {next(iter(failed))}: {next(iter(failed.values()))})" if failed else ""
    noun = "reports" if "report" in fields else "predictions"
    print(
        f"{summary['reports']} {noun} written, {len(failed)} studies failed{first}; {summary['seconds']:.1f}s, "
        f"{summary['reports_per_second']} {noun}/s",
        file=sys.stderr,
    )
    return 1 if summary["reports"] == 0 else 0


def add_predict(sub: Any) -> None:
    """Add `medvl predict`."""
    p = sub.add_parser(
        "predict",
        help="predict for image files (PNG, JPEG, DICOM), folders, globs or a listing",
        description="Image files given together are one study (its views; frontal first, from the "
        "DICOM View Position when there is one) and its prediction is printed (a report, "
        "or class probabilities for a classification checkpoint). Folders (one "
        "study per sub-folder or loose image), quoted glob patterns (one study per match) "
        "and CSV/JSONL listings (id, images, optional views) give many studies, written "
        "one row each (id, images, views, the task's prediction: report and CheXpert "
        "findings, or probabilities and labels; seconds; or error) as JSONL or CSV. The "
        "decoding flags apply to report models only. A study whose image cannot be read gets an error row and is "
        "counted; --strict stops at the first one instead.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, a run directory, or a folder from medvl export")
    p.add_argument("images", nargs="+", help="image files of one study; or folders, 'glob/*.dcm' patterns, listings")
    p.add_argument("--out", default=None, help="write rows here (.jsonl or .csv) instead of standard output")
    p.add_argument(
        "--format",
        default=None,
        choices=("jsonl", "csv"),
        help="output format (default: from --out's suffix, else jsonl)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the --out file when it exists")
    p.add_argument("--strict", action="store_true", help="stop at the first study whose images cannot be read")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--question",
        default="",
        help="a question asked of every study, for checkpoints that answer "
        "questions (the unified family: VQA); without it they write their default output (a report)",
    )
    generation_args(p)
    sampling_args(p)
    p.set_defaults(func=cmd_predict)
