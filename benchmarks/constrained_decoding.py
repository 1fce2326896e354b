"""Trie-constrained beam search against unconstrained beam search for VQA answers, in the same run.

One trained unified-family checkpoint (e.g. runs/biomedgpt_vqa_tiny_synthetic from its recipe), one split of its
data set, the same batches and beam width: answers are decoded (1) under the prefix trie of the candidate answers
(train + val answers, as the task trains and evaluates) and (2) without constraint; then (3) by scoring every
candidate. For each: seconds, answers per second, answers outside the candidate set, and accuracy (closed / open /
overall, `medvl.evaluate.vqa`). Ratios are constrained / unconstrained.

    .venv/bin/python benchmarks/constrained_decoding.py runs/biomedgpt_vqa_tiny_synthetic [--split test]
        [--beams 3] [--max-questions 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from medvl.data.dataset import check_studies
from medvl.data.sources import load_studies
from medvl.evaluate.vqa import normalize_answer, vqa_accuracy
from medvl.infer.predictor import load_trained


def decode(task, dataset, batch_size: int, mode: str) -> tuple[list[dict], float]:
    """Rows of every VQA example, decoded by `mode` (trie, free or score), and the seconds it took."""
    task.options = dataclasses.replace(
        task.options, constrain=mode != "free", candidate_decoding="score" if mode == "score" else "beam"
    )
    rows, t0 = [], time.perf_counter()
    for start in range(0, len(dataset), batch_size):
        batch = task.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        with torch.inference_mode():
            rows += task.outputs(batch.to(next(task.model.parameters()).device))
    return rows, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-questions", type=int, default=0, help="0 = the whole split")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_trained(args.checkpoint, device="cpu", generation={"num_beams": args.beams})
    task = loaded.task
    studies, _ = check_studies(load_studies(loaded.config.data)[args.split], False, task.usable, task.takes_text_only)
    vqa = [s for s in studies if s.question and s.image_paths]
    vqa = vqa[: args.max_questions] if args.max_questions else vqa
    dataset = task.dataset(vqa)
    candidates = set(task.answers)
    decode(task, dataset, args.batch_size, "trie")  # warm-up: image cache, first-call allocations
    results = {}
    for mode in ("trie", "free", "score"):
        rows, seconds = decode(task, dataset, args.batch_size, mode)
        rows = [r for r in rows if r["task"] == "vqa"]
        acc = vqa_accuracy(
            [r["generated"] for r in rows],
            [r["reference"] for r in rows],
            [r["answer_type"] or "open" for r in rows],
            bootstrap=0,
        )
        results[mode] = {
            "questions": len(rows),
            "seconds": round(seconds, 3),
            "answers_per_second": round(len(rows) / seconds, 1),
            "outside_candidates": sum(normalize_answer(r["generated"]) not in candidates for r in rows),
            "accuracy": acc["accuracy"],
            "closed_accuracy": acc["closed_accuracy"],
            "open_accuracy": acc["open_accuracy"],
        }
    results["trie_vs_free_time_ratio"] = round(results["trie"]["seconds"] / results["free"]["seconds"], 3)
    results["setup"] = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "beams": args.beams,
        "candidates": len(candidates),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
