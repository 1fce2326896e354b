"""`medvl evaluate` (a checkpoint on a split) and `medvl score` (report files from any system)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medvl.cli.common import generation_args, generation_overrides, non_negative_int, scoring_args, scoring_options


def _written(result: dict) -> str:
    html = " and report.html" if (Path(result["out_dir"]) / "report.html").exists() else ""
    files = f"metrics.json, predictions.jsonl{html}"
    return f"\nwrote {files} to {result['out_dir']}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medvl.evaluate.run import evaluate, format_result

    result = evaluate(
        args.checkpoint,
        split=args.split,
        out_dir=args.out,
        data_root=args.data_root,
        data_source=args.data_source,
        generation=generation_overrides(args),
        max_studies=args.max_studies,
        device=args.device,
        strict=args.strict,
        options=scoring_options(args),
    )
    if result:  # under torchrun only rank 0 has the result
        print(format_result(result))
        print(_written(result))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from medvl.evaluate.run import format_tables, refuse_checkpoint, score_files

    refuse_checkpoint(args.refs, "--refs")
    refuse_checkpoint(args.hyps, "--hyps")
    result = score_files(
        args.refs,
        args.hyps,
        out_dir=args.out,
        options=scoring_options(args),
        missing_as_empty=args.missing_as_empty,
        ref_field=args.ref_field,
        hyp_field=args.hyp_field,
    )
    print(format_tables(result))
    if result["empty_hypotheses"]:
        print(
            f"{len(result['empty_hypotheses'])} generated reports were empty and were scored as such "
            "(listed in metrics.json)",
            file=sys.stderr,
        )
    if result["missing_hypotheses"]:
        print(
            f"{len(result['missing_hypotheses'])} studies had no generated report and were scored as empty "
            "(--missing-as-empty; listed in metrics.json)",
            file=sys.stderr,
        )
    if args.out:
        print(_written(result))
    return 0


def add_evaluate(sub: Any) -> None:
    """Add `medvl evaluate`."""
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a split, next to its task's baseline",
        description="Run the checkpoint's task over a split, write metrics.json, predictions.jsonl and "
        "report.html (not yet for the unified BiomedGPT-style models), and print the "
        "metrics (with bootstrap 95% intervals) next to the "
        "task's baseline: for report models the generated reports' NLG and clinical "
        "metrics against the majority report; for classification per-class AUROC/AP/F1 "
        "(thresholds chosen on the validation split) against class prevalence; for "
        "regression point errors against the mean target; for masked modeling the "
        "reconstruction loss against each patch's mean (per-patch normalized "
        "targets) or the clip's visible mean colour. The report-scoring flags "
        "(--uncertain, --tokenizer, --no-meteor, --chexbert) apply to report models only.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, or a run directory (its best checkpoint is used)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--out", default=None, help="output directory (default RUN/eval_SPLIT)")
    p.add_argument(
        "--data-root", "--data.root", default=None, help="evaluate on this data set instead of the training one"
    )
    p.add_argument(
        "--data-source",
        "--data.source",
        default=None,
        help="read --data-root as this data source "
        "(default: the training one), e.g. vqa_rad on a folder with the official testset.json",
    )
    p.add_argument("--max-studies", type=non_negative_int, default=0, help="evaluate only the first N studies (0: all)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unusable study (missing/corrupt image, "
        "empty report) instead of skipping and counting it",
    )
    generation_args(p)
    scoring_args(p)
    p.set_defaults(func=cmd_evaluate)


def add_score(sub: Any) -> None:
    """Add `medvl score`."""
    p = sub.add_parser(
        "score",
        help="score reports from any system against references (JSONL/JSON/CSV)",
        description="Score generated reports against references, both files with an id and a text "
        "per study (.jsonl, .json, .csv or .tsv; columns id + report/text/reference/"
        "generated...). Prints BLEU-1..4, METEOR, ROUGE-L, CIDEr and CheXpert clinical "
        "efficacy with bootstrap 95% intervals; --out also writes metrics.json, "
        "predictions.jsonl and report.html.",
    )
    p.add_argument("--refs", required=True, help="reference reports file")
    p.add_argument("--hyps", required=True, help="generated reports file")
    p.add_argument("--out", default=None, help="write metrics.json, predictions.jsonl and report.html here")
    p.add_argument(
        "--ref-field",
        default=None,
        help="text column of the references (default: first of reference, report, text, ground_truth, gt, findings)",
    )
    p.add_argument(
        "--hyp-field",
        default=None,
        help="text column of the generated reports (default: first of "
        "generated, hypothesis, prediction, pred, report, text)",
    )
    p.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score references without a generated report as empty reports instead of stopping",
    )
    scoring_args(p)
    p.set_defaults(func=cmd_score)
