"""Load a trained checkpoint and write reports for image files.

`load_trained` rebuilds the model, tokenizer and task from the checkpoint alone (its meta.json holds the config and
the tokenizer), so prediction never needs the training recipe or data. Studies are decoded by the one image loader
(`medvl.data.images`, PNG/JPEG/DICOM) and resized as in training; `prepare_study` orders views frontal first from
their view names (DICOM View Position, or the caller's), so a multi-view model sees them in training order.
Study listing (files, folders, globs, CSV/JSONL) lives in `medvl.infer.inputs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medvl.config.experiment import ExperimentConfig, experiment_from_dict
from medvl.data.images import DEFAULT_MAX_PIXELS, DecodedImage, ImageLoadError, load_image, resize_square
from medvl.data.study import order_views
from medvl.infer.config import GenerationConfig
from medvl.models.families import MODEL_FAMILIES
from medvl.tasks import task_class
from medvl.train.checkpoint import find_latest_checkpoint, load_checkpoint
from medvl.train.parallel import load_model_state


@dataclass
class LoadedModel:
    """A trained model ready for inference, from `load_trained`: what predict, serve, demo and evaluate use."""

    config: ExperimentConfig
    """The run's full config, as recorded in the checkpoint (generation settings possibly overridden)."""
    model: nn.Module
    tokenizer: Any
    """The task's tokenizer, for text-generating tasks (None for others)."""
    task: Any
    """The family's task (`medvl.tasks.base.Task`) around `model`: what `predict`, `serve` and `demo` call."""
    device: torch.device
    checkpoint: Path
    """The checkpoint directory (or export folder) the weights came from."""
    metadata: dict[str, Any]
    """The checkpoint's meta.json: step, metrics, task assets, library versions."""

    @property
    def supports_chat(self) -> bool:
        """Whether the model's task answers follow-up questions (`task.chat`); report generation does not."""
        return bool(getattr(self.task, "supports_chat", False))

    @property
    def takes_question(self) -> bool:
        """Whether a request may ask a question about its images (a unified-family checkpoint trained for vqa:
        its task's `takes_question`); predict, serve and demo then offer a question."""
        return bool(getattr(self.task, "takes_question", False))

    @property
    def requires_question(self) -> bool:
        """Whether every request must ask a question (a unified checkpoint trained for VQA only)."""
        return bool(getattr(self.task, "requires_question", False))

    def check_request(self, question: str = "", field: str = "--question") -> None:
        """Refuse, before any study is read, a request the model cannot answer: a question asked of a model that
        takes none, or none asked of a unified model trained for VQA only (its task's `request_task` decides).
        `field` names where the caller's question goes (the flag, the API's form field...) in the message.

        Raises:
            ValueError: naming what the checkpoint was trained for and what to send instead.
        """
        request_task = getattr(self.task, "request_task", None)
        if request_task is not None:
            request_task(question, field)
        elif question.strip():
            raise ValueError(
                f"this {self.task.name.replace('_', ' ')} checkpoint does not answer questions (the unified family's "
                f"instructed_generation task does): leave out the question ({field})"
            )

    def with_generation(self, gen: GenerationConfig) -> LoadedModel:
        """The same model whose task decodes with `gen` (predict, serve and demo settings); tasks that do not
        generate text (no `generation` attribute) are left as they are."""
        import copy

        task = self.task
        if hasattr(task, "generation"):
            task = copy.copy(task)
            task.generation = gen
        return dataclasses.replace(self, config=dataclasses.replace(self.config, generation=gen), task=task)

    @property
    def run_dir(self) -> Path:
        """The training run the checkpoint belongs to (checkpoints live in RUN/checkpoints/NAME)."""
        return self.checkpoint.parent.parent if self.checkpoint.parent.name == "checkpoints" else self.checkpoint.parent


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, a folder from `medvl export`, or a run directory (then its best, else last, else newest
    step checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (give a checkpoint directory such as "
            "runs/quickstart/checkpoints/best, or a run directory such as runs/quickstart)"
        )
    if (path / "meta.json").is_file():
        return path
    from medvl.export import is_hf_export

    if is_hf_export(path):
        return path
    for name in ("best", "last"):
        if (path / "checkpoints" / name / "meta.json").is_file():
            return path / "checkpoints" / name
    found = find_latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(
            f"{path} is neither a checkpoint (no meta.json), an export (no medvl config.json) nor "
            "a run directory with checkpoints/"
        )
    return found


def load_trained(
    path: str | Path, device: str = "auto", use_ema: bool = True, generation: dict[str, Any] | None = None
) -> LoadedModel:
    """Rebuild model + task (and its assets: tokenizer, class names) from a checkpoint (EMA weights when the run kept
    them) or an HF-style export; `generation` overrides the checkpoint's generation settings.

    Raises:
        FileNotFoundError: nothing loadable at `path`.
        CheckpointError: a damaged or incomplete checkpoint.
    """
    from medvl.export import is_hf_export, read_hf_export

    ckpt_dir = resolve_checkpoint(path)
    if is_hf_export(ckpt_dir):
        raw_config, state, _, metadata = read_hf_export(ckpt_dir)
    else:
        ckpt = load_checkpoint(ckpt_dir, load_train_state=False)
        raw_config, state, metadata = ckpt.metadata["config"], ckpt.model_state, ckpt.metadata
        if use_ema and "ema" in ckpt.extra:
            state = {**state, **{k: v for k, v in ckpt.extra["ema"].items() if k in state}}
    cfg = experiment_from_dict(raw_config)
    if generation:
        cfg.generation = dataclasses.replace(cfg.generation, **generation)
    family = MODEL_FAMILIES.get(cfg.model_family)
    task_cls = task_class(cfg.task_name or family.task)
    assets = task_cls.assets_from_metadata(metadata)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = family.build(family.reload_config(cfg.model))
    load_model_state(model, state)
    model.to(dev).eval()
    task = task_cls(model, assets, cfg)
    return LoadedModel(cfg, model, getattr(task, "tokenizer", None), task, dev, ckpt_dir, metadata)


MAX_QUESTION_CHARS = 1000
"""Longest question `medvl serve` and `medvl demo` accept (the unified model reads at most `task.max_source_tokens`
tokens of it anyway)."""


@dataclass
class PreparedStudy:
    """One study decoded and resized, views ordered frontal first: what a batch row is built from."""

    id: str
    pixels: np.ndarray
    """uint8 [V, S, S] (one channel) or [V, S, S, C] at the model's image size."""
    view_ids: list[int]
    """0 = frontal, 1 = lateral, per view."""
    views: list[str | None]
    """The view names the views were ordered by (from the DICOM header or the caller), None where unknown."""
    ignored_views: int = 0
    """Views given beyond the model's `max_views` and left out (the latest in frontal-first order)."""
    question: str = ""
    """A question about the images for tasks that answer one (instructed generation: VQA); empty = none."""


def prepare_study(
    sid: str,
    images: Sequence[DecodedImage],
    image_size: int,
    max_views: int,
    view_names: Sequence[str | None] | None = None,
    channels: int = 1,
) -> PreparedStudy:
    """Order decoded views frontal first and keep what the model takes.

    A view's type comes from `view_names` (the caller's, e.g. a listing's or a request's), else from the image (DICOM
    View Position). Views are stably sorted known frontal first, then unknown, then known lateral (`order_views`), so
    a study given as (lateral, frontal) DICOM files still reaches the model as (frontal, lateral), a single-view model
    gets the frontal one, and never a lateral before a view of unknown type; views beyond `max_views` are left out
    and counted in `ignored_views` (predict, serve and demo say so).
    """
    if not images:
        raise ImageLoadError(f"study {sid} has no image")
    names = [
        (view_names[i] if view_names is not None and i < len(view_names) and view_names[i] else None) or img.view
        for i, img in enumerate(images)
    ]
    order, ids = order_views(names)  # known frontal, then unknown, then known lateral; unknown names stay unknown
    ignored = max(0, len(order) - max_views)
    order, ids = order[:max_views], ids[:max_views]
    pixels = np.stack([resize_square(images[i].channels(channels), image_size) for i in order])
    return PreparedStudy(sid, pixels, ids, [names[i] for i in order], ignored)


def load_study(
    loaded: LoadedModel,
    sid: str,
    paths: Sequence[str | Path],
    view_names: Sequence[str | None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> PreparedStudy:
    """Decode a study's image files (PNG, JPEG, DICOM...) and prepare it for `loaded`'s model."""
    mc = loaded.config.model
    return prepare_study(
        sid, [load_image(p, max_pixels=max_pixels) for p in paths], mc.image_size, mc.max_views, view_names, mc.in_chans
    )


def batch_studies(loaded: LoadedModel, studies: Sequence[PreparedStudy]) -> Any:
    """One model batch (on the model's device) from prepared studies, made by the task."""
    return loaded.task.inference_batch(studies).to(loaded.device)


def predict_prepared(
    loaded: LoadedModel, studies: Sequence[PreparedStudy], batch_size: int | None = None
) -> list[dict[str, Any]]:
    """The task's prediction record of each prepared study (a report and its findings; class probabilities...),
    `batch_size` studies at a time (default: the generation batch size)."""
    size = batch_size or loaded.config.generation.batch_size
    out: list[dict[str, Any]] = []
    for start in range(0, len(studies), size):
        out += loaded.task.predict(batch_studies(loaded, studies[start : start + size]))
    return out


def generate_prepared(loaded: LoadedModel, studies: Sequence[PreparedStudy], gen: GenerationConfig) -> list[str]:
    """Reports for prepared studies, `gen.batch_size` at a time (text-generating tasks)."""
    out: list[str] = []
    for start in range(0, len(studies), gen.batch_size):
        out += loaded.task.generate(batch_studies(loaded, studies[start : start + gen.batch_size]), gen)
    return out


def images_to_batch(loaded: LoadedModel, studies: Sequence[Sequence[str | Path]], ids: Sequence[str]) -> Any:
    """One batch from lists of image paths (one list per study; views ordered frontal first)."""
    return batch_studies(loaded, [load_study(loaded, sid, paths) for sid, paths in zip(ids, studies, strict=True)])


def predict_reports(
    loaded: LoadedModel,
    studies: Sequence[Sequence[str | Path]],
    gen: GenerationConfig,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Reports for lists of image paths (one list per study), `gen.batch_size` studies at a time."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(studies))]
    return generate_prepared(
        loaded, [load_study(loaded, sid, paths) for sid, paths in zip(ids, studies, strict=True)], gen
    )


def collect_studies(inputs: Sequence[str | Path]) -> tuple[list[tuple[str, list[Path]]], bool]:
    """Kept for callers of the first API: see `medvl.infer.inputs.collect_studies`."""
    from medvl.infer.inputs import collect_studies as collect

    listed = collect(inputs)
    return [(s.id, list(s.paths)) for s in listed.studies], listed.batch
