"""Corpus-level NLG metrics of generated reports, computed by the COCO caption scorers (pycocoevalcap).

Contract: `nlg_scores(references, hypotheses)` returns an `NLGResult` whose `scores` hold `NLG_METRICS` (BLEU-1..4,
METEOR, ROUGE-L, CIDEr-D) exactly as pycocoevalcap's COCOEvalCap computes them for one reference per report:

- Both sides are PTB-tokenized first (`medvl.evaluate.ptb`; the "java" backend is pycocoevalcap's own tokenizer).
- BLEU is corpus-level (clipped n-gram counts and the brevity penalty pooled over the corpus, "closest" reference
  length); METEOR is METEOR 1.5's corpus aggregate (Java); ROUGE-L is the mean of per-report ROUGE-L (beta 1.2);
  CIDEr is pycocoevalcap's CIDEr-D (sigma 6, clipped counts, x10) with document frequencies from this corpus's
  references, averaged over reports.
- METEOR needs Java. Without it, or with `meteor=False`, `scores["meteor"]` is None and `unavailable["meteor"]`
  says why; it is never reported as 0. SPICE is not computed (it needs Stanford CoreNLP models that cannot be had
  offline).
- A report with no token after tokenization (empty, whitespace-only or punctuation-only) is scored as the empty
  string, as pycocoevalcap 1.2 scores it: BLEU counts no n-gram, ROUGE-L reads it as one empty token (so an empty
  generated report against an empty reference scores 1, as in pycocoevalcap), METEOR gets an empty segment.
- CIDEr-D over a single study is 0 by construction (every document frequency is log 1, so every n-gram weighs 0):
  `scores["cider"]` is then None and `unavailable["cider"]` says why. Under `CIDER_MIN_STUDIES` studies the score
  is computed but `warnings` (and a `SmallCorpusWarning`) say that its IDF weights rest on too few reports.
- With `resamples` (an int array [B, n] of row indices) `resampled[name]` holds the metric on each resample, for
  bootstrap intervals: BLEU from the pooled per-report statistics of the resample, METEOR from METEOR's aggregate of
  the resampled statistics, ROUGE-L and CIDEr as the resample's mean of per-report scores (CIDEr's document
  frequencies stay those of the full corpus).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medvl.evaluate.meteor import MeteorScorer, aggregate_stats, parse_stats
from medvl.evaluate.ptb import java_missing_reason, ptb_tokenize

NLG_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
CIDER_MIN_STUDIES = 50  # below this, CIDEr-D's document frequencies rest on too few references to mean much


class SmallCorpusWarning(UserWarning):
    """A corpus too small for CIDEr-D's IDF weights to mean much."""


_BLEU_TINY, _BLEU_SMALL = 1e-15, 1e-9  # pycocoevalcap's smoothing constants


@dataclass
class NLGResult:
    """NLG metrics of one corpus. `per_study` holds per-report scores (sentence BLEU-4, METEOR, ROUGE-L, CIDEr-D)."""

    scores: dict[str, float | None]
    tokenizer: str
    unavailable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    per_study: dict[str, np.ndarray] = field(default_factory=dict)
    resampled: dict[str, np.ndarray] = field(default_factory=dict)


