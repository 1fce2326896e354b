"""`medvl evaluate`: generate reports for a split, score them, and compare with the majority-report baseline.

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
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvl.data.dataset import ReportDataset, check_studies, collate
from medvl.data.sources import load_studies, require_split
from medvl.evaluate.baseline import majority_report
from medvl.evaluate.chexpert import CHEXPERT_14
from medvl.evaluate.html_report import write_html_report
from medvl.evaluate.labeler import SYNTHETIC, binary_labels
from medvl.evaluate.ptb import java_missing_reason
from medvl.evaluate.scoring import CorpusScore, score_corpus
from medvl.evaluate.versions import scorer_versions
from medvl.findings import FINDING_TITLES
from medvl.infer.config import GenerationConfig
from medvl.infer.predictor import load_trained

HEADLINE = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_14_micro_precision",
            "ce_14_micro_recall", "ce_14_micro_f1", "ce_14_macro_f1", "ce_14_example_f1", "ce_5_micro_f1",
            "ce_5_macro_f1", "ce_5_example_f1", "gt_micro_precision", "gt_micro_recall", "gt_micro_f1",
            "gt_macro_f1", "gt_example_f1", "chexbert_14_micro_f1", "chexbert_14_macro_f1", "chexbert_14_example_f1",
            "chexbert_5_micro_f1", "chexbert_5_macro_f1", "chexbert_5_example_f1")


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


def _score(refs: Sequence[str], hyps: Sequence[str], ids: Sequence[str], truth: Any, options: ScoringOptions,
           meteor: Any, bootstrap: int | None = None, chexbert: Any = None) -> CorpusScore:
    return score_corpus(refs, hyps, ids=ids, true_labels=truth, tokenizer=options.tokenizer,
                        meteor=meteor or options.meteor,
                        bootstrap=options.bootstrap if bootstrap is None else bootstrap, seed=options.seed,
                        uncertain=options.uncertain, chexbert=chexbert)


def _result_dict(score: CorpusScore, split: str | None, extra: dict[str, Any], options: ScoringOptions,
                 baseline: CorpusScore | None, baseline_report: str | None) -> dict[str, Any]:
    unavailable = dict(score.unavailable)
    result: dict[str, Any] = {"split": split, "n_studies": score.info["n_studies"], **extra,
                              "labeler": score.info["labeler"], "uncertain_policy": score.info["uncertain_policy"],
                              "tokenizer": score.info["tokenizer"], "bootstrap": score.info["bootstrap"],
                              "versions": scorer_versions(), **score.metrics, "unavailable": unavailable,
                              "per_finding": score.per_finding["ce_14"]}
    if "gt" in score.per_finding:
        result["gt_per_finding"] = score.per_finding["gt"]
    if baseline is not None:
        result["baseline_report"] = baseline_report
        result["baseline"] = {k: v for k, v in baseline.metrics.items() if not k.endswith(("_ci_low", "_ci_high"))}
        result["baseline_per_finding"] = baseline.per_finding["ce_14"]
        if "gt" in baseline.per_finding:
            result["baseline_gt_per_finding"] = baseline.per_finding["gt"]
    return result


def _write_outputs(out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: ScoringOptions,
                   title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if options.html:
        write_html_report(out / "report.html", result, rows, label_names=CHEXPERT_14, title=title)


def evaluate(checkpoint: str | Path, split: str = "test", out_dir: str | Path | None = None,
             data_root: str | None = None, generation: dict[str, Any] | None = None, max_studies: int = 0,
             device: str = "auto", progress: bool = True, strict: bool | None = None,
             options: ScoringOptions | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on `split` of the data set it was trained on (or `data_root`); `strict` overrides
    the run's `data.strict` (stop at the first unusable study instead of skipping it).

    Under torchrun (`torchrun --nproc-per-node N -m medvl evaluate CKPT`) generation is split across the processes,
    rank 0 merges the reports (each study exactly once), scores and writes; the other ranks return {}.
    """
    from medvl.train.distributed import (barrier, gather_objects, init_distributed, merge_shards, shard_indices,
                                         shutdown)

    options = options or ScoringOptions()
    chexbert = options.chexbert_labeler()  # fails now, not after generation, when its paths are wrong
    # Under torchrun every rank generates for every world-size-th study; rank 0 merges, scores and writes.
    dist_info = init_distributed("auto", "cuda" if device.startswith("cuda") or (
        device == "auto" and torch.cuda.is_available()) else "cpu")
    if dist_info.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{dist_info.local_rank}"
    try:
        loaded = load_trained(checkpoint, device=device)
        cfg = loaded.config
        data_cfg = dataclasses.replace(cfg.data, root=data_root) if data_root else cfg.data
        if strict is not None:
            data_cfg = dataclasses.replace(data_cfg, strict=strict)
        gen: GenerationConfig = dataclasses.replace(cfg.generation, **(generation or {}))
        studies = load_studies(data_cfg)
        test, skipped = check_studies(require_split(studies, split), data_cfg.strict)
        if max_studies:
            test = test[:max_studies]
        train_reports = [s.report for s in studies.get("train", [])]
        image_paths = {s.id: [str(p) for p in s.image_paths] for s in test}

        mc = cfg.model
        dataset = ReportDataset(test, loaded.tokenizer, mc.image_size, mc.max_views, mc.max_len,
                                strict=data_cfg.strict)
        skipped_reasons = {s.id: s.reason for s in skipped}
        meteor = _meteor_handle(options) if dist_info.is_main else None  # loads while the model generates
        try:
            t0 = time.time()
            mine = shard_indices(len(dataset), dist_info.rank, dist_info.world_size)
            produced, load_skips = _generate(loaded, dataset, mine, gen, progress and dist_info.is_main, split)
            parts = gather_objects((produced, load_skips), dist_info)
            seconds = time.time() - t0
            if not dist_info.is_main:
                return {}
            for _, part_skips in parts:
                skipped_reasons.update(part_skips)
            failed = {i for i, study in enumerate(dataset.studies) if study.id in skipped_reasons}
            kept = [i for i in range(len(dataset)) if i not in failed]
            position = {i: k for k, i in enumerate(kept)}
            rows_in_order = merge_shards([[(position[i], row) for i, row in part] for part, _ in parts], len(kept))
            if not rows_in_order:
                raise RuntimeError(f"no study of split {split!r} could be evaluated ({len(skipped_reasons)} skipped)")
            ids = [r[0] for r in rows_in_order]
            refs = [r[1] for r in rows_in_order]
            hyps = [r[2] for r in rows_in_order]
            truth = np.stack([r[3] for r in rows_in_order]) if all(r[3] is not None for r in rows_in_order) \
                else None

            t1 = time.time()
            model_score = _score(refs, hyps, ids, truth, options, meteor, chexbert=chexbert)
            baseline_score = baseline = None
            if train_reports:
                baseline = majority_report(train_reports)
                baseline_score = _score(refs, [baseline] * len(refs), ids, truth, options, meteor, bootstrap=0,
                                        chexbert=chexbert)
            scoring_seconds = time.time() - t1
        finally:
            if meteor:
                meteor.close()
    finally:
        barrier(dist_info)
        shutdown()

    extra = {"checkpoint": str(loaded.checkpoint), "skipped": skipped_reasons,
             "labels_from": "data set ground truth (gt_*) and the CheXpert labeler on both texts (ce_*)"
             if truth is not None else "the CheXpert labeler on both texts (ce_*)",
             "generation": dataclasses.asdict(gen), "seconds": round(seconds, 2),
             "reports_per_second": round(len(refs) / seconds, 2) if seconds > 0 else None,
             "scoring_seconds": round(scoring_seconds, 2)}
    result = _result_dict(model_score, split, extra, options, baseline_score, baseline)
    rows = []
    generated_findings = binary_labels(hyps, options.uncertain, SYNTHETIC) if truth is not None else None
    for i, (sid, per_study) in enumerate(zip(ids, model_score.per_study, strict=True)):
        row = {"id": sid, "image_paths": image_paths.get(sid, []), "reference": refs[i], "generated": hyps[i],
               **per_study}
        if truth is not None:
            row["findings"] = {n: int(v) for n, v in zip(SYNTHETIC.names, truth[i], strict=True)}
            row["generated_findings"] = {n: int(v) for n, v in zip(SYNTHETIC.names, generated_findings[i],
                                                                    strict=True)}
        rows.append(row)
    out = Path(out_dir) if out_dir else loaded.run_dir / f"eval_{split}"
    _write_outputs(out, result, rows, options, f"medvl evaluation: {Path(str(loaded.checkpoint)).name}, {split}")
    result["out_dir"] = str(out)
    if skipped_reasons:
        print(f"{len(skipped_reasons)} studies of split {split!r} were skipped (listed in metrics.json)",
              file=sys.stderr)
    return result


