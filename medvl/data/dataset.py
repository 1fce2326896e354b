"""From studies to model batches: checking, decoding, tokenizing, padding, and the epoch order.

Views are decoded from their files, or, for a prepared data set (`Study.image_store`), read from its memory-mapped
images.npy, already decoded and resized once by `medvl data prepare`.

Bad studies never crash a run unless `data.strict` is set: a missing image or an empty report is found up front by
`check_studies`; an image that fails to decode is found when loaded, and the dataset returns a `Skipped` marker
instead of a sample, which `collate` drops and reports in `Batch.skipped` so the runner can count it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvl.data.images import ImageLoadError, load_pixels, read_prepared, resize_square, to_channels
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
    """uint8 [V, H, W] (one channel) or [V, H, W, C]."""
    view_ids: list[int]
    input_ids: list[int]
    report: str
    labels: np.ndarray | None
    references: tuple[str, ...] = ()
    """Every reference of the study when it has several (COCO's captions); empty: `report` is the only one."""


@dataclass
class Batch:
    ids: list[str]
    images: torch.Tensor
    """float [B, V, C, H, W] in [0, 1]; missing views are zeros."""
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
    references: list[tuple[str, ...]] = field(default_factory=list)
    """Each study's references (several for COCO-style captions, else its report)."""

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        for name in ("images", "view_ids", "view_mask", "input_ids", "attention_mask"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self


@dataclass
class TargetBatch:
    """A batch of studies with one target row each: class labels (classification) or numbers (regression)."""

    ids: list[str]
    images: torch.Tensor
    """float [B, V, C, H, W] in [0, 1]."""
    view_ids: torch.Tensor
    """long [B, V]."""
    view_mask: torch.Tensor
    """bool [B, V]."""
    targets: torch.Tensor
    """[B, K]: long 1 / 0 / -1 (unknown) class labels, or float values in target units."""
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> TargetBatch:
        for name in ("images", "view_ids", "view_mask", "targets"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self


def check_studies(
    studies: Sequence[Study], strict: bool, requirement: Callable[[Study], str] | None = None, text_only: bool = False
) -> tuple[list[Study], list[Skipped]]:
    """Split studies into usable ones and skipped ones (what the task needs is missing, e.g. an empty report, or an
    image file is missing); strict: raise instead. `requirement(study)` says why a study lacks what the task needs
    ('' when it has it); the default needs a report. A study without images (`image_paths == ()`, a text-only study
    such as a summarization pair) is skipped as "no image" unless `text_only` (the task takes text-only studies,
    `Task.takes_text_only`)."""
    kept, skipped = [], []
    for study in studies:
        reason = None
        if study.problem:
            reason = study.problem
        elif requirement is not None and requirement(study):
            reason = requirement(study)
        elif requirement is None and not study.report.strip():
            reason = "empty report"
        elif not study.image_paths:
            reason = None if text_only else "no image"
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


class ViewLoader:
    """Study -> its views as uint8 [V, S, S] (one channel) or [V, S, S, C] (C channels), resized to `image_size`,
    decoded to the channels the model takes (`medvl.data.images.to_channels`) and cached when asked."""

    def __init__(self, image_size: int, max_views: int, channels: int = 1, cache_images: bool = True) -> None:
        self.image_size = image_size
        self.max_views = max_views
        self.channels = channels
        self.cache: dict[str, np.ndarray] | None = {} if cache_images else None

    def __call__(self, study: Study) -> np.ndarray:
        if not study.image_paths and not study.image_rows:  # a text-only study: no views, [0, S, S(, C)]
            shape = (0, self.image_size, self.image_size) + ((self.channels,) if self.channels > 1 else ())
            return np.zeros(shape, dtype=np.uint8)
        if self.cache is not None and study.id in self.cache:
            return self.cache[study.id]
        if study.image_store is not None:  # a prepared data set: decoded once, read from its memory map
            views = [
                to_channels(v, self.channels, study.id)
                for v in read_prepared(study.image_store, study.image_rows[: self.max_views])
            ]
        else:
            views = [load_pixels(p, self.channels) for p in study.image_paths[: self.max_views]]
        images = np.stack([resize_square(v, self.image_size) for v in views])
        if self.cache is not None:
            self.cache[study.id] = images
        return images


class StudyDataset(Dataset):
    """Study i -> `encode(study, i, views)` (a task's sample) or `Skipped` when an image cannot be loaded; the base of
    every task's dataset."""

    def __init__(self, studies: Sequence[Study], views: ViewLoader, strict: bool = False) -> None:
        self.studies = list(studies)
        self.views = views
        self.strict = strict

    def __len__(self) -> int:
        return len(self.studies)

    def encode(self, i: int, images: np.ndarray) -> Any:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Any:
        study = self.studies[i]
        try:
            images = self.views(study)
        except ImageLoadError as e:
            if self.strict:
                raise StudyError(f"study {study.id}: {e} ({STRICT_HINT})") from e
            return Skipped(study.id, str(e))
        return self.encode(i, images)


class ReportDataset(StudyDataset):
    """Study i -> `Sample` (images resized to `image_size`, report tokenized) or `Skipped` when an image is bad.

    With `every_reference` (training), a study with several references (COCO's five captions) becomes one sample per
    reference, each its own training target; the views are decoded once and shared (the cache is keyed by study)."""

    def __init__(
        self,
        studies: Sequence[Study],
        tokenizer: Any,
        image_size: int,
        max_views: int,
        max_tokens: int,
        cache_images: bool = True,
        strict: bool = False,
        channels: int = 1,
        every_reference: bool = False,
    ) -> None:
        if every_reference:
            studies = [
                replace(s, report=ref) if len(s.references) > 1 else s
                for s in studies
                for ref in (s.references if len(s.references) > 1 else (s.report,))
            ]
        super().__init__(studies, ViewLoader(image_size, max_views, channels, cache_images), strict)
        self.image_size = image_size
        self.max_views = max_views
        encoded = [encode_report(tokenizer, s.report, max_tokens) for s in self.studies]
        self.token_ids = [ids for ids, _ in encoded]
        self.truncated = sum(t for _, t in encoded)
        """Reports cut to max_tokens (their EOS is lost; raise model.max_len if this is large)."""

    @property
    def lengths(self) -> list[int]:
        """Tokens of each item's target (BOS and EOS included), for `data.group_by_length`."""
        return [len(ids) for ids in self.token_ids]

    def encode(self, i: int, images: np.ndarray) -> Sample:
        study = self.studies[i]
        labels = None
        if study.labels is not None and all(name in study.labels for name in FINDINGS):
            labels = np.array([study.labels[name] for name in FINDINGS], dtype=np.int64)
        return Sample(
            study.id,
            images,
            list(study.view_ids[: self.views.max_views]),
            self.token_ids[i],
            study.report,
            labels,
            study.references,
        )


def collate_views(samples: Sequence[Any], max_views: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images float [B, V, C, H, W] in [0, 1], view_ids long [B, V], view_mask bool [B, V]) from samples with
    `images` uint8 [V, H, W] or [V, H, W, C] and `view_ids`; missing views are zeros and masked."""
    b = len(samples)
    first = samples[0].images if samples else np.zeros((1, 0, 0), np.uint8)
    size, channels = first.shape[1], (first.shape[3] if first.ndim == 4 else 1)
    images = torch.zeros(b, max_views, channels, size, size)
    view_ids = torch.zeros(b, max_views, dtype=torch.long)
    view_mask = torch.zeros(b, max_views, dtype=torch.bool)
    for row, s in enumerate(samples):
        v = min(len(s.images), max_views)
        pixels = torch.from_numpy(np.ascontiguousarray(s.images[:v])).float().div_(255.0)
        images[row, :v] = pixels.permute(0, 3, 1, 2) if pixels.ndim == 4 else pixels[:, None]
        view_ids[row, :v] = torch.tensor(s.view_ids[:v])
        view_mask[row, :v] = True
    return images, view_ids, view_mask


def collate(items: Sequence[Sample | Skipped], max_views: int, pad_id: int = 0) -> Batch:
    """Pad views (zeros, masked) and tokens (pad_id) into one `Batch`; `Skipped` items are listed, not batched."""
    samples = [x for x in items if isinstance(x, Sample)]
    skipped = [x for x in items if isinstance(x, Skipped)]
    b = len(samples)
    images, view_ids, view_mask = collate_views(samples, max_views)
    length = max((len(s.input_ids) for s in samples), default=0)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(b, length, dtype=torch.long)
    for row, s in enumerate(samples):
        input_ids[row, : len(s.input_ids)] = torch.tensor(s.input_ids)
        attention_mask[row, : len(s.input_ids)] = 1
    labels = None
    if samples and all(s.labels is not None for s in samples):
        labels = torch.from_numpy(np.stack([s.labels for s in samples]))
    return Batch(
        [s.id for s in samples],
        images,
        view_ids,
        view_mask,
        input_ids,
        attention_mask,
        [s.report for s in samples],
        labels,
        skipped,
        [s.references or (s.report,) for s in samples],
    )


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, shuffle: bool, drop_last: bool) -> list[list[int]]:
    """The index batches of one epoch: a pure function of (seed, epoch), which is what makes resume exact."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size].tolist() for i in range(0, stop, batch_size)]
