"""The `medvl` command. Each subcommand parses its arguments and calls one typed library function.

    medvl data synth --out DIR --n N --seed S      draw the synthetic chest X-ray data set
    medvl data prepare SOURCE --src DIR --out DIR   decode a real data set once into a fast memory-mapped format
    medvl data download iu_xray --out DIR           fetch IU X-ray from OpenI (resumable), unpacked as `openi`
    medvl data stats DIR                            counts, report lengths, labels, image sizes (+ stats.html)
    medvl train [RECIPE] [section.field=value ...]  train (default recipe: quickstart)
    medvl evaluate CKPT [--split test]              metrics.json, predictions.jsonl, report.html, next to a baseline
    medvl score --refs REFS --hyps HYPS             score reports from any system (JSONL/JSON/CSV)
    medvl predict CKPT IMAGE [IMAGE ...]            a report for one study; JSONL/CSV for folders, globs, listings
    medvl serve CKPT [--port 8000]                  REST API (FastAPI) with dynamic batching
    medvl demo CKPT [--port 7860]                   Gradio page: upload an X-ray, see report, findings, saliency
    medvl export CKPT --format hf DIR               an HF-style folder (optionally --push-to-hub REPO)
    medvl quickstart                                train + evaluate the quickstart recipe, print the tables
    medvl convert minigpt4 PTH --out FILE           MiniGPT-4 / XrayGPT weights -> medvl (train.init_from)
    medvl recipes                                   list the shipped recipes

The `medvl data ...` subcommands live in medvl/cli_data.py.

Errors the user can fix (a wrong key, a missing file, a bad data set) print one clear line and exit with status 2;
set MEDVL_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from medvl.cli_data import add_data_commands


def _user_errors() -> tuple[type[BaseException], ...]:
    from medvl.config.loader import ConfigError
    from medvl.data.dataset import StudyError
    from medvl.data.download import DownloadError
    from medvl.data.images import ImageLoadError
    from medvl.data.sources import DataSourceError
    from medvl.evaluate.chexbert import CheXbertUnavailableError
    from medvl.evaluate.inputs import ReportFileError
    from medvl.evaluate.ptb import JavaUnavailableError
    from medvl.export import HubUnavailableError
    from medvl.registry import UnknownNameError
    from medvl.train.checkpoint import CheckpointError

    # ValueError too: the library raises it for settings that cannot work (too little data, bad sizes...).
    return (
        ConfigError,
        DataSourceError,
        StudyError,
        ImageLoadError,
        UnknownNameError,
        ReportFileError,
        DownloadError,
        JavaUnavailableError,
        CheXbertUnavailableError,
        HubUnavailableError,
        CheckpointError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        ValueError,
    )


# ------------------------------------------------------------------------------------------------------- subcommands
def cmd_train(args: argparse.Namespace) -> int:
    from medvl.config.experiment import load_experiment
    from medvl.train.loop import train

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # `medvl train train.lr=3e-4`: no recipe, only overrides.
        recipe, overrides = None, [recipe, *overrides]
    if args.strict:
        overrides.append("data.strict=true")
    cfg = load_experiment(recipe, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    summary = train(cfg, resume=_resume_mode(args))
    print(
        f"done: {summary['steps']} steps in {summary['seconds']}s; best {cfg.train.select_metric} = "
        f"{summary['best_metric'][cfg.train.select_metric]} at step {summary['best_metric']['step']}; "
        f"checkpoints in {Path(cfg.train.output_dir) / 'checkpoints'}"
    )
    return 0


def _resume_mode(args: argparse.Namespace) -> str | None:
    """--resume and --overwrite as the one `resume` argument of `train` (see medvl/train/run_folder.py)."""
    if args.overwrite and args.resume not in (None, "overwrite"):
        raise ValueError(f"--overwrite starts the run over, --resume {args.resume} continues it: give one of them")
    return "overwrite" if args.overwrite else args.resume


def _generation_overrides(args: argparse.Namespace) -> dict:
    keys = (
        "num_beams",
        "max_new_tokens",
        "no_repeat_ngram_size",
        "length_penalty",
        "batch_size",
        "temperature",
        "top_p",
        "top_k",
        "seed",
    )
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "sample", False):
        out["do_sample"] = True
        out.setdefault("num_beams", 1)
    return out


def _scoring_options(args: argparse.Namespace):  # noqa: ANN202 - the type lives in a lazily imported module
    from medvl.evaluate.run import ScoringOptions

    return ScoringOptions(
        bootstrap=args.bootstrap,
        seed=args.seed,
        meteor=not args.no_meteor,
        tokenizer=args.tokenizer,
        uncertain=args.uncertain,
        html=not args.no_html,
        chexbert=args.chexbert,
        chexbert_tokenizer=args.chexbert_tokenizer,
    )


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
        generation=_generation_overrides(args),
        max_studies=args.max_studies,
        device=args.device,
        strict=args.strict,
        options=_scoring_options(args),
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
        options=_scoring_options(args),
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
    gen = dataclasses.replace(loaded.config.generation, **_generation_overrides(args))
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


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from medvl.infer.predictor import load_trained
    from medvl.serve.app import ServeSettings, create_app
    from medvl.serve.limits import Limits
    from medvl.serve.server import serve

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key:
            raise ValueError(
                f"--api-key-env {args.api_key_env}: that environment variable is empty or unset; "
                f"export {args.api_key_env}=SECRET first (the key is never given on the command line)"
            )
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_views=args.max_views,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
    )
    settings = ServeSettings(
        limits=limits, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, api_key=api_key
    )
    loaded = load_trained(args.checkpoint, device=args.device)
    gen = dataclasses.replace(loaded.config.generation, **_generation_overrides(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(
        f"serving {loaded.checkpoint} on http://{args.host}:{args.port} (docs at /docs; API key "
        f"{'required' if api_key else 'not required'}; batches of up to {args.max_batch_size})",
        file=sys.stderr,
    )
    serve(create_app(loaded, gen, settings), host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from medvl.demo.app import create_demo, example_studies, launch
    from medvl.infer.predictor import load_trained

    loaded = load_trained(args.checkpoint, device=args.device)
    gen = dataclasses.replace(loaded.config.generation, **_generation_overrides(args))
    examples = example_studies(loaded, folder=args.examples)
    print(
        f"demo of {loaded.checkpoint} on http://{args.host}:{args.port} ({len(examples)} example studies)",
        file=sys.stderr,
    )
    launch(create_demo(loaded, gen, examples), host=args.host, port=args.port)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from medvl.export import export_hf, push_to_hub

    out = export_hf(args.checkpoint, args.out, use_ema=not args.no_ema, overwrite=args.overwrite)
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))}); it loads with medvl predict/serve/demo")
    if args.push_to_hub:
        print(f"pushed to {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import clinical_gap, evaluate, format_tables, headline_f1_key
    from medvl.train.loop import train

    overrides = [f"train.output_dir={args.output_dir}", *args.overrides, *(["data.strict=true"] if args.strict else [])]
    cfg = load_experiment("quickstart", overrides)
    t0 = time.time()
    summary = train(cfg, resume=_resume_mode(args))
    result = evaluate(summary["best_checkpoint"] or summary["last_checkpoint"], split="test", strict=args.strict)
    print()
    print(format_tables(result))
    key = headline_f1_key(result)
    print(
        f"\nclinical micro-F1 ({key}): model {result[key]:.3f} vs baseline {result['baseline'][key]:.3f} "
        f"(gap {clinical_gap(result):+.3f}); train + evaluate took {time.time() - t0:.0f}s; "
        f"outputs (metrics.json, report.html) in {result['out_dir']}"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from medvl.models.minigpt4 import convert_minigpt4, read_pth
    from medvl.outputs import atomic_file, refuse_existing

    out = refuse_existing(args.out, args.overwrite)
    state, skipped = convert_minigpt4(read_pth(args.pth))
    if not state:
        raise ValueError(f"no MiniGPT-4 / XrayGPT / BLIP-2 weights in {args.pth} ({len(skipped)} other tensors)")
    with atomic_file(out, args.overwrite) as partial:
        save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    groups: dict[str, int] = {}
    for key in state:
        groups[key.split(".")[0]] = groups.get(key.split(".")[0], 0) + 1
    print(f"wrote {len(state)} tensors to {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items())))
    reasons: dict[str, int] = {}
    for why in skipped.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in sorted(reasons.items()):
        print(f"skipped {count}: {why}")
    print(f"use it with: medvl train RECIPE train.init_from={out}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from medvl.config.experiment import shipped_recipes

    recipes = shipped_recipes()
    width = max((len(p.stem) for p in recipes), default=0) + 2
    columns = max(shutil.get_terminal_size().columns, width + 40)
    for path in recipes:
        summary = recipe_summary(path.read_text())
        lines = textwrap.wrap(summary, columns - width) or [""]
        print(f"{path.stem:<{width}}{lines[0]}")
        for line in lines[1:]:
            print(" " * width + line)
    return 0


def recipe_summary(text: str) -> str:
    """A one-line summary of a recipe: its leading comment block (the comment lines before the first YAML line, often
    several) up to the first sentence or clause end (". ", ": ", "; " outside parentheses) that leaves at least 30
    characters; "" when the recipe starts without a comment."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words.append(line[1:].strip())
    block = " ".join(w for w in words if w)
    depth = 0
    for i, char in enumerate(block):  # "(trainset.json + images/)" or "(bring the images: ...)" ends nothing
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char in ".:;" and depth <= 0 and i >= 30 and block[i + 1 : i + 2] in (" ", ""):
            return block[: i + 1] if char == "." else block[:i]
    return block


