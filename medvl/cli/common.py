"""What several commands share: the decoding, sampling and scoring options, and turning them (and --resume /
--overwrite) into the library's arguments.
"""

from __future__ import annotations

import argparse


def resume_mode(args: argparse.Namespace) -> str | None:
    """--resume and --overwrite as the one `resume` argument of `train` (see medvl/train/run_folder.py)."""
    if args.overwrite and args.resume not in (None, "overwrite"):
        raise ValueError(f"--overwrite starts the run over, --resume {args.resume} continues it: give one of them")
    return "overwrite" if args.overwrite else args.resume


def generation_overrides(args: argparse.Namespace) -> dict:
    """The decoding and sampling flags given on the command line, as `GenerationConfig` fields to override."""
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


def scoring_options(args: argparse.Namespace):  # noqa: ANN202 - the type lives in a lazily imported module
    """The scoring flags (`scoring_args`) as `medvl.evaluate.run.ScoringOptions`."""
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


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (argparse turns the ValueError into a usage error naming the option)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def generation_args(q: argparse.ArgumentParser) -> None:
    """Add the decoding flags (beam search, lengths, batch size, device) of evaluate, predict, serve and demo."""
    q.add_argument("--num-beams", type=int, default=None, help="beam width (1 = greedy; default from checkpoint)")
    q.add_argument("--max-new-tokens", type=int, default=None, help="longest report in tokens")
    q.add_argument("--no-repeat-ngram-size", type=int, default=None, help="forbid repeated n-grams of this size")
    q.add_argument("--length-penalty", type=float, default=None, help="beam score = log-prob / length**this")
    q.add_argument("--batch-size", type=int, default=None, help="studies generated at once")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def sampling_args(q: argparse.ArgumentParser) -> None:
    """Add the sampling flags of predict, serve and demo."""
    g = q.add_argument_group("sampling (instead of greedy / beam search)")
    g.add_argument("--sample", action="store_true", help="sample each token (implies --num-beams 1)")
    g.add_argument("--temperature", type=float, default=None, help="divide the logits by this (default 1.0)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus: smallest token set with this probability")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed (same batch + seed = same reports)")


def scoring_args(q: argparse.ArgumentParser) -> None:
    """Add the report-scoring flags of evaluate and score."""
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
