"""`medvl evaluate`: generate reports for a split, score them, and compare with the majority-report baseline.

Writes `metrics.json` (headline metrics of the model and of the baseline, per-finding precision/recall/F1, what was
evaluated and how) and `predictions.jsonl` (one row per study: id, reference, generated, ground-truth and generated
finding labels).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medvl.data.dataset import ReportDataset, check_studies, collate, epoch_batches
from medvl.data.sources import load_studies, require_split
from medvl.evaluate.baseline import majority_report
from medvl.evaluate.labeler import binary_labels
from medvl.evaluate.scoring import score_reports
from medvl.findings import FINDING_TITLES, FINDINGS
from medvl.infer.config import GenerationConfig
from medvl.infer.predictor import load_trained

HEADLINE = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "clinical_micro_precision",
            "clinical_micro_recall", "clinical_micro_f1", "clinical_macro_f1", "clinical_example_based_f1")


def evaluate(checkpoint: str | Path, split: str = "test", out_dir: str | Path | None = None,
             data_root: str | None = None, generation: dict[str, Any] | None = None, max_studies: int = 0,
             device: str = "auto", progress: bool = True, strict: bool | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on `split` of the data set it was trained on (or `data_root`); `strict` overrides
    the run's `data.strict` (stop at the first unusable study instead of skipping it)."""
    loaded = load_trained(checkpoint, device=device)
    cfg = loaded.config
    data_cfg = dataclasses.replace(cfg.data, root=data_root) if data_root else cfg.data
    if strict is not None:
        data_cfg = dataclasses.replace(data_cfg, strict=strict)
    gen = dataclasses.replace(cfg.generation, **(generation or {}))
    studies = load_studies(data_cfg)
    test, skipped = check_studies(require_split(studies, split), data_cfg.strict)
    if max_studies:
        test = test[:max_studies]
    train_reports = [s.report for s in studies.get("train", [])]

    mc = cfg.model
    dataset = ReportDataset(test, loaded.tokenizer, mc.image_size, mc.max_views, mc.max_len, strict=data_cfg.strict)
    refs, hyps, ids, truth_rows = [], [], [], []
    skipped_reasons = {s.id: s.reason for s in skipped}
    t0 = time.time()
    batches = epoch_batches(len(dataset), gen.batch_size, 0, 0, shuffle=False, drop_last=False)
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc=f"evaluate {split}", dynamic_ncols=True)
    for indices in iterator:
        batch = collate([dataset[i] for i in indices], max_views=mc.max_views, pad_id=loaded.tokenizer.pad_token_id)
        skipped_reasons.update({s.id: s.reason for s in batch.skipped})
        if len(batch) == 0:
            continue
        hyps += loaded.task.generate(batch.to(loaded.device), gen)
        refs += batch.reports
        ids += batch.ids
        truth_rows.append(batch.labels)
    seconds = time.time() - t0
    if not refs:
        raise RuntimeError(f"no study of split {split!r} could be evaluated ({len(skipped_reasons)} skipped)")
    truth = torch.cat(truth_rows).numpy() if all(t is not None for t in truth_rows) else None

    model_metrics, model_clinical = score_reports(refs, hyps, truth)
    result: dict[str, Any] = {
        "checkpoint": str(loaded.checkpoint), "split": split, "studies": len(refs), "skipped": skipped_reasons,
        "labels_from": "ground truth" if truth is not None else "rule-based labeler on the reference reports",
        "generation": dataclasses.asdict(gen), "seconds": round(seconds, 2),
        "reports_per_second": round(len(refs) / seconds, 2) if seconds > 0 else None,
        "model": model_metrics, "model_per_finding": model_clinical["per_finding"],
    }
    if train_reports:
        baseline = majority_report(train_reports)
        base_metrics, base_clinical = score_reports(refs, [baseline] * len(refs), truth)
        result.update({"baseline_report": baseline, "baseline": base_metrics,
                       "baseline_per_finding": base_clinical["per_finding"]})

    out = Path(out_dir) if out_dir else loaded.run_dir / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    generated_labels = binary_labels(hyps)
    reference_labels = truth if truth is not None else binary_labels(refs)
    with open(out / "predictions.jsonl", "w") as f:
        for i, sid in enumerate(ids):
            row = {"id": sid, "reference": refs[i], "generated": hyps[i],
                   "labels": {n: int(v) for n, v in zip(FINDINGS, reference_labels[i], strict=True)},
                   "generated_labels": {n: int(v) for n, v in zip(FINDINGS, generated_labels[i], strict=True)}}
            f.write(json.dumps(row) + "\n")
    result["out_dir"] = str(out)
    if skipped_reasons:
        print(f"{len(skipped_reasons)} studies of split {split!r} were skipped (listed in metrics.json)", file=sys.stderr)
    return result


def format_tables(result: dict[str, Any]) -> str:
    """The headline metrics next to the majority-report baseline, then per-finding F1."""
    has_base = "baseline" in result
    lines = [f"{result['split']} split, {result['studies']} studies ({result['labels_from']} labels)", ""]
    lines.append(f"{'metric':<28}{'model':>10}" + (f"{'baseline':>10}{'delta':>10}" if has_base else ""))
    for key in HEADLINE:
        if key not in result["model"]:
            continue
        m = result["model"][key]
        row = f"{key:<28}{m:>10.4f}"
        if has_base:
            b = result["baseline"][key]
            row += f"{b:>10.4f}{m - b:>+10.4f}"
        lines.append(row)
    lines += ["", f"{'finding':<22}{'support':>8}{'P':>8}{'R':>8}{'F1':>8}" + (f"{'base F1':>9}" if has_base else "")]
    for name in FINDINGS:
        pf = result["model_per_finding"][name]
        row = f"{FINDING_TITLES[name]:<22}{pf['support']:>8}{pf['precision']:>8.3f}{pf['recall']:>8.3f}{pf['f1']:>8.3f}"
        if has_base:
            row += f"{result['baseline_per_finding'][name]['f1']:>9.3f}"
        lines.append(row)
    if has_base:
        lines += ["", f"baseline = the most frequent training report, for every study: {result['baseline_report']!r}"]
    return "\n".join(lines)


def clinical_gap(result: dict[str, Any]) -> float:
    """Model minus baseline clinical micro-F1 (the quickstart's acceptance figure)."""
    return float(result["model"]["clinical_micro_f1"] - result["baseline"]["clinical_micro_f1"])


__all__ = ["evaluate", "format_tables", "clinical_gap"]
