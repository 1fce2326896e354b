"""Score generated reports against references: NLG metrics, clinical efficacy, bootstrap confidence intervals.

Contract: `score_corpus(references, hypotheses, ...)` returns a `CorpusScore` whose `metrics` is the flat
metrics.json dictionary:

- `bleu_1`..`bleu_4`, `meteor`, `rouge_l`, `cider` (`medvl.evaluate.nlg`; METEOR is None when Java is missing and
  `unavailable["meteor"]` says why);
- `ce_14_{micro,macro,example}_{precision,recall,f1}` and the same for `ce_5_`: clinical efficacy, the CheXpert
  labeler (`medvl.evaluate.chexpert`) run on both the reference and the generated text, uncertain mentions mapped by
  `uncertain` ("positive": U-ones, the default; "negative": U-zeros). micro pools all (study, observation) pairs,
  macro is the unweighted mean over observations, example is per-study P/R/F1 averaged over studies (conventions in
  `medvl.evaluate.clinical`). ce_5 uses the five observations of `CHEXPERT_5` only;
- `chexbert_14_*` / `chexbert_5_*` the same with CheXbert labels when the user passes its weights
  (`medvl.evaluate.chexbert`); otherwise `unavailable["chexbert"]` says how to enable it;
- `gt_{micro,macro,example}_{precision,recall,f1}` when the data set has ground-truth finding labels (the synthetic
  set): the generated text read by the synthetic-findings labeler against those labels;
- every headline key `k` with `k_ci_low` / `k_ci_high`: a percentile bootstrap 95% interval over `bootstrap`
  resamples of studies (seeded, so the same inputs give the same interval). Each resample recomputes the metric
  as a corpus metric (pooled BLEU statistics, METEOR's own aggregate, micro sums), not as a mean of per-study
  scores, except ROUGE-L and CIDEr, which are means by definition (CIDEr's document frequencies stay those of the
  full corpus).

`per_study` holds, per study: per-study NLG scores, the CheXpert labels of both sides and the example-based F1 (for
galleries and error analysis). The trainer's validation calls it with `bootstrap=0, meteor=False` and the Python PTB
tokenizer, which makes it cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvl.evaluate.chexbert import HOW_TO as CHEXBERT_HOW_TO
from medvl.evaluate.chexbert import CheXbertLabeler
from medvl.evaluate.chexpert import CHEXPERT, CHEXPERT_5, CHEXPERT_14
from medvl.evaluate.clinical import clinical_metrics, clinical_resampled
from medvl.evaluate.labeler import SYNTHETIC, UNCERTAIN_POLICIES, binary_labels
from medvl.evaluate.meteor import MeteorScorer
from medvl.evaluate.nlg import NLG_METRICS, nlg_scores, reference_lists
from medvl.evaluate.ptb import java_missing_reason

_AVERAGES = {"micro": "micro", "macro": "macro", "example": "example_based"}
_KEYS = ("precision", "recall", "f1")
LABELER_NAME = "medvl rule-based CheXpert-14 labeler (mention + negation + uncertainty regexes)"
# Metrics the field reports that medvl cannot compute here, with the reason (metrics.json "unavailable").
OPTIONAL_UNAVAILABLE = {
    "spice": "SPICE is not computed: it needs Stanford CoreNLP models that cannot be downloaded here",
    "radgraph_f1": "RadGraph F1 is not computed: medvl has no RadGraph (DyGIE++) backend yet",
}


@dataclass
class CorpusScore:
    """The scores of one set of generated reports (see the module docstring)."""

    metrics: dict[str, Any]
    unavailable: dict[str, str]
    per_finding: dict[str, dict[str, dict[str, float]]]
    per_study: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)


def _clinical_block(
    prefix: str,
    truth: np.ndarray,
    predicted: np.ndarray,
    names: Sequence[str],
    rows: np.ndarray | None,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    full = clinical_metrics(truth, predicted, names)
    resampled = clinical_resampled(truth, predicted, rows) if rows is not None else None
    for short, long in _AVERAGES.items():
        for key in _KEYS:
            name = f"{prefix}_{short}_{key}"
            metrics[name] = float(full[long][key])
            if resampled is not None:
                _ci(metrics, name, resampled[f"{long}_{key}"])
    return full


def _ci(metrics: dict[str, Any], name: str, values: np.ndarray, level: float = 0.95) -> None:
    tail = (1 - level) / 2 * 100
    metrics[f"{name}_ci_low"] = float(np.percentile(values, tail))
    metrics[f"{name}_ci_high"] = float(np.percentile(values, 100 - tail))


def _check_texts(texts: Sequence[str], what: str) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what} {i} is a {type(text).__name__}, not a str; pass report texts")


def score_corpus(
    references: Sequence[str | Sequence[str]],
    hypotheses: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    true_labels: np.ndarray | None = None,
    tokenizer: str = "auto",
    meteor: Any = True,
    bootstrap: int = 1000,
    seed: int = 0,
    uncertain: str = "positive",
    chexbert: CheXbertLabeler | None = None,
) -> CorpusScore:
    """All metrics of generated reports against their references.

    Args:
        references: ground-truth reports: a text per study, or a list of texts (several references, e.g. COCO's
            five captions; NLG metrics score against all of them, clinical labels are read from the first).
        hypotheses: generated reports, same order; empty ones are scored (and score low).
        ids: study ids for `per_study` (default: "0", "1", ...).
        true_labels: optional 0/1 array [n, 8] of the synthetic findings (`medvl.findings.FINDINGS`): adds gt_*.
        tokenizer: PTB backend ("auto", "java", "python").
        meteor: True, False, or a running `MeteorScorer` to reuse (it is left open).
        bootstrap: number of bootstrap resamples for the 95% intervals; 0 for none.
        seed: seed of the resampling.
        uncertain: "positive" or "negative": how an uncertain CheXpert mention counts.
        chexbert: an optional `CheXbertLabeler` (user-supplied weights): adds chexbert_14_* and chexbert_5_*.

    Returns:
        A `CorpusScore`.

    Raises:
        ValueError: on lists of different lengths, no reports, a bad `uncertain` or `bootstrap`.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {sorted(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    ref_lists = reference_lists(references)
    first_refs = [refs[0] for refs in ref_lists]
    _check_texts(hypotheses, "generated report")
    n = len(references)
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    rows = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n)) if bootstrap and n else None
    # METEOR's JVM takes seconds to load: start it first and label the reports meanwhile.
    own_meteor = MeteorScorer() if meteor is True and not java_missing_reason() else None
    try:
        metrics: dict[str, Any] = {}
        ref_labels = binary_labels(first_refs, uncertain, CHEXPERT)
        hyp_labels = binary_labels(hypotheses, uncertain, CHEXPERT)
        clinical: dict[str, Any] = {}
        per_finding = {
            "ce_14": _clinical_block("ce_14", ref_labels, hyp_labels, CHEXPERT_14, rows, clinical)["per_finding"]
        }
        five = [CHEXPERT_14.index(name) for name in CHEXPERT_5]
        _clinical_block("ce_5", ref_labels[:, five], hyp_labels[:, five], CHEXPERT_5, rows, clinical)
        if chexbert is not None:
            ref_cb, hyp_cb = chexbert.binary(first_refs, uncertain), chexbert.binary(hypotheses, uncertain)
            per_finding["chexbert_14"] = _clinical_block("chexbert_14", ref_cb, hyp_cb, CHEXPERT_14, rows, clinical)[
                "per_finding"
            ]
            _clinical_block("chexbert_5", ref_cb[:, five], hyp_cb[:, five], CHEXPERT_5, rows, clinical)
        if true_labels is not None:
            generated = binary_labels(hypotheses, uncertain, SYNTHETIC)
            per_finding["gt"] = _clinical_block(
                "gt", np.asarray(true_labels), generated, SYNTHETIC.names, rows, clinical
            )["per_finding"]
        nlg = nlg_scores(ref_lists, hypotheses, tokenizer=tokenizer, meteor=own_meteor or meteor, resamples=rows)
    finally:
        if own_meteor is not None:
            own_meteor.close()
    for name in NLG_METRICS:
        metrics[name] = nlg.scores[name]
        if name in nlg.resampled:
            _ci(metrics, name, nlg.resampled[name])
        elif rows is not None:
            metrics[f"{name}_ci_low"] = metrics[f"{name}_ci_high"] = None
    metrics.update(clinical)

    example_f1 = clinical_metrics_per_study(ref_labels, hyp_labels)
    per_study = []
    for i, sid in enumerate(ids):
        row: dict[str, Any] = {"id": sid, "example_f1": float(example_f1[i])}
        row.update({f"{k}": float(v[i]) for k, v in nlg.per_study.items()})
        row["reference_labels"] = {name: int(v) for name, v in zip(CHEXPERT_14, ref_labels[i], strict=True)}
        row["generated_labels"] = {name: int(v) for name, v in zip(CHEXPERT_14, hyp_labels[i], strict=True)}
        per_study.append(row)
    info = {
        "n_studies": n,
        "tokenizer": nlg.tokenizer,
        "labeler": LABELER_NAME,
        "uncertain_policy": uncertain,
        "bootstrap": {"resamples": bootstrap, "seed": seed, "method": "percentile", "level": 0.95},
    }
    if nlg.warnings:
        info["warnings"] = list(nlg.warnings)
    unavailable = {**nlg.unavailable, **OPTIONAL_UNAVAILABLE}
    if chexbert is None:
        unavailable["chexbert"] = f"CheXbert labels not computed: {CHEXBERT_HOW_TO}"
    return CorpusScore(
        metrics=metrics, unavailable=unavailable, per_finding=per_finding, per_study=per_study, info=info
    )


def clinical_metrics_per_study(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Example-based F1 of each study (the per-study term of `example_f1`)."""
    rows = np.arange(len(truth))[:, None]
    return clinical_resampled(truth, predicted, rows)["example_based_f1"]


def score_reports(
    references: Sequence[str | Sequence[str]], hypotheses: Sequence[str], true_labels: np.ndarray | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """Cheap headline metrics for the trainer's validation: no METEOR, no intervals, Python PTB tokenizer.

    Returns:
        (flat metrics as in `score_corpus`, per-finding breakdowns).
    """
    score = score_corpus(references, hypotheses, true_labels=true_labels, tokenizer="python", meteor=False, bootstrap=0)
    headline = {k: v for k, v in score.metrics.items() if v is not None}
    return headline, score.per_finding


__all__ = ["LABELER_NAME", "CorpusScore", "clinical_metrics_per_study", "score_corpus", "score_reports"]
