"""Validation and evaluation of the instructed-generation task, per sub-task, with the standard scorers:
captions and summaries through `medvl.evaluate.reports` (next to the majority-report baseline), VQA accuracy closed /
open / overall (`medvl.evaluate.vqa`, next to the majority answer per question type), classification through
`medvl.evaluate.classification` (candidate scores softmaxed over the class names, next to the prevalence baseline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from medvl.data.study import Study
from medvl.tasks.instructions import normalize_answer, positive_classes, subtasks_of


def _by_task(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def _class_targets(
    rows: Sequence[dict[str, Any]], class_names: Sequence[str], multi_label: bool, none_class: str
) -> np.ndarray:
    """int [N, K] targets: multi-label 1/0 per class; multi-class one-hot (a row of -1 when not exactly one)."""
    out = np.zeros((len(rows), len(class_names)), dtype=np.int64)
    for i, r in enumerate(rows):
        study = Study(id="", image_paths=(), report="", split="", view_ids=(), labels=r["labels"])
        positive = positive_classes(study, class_names, none_class)
        for name in positive:
            out[i, class_names.index(name)] = 1
        if not multi_label and len(positive) != 1:
            out[i] = -1
    return out


def validation_metrics(rows: Sequence[dict[str, Any]], n_codes: int = 0) -> dict[str, float]:
    """Cheap per-sub-task metrics: exact-match accuracy of vqa and classification answers, BLEU-4 of captions, code
    accuracy and NLL of mim (`medvl.tasks.mim.mim_metrics`)."""
    metrics: dict[str, float] = {}
    for task, mine in _by_task(rows).items():
        if task == "mim":
            from medvl.tasks.mim import mim_metrics

            metrics |= mim_metrics(mine, n_codes)
        elif task in ("vqa", "classification"):
            hits = [normalize_answer(r["generated"]) == normalize_answer(r["reference"]) for r in mine]
            metrics[f"{task}_accuracy"] = float(np.mean(hits))
        else:
            from medvl.evaluate.scoring import score_reports

            headline, _ = score_reports([r["reference"] for r in mine], [r["generated"] for r in mine])
            metrics |= {f"{task}_{k}": v for k, v in headline.items() if k.startswith("bleu")}
    return metrics


def vqa_result(rows: Sequence[dict[str, Any]], train: Sequence[Study], options: Any) -> tuple[dict[str, Any], list]:
    """Closed / open / overall accuracy with intervals, next to the majority answer per question type fitted on the
    training questions; one prediction row per question."""
    from medvl.evaluate.vqa import majority_baselines, vqa_accuracy
    from medvl.evaluate.vqa import normalize_answer as vqa_normal

    answer_types = [r["answer_type"] or "open" for r in rows]
    question_types = [r["question_type"] or "" for r in rows]
    section = vqa_accuracy(
        [r["generated"] for r in rows],
        [r["reference"] for r in rows],
        answer_types,
        question_types,
        bootstrap=options.bootstrap,
        seed=options.seed,
    )
    if train:
        meta = [s.meta or {} for s in train]
        section["baselines"] = majority_baselines(
            {
                "answers": [s.answer for s in train],
                "answer_types": [m.get("answer_type") or "open" for m in meta],
                "question_types": [m.get("question_type") or "" for m in meta],
                "questions": [s.question for s in train],
            },
            {
                "answers": [r["reference"] for r in rows],
                "answer_types": answer_types,
                "question_types": question_types,
                "questions": [r["question"] for r in rows],
            },
            bootstrap=options.bootstrap,
            seed=options.seed,
        )
    preds = [
        {
            "id": r["id"],
            "question": r["question"],
            "answer": r["reference"],
            "generated": r["generated"],
            "answer_type": t,
            "question_type": q,
            "correct": vqa_normal(r["generated"]) == vqa_normal(r["reference"]),
        }
        for r, t, q in zip(rows, answer_types, question_types, strict=True)
    ]
    return section, preds


def _finding_truth(rows: Sequence[dict[str, Any]], studies: dict[str, list[Study]]) -> np.ndarray | None:
    """int [N, len(FINDINGS)] ground-truth findings of the captioned studies when every one of them carries a label
    for each of `medvl.findings.FINDINGS` (the synthetic set), so reports are scored against the truth (gt_*) as the
    report-generation task scores them; else None (the labeler on both texts only, ce_*)."""
    from medvl.findings import FINDINGS

    labels = {s.id: s.labels for split in studies.values() for s in split}
    truth = []
    for r in rows:
        study = labels.get(r["id"].rsplit("#", 1)[0] if r["id"] not in labels else r["id"])
        if not study or any(f not in study for f in FINDINGS):
            return None
        truth.append([int(study[f]) for f in FINDINGS])
    return np.array(truth, dtype=np.int64) if truth else None


def evaluation(
    rows: Sequence[dict[str, Any]],
    studies: dict[str, list[Study]],
    options: Any,
    class_names: Sequence[str],
    multi_label: bool,
    none_class: str,
    answers: Sequence[str],
    n_codes: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics.json dict with one section per sub-task, prediction rows with their `task`)."""
    train = studies.get("train", [])
    paths = {s.id: [str(p) for p in s.image_paths] for split in studies.values() for s in split}
    paths |= {f"{sid}#{t}": p for sid, p in list(paths.items()) for t in ("caption", "vqa", "classification", "mim")}
    result: dict[str, Any] = {"n_examples": len(rows), "subtasks": sorted({r["task"] for r in rows})}
    predictions: list[dict[str, Any]] = []
    for task, mine in _by_task(rows).items():
        if task in ("caption", "summarization"):
            from medvl.evaluate.reports import evaluate_generated

            train_texts = [
                s.report if task == "caption" else s.answer for s in train if task in subtasks_of(s, (task,))
            ]
            section, preds = evaluate_generated(
                [r["id"] for r in mine],
                [r["reference"] for r in mine],
                [r["generated"] for r in mine],
                _finding_truth(mine, studies) if task == "caption" else None,
                train_texts,
                options,
                image_paths=paths,
            )
        elif task == "mim":
            from medvl.tasks.mim import mim_metrics

            mim: dict[str, Any] = {**mim_metrics(mine, n_codes), "n_codes": n_codes, "n_examples": len(mine)}
            mim["baselines"] = "mim_uniform_nll: log K; mim_unigram_nll: entropy of this split's code frequencies"
            section = mim
            keys = ("id", "generated", "reference", "nll")
            preds = [{k: r[k] for k in keys} for r in mine]
        elif task == "vqa":
            section, preds = vqa_result(mine, [s for s in train if "vqa" in subtasks_of(s, ("vqa",))], options)
            outside = sum(normalize_answer(r["generated"]) not in set(answers) for r in mine)
            section["outside_candidates"] = int(outside)
        else:
            section, preds = _classification(mine, train, options, class_names, multi_label, none_class)
        result[task] = section
        predictions += [{"task": task, **p} for p in preds]
    return result, predictions


