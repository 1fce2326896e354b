"""Generating the synthetic data set on disk in the R2Gen IU X-ray layout.

Contract of `generate_dataset(out_dir, n, ...)`:
- Writes out_dir/images/<id>/0.png (frontal) and 1.png (lateral, unless lateral=False), uint8 grayscale
  image_size x image_size; then out_dir/dataset_info.json; then out_dir/annotation.json ({"train": [...], "val": [...],
  "test": [...]}), whose records carry id, report, image_path (relative to images/), split, labels (every finding
  0/1), findings_detail (attributes of the positives) and views. annotation.json is written last and atomically,
  so whenever it exists, every image it names exists.
- Study i is drawn from `np.random.default_rng([seed, i])` alone (labels, report, then images from two streams it
  spawns), so the output is bit-identical whatever the number of worker processes.
- Splits: the first round(f_train * n) studies of a permutation seeded by (seed, n) are train, the next
  round(f_val * n) val, the rest test.
- Refuses a non-empty directory that is not a previous output of this generator (FileExistsError, nothing is
  touched); a previous synthetic set there is replaced (its annotation.json and images/ are removed first). A
  marker dataset_info.json ({"generator", "version", "complete": false}) is written before any image, so the
  directory of an interrupted run is recognized and replaced by the next run.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medvl.data.synth.anatomy import Frontal, Lateral, expose
from medvl.data.synth.lesions import anatomy_overrides, draw_frontal, draw_lateral, plan_lesions
from medvl.data.synth.reports import write_report
from medvl.data.synth.sampling import StudySpec, sample_study
from medvl.data.workers import default_workers, map_in_order
from medvl.findings import FINDINGS

GENERATOR = "medvl.data.synth"
VERSION = 1
SPLITS = ("train", "val", "test")
MIN_IMAGE_SIZE = 64
_SPLIT_TAG = 0x5B117  # makes the split permutation's seed sequence distinct from every study's


def render_study(spec: StudySpec, rng: np.random.Generator, image_size: int, lateral: bool = True) -> list[np.ndarray]:
    """The views of one study as uint8 arrays: [frontal] or [frontal, lateral]."""
    # Separate streams for the patient (anatomy, pose, exposure) and the lesions: the same study drawn with and
    # without a finding differs only by that finding's evidence.
    patient, lesions = rng.spawn(2)
    plan = plan_lesions(spec, lesions)
    chest = Frontal.build(patient, image_size, **anatomy_overrides(spec))
    draw_frontal(chest, spec, plan, lesions)
    views = [expose(chest.final_density(), patient)]
    if lateral:
        side = Lateral.build(patient, image_size, ctr=chest.extras["ctr"], mm=chest.mm)
        draw_lateral(side, spec, plan, lesions)
        views.append(expose(side.final_density(), patient))
    return views


def study_id(index: int) -> str:
    return f"synth_{index + 1:06d}"


def make_study(seed: int, index: int, image_size: int, lateral: bool = True) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Record (without split) and images of study `index`; deterministic in (seed, index, image_size, lateral)."""
    rng = np.random.default_rng([seed, index])
    spec = sample_study(rng)
    report = write_report(spec, rng)
    views = render_study(spec, rng, image_size, lateral)
    sid = study_id(index)
    record = {
        "id": sid,
        "report": report,
        "image_path": [f"{sid}/{k}.png" for k in range(len(views))],
        "labels": dict(spec.labels),
        "findings_detail": spec.details,
        "views": ["PA", "LATERAL"][: len(views)],
    }
    return record, views


def _tune_worker_malloc() -> None:
    """Pool initializer: keep freed image-sized buffers on the heap in worker processes (glibc only).

    Every drawing step allocates a few image-sized temporaries; by default glibc maps and unmaps each of them,
    and the resulting page faults cost about a third of the run time. Only our own worker processes are tuned.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD: mmap only blocks above 16 MiB
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: return memory to the OS only above 256 MiB free
    except (OSError, AttributeError):  # not glibc: the defaults are merely slower
        pass


def _write_study(task: tuple[int, int, int, bool, str]) -> dict[str, Any]:
    """Worker: draw one study, write its PNGs, return its record."""
    seed, index, image_size, lateral, images_dir = task
    record, views = make_study(seed, index, image_size, lateral)
    folder = Path(images_dir) / record["id"]
    folder.mkdir(parents=True, exist_ok=True)
    for rel, img in zip(record["image_path"], views):
        Image.fromarray(img, "L").save(Path(images_dir) / rel, compress_level=1)  # level 1: 2x faster, 12% larger
    return record


def assign_splits(n: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Split name of each study index: a seeded permutation cut by the fractions."""
    n_train = int(round(fractions[0] * n))
    n_val = min(int(round(fractions[1] * n)), n - n_train)
    order = np.random.default_rng([seed, n, _SPLIT_TAG]).permutation(n)
    out = [""] * n
    for rank, index in enumerate(order):
        out[int(index)] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


