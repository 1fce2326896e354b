"""Versions of what computed a set of metrics, recorded in metrics.json so a number can be traced and reproduced."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata

import numpy as np

import medvl


@functools.lru_cache(maxsize=1)
def _java_version() -> str:
    try:
        proc = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"


def scorer_versions() -> dict[str, str]:
    """{component: version} for medvl, pycocoevalcap (BLEU/METEOR/ROUGE/CIDEr and the PTB tokenizer), numpy, Java."""

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "medvl": medvl.__version__,
        "pycocoevalcap": dist("pycocoevalcap"),
        "numpy": np.__version__,
        "java": _java_version(),
        "meteor": "1.5 (pycocoevalcap jar)",
        "ptb_tokenizer": "Stanford CoreNLP 3.4.1 PTBTokenizer (pycocoevalcap jar)",
    }


__all__ = ["scorer_versions"]
