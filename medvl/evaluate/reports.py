"""Scoring generated reports (the report tasks' part of `medvl evaluate`, and `medvl score`), next to the
majority-report baseline.

Writes into the output folder:
- `metrics.json`: the flat headline metrics of `medvl.evaluate.scoring.score_corpus` with their bootstrap 95%
  intervals, `n_studies`, `split`, `labeler`, `versions`, the baseline's metrics under `baseline`, per-finding
  precision/recall/F1 under `per_finding` (CheXpert-14) and `gt_per_finding` (synthetic ground truth, when the data
  set has labels), and what was evaluated and how;
- `predictions.jsonl`: one row per study: id, image paths, reference, generated, CheXpert labels of both sides,
  per-study scores (and the ground-truth findings when the data set has them);
- `report.html`: the same for people (`medvl.evaluate.html_report`).

`score_files` is the same scoring for reports written by any system (`medvl score`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.evaluate.baseline import majority_report
from medvl.evaluate.chexpert import CHEXPERT_14
from medvl.evaluate.html_report import write_html_report
from medvl.evaluate.labeler import SYNTHETIC, binary_labels
from medvl.evaluate.ptb import java_missing_reason
from medvl.evaluate.scoring import CorpusScore, score_corpus
from medvl.evaluate.versions import scorer_versions
from medvl.findings import FINDING_TITLES
from medvl.jsonl import write_evaluation_files

HEADLINE = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider",
    "ce_14_micro_precision",
    "ce_14_micro_recall",
    "ce_14_micro_f1",
    "ce_14_macro_f1",
    "ce_14_example_f1",
    "ce_5_micro_f1",
    "ce_5_macro_f1",
    "ce_5_example_f1",
    "gt_micro_precision",
    "gt_micro_recall",
    "gt_micro_f1",
    "gt_macro_f1",
    "gt_example_f1",
    "chexbert_14_micro_f1",
    "chexbert_14_macro_f1",
    "chexbert_14_example_f1",
    "chexbert_5_micro_f1",
    "chexbert_5_macro_f1",
    "chexbert_5_example_f1",
)


@dataclasses.dataclass
class ScoringOptions:
    """How reports are scored (the `medvl evaluate` / `medvl score` flags)."""

    bootstrap: int = 1000
    """Bootstrap resamples for the 95% intervals (0: none)."""
    seed: int = 0
    """Seed of the resampling."""
    meteor: bool = True
    """Compute METEOR (needs Java; reported as unavailable without it)."""
    tokenizer: str = "auto"
    """PTB tokenizer backend: auto (Java when present), java, python."""
    uncertain: str = "positive"
    """How uncertain CheXpert mentions count: positive (U-ones) or negative (U-zeros)."""
    html: bool = True
    """Write report.html."""
    chexbert: str | None = None
    """Path of CheXbert weights (chexbert.pth): adds chexbert_* metrics."""
    chexbert_tokenizer: str | None = None
    """Folder with CheXbert's WordPiece vocab.txt (bert-base-uncased)."""
    _warm_meteor: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)
    """A METEOR process started by `warm_up`, waiting for the first scoring."""

    def warm_up(self) -> None:
        """Start METEOR now (its JVM loads for ~5 CPU s) so that it loads while the model generates; the first
        scoring uses it. Nothing happens without Java or with `meteor` off."""
        if self._warm_meteor is None:
            self._warm_meteor = _meteor_handle(self)

    def take_meteor(self) -> Any:
        """The warmed-up METEOR process (the caller closes it), else a new one, or None (no Java, or off)."""
        meteor, self._warm_meteor = self._warm_meteor, None
        return meteor or _meteor_handle(self)

    def close(self) -> None:
        """Stop a warmed-up METEOR process that no scoring took (evaluation failed or scored no text)."""
        if self._warm_meteor is not None:
            self._warm_meteor.close()
            self._warm_meteor = None

    def chexbert_labeler(self) -> Any:
        """The CheXbert labeler when weights were given, else None."""
        if self.chexbert is None:
            if self.chexbert_tokenizer is not None:
                raise ValueError("--chexbert-tokenizer was given without --chexbert CKPT")
            return None
        from medvl.evaluate.chexbert import CheXbertLabeler

        return CheXbertLabeler(self.chexbert, self.chexbert_tokenizer)


def _meteor_handle(options: ScoringOptions) -> Any:
    """A METEOR process started now (it loads for seconds while other work runs), or None."""
    if not options.meteor or java_missing_reason():
        return None
    from medvl.evaluate.meteor import MeteorScorer

    return MeteorScorer()