def score_files(references: str | Path, hypotheses: str | Path, out_dir: str | Path | None = None,
                options: ScoringOptions | None = None, missing_as_empty: bool = False, ref_field: str | None = None,
                hyp_field: str | None = None) -> dict[str, Any]:
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
    extra = {"references": str(references), "hypotheses": str(hypotheses),
             "empty_hypotheses": pairs.empty_hypotheses, "missing_hypotheses": pairs.missing_hypotheses,
             "scoring_seconds": round(time.time() - t0, 2)}
    result = _result_dict(score, None, extra, options, None, None)
    if out_dir:
        rows = [{"id": sid, "reference": pairs.references[i], "generated": pairs.hypotheses[i], **score.per_study[i]}
                for i, sid in enumerate(pairs.ids)]
        _write_outputs(Path(out_dir), result, rows, options, f"medvl score: {Path(hypotheses).name}")
        result["out_dir"] = str(out_dir)
    return result


def _generate(loaded: Any, dataset: ReportDataset, indices: list[int], gen: GenerationConfig, progress: bool,
              split: str) -> tuple[list[tuple[int, tuple]], dict[str, str]]:
    """Reports for dataset items `indices`: ([(index, (id, reference, generated, labels or None))], skipped)."""
    mc = loaded.config.model
    out: list[tuple[int, tuple]] = []
    skipped: dict[str, str] = {}
    batches = [indices[i: i + gen.batch_size] for i in range(0, len(indices), gen.batch_size)]
    iterator: Any = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc=f"evaluate {split}", dynamic_ncols=True)
    for chunk in iterator:
        batch = collate([dataset[i] for i in chunk], max_views=mc.max_views, pad_id=loaded.tokenizer.pad_token_id)
        skipped.update({s.id: s.reason for s in batch.skipped})
        if len(batch) == 0:
            continue
        hyps = loaded.task.generate(batch.to(loaded.device), gen)
        labels = batch.labels.cpu().numpy() if batch.labels is not None else None
        by_id = {sid: k for k, sid in enumerate(batch.ids)}
        for i in chunk:
            sid = dataset.studies[i].id
            if sid in by_id:
                k = by_id[sid]
                out.append((i, (sid, batch.reports[k], hyps[k], None if labels is None else labels[k])))
    return out, skipped


def _cell(value: Any) -> str:
    return f"{value:>10.4f}" if isinstance(value, float) else f"{'n/a':>10}"


def format_tables(result: dict[str, Any]) -> str:
    """The headline metrics with their 95% intervals, next to the majority-report baseline, then per-finding F1."""
    base = result.get("baseline")
    where = f"{result['split']} split, " if result.get("split") else f"{result.get('hypotheses', '')} vs references, "
    lines = [f"{where}{result['n_studies']} studies; CheXpert labels by {result['labeler']} "
             f"(uncertain = {result['uncertain_policy']}); text tokenized by {result['tokenizer']}", ""]
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
    lines += ["", "micro = pooled over all (study, finding) pairs; macro = mean over findings; example = per-study "
              "P/R/F1 averaged over studies", ""]
    tables = [("CheXpert observation", result["per_finding"], result.get("baseline_per_finding"), None)]
    if "gt_per_finding" in result:
        tables.append(("finding (ground truth)", result["gt_per_finding"], result.get("baseline_gt_per_finding"),
                       FINDING_TITLES))
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


__all__ = ["HEADLINE", "ScoringOptions", "clinical_gap", "evaluate", "format_tables", "headline_f1_key", "score_files"]