def _is_synthetic_set(root: Path) -> bool:
    try:
        info = json.loads((root / "dataset_info.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("generator") == GENERATOR


def _prepare(root: Path) -> None:
    """Make `root` ready for a new set without ever deleting files this generator did not write."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"{root} exists and is not a directory; pick a new or empty directory for the synthetic data set"
        )
    if root.is_dir() and any(root.iterdir()):
        if not _is_synthetic_set(root):
            raise FileExistsError(
                f"{root} is not empty and holds no synthetic data set written by {GENERATOR} "
                "(no dataset_info.json from it); pick an empty or new directory, so no files of "
                "yours are overwritten"
            )
        (root / "annotation.json").unlink(missing_ok=True)  # first: never an annotation pointing at deleted images
        images = root / "images"
        if images.is_dir():
            shutil.rmtree(images)
        elif images.exists():
            images.unlink()
    root.mkdir(parents=True, exist_ok=True)
    # Mark the directory as ours right away, so a crashed run can be replaced by the next one.
    _write_json(root / "dataset_info.json", {"generator": GENERATOR, "version": VERSION, "complete": False})


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _check_args(
    n: int, seed: int, image_size: int, split_fractions: tuple[float, float, float], workers: int | None
) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of studies, got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer >= {MIN_IMAGE_SIZE} pixels (anatomy is not drawable "
            f"smaller), got {image_size!r}"
        )
    fr = tuple(float(f) for f in split_fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(
            f"split_fractions must be three non-negative numbers (train, val, test) summing to 1, "
            f"got {split_fractions!r}"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for min(cpu count, 4)), got {workers!r}")


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    image_size: int = 256,
    lateral: bool = True,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Draw `n` synthetic chest X-ray studies with reports and labels into `out_dir` (R2Gen IU X-ray layout).

    Args:
        out_dir: new, empty, or previous-output directory (a previous synthetic set there is replaced).
        n: number of studies.
        seed: generator seed; the same seed gives bit-identical files.
        image_size: side of the square PNGs in pixels (>= 64).
        lateral: also draw a lateral view (1.png) per study.
        split_fractions: (train, val, test) fractions, summing to 1.
        workers: processes; None = min(cpu count, 4). The output does not depend on it.
        progress: show a tqdm progress bar.

    Returns:
        The info dict also written to out_dir/dataset_info.json.

    Raises:
        ValueError: bad n, seed, image_size, split_fractions or workers.
        FileExistsError: out_dir is non-empty and not a previous output of this generator.
    """
    _check_args(n, seed, image_size, split_fractions, workers)
    n, image_size, seed = int(n), int(image_size), int(seed)
    root = Path(out_dir)
    _prepare(root)
    images = root / "images"
    images.mkdir()
    workers = default_workers(workers, n)
    tasks = [(seed, i, image_size, bool(lateral), str(images)) for i in range(n)]

    t0 = time.perf_counter()
    records: list[dict[str, Any]] = map_in_order(
        _write_study, tasks, workers, "synthetic studies", "study", progress, initializer=_tune_worker_malloc
    )
    seconds = time.perf_counter() - t0

    splits = assign_splits(n, seed, tuple(split_fractions))
    annotation: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for record, split in zip(records, splits):
        annotation[split].append(
            {
                "id": record["id"],
                "report": record["report"],
                "image_path": record["image_path"],
                "split": split,
                "labels": record["labels"],
                "findings_detail": record["findings_detail"],
                "views": record["views"],
            }
        )
    info = {
        "generator": GENERATOR,
        "version": VERSION,
        "n": n,
        "seed": seed,
        "image_size": image_size,
        "lateral": bool(lateral),
        "views": ["PA", "LATERAL"] if lateral else ["PA"],
        "split_fractions": [float(f) for f in split_fractions],
        "splits": {name: len(annotation[name]) for name in SPLITS},
        "prevalence": {f: round(sum(r["labels"][f] for r in records) / n, 4) for f in FINDINGS},
        "findings": list(FINDINGS),
        "seconds": round(seconds, 2),
        "complete": True,
    }
    _write_json(root / "dataset_info.json", info)
    _write_json(root / "annotation.json", annotation)
    return info