def _score(
    refs: Sequence[str],
    hyps: Sequence[str],
    ids: Sequence[str],
    truth: Any,
    options: ScoringOptions,
    meteor: Any,
    bootstrap: int | None = None,
    chexbert: Any = None,
) -> CorpusScore:
    return score_corpus(
        refs,
        hyps,
        ids=ids,
        true_labels=truth,
        tokenizer=options.tokenizer,
        meteor=meteor or options.meteor,
        bootstrap=options.bootstrap if bootstrap is None else bootstrap,
        seed=options.seed,
        uncertain=options.uncertain,
        chexbert=chexbert,
    )


def _result_dict(
    score: CorpusScore,
    split: str | None,
    extra: dict[str, Any],
    options: ScoringOptions,
    baseline: CorpusScore | None,
    baseline_report: str | None,
) -> dict[str, Any]:
    unavailable = dict(score.unavailable)
    result: dict[str, Any] = {
        "split": split,
        "n_studies": score.info["n_studies"],
        **extra,
        "labeler": score.info["labeler"],
        "uncertain_policy": score.info["uncertain_policy"],
        "tokenizer": score.info["tokenizer"],
        "bootstrap": score.info["bootstrap"],
        "versions": scorer_versions(),
        **score.metrics,
        "unavailable": unavailable,
        "per_finding": score.per_finding["ce_14"],
    }
    if "gt" in score.per_finding:
        result["gt_per_finding"] = score.per_finding["gt"]
    if baseline is not None:
        result["baseline_report"] = baseline_report
        result["baseline"] = {k: v for k, v in baseline.metrics.items() if not k.endswith(("_ci_low", "_ci_high"))}
        result["baseline_per_finding"] = baseline.per_finding["ce_14"]
        if "gt" in baseline.per_finding:
            result["baseline_gt_per_finding"] = baseline.per_finding["gt"]
    return result


def write_report_outputs(
    out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: ScoringOptions, title: str
) -> None:
    write_evaluation_files(out, result, rows)
    if options.html:
        write_html_report(out / "report.html", result, rows, label_names=CHEXPERT_14, title=title)


