"""Corpus-level NLG metrics of generated reports, computed by the COCO caption scorers (pycocoevalcap).

Contract: `nlg_metrics(references, hypotheses)` returns `NLG_METRICS` (BLEU-1..4, ROUGE-L, CIDEr) as Python floats,
computed exactly as pycocoevalcap computes them on the texts tokenized by `tokenize_report`, one reference per
generated report:
- BLEU is corpus-level (clipped n-gram counts and the brevity penalty summed over the whole corpus, "closest"
  reference length), as COCO reports it; ROUGE-L and CIDEr are means of per-report scores; CIDEr is pycocoevalcap's
  CIDEr-D (sigma 6, clipped counts, x10) with document frequencies taken from this corpus's references.
- Tokenization is a pure-Python stand-in for the PTB tokenizer that COCO runs through Java: lower case, words and
  numbers kept ("8.5" stays one token), every other character a separator, so punctuation is dropped as PTB's
  punctuation filter drops it. Exact PTB parity (clitics such as "'s") is a later step.
- pycocoevalcap asserts on empty token lists, so a report with no words is scored as one placeholder token that no
  real text can produce (`EMPTY_HYPOTHESIS` for a generated report, a different one for a reference, so an empty
  generated report never matches anything and scores 0 or near 0).
- pycocoevalcap's prints are silenced; nothing is downloaded and no Java is needed.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence

NLG_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
# Angle brackets never survive tokenization, so real text cannot produce these tokens.
EMPTY_HYPOTHESIS = "<empty>"
EMPTY_REFERENCE = "<empty-reference>"
_TOKEN = re.compile(r"\d+(?:\.\d+)+|[a-z0-9]+")


def tokenize_report(text: str) -> str:
    """Tokenize a report for the COCO scorers.

    Lower case; decimal numbers ("8.5") and runs of letters/digits are tokens, everything else (punctuation,
    hyphens, apostrophes, whitespace) separates them and is dropped.

    Args:
        text: report text.

    Returns:
        The tokens joined by single spaces, or `EMPTY_HYPOTHESIS` when the text has no token.
    """
    return " ".join(_TOKEN.findall(text.lower())) or EMPTY_HYPOTHESIS


def _tokenized(texts: Sequence[str], what: str, empty: str) -> dict[int, list[str]]:
    out = {}
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what} {i} is a {type(text).__name__}, not a str; pass report texts")
        tokens = tokenize_report(text)
        out[i] = [empty if tokens == EMPTY_HYPOTHESIS else tokens]
    return out


def nlg_metrics(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of generated reports against one reference each.

    Args:
        references: ground-truth reports.
        hypotheses: generated reports, in the same order; empty ones are allowed and score 0.

    Returns:
        {name: value} for every name in `NLG_METRICS`.

    Raises:
        ValueError: when the two lists differ in length or are empty.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} generated reports: pass one generated "
                         "report per reference, in the same order")
    if not references:
        raise ValueError("no reports to score: references and hypotheses are empty")
    from pycocoevalcap.bleu.bleu import Bleu  # Imported here: only scoring needs it.
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = _tokenized(references, "reference", EMPTY_REFERENCE)
    hyps = _tokenized(hypotheses, "generated report", EMPTY_HYPOTHESIS)
    with contextlib.redirect_stdout(io.StringIO()):  # The scorers print their internals.
        bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
        rouge, _ = Rouge().compute_score(refs, hyps)
        cider, _ = Cider().compute_score(refs, hyps)
    scores = [*bleu, rouge, cider]
    return {name: float(value) for name, value in zip(NLG_METRICS, scores, strict=True)}


__all__ = ["EMPTY_HYPOTHESIS", "EMPTY_REFERENCE", "NLG_METRICS", "nlg_metrics", "tokenize_report"]
