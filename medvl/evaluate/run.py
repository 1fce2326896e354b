"""`medvl evaluate`: run a trained model over a split and let its task score it, next to the task's baseline.

The runner is the same for every task (`medvl.tasks.base.Task`): it loads the checkpoint and the data set it was
trained on (or `data_root`), keeps the studies the task can use, runs `task.outputs` over every split the task asks
for (`task.eval_splits`: the evaluated split, plus validation when a task chooses thresholds there), and hands the
rows to `task.evaluation`, which returns the metrics.json dict and the predictions rows; `task.write_evaluation`
writes metrics.json, predictions.jsonl and report.html into the output folder (default RUN/eval_SPLIT).

Under torchrun (`torchrun --nproc-per-node N -m medvl evaluate CKPT`) each rank runs every world-size-th study; rank 0
merges the rows (each study exactly once, checked), scores and writes; the other ranks return {}.

Report scoring (`score_files`, `format_tables`, the options) lives in `medvl.evaluate.reports` and is re-exported.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medvl.data.dataset import check_studies
from medvl.data.sources import DataSourceError, load_studies, require_split
from medvl.evaluate.reports import HEADLINE, ScoringOptions, clinical_gap, format_tables, headline_f1_key, score_files
from medvl.infer.predictor import LoadedModel, load_trained


def _outputs(
    loaded: LoadedModel, dataset: Any, indices: list[int], progress: bool, desc: str
) -> tuple[list[tuple[int, Any]], dict[str, str]]:
    """Task output rows for dataset items `indices`: ([(index, row)], {skipped id: reason})."""
    task, bs = loaded.task, loaded.config.generation.batch_size
    out: list[tuple[int, Any]] = []
    skipped: dict[str, str] = {}
    chunks = [indices[i : i + bs] for i in range(0, len(indices), bs)]
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=desc, dynamic_ncols=True)
    for chunk in chunks:
        batch = task.collate([dataset[i] for i in chunk])
        skipped.update({s.id: s.reason for s in batch.skipped})
        if len(batch) == 0:
            continue
        rows = task.outputs(batch.to(loaded.device))
        by_id = dict(zip(batch.ids, rows, strict=True))
        out += [(i, by_id[dataset.studies[i].id]) for i in chunk if dataset.studies[i].id in by_id]
    return out, skipped


def evaluate(
    checkpoint: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    data_root: str | None = None,
    generation: dict[str, Any] | None = None,
    max_studies: int = 0,
    device: str = "auto",
    progress: bool = True,
    strict: bool | None = None,
    options: ScoringOptions | None = None,
    data_source: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on `split` of the data set it was trained on (or `data_root`); see the module docstring.

    Args:
        checkpoint: a checkpoint directory, a run directory (its best checkpoint) or a `medvl export` folder.
        split: "train", "val" or "test" of the data set.
        out_dir: where metrics.json, predictions.jsonl and report.html go (default: RUN/eval_SPLIT).
        data_root: read the data set from here instead of the path recorded in the checkpoint (same source).
        generation: overrides of the checkpoint's generation settings (e.g. num_beams) for generative tasks.
        max_studies: evaluate at most this many studies of each split (0 = all).
        strict: overrides the run's `data.strict` (stop at the first unusable study instead of skipping it).
        data_source: read `data_root` (or the training root) as this data source instead of the training one (a
            VQA model trained on a mixture, scored on a folder with VQA-RAD's official testset.json).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        progress: show a progress bar.
        options: report scoring (bootstrap resamples and seed, METEOR, PTB tokenizer, uncertain policy, CheXbert
            labeler, HTML report) for report tasks.

    Returns:
        The metrics.json dict (plus `out_dir`), on rank 0; {} on the other ranks.

    Raises:
        DataSourceError: the split is absent, or the source cannot provide what the task needs.
    """
    from medvl.train.distributed import barrier, gather_objects, init_distributed, merge_shards, shard_indices, shutdown

    options = options or ScoringOptions()
    options.chexbert_labeler()  # fails now, not after the model ran, when its paths are wrong
    dist_info = init_distributed(
        "auto", "cuda" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if dist_info.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{dist_info.local_rank}"
    # Whether every rank got through the gathers: only then do the ranks meet at the barrier below. A rank that fails
    # before (loading, generating) exits at once, and torchrun stops the others; meeting it at a barrier while they
    # wait in a gather would hang until the process group's timeout.
    gathered = False
    try:
        loaded = load_trained(checkpoint, device=device, generation=generation)
        cfg, task = loaded.config, loaded.task
        data_cfg = dataclasses.replace(cfg.data, root=data_root) if data_root else cfg.data
        if data_source:  # another layout than the training data's, e.g. the official VQA-RAD testset.json
            data_cfg = dataclasses.replace(data_cfg, source=data_source, mixture=[])
        if strict is not None:
            data_cfg = dataclasses.replace(data_cfg, strict=strict)
        # The task builds its datasets from its config: give it the data read here, so that an image that exists but
        # does not decode stops a strict evaluation too (the training run's data.strict applied to it before).
        task.cfg = dataclasses.replace(task.cfg, data=data_cfg)
        from medvl.data.sources import check_provides

        check_provides(data_cfg.source, task.needs, task.name)
        studies = load_studies(data_cfg)
        require_split(studies, split)
        if dist_info.is_main and task.scores_text():
            options.warm_up()  # METEOR's JVM loads while the model generates
        skipped_reasons: dict[str, str] = {}
        outputs: dict[str, list[Any]] = {}
        kept_in_split = 0
        t0 = time.time()
        for name in task.eval_splits(split, [k for k, v in studies.items() if v]):
            kept, skipped = check_studies(studies[name], data_cfg.strict, task.usable, task.takes_text_only)
            kept = kept[:max_studies] if max_studies else kept
            if name == split:
                kept_in_split = len(kept)
                skipped_reasons.update({s.id: s.reason for s in skipped})
            dataset = task.dataset(kept)
            mine = shard_indices(len(dataset), dist_info.rank, dist_info.world_size)
            produced, load_skips = _outputs(loaded, dataset, mine, progress and dist_info.is_main, f"evaluate {name}")
            parts = gather_objects((produced, load_skips), dist_info)
            if not dist_info.is_main:
                continue
            failed: dict[str, str] = {}
            for _, part_skips in parts:
                failed.update(part_skips)
            if name == split:
                skipped_reasons.update(failed)
            order = [i for i, study in enumerate(dataset.studies) if study.id not in failed]
            position = {i: k for k, i in enumerate(order)}
            outputs[name] = merge_shards([[(position[i], row) for i, row in part] for part, _ in parts], len(order))
        gathered = True
        seconds = time.time() - t0
        if not dist_info.is_main:
            return {}
        if not outputs.get(split):
            first = next(iter(skipped_reasons.items()), None)
            if first is None:  # studies were read, but the task made nothing to evaluate of them
                raise DataSourceError(
                    f"none of the {kept_in_split} studies of split {split!r} ({data_cfg.source}) holds what task "
                    f"{task.name!r} evaluates (a VQA model needs questions with answers, a report model reports); "
                    "evaluate on the data it was trained on, or pass --data-source/--data-root of such a data set"
                )
            raise DataSourceError(
                f"no study of split {split!r} could be evaluated: {len(skipped_reasons)} skipped"
                + (f" (first: {first[0]}: {first[1]})" if first else "")
            )
        n = len(outputs[split])
        extra = {
            "split": split,
            "task": task.name,
            "checkpoint": str(loaded.checkpoint),
            "skipped": skipped_reasons,
            "seconds": round(seconds, 2),
            "examples_per_second": round(n / seconds, 2) if seconds > 0 else None,
        }
        if hasattr(task, "generation"):  # decoding settings, for the tasks that generate text
            extra["generation"] = dataclasses.asdict(task.generation)
        result, rows = task.evaluation(outputs, studies, options)
        result = {**extra, **{k: v for k, v in result.items() if v is not None or k not in extra}}
    finally:
        options.close()
        if gathered:  # rank 0 scores alone after the gathers; the others wait for it here, even when it fails
            barrier(dist_info)
        shutdown()

    out = Path(out_dir) if out_dir else loaded.run_dir / f"eval_{split}"
    task.write_evaluation(out, result, rows, options, f"medvl evaluation: {Path(str(loaded.checkpoint)).name}, {split}")
    result["out_dir"] = str(out)
    if skipped_reasons:
        print(
            f"{len(skipped_reasons)} studies of split {split!r} were skipped (listed in metrics.json)", file=sys.stderr
        )
    return result


def format_result(result: dict[str, Any]) -> str:
    """The terminal tables of an `evaluate` result, rendered by the task that produced it."""
    from medvl.tasks import task_class

    return task_class(result.get("task", "report_generation")).format_evaluation(result)


def refuse_checkpoint(path: str | Path, flag: str) -> None:
    """`medvl score` scores report files; a checkpoint or run folder given instead is refused with the way out.

    Raises:
        ValueError: `path` is a checkpoint, an export or a run folder (the message names its task).
    """
    from medvl.infer.predictor import resolve_checkpoint
    from medvl.train.checkpoint import read_meta

    p = Path(path)
    if not p.is_dir():
        return
    try:
        meta = read_meta(resolve_checkpoint(p))
    except Exception:  # noqa: BLE001 - not a readable checkpoint: read_reports says what is wrong with it
        return
    config = meta.get("config", {})
    family = config.get("model", {}).get("family", "?")
    from medvl.models.families import MODEL_FAMILIES

    task = config.get("task", {}).get("name") or (MODEL_FAMILIES.get(family).task if family in MODEL_FAMILIES else "?")
    raise ValueError(
        f"{flag} {p} is a checkpoint (family {family}, task {task}), not a file of reports: medvl score "
        f"compares report files; to evaluate a checkpoint run `medvl evaluate {p}`"
    )


__all__ = [
    "HEADLINE",
    "ScoringOptions",
    "clinical_gap",
    "evaluate",
    "format_result",
    "format_tables",
    "headline_f1_key",
    "refuse_checkpoint",
    "score_files",
]
