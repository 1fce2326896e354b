"""From studies to model batches: checking, decoding, tokenizing, padding, and the epoch order.

Views are decoded from their files, or, for a prepared data set (`Study.image_store`), read from its memory-mapped
images.npy, already decoded and resized once by `medvl data prepare`.

Bad studies never crash a run unless `data.strict` is set: a missing image or an empty report is found up front by
`check_studies`; an image that fails to decode is found when loaded, and the dataset returns a `Skipped` marker
instead of a sample, which `collate` drops and reports in `Batch.skipped` so the runner can count it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvl.data.images import ImageLoadError, load_grayscale, read_prepared, resize_square
from medvl.data.sources import Study
from medvl.data.tokenizer import encode_report
from medvl.findings import FINDINGS

STRICT_HINT = "set data.strict=false to skip and count unusable studies instead"


class StudyError(ValueError):
    """An unusable study under `data.strict=true`."""


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str


@dataclass
class Sample:
    id: str
    images: np.ndarray
    """uint8 [V, H, W]."""
    view_ids: list[int]
    input_ids: list[int]
    report: str
    labels: np.ndarray | None


@dataclass
class Batch:
    ids: list[str]
    images: torch.Tensor
    """float [B, V, 1, H, W] in [0, 1]; missing views are zeros."""
    view_ids: torch.Tensor
    """long [B, V]."""
    view_mask: torch.Tensor
    """bool [B, V]: True where the study has that view."""
    input_ids: torch.Tensor
    """long [B, T]: BOS + report tokens + EOS, right-padded."""
    attention_mask: torch.Tensor
    """long [B, T]: 1 on real tokens."""
    reports: list[str]
    labels: torch.Tensor | None
    """long [B, len(FINDINGS)] ground truth, when every study in the batch has it."""
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        for name in ("images", "view_ids", "view_mask", "input_ids", "attention_mask"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self


def check_studies(studies: Sequence[Study], strict: bool) -> tuple[list[Study], list[Skipped]]:
    """Split studies into usable ones and skipped ones (empty report, missing image file); strict: raise instead."""
    kept, skipped = [], []
    for study in studies:
        reason = None
        if study.problem:
            reason = study.problem
        elif not study.report.strip():
            reason = "empty report"
        elif not study.image_paths:
            reason = "no image"
        elif study.image_store is not None:
            reason = None if study.image_store.is_file() else f"prepared image array not found: {study.image_store}"
        else:
            missing = next((p for p in study.image_paths if not p.is_file()), None)
            if missing is not None:
                reason = f"image file not found: {missing}"
        if reason is None:
            kept.append(study)
        elif strict:
            raise StudyError(f"study {study.id}: {reason} ({STRICT_HINT})")
        else:
            skipped.append(Skipped(study.id, reason))
    return kept, skipped


class ReportDataset(Dataset):
    """Study i -> `Sample` (images resized to `image_size`, report tokenized) or `Skipped` when an image is bad."""

    def __init__(self, studies: Sequence[Study], tokenizer: Any, image_size: int, max_views: int, max_tokens: int,
                 cache_images: bool = True, strict: bool = False) -> None:
        self.studies = list(studies)
        self.image_size = image_size
        self.max_views = max_views
        self.strict = strict
        self.cache: dict[int, np.ndarray] | None = {} if cache_images else None
        encoded = [encode_report(tokenizer, s.report, max_tokens) for s in self.studies]
        self.token_ids = [ids for ids, _ in encoded]
        self.truncated = sum(t for _, t in encoded)
        """Reports cut to max_tokens (their EOS is lost; raise model.max_len if this is large)."""

    def __len__(self) -> int:
        return len(self.studies)

    def _images(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        study = self.studies[i]
        if study.image_store is not None:  # a prepared data set: decoded once, read from its memory map
            views = list(read_prepared(study.image_store, study.image_rows[: self.max_views]))
        else:
            views = [load_grayscale(p) for p in study.image_paths[: self.max_views]]
        images = np.stack([resize_square(v, self.image_size) for v in views])
        if self.cache is not None:
            self.cache[i] = images
        return images

    def __getitem__(self, i: int) -> Sample | Skipped:
        study = self.studies[i]
        try:
            images = self._images(i)
        except ImageLoadError as e:
            if self.strict:
                raise StudyError(f"study {study.id}: {e} ({STRICT_HINT})") from e
            return Skipped(study.id, str(e))
        labels = None
        if study.labels is not None:
            labels = np.array([study.labels[name] for name in FINDINGS], dtype=np.int64)
        return Sample(study.id, images, list(study.view_ids[: self.max_views]), self.token_ids[i], study.report, labels)


def collate(items: Sequence[Sample | Skipped], max_views: int, pad_id: int = 0) -> Batch:
    """Pad views (zeros, masked) and tokens (pad_id) into one `Batch`; `Skipped` items are listed, not batched."""
    samples = [x for x in items if isinstance(x, Sample)]
    skipped = [x for x in items if isinstance(x, Skipped)]
    b = len(samples)
    size = samples[0].images.shape[-1] if samples else 0
    images = torch.zeros(b, max_views, 1, size, size)
    view_ids = torch.zeros(b, max_views, dtype=torch.long)
    view_mask = torch.zeros(b, max_views, dtype=torch.bool)
    length = max((len(s.input_ids) for s in samples), default=0)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(b, length, dtype=torch.long)
    for row, s in enumerate(samples):
        v = min(len(s.images), max_views)
        images[row, :v, 0] = torch.from_numpy(s.images[:v]).float().div_(255.0)
        view_ids[row, :v] = torch.tensor(s.view_ids[:v])
        view_mask[row, :v] = True
        input_ids[row, : len(s.input_ids)] = torch.tensor(s.input_ids)
        attention_mask[row, : len(s.input_ids)] = 1
    labels = None
    if samples and all(s.labels is not None for s in samples):
        labels = torch.from_numpy(np.stack([s.labels for s in samples]))
    return Batch([s.id for s in samples], images, view_ids, view_mask, input_ids, attention_mask,
                 [s.report for s in samples], labels, skipped)


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, shuffle: bool, drop_last: bool) -> list[list[int]]:
    """The index batches of one epoch: a pure function of (seed, epoch), which is what makes resume exact."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size].tolist() for i in range(0, stop, batch_size)]
