"""PTB tokenization of report text, as the COCO caption evaluation (pycocoevalcap) does it before scoring.

Contract: `ptb_tokenize(texts, backend)` returns one string of space-separated lower-case tokens per text, and the
name of the backend that produced them:

- "java": Stanford CoreNLP's PTBTokenizer (the jar shipped inside pycocoevalcap) run with the same options as
  pycocoevalcap (`-preserveLines -lowerCase`), then pycocoevalcap's punctuation filter. Token for token what the
  COCO code produces, quirks included: "cannot" -> "can not", "there's" -> "there 's", hyphenated words and "a/b"
  stay whole, and "(" becomes "-lrb-", which the filter (written for upper-case "-LRB-") keeps. Text goes through a
  pipe, never a temporary file, so it works when site-packages is read-only.
- "python": a pure-Python rendering of the same rules. It agrees with "java" on every report of the IU X-ray
  collection and of the synthetic set (tests/test_nlg_parity.py); on unusual text (rare abbreviations, exotic
  Unicode) it may differ. Used for the trainer's validation metrics (no JVM per validation) and when Java is
  missing.
- "auto": "java" when a `java` executable is found, else "python" (the returned name says which ran).

Newlines inside a report become spaces (as pycocoevalcap does), so one report is always one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

# pycocoevalcap's filter, verbatim: upper-case bracket tokens never match the lower-cased output.
PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                             "--", "...", ";"])
BACKENDS = ("auto", "java", "python")
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class JavaUnavailableError(RuntimeError):
    """Java (needed by the PTB tokenizer's "java" backend and by METEOR) cannot be run here."""


def java_missing_reason() -> str | None:
    """None when `java` can run the pycocoevalcap jars, else a one-line reason for the user."""
    if shutil.which("java") is None:
        return "no `java` executable on PATH (install a Java runtime, e.g. `apt-get install default-jre-headless`)"
    return None


def pycocoevalcap_dir() -> Path:
    # pycocoevalcap is a namespace package (no __init__.py), so locate it through one of its modules.
    from pycocoevalcap.tokenizer import ptbtokenizer

    return Path(ptbtokenizer.__file__).resolve().parents[1]


def _one_line(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"report texts must be str, got {type(text).__name__}")
    return _LINE_BREAKS.sub(" ", text)


def _ptb_java(texts: Sequence[str]) -> list[str]:
    reason = java_missing_reason()
    if reason:
        raise JavaUnavailableError(reason)
    jar = pycocoevalcap_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
           "-encoding", "utf-8"]
    payload = "\n".join(_one_line(t) for t in texts) + "\n"
    proc = subprocess.run(cmd, input=payload.encode("utf-8"), capture_output=True, timeout=600,
                          env={**os.environ, "LC_ALL": "C.UTF-8"})
    if proc.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer (java) failed with status {proc.returncode}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()[-500:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(texts):
        raise RuntimeError(f"the PTB tokenizer returned {len(lines)} lines for {len(texts)} reports")
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in PTB_PUNCTUATION)
            for line in lines[:len(texts)]]


# ------------------------------------------------------------------------------------------ pure-Python PTB rules
# Characters PTBTokenizer rewrites before splitting.
_NORMALIZE = {"\u00bd": " 1/2", "\u00bc": " 1/4", "\u00be": " 3/4", "\u2153": " 1/3", "\u2154": " 2/3",
              "\u00a0": " ", "\u2019": "'", "\u2018": "`", "\u201c": '"', "\u201d": '"', "\u2013": "--",
              "\u2014": "--", "\u2026": "..."}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPECIAL_SPLITS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na")}
# Words that keep their period (PTBLexer's abbreviation lists: titles, months, US states, company words); single
# letters do too.
_ABBREVIATIONS = frozenset(
    "etc vs inc co corp ltd bros jan feb mar apr jun jul aug sep sept oct nov dec mr mrs dr prof gen rev sen gov lt "
    "col maj capt sgt jr sr st mt ft est hon esq cf al dept univ assn md ind mo ala ariz calif colo conn ct dak fla "
    "ga kan kans ky mich minn mont neb nev okla pa penn tenn va vt wis wyo".split())
_PY_TOKEN = re.compile(
    r"</?[a-z!][^>\n]*>"                    # SGML-like tags ("<br>") stay whole
    r"|(?:[a-z]\.){2,}"                      # e.g.  i.e.  a.b.c.
    r"|\d+(?:[.,:]\d+)+"                     # 3.7  1,000  10:30
    r"|[^\W_]+(?:[-/.][^\W_]+)*"              # right-sided  a/b  t-spine
    r"|'(?:s|re|ve|ll|d|m)(?![^\W_])"         # clitics after a word: there 's
    r"|\.\.\.+|--+|[!?]{2,}|[^\s\w]|_+")


def _py_line(text: str) -> list[str]:
    for src, dst in _NORMALIZE.items():
        text = text.replace(src, dst)
    text = text.lower()
    out: list[str] = []
    for match in _PY_TOKEN.finditer(text):
        token, end = match.group(), match.end()
        if token in _BRACKETS:
            out.append(_BRACKETS[token])
        elif token == '"':
            out.append("``" if not out or out[-1] in ("-lrb-", "``") else "''")
        elif token in _SPECIAL_SPLITS:
            out += _SPECIAL_SPLITS[token]
        elif token == "t" and out and out[-1] == "'" and len(out) > 1 and out[-2].endswith("n"):
            out[-2:] = [out[-2][:-1], "n't"]  # don't -> do n't
        elif (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())) and text[end:end + 1] == "." \
                and (end + 1 == len(text) or text[end + 1].isspace()):
            out.append(token + ".")
        else:
            out.append(token)
    return out


def _ptb_python(texts: Sequence[str]) -> list[str]:
    return [" ".join(t for t in _py_line(_one_line(text)) if t not in PTB_PUNCTUATION) for text in texts]


def ptb_tokenize(texts: Sequence[str], backend: str = "auto") -> tuple[list[str], str]:
    """PTB-tokenize reports the way pycocoevalcap does.

    Args:
        texts: report texts (any case, punctuation, newlines).
        backend: "auto", "java" or "python" (see the module docstring).

    Returns:
        (tokenized texts, one per input, tokens joined by single spaces, possibly ""; the backend that ran).

    Raises:
        ValueError: for an unknown backend.
        JavaUnavailableError: backend "java" without a Java runtime.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown PTB tokenizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "python" if java_missing_reason() else "java"
    if not texts:
        return [], backend
    return (_ptb_java(texts) if backend == "java" else _ptb_python(texts)), backend


__all__ = ["BACKENDS", "JavaUnavailableError", "PTB_PUNCTUATION", "java_missing_reason", "ptb_tokenize",
           "pycocoevalcap_dir"]
