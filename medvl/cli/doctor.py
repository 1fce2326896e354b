"""`medvl doctor`: what this machine has for medvl, and how to get the rest (`medvl.doctor`)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_doctor(args: argparse.Namespace) -> int:
    from medvl.doctor import doctor

    return doctor(as_json=args.json, path=args.path)


def add_doctor(sub: Any) -> None:
    """Add `medvl doctor`."""
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
