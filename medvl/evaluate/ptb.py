"""PTB tokenization of report text, as the COCO caption evaluation (pycocoevalcap) does it before scoring.

Contract: `ptb_tokenize(texts, backend)` returns one string of space-separated lower-case tokens per text, and the
name of the backend that produced them:

- "java": Stanford CoreNLP's PTBTokenizer (the jar shipped inside pycocoevalcap) run with the same options as
  pycocoevalcap (`-preserveLines -lowerCase`), then pycocoevalcap's punctuation filter. Token for token what the
  COCO code produces, quirks included: "cannot" -> "can not", "there's" -> "there 's", hyphenated words and "a/b"
  stay whole, and "(" becomes "-lrb-", which the filter (written for upper-case "-LRB-") keeps. Text goes through a
  pipe, never a temporary file, so it works when site-packages is read-only.
- "python": a pure-Python rendering of the same rules. It agrees with "java" on every report of the IU X-ray
  collection and of the synthetic set, and token for token on emoji (dropped, as Java drops every character outside
  the Basic Multilingual Plane), zero-width and other format characters (dropped, splitting the word), soft hyphens
  (dropped, joining the word), underscores inside words (kept: "left_lung"), combining accents, superscripts and
  circled numbers, and on every character of U+00A0-U+036F, U+2000-U+27FF and U+FE00-U+FE0F inside and between
  words (tests/test_nlg_parity.py). Known differences remain on rare forms: "@name", "C++", "O'Neil",
  "rock'n'roll", rare abbreviations. Used for the trainer's validation metrics (no JVM per validation) and when Java is
  missing.
- "auto": "java" when a `java` executable is found, else "python" (the returned name says which ran).

Newlines inside a report become spaces (as pycocoevalcap does), so one report is always one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from pathlib import Path

# pycocoevalcap's filter, verbatim: upper-case bracket tokens never match the lower-cased output.
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
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
    cmd = [
        "java",
        "-cp",
        str(jar),
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
        "-encoding",
        "utf-8",
    ]
    payload = "\n".join(_one_line(t) for t in texts) + "\n"
    proc = subprocess.run(
        cmd, input=payload.encode("utf-8"), capture_output=True, timeout=600, env={**os.environ, "LC_ALL": "C.UTF-8"}
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"the PTB tokenizer (java) failed with status {proc.returncode}: "
            f"{proc.stderr.decode('utf-8', 'replace').strip()[-500:]}"
        )
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(texts):
        raise RuntimeError(f"the PTB tokenizer returned {len(lines)} lines for {len(texts)} reports")
    return [
        " ".join(w for w in line.rstrip().split(" ") if w and w not in PTB_PUNCTUATION) for line in lines[: len(texts)]
    ]


# ------------------------------------------------------------------------------------------ pure-Python PTB rules
# Characters PTBTokenizer rewrites before splitting.
_NORMALIZE = {
    "\u00bd": " 1/2 ",
    "\u00bc": " 1/4 ",
    "\u00be": " 3/4 ",
    "\u2153": " 1/3 ",
    "\u2154": " 2/3 ",
    "\u00ab": '"',
    "\u00bb": '"',
    "\u20a0": " $ ",
    "\u20ac": " $ ",
    "\u00a2": " cents ",
    "\u00a3": " # ",
    "\u00a4": " $ ",
    "\u00a0": " ",
    "\u2019": "'",
    "\u2018": "`",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "--",
    "\u2014": "--",
    "\u2026": "...",
}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPECIAL_SPLITS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na")}
# Words that keep their period (PTBLexer's abbreviation lists: titles, months, US states, company words); single
# letters do too.
_ABBREVIATIONS = frozenset(
    "etc vs inc co corp ltd bros jan feb mar apr jun jul aug sep sept oct nov dec mr mrs dr prof gen rev sen gov lt "
    "col maj capt sgt jr sr st mt ft est hon esq cf al dept univ assn md ind mo ala ariz calif colo conn ct dak fla "
    "ga kan kans ky mich minn mont neb nev okla pa penn tenn va vt wis wyo".split()
)
# Characters the Java lexer cannot tokenize: it drops them, and they end the token they sit in (emoji and every
# other character outside the Basic Multilingual Plane, zero-width and other format characters, Roman numerals, and
# punctuation and number forms newer than its Unicode tables).
_UNTOKENIZABLE = re.compile(
    "[\U00010000-\U0010ffff"
    + "".join(
        chr(c)
        for c in range(0x80, 0x10000)
        if (
            unicodedata.category(chr(c)) in ("Cf", "Cn")
            and c != 0xAD
            and not 0xD800 <= c < 0xE000
            and not 0x2400 <= c < 0x2460
        )
    )  # Java's lexer reads that whole block as symbols
    + "\u2012\u2015\u201b\u2024\u2025\u2027\u2039\u203a\u203c\u203d\u2043\u2045-\u205e\u2065"
    "\u20a1-\u20a3\u20a5-\u20ab\u20ad-\u20c0\u20d0-\u20ff\u2150-\u2152\u215f-\u2182\u2185-\u218f"
    "\ufe00-\ufe0f\ufffc\ufffd]"
)
_SOFT_HYPHEN = "\u00ad"  # dropped, joining the word it splits ("cardio\u00admegaly" -> "cardiomegaly")
# Other numbers (superscripts, circled digits, vulgar fractions) are tokens of their own, not word characters.
_OTHER_NUMBERS = "".join(chr(c) for c in range(0x80, 0x10000) if unicodedata.category(chr(c)) == "No")
# Word characters: letters and digits, combining marks, spacing modifier letters and the two Unicode hyphens.
_W = (
    f"(?:[^\\W_{_OTHER_NUMBERS}]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\ufe20-\ufe2f"
    "\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02eb\u02ed\u02ef-\u02ff\u2010\u2011])"
)
_PY_TOKEN = re.compile(
    r"</?[a-z!][^>\n]*>"  # SGML-like tags ("<br>") stay whole
    r"|(?:[a-z]\.){2,}"  # e.g.  i.e.  a.b.c.
    r"|\d+(?:[.,:]\d+)+"  # 3.7  1,000  10:30
    rf"|{_W}+(?:_{_W}+)*(?:[-/.]{_W}+(?:_{_W}+)*)*"  # right-sided  a/b  t-spine  snake_case
    rf"|'(?:s|re|ve|ll|d|m)(?!{_W})"  # clitics after a word: there 's
    r"|\.\.\.+|--+|[!?]{2,}|[^\s\w]|_+|" + f"[{_OTHER_NUMBERS}]"
)


def _py_line(text: str) -> list[str]:
    text = _UNTOKENIZABLE.sub(" ", text.replace(_SOFT_HYPHEN, ""))
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
        elif (
            (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()))
            and text[end : end + 1] == "."
            and (end + 1 == len(text) or text[end + 1].isspace())
        ):
            out.append(token + ".")
        else:
            out.append(token)
    return out


_DROPPED = PTB_PUNCTUATION | {"\u2010", "\u2011"}  # a Unicode hyphen on its own is a dash, which the filter drops


def _ptb_python(texts: Sequence[str]) -> list[str]:
    return [" ".join(t for t in _py_line(_one_line(text)) if t not in _DROPPED) for text in texts]


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


__all__ = [
    "BACKENDS",
    "JavaUnavailableError",
    "PTB_PUNCTUATION",
    "java_missing_reason",
    "ptb_tokenize",
    "pycocoevalcap_dir",
]