def evaluate_generated(
    ids: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    hyps: Sequence[str],
    truth: np.ndarray | None,
    train_reports: Sequence[str],
    options: ScoringOptions,
    extra: dict[str, Any] | None = None,
    image_paths: dict[str, list[str]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score generated reports against references next to the majority-report baseline.

    Args:
        ids, refs, hyps: one entry per study; a study's references may be a list (all are scored against).
        truth: int [N, len(FINDINGS)] ground-truth findings, or None when the data set has none.
        train_reports: the training reports (the baseline is the most frequent one); empty = no baseline.

    Returns:
        (the metrics.json dict, the predictions.jsonl rows).
    """
    chexbert = options.chexbert_labeler()
    meteor = options.take_meteor()
    try:
        t1 = time.time()
        model_score = _score(refs, hyps, ids, truth, options, meteor, chexbert=chexbert)
        baseline_score = baseline = None
        if train_reports:
            baseline = majority_report(train_reports)
            baseline_score = _score(
                refs, [baseline] * len(refs), ids, truth, options, meteor, bootstrap=0, chexbert=chexbert
            )
        scoring_seconds = time.time() - t1
    finally:
        if meteor:
            meteor.close()
    extra = {
        **(extra or {}),
        "labels_from": "data set ground truth (gt_*) and the CheXpert labeler on both texts (ce_*)"
        if truth is not None
        else "the CheXpert labeler on both texts (ce_*)",
        "scoring_seconds": round(scoring_seconds, 2),
    }
    result = _result_dict(model_score, extra.pop("split", None), extra, options, baseline_score, baseline)
    rows = []
    generated_findings = binary_labels(hyps, options.uncertain, SYNTHETIC) if truth is not None else None
    for i, (sid, per_study) in enumerate(zip(ids, model_score.per_study, strict=True)):
        row = {
            "id": sid,
            "image_paths": (image_paths or {}).get(sid, []),
            "reference": refs[i] if isinstance(refs[i], str) else refs[i][0],
            "generated": hyps[i],
            **per_study,
        }
        if not isinstance(refs[i], str):
            row["references"] = list(refs[i])
        if truth is not None:
            row["findings"] = {n: int(v) for n, v in zip(SYNTHETIC.names, truth[i], strict=True)}
            row["generated_findings"] = {n: int(v) for n, v in zip(SYNTHETIC.names, generated_findings[i], strict=True)}
        rows.append(row)
    return result, rows


def score_files(
    references: str | Path,
    hypotheses: str | Path,
    out_dir: str | Path | None = None,
    options: ScoringOptions | None = None,
    missing_as_empty: bool = False,
    ref_field: str | None = None,
    hyp_field: str | None = None,
) -> dict[str, Any]:
    """Score generated reports from any system against references (`medvl score`); see `medvl.evaluate.inputs`.

    Returns the metrics.json dict; with `out_dir`, also writes metrics.json, predictions.jsonl and report.html.
    """
    from medvl.evaluate.inputs import pair_reports, read_reports

    options = options or ScoringOptions()
    chexbert = options.chexbert_labeler()
    refs = read_reports(references, "reference", ref_field)
    hyps = read_reports(hypotheses, "generated", hyp_field)
    pairs = pair_reports(refs, hyps, missing_as_empty, ref_name=str(references), hyp_name=str(hypotheses))
    t0 = time.time()
    score = _score(pairs.references, pairs.hypotheses, pairs.ids, None, options, None, chexbert=chexbert)
    extra = {
        "references": str(references),
        "hypotheses": str(hypotheses),
        "empty_hypotheses": pairs.empty_hypotheses,
        "missing_hypotheses": pairs.missing_hypotheses,
        "scoring_seconds": round(time.time() - t0, 2),
    }
    result = _result_dict(score, None, extra, options, None, None)
    if out_dir:
        rows = [
            {"id": sid, "reference": pairs.references[i], "generated": pairs.hypotheses[i], **score.per_study[i]}
            for i, sid in enumerate(pairs.ids)
        ]
        write_report_outputs(Path(out_dir), result, rows, options, f"medvl score: {Path(hypotheses).name}")
        result["out_dir"] = str(out_dir)
    return result


def _cell(value: Any) -> str:
    return f"{value:>10.4f}" if isinstance(value, float) else f"{'n/a':>10}"


def format_tables(result: dict[str, Any]) -> str:
    """The headline metrics with their 95% intervals, next to the majority-report baseline, then per-finding F1."""
    base = result.get("baseline")
    where = f"{result['split']} split, " if result.get("split") else f"{result.get('hypotheses', '')} vs references, "
    lines = [
        f"{where}{result['n_studies']} studies; CheXpert labels by {result['labeler']} "
        f"(uncertain = {result['uncertain_policy']}); text tokenized by {result['tokenizer']}",
        "",
    ]
    lines.append(f"{'metric':<22}{'value':>10}{'95% CI':>20}" + (f"{'baseline':>10}{'delta':>10}" if base else ""))
    for key in HEADLINE:
        if key not in result:
            continue
        value, low, high = result[key], result.get(f"{key}_ci_low"), result.get(f"{key}_ci_high")
        ci = f"[{low:.4f}, {high:.4f}]" if isinstance(low, float) and isinstance(high, float) else ""
        row = f"{key:<22}{_cell(value)}{ci:>20}"
        if base:
            b = base.get(key)
            delta = value - b if isinstance(value, float) and isinstance(b, float) else None
            row += _cell(b) + (f"{delta:>+10.4f}" if delta is not None else f"{'':>10}")
        lines.append(row)
    for key, reason in result.get("unavailable", {}).items():
        lines.append(f"{key}: unavailable ({reason})")
    lines += [
        "",
        "micro = pooled over all (study, finding) pairs; macro = mean over findings; example = per-study "
        "P/R/F1 averaged over studies",
        "",
    ]
    tables = [("CheXpert observation", result["per_finding"], result.get("baseline_per_finding"), None)]
    if "gt_per_finding" in result:
        tables.append(
            ("finding (ground truth)", result["gt_per_finding"], result.get("baseline_gt_per_finding"), FINDING_TITLES)
        )
    for title, per_finding, base_pf, titles in tables:
        lines.append(f"{title:<28}{'support':>8}{'P':>8}{'R':>8}{'F1':>8}" + (f"{'base F1':>9}" if base_pf else ""))
        for name, pf in per_finding.items():
            label = titles[name] if titles else name
            row = f"{label:<28}{pf['support']:>8}{pf['precision']:>8.3f}{pf['recall']:>8.3f}{pf['f1']:>8.3f}"
            if base_pf:
                row += f"{base_pf[name]['f1']:>9.3f}"
            lines.append(row)
        lines.append("")
    if base:
        lines.append(f"baseline = the most frequent training report, for every study: {result['baseline_report']!r}")
    return "\n".join(lines).rstrip()


def headline_f1_key(result: dict[str, Any]) -> str:
    """The clinical figure the quickstart judges by: ground-truth micro-F1 when the data set has labels."""
    return "gt_micro_f1" if "gt_micro_f1" in result else "ce_14_micro_f1"


def clinical_gap(result: dict[str, Any]) -> float:
    """Model minus baseline clinical micro-F1 (the quickstart's acceptance figure)."""
    key = headline_f1_key(result)
    return float(result[key] - result["baseline"][key])


__all__ = [
    "HEADLINE",
    "ScoringOptions",
    "clinical_gap",
    "evaluate_generated",
    "format_tables",
    "headline_f1_key",
    "score_files",
    "write_report_outputs",
]
