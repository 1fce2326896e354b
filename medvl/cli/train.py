"""`medvl train`, `medvl quickstart` (train + evaluate the quickstart recipe) and `medvl recipes`."""

from __future__ import annotations

import argparse
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

from medvl.cli.common import resume_mode


def cmd_train(args: argparse.Namespace) -> int:
    from medvl.config.experiment import load_experiment
    from medvl.train.distributed import is_main_process
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
    summary = train(cfg, resume=resume_mode(args))
    if not is_main_process():
        return 0  # under torchrun every rank returns the same summary; rank 0 reports it
    print(
        f"done: {summary['steps']} steps in {summary['seconds']}s; best {cfg.train.select_metric} = "
        f"{summary['best_metric'][cfg.train.select_metric]} at step {summary['best_metric']['step']}; "
        f"checkpoints in {Path(cfg.train.output_dir) / 'checkpoints'}"
    )
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import clinical_gap, evaluate, format_tables, headline_f1_key
    from medvl.train.distributed import is_main_process
    from medvl.train.loop import train

    overrides = [f"train.output_dir={args.output_dir}", *args.overrides, *(["data.strict=true"] if args.strict else [])]
    cfg = load_experiment("quickstart", overrides)
    t0 = time.time()
    summary = train(cfg, resume=resume_mode(args), keep_process_group=True)  # evaluate uses it, then closes it
    result = evaluate(summary["best_checkpoint"] or summary["last_checkpoint"], split="test", strict=args.strict)
    if not is_main_process():
        return 0  # under torchrun the other ranks helped evaluate; rank 0 holds the result and reports it
    print()
    print(format_tables(result))
    key = headline_f1_key(result)
    print(
        f"\nclinical micro-F1 ({key}): model {result[key]:.3f} vs baseline {result['baseline'][key]:.3f} "
        f"(gap {clinical_gap(result):+.3f}); train + evaluate took {time.time() - t0:.0f}s; "
        f"outputs (metrics.json, report.html) in {result['out_dir']}"
    )
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


def add_train(sub: Any) -> None:
    """Add `medvl train`."""
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


def add_quickstart(sub: Any) -> None:
    """Add `medvl quickstart`."""
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


def add_recipes(sub: Any) -> None:
    """Add `medvl recipes`."""
    p = sub.add_parser(
        "recipes",
        help="list the shipped recipes",
        description="List the recipes in recipes/ with the first sentence of each one's comment; train one with "
        "`medvl train NAME`, and see every field it sets with `medvl train NAME --print-config`.",
    )
    p.set_defaults(func=cmd_recipes)