def _classification(
    rows: Sequence[dict[str, Any]],
    train: Sequence[Study],
    options: Any,
    class_names: Sequence[str],
    multi_label: bool,
    none_class: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from medvl.evaluate.classification import baseline_probs, classification_metrics

    names = list(class_names)
    probs = np.stack([r["probs"] for r in rows])
    targets = _class_targets(rows, names, multi_label, none_class)
    section = classification_metrics(probs, targets, names, multi_label, bootstrap=options.bootstrap, seed=options.seed)
    section["scores"] = "candidate log-likelihoods softmaxed over the class names"
    labelled = [{"labels": s.labels} for s in train if s.labels]
    if labelled:
        train_targets = _class_targets(labelled, names, multi_label, none_class)
        base = classification_metrics(
            baseline_probs(train_targets, len(rows), multi_label), targets, names, multi_label, bootstrap=0
        )
        section["baseline"] = {k: v for k, v in base.items() if isinstance(v, (int, float)) and v is not None}
        section["baseline_name"] = "prevalence" if multi_label else "majority class"
    preds = [
        {
            "id": r["id"],
            "generated": r["generated"],
            "reference": r["reference"],
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, r["probs"], strict=True)},
        }
        for r in rows
    ]
    return section, preds


def format_evaluation(result: dict[str, Any]) -> str:
    """One block per sub-task: its headline numbers (the full sections are in metrics.json)."""
    lines = []
    for task in result.get("subtasks", []):
        section = result.get(task, {})
        if task == "vqa":
            from medvl.evaluate.vqa import format_vqa

            lines.append("vqa:\n" + format_vqa(section, section.get("baselines")))
            continue
        flat = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in section.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "_ci_" not in k
        }
        lines.append(f"{task}: {json.dumps(flat)}")
    return "\n".join(lines)


__all__ = ["evaluation", "format_evaluation", "validation_metrics", "vqa_result"]