def cmd_doctor(args: argparse.Namespace) -> int:
    from medvl.doctor import doctor

    return doctor(as_json=args.json, path=args.path)


# ------------------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medvl",
        description="Train, evaluate and use vision-language models for "
        "medical imaging (chest X-ray report generation first).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_data_commands(sub)

    p = sub.add_parser(
        "train",
        help="train a model from a recipe",
        description="Train from a recipe (a YAML file or the name of a shipped recipe; default "
        "quickstart) with dotted overrides such as train.lr=3e-4 model.size=tiny.",
    )
    p.add_argument("recipe", nargs="?", default=None, help="recipe name or YAML path (default: quickstart)")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides")
    p.add_argument(
        "--resume",
        default=None,
        help="'auto' (continue from the newest checkpoint in train.output_dir "
        "that loads), 'never' (start over; an earlier run there moves to previous_run_N/) or a checkpoint "
        "path; without it, a train.output_dir that holds a run is refused",
    )
    p.add_argument("--overwrite", action="store_true", help="start over, deleting an earlier run in train.output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unusable study (missing/corrupt image, "
        "empty report) instead of skipping and counting it",
    )
    p.set_defaults(func=cmd_train)

    def generation_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--num-beams", type=int, default=None, help="beam width (1 = greedy; default from checkpoint)")
        q.add_argument("--max-new-tokens", type=int, default=None, help="longest report in tokens")
        q.add_argument("--no-repeat-ngram-size", type=int, default=None, help="forbid repeated n-grams of this size")
        q.add_argument("--length-penalty", type=float, default=None, help="beam score = log-prob / length**this")
        q.add_argument("--batch-size", type=int, default=None, help="studies generated at once")
        q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")

    def sampling_args(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("sampling (instead of greedy / beam search)")
        g.add_argument("--sample", action="store_true", help="sample each token (implies --num-beams 1)")
        g.add_argument("--temperature", type=float, default=None, help="divide the logits by this (default 1.0)")
        g.add_argument("--top-p", type=float, default=None, help="nucleus: smallest token set with this probability")
        g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (0 = all)")
        g.add_argument("--seed", type=int, default=None, help="sampling seed (same batch + seed = same reports)")

    def scoring_args(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("scoring")
        g.add_argument(
            "--bootstrap",
            type=int,
            default=1000,
            help="bootstrap resamples for the 95%% intervals (default 1000; 0 = none)",
        )
        g.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
        g.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java and a few seconds)")
        g.add_argument(
            "--tokenizer",
            default="auto",
            choices=("auto", "java", "python"),
            help="PTB tokenizer: java = pycocoevalcap's own (exact COCO parity), python = the pure-Python "
            "equivalent, auto = java when installed (default)",
        )
        g.add_argument(
            "--uncertain",
            default="positive",
            choices=("positive", "negative"),
            help="how an uncertain CheXpert mention counts (default positive, the U-ones policy)",
        )
        g.add_argument("--no-html", action="store_true", help="do not write report.html")
        g.add_argument(
            "--chexbert",
            default=None,
            metavar="CKPT",
            help="CheXbert weights (chexbert.pth) you have: "
            "adds chexbert_* clinical metrics next to the rule-based labeler's",
        )
        g.add_argument(
            "--chexbert-tokenizer",
            default=None,
            metavar="DIR",
            help="folder with CheXbert's WordPiece vocab.txt (a local copy of bert-base-uncased)",
        )

    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a split, next to its task's baseline",
        description="Run the checkpoint's task over a split, write metrics.json, predictions.jsonl and "
        "report.html, and print the metrics (with bootstrap 95% intervals) next to the "
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
    p.add_argument("--max-studies", type=int, default=0, help="evaluate only the first N studies")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unusable study (missing/corrupt image, "
        "empty report) instead of skipping and counting it",
    )
    generation_args(p)
    scoring_args(p)
    p.set_defaults(func=cmd_evaluate)

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

    p = sub.add_parser(
        "serve",
        help="serve a checkpoint over HTTP (REST API with dynamic batching)",
        description="Serve a checkpoint as a REST API: POST /v1/reports for report models (/v1/classifications, "
        "/v1/regressions, /v1/generations or /v1/reconstructions for the other tasks; GET /v1/model names it), a "
        "multipart upload or JSON with base64 images of one study (and a 'question' field for unified checkpoints "
        "trained for VQA; GET /v1/model says whether one is taken); GET /v1/model, GET /health; OpenAPI at "
        "/openapi.json and /docs. Concurrent requests share forward passes (dynamic "
        "batching) through a bounded queue. Uploads stay in memory; the log holds a "
        "request id and timing only.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, a run directory, or a folder from medvl export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require the API key held in environment variable VAR in each request's X-API-Key header",
    )
    p.add_argument("--max-batch-size", type=int, default=8, help="requests per forward pass (1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a ready batch waits for more requests")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting at most; beyond: 503 + Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file (default 20 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="most pixels per image (default 40M)")
    p.add_argument("--max-views", type=int, default=4, help="most images per request (default 4)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait for its report")
    generation_args(p)
    sampling_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        help="a web page (Gradio): upload an X-ray, get the report, findings and saliency",
        description="Serve a Gradio page: upload the views of a study (PNG, JPEG or DICOM), get the "
        "report with CheXpert findings highlighted and a Grad-CAM overlay of the image "
        "encoder; example studies come from the checkpoint's data set (the synthetic set "
        "after the quickstart) or --examples. Unified checkpoints trained for VQA get a "
        "question box; families that support dialogue also get a follow-up chat.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, a run directory, or a folder from medvl export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--examples", default=None, metavar="DIR", help="offer the studies of this folder as examples")
    generation_args(p)
    sampling_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face-style folder (and push it to the Hub)",
        description="Write CKPT as DIR in HF conventions (model.safetensors, config.json, "
        "generation_config.json, preprocessor_config.json, tokenizer files, README.md). "
        "medvl predict/serve/demo load DIR like a checkpoint. --push-to-hub uploads it "
        "with huggingface_hub when online (HF_HUB_OFFLINE=1 or no network: a clear "
        "message, never a hang).",
    )
    p.add_argument("checkpoint", help="checkpoint directory, or a run directory")
    p.add_argument("out", metavar="DIR", help="folder to write")
    p.add_argument("--format", default="hf", choices=("hf",), help="export format (hf)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even when the run kept an EMA")
    p.add_argument("--overwrite", action="store_true", help="replace DIR when it is not empty")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="then upload DIR to this Hub repository")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "quickstart",
        help="train and evaluate the quickstart recipe and print the results",
        description="Generate the synthetic data set (first run only), train the quickstart recipe, "
        "evaluate on the test split and print the metrics next to the baseline.",
    )
    p.add_argument("overrides", nargs="*", help="section.field=value overrides")
    p.add_argument("--output-dir", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument(
        "--resume",
        default=None,
        help="'auto' to continue an interrupted quickstart, 'never' to start over "
        "(the earlier run moves to previous_run_N/)",
    )
    p.add_argument("--overwrite", action="store_true", help="start over, deleting an earlier run in --output-dir")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unusable study (missing/corrupt image, "
        "empty report) instead of skipping and counting it",
    )
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser(
        "convert",
        help="convert third-party checkpoints to medvl weights",
        description="Convert a MiniGPT-4 / XrayGPT / BLIP-2 (LAVIS) .pth checkpoint to the xraygpt "
        "family's parameter names (tensors only; nothing in the file is executed).",
    )
    conv = p.add_subparsers(dest="convert_command", required=True, metavar="FORMAT")
    q = conv.add_parser("minigpt4", help="MiniGPT-4 / XrayGPT / BLIP-2 .pth -> .safetensors for train.init_from")
    q.add_argument("pth", help="the .pth checkpoint (e.g. XrayGPT's or MiniGPT-4's stage checkpoint)")
    q.add_argument("--out", required=True, help="output .safetensors file")
    q.add_argument("--overwrite", action="store_true", help="replace the --out file when it exists")
    q.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "recipes",
        help="list the shipped recipes",
        description="List the recipes in recipes/ with the first sentence of each one's comment; train one with "
        "`medvl train NAME`, and see every field it sets with `medvl train NAME --print-config`.",
    )
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser(
        "doctor",
        help="what this machine has for medvl (CUDA, Java, extras...) and how to get the rest",
        description="Check Python, PyTorch and CUDA, Java (METEOR, PTB tokenizer), chromium (browser "
        "tests), the optional extras and free disk; each line says what it enables and how "
        "to get it. Exit status 1 only when Python or PyTorch is unusable.",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--path", default=".", help="where to measure free disk space (default: here)")
    p.set_defaults(func=cmd_doctor)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command that `args` chose, e.g. `medvl data synth`'s, so an error shows its usage."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _command_parser(chosen, args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `medvl train RECIPE --resume auto a.b=c`: argparse ends the positional overrides at the flag; take the
    # section.field=value words after it as overrides too, in order.
    if extra and hasattr(args, "overrides") and all("=" in w and not w.startswith("-") for w in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:  # argparse would print the top-level usage; the command's own says which options exist
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except _user_errors() as err:
        if os.environ.get("MEDVL_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"medvl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medvl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
