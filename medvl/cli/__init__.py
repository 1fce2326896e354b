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

Each command group has its module in medvl/cli/ (data, train, evaluate, predict, serve, export, doctor); this one
assembles the parser and runs the chosen command.

Errors the user can fix (a wrong key, a missing file, a bad data set) print one clear line and exit with status 2;
set MEDVL_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from medvl.cli import doctor, evaluate, export, predict, serve, train
from medvl.cli.data import add_data_commands


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


# ------------------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medvl",
        description="Train, evaluate and use vision-language models for "
        "medical imaging (chest X-ray report generation first).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(sub)
    train.add_train(sub)
    evaluate.add_evaluate(sub)
    evaluate.add_score(sub)
    predict.add_predict(sub)
    serve.add_serve(sub)
    serve.add_demo(sub)
    export.add_export(sub)
    train.add_quickstart(sub)
    export.add_convert(sub)
    train.add_recipes(sub)
    doctor.add_doctor(sub)
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
