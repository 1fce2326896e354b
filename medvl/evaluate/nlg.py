"""Corpus-level NLG metrics of generated reports, computed by the COCO caption scorers (pycocoevalcap).

Text is tokenized by `tokenize_report`: lower case, words and numbers kept, punctuation dropped. That is a pure-Python
approximation of the PTB tokenizer COCO runs through Java; exact PTB parity and METEOR are a later step. An empty
generated report is scored as a single token that matches nothing (pycocoevalcap asserts on empty token lists).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence

NLG_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_EMPTY = "<empty>"


def tokenize_report(text: str) -> str:
    """Lower-cased words and numbers joined by single spaces ("8.5 mm" stays "8.5 mm"; "." and "," are dropped)."""
    return " ".join(_WORD.findall(text.lower())) or _EMPTY


def nlg_metrics(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4 (corpus), ROUGE-L and CIDEr-D of `hypotheses` against one reference each."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} generated reports")
    if not references:
        raise ValueError("no reports to score")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = {i: [tokenize_report(r)] for i, r in enumerate(references)}
    hyps = {i: [tokenize_report(h)] for i, h in enumerate(hypotheses)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
        rouge, _ = Rouge().compute_score(refs, hyps)
        cider, _ = Cider().compute_score(refs, hyps)
    return {**{f"bleu_{n}": float(bleu[n - 1]) for n in range(1, 5)}, "rouge_l": float(rouge), "cider": float(cider)}