def pooled_bleu(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1..4 from summed statistics, pycocoevalcap's formula.

    Args:
        stats: [..., 10] sums of (hypothesis length, reference length, guesses 1..4, correct 1..4).

    Returns:
        [..., 4] BLEU-1..4.
    """
    testlen, reflen = stats[..., 0], stats[..., 1]
    guess, correct = stats[..., 2:6], stats[..., 6:10]
    precisions = (correct + _BLEU_TINY) / (guess + _BLEU_SMALL)
    bleus = np.cumprod(precisions, axis=-1) ** (1.0 / np.arange(1, 5))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, 1e-300)), 1.0)
    return bleus * brevity[..., None]


def _bleu(refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> tuple[list[float], np.ndarray, np.ndarray]:
    """(corpus BLEU-1..4, sentence BLEU-4 per report, per-report statistics [n, 10])."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=4)
    for i in refs:
        scorer += (hyps[i][0], refs[i])
    corpus, per_sentence = scorer.compute_score(option="closest", verbose=0)
    stats = np.array(
        [
            [c["testlen"], min((abs(r - c["testlen"]), r) for r in c["reflen"])[1], *c["guess"], *c["correct"]]
            for c in scorer.ctest
        ],
        dtype=np.float64,
    )
    return list(corpus), np.asarray(per_sentence[3], dtype=np.float64), stats


def _as_coco(tokenized: list[str]) -> dict[int, list[str]]:
    return {i: [text] for i, text in enumerate(tokenized)}


def reference_lists(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Each study's references as a list: a text stands for one reference, a list of texts for several.

    Raises:
        TypeError: a reference that is neither a str nor a list of str.
        ValueError: a study with an empty list of references.
    """
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs:
            raise ValueError(f"reference {i} is an empty list: give at least one reference text per study")
        for text in refs:
            if not isinstance(text, str):
                raise TypeError(f"reference {i} is a {type(text).__name__}, not a str; pass report texts")
        out.append(refs)
    return out


def nlg_scores(
    references: Sequence[str | Sequence[str]],
    hypotheses: Sequence[str],
    *,
    tokenizer: str = "auto",
    meteor: bool | MeteorScorer = True,
    resamples: np.ndarray | None = None,
) -> NLGResult:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated reports against their references.

    Args:
        references: ground-truth reports, one text per study or a list of texts (COCO's five captions): every
            metric then scores against all of them, as pycocoevalcap does.
        hypotheses: generated reports, in the same order; empty ones are scored as pycocoevalcap scores them.
        tokenizer: PTB backend, "auto", "java" or "python" (see `medvl.evaluate.ptb`).
        meteor: compute METEOR (needs Java; a JVM start of a few seconds, then about 1 ms per report); a running
            `MeteorScorer` is used and left open.
        resamples: optional int array [B, n] of row indices; fills `NLGResult.resampled`.

    Returns:
        An `NLGResult` (see the module docstring).

    Raises:
        ValueError: when the two lists differ in length or are empty.
        TypeError: when a text is not a str.
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} generated reports: pass one generated "
            "report per reference, in the same order"
        )
    if not references:
        raise ValueError("no reports to score: references and hypotheses are empty")
    from pycocoevalcap.cider.cider import Cider  # Imported here: only scoring needs it.
    from pycocoevalcap.rouge.rouge import Rouge

    external = meteor if isinstance(meteor, MeteorScorer) else None
    reason = None if external else "disabled (meteor=False)" if not meteor else java_missing_reason()
    result_unavailable = {"meteor": f"METEOR not computed: {reason}"} if reason else {}
    # The JVM loads (seconds) while the Python metrics run.
    meteor_scorer = external or (None if reason else MeteorScorer())
    ref_lists = reference_lists(references)
    flat = [text for refs_i in ref_lists for text in refs_i]
    tokenized, backend = ptb_tokenize([*flat, *hypotheses], tokenizer)
    n, m = len(references), len(flat)
    tokenized_refs = iter(tokenized[:m])
    refs = {i: [next(tokenized_refs) for _ in refs_i] for i, refs_i in enumerate(ref_lists)}
    hyps = _as_coco(tokenized[m:])
    result = NLGResult(scores={}, tokenizer=f"ptb-{backend}", unavailable=result_unavailable)
    if n == 1:
        result.unavailable["cider"] = (
            "CIDEr-D is not computed over one study: its document frequencies come from "
            "the corpus's references, so with one reference every n-gram has IDF log(1) "
            "= 0 and the score is 0 whatever the text; score a corpus of studies"
        )
    elif n < CIDER_MIN_STUDIES:
        note = (
            f"CIDEr-D over {n} studies: its IDF weights come from only {n} reference reports (fewer than "
            f"{CIDER_MIN_STUDIES}), so they say little about which words are informative; compare CIDEr only "
            "on larger corpora"
        )
        result.warnings.append(note)
        warnings.warn(note, SmallCorpusWarning, stacklevel=2)
    with contextlib.redirect_stdout(io.StringIO()):  # The scorers print their internals.
        bleu, bleu4_each, bleu_stats = _bleu(refs, hyps)
        rouge, rouge_each = Rouge().compute_score(refs, hyps)
        cider, cider_each = Cider().compute_score(refs, hyps)
    result.scores.update({f"bleu_{k + 1}": float(v) for k, v in enumerate(bleu)})
    result.scores.update(
        rouge_l=float(rouge), cider=None if "cider" in result.unavailable else float(cider), meteor=None
    )
    result.per_study.update(bleu_4=bleu4_each, rouge_l=np.asarray(rouge_each, dtype=np.float64))
    if result.scores["cider"] is not None:
        result.per_study["cider"] = np.asarray(cider_each, dtype=np.float64)
    if resamples is not None:
        resamples = np.asarray(resamples)
        pooled = pooled_bleu(bleu_stats[resamples].sum(axis=1))
        for k in range(4):
            result.resampled[f"bleu_{k + 1}"] = pooled[:, k]
        for name in ("rouge_l", "cider") if n > 1 else ("rouge_l",):
            result.resampled[name] = result.per_study[name][resamples].mean(axis=1)

    if meteor_scorer is not None:
        try:
            stats = meteor_scorer.segment_stats([refs[i] for i in range(n)], [hyps[i][0] for i in range(n)])
            segments, corpus = meteor_scorer.corpus_scores(stats)
        finally:
            if external is None:
                meteor_scorer.close()
        result.scores["meteor"] = corpus
        result.per_study["meteor"] = np.asarray(segments, dtype=np.float64)
        if resamples is not None:
            result.resampled["meteor"] = aggregate_stats(parse_stats(stats), resamples)
    return result


def nlg_metrics(
    references: Sequence[str], hypotheses: Sequence[str], *, tokenizer: str = "auto", meteor: bool = True
) -> dict[str, float | None]:
    """`nlg_scores(...).scores`: {name: value} for every name in `NLG_METRICS` (METEOR None when unavailable)."""
    return nlg_scores(references, hypotheses, tokenizer=tokenizer, meteor=meteor).scores


__all__ = [
    "CIDER_MIN_STUDIES",
    "NLG_METRICS",
    "NLGResult",
    "SmallCorpusWarning",
    "nlg_metrics",
    "nlg_scores",
    "pooled_bleu",
    "reference_lists",
]
