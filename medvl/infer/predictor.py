"""Load a trained checkpoint and write reports for image files.

`load_trained` rebuilds the model, tokenizer and task from the checkpoint alone (its meta.json holds the config and
the tokenizer), so prediction never needs the training recipe or data. `images_to_batch` applies the same decoding
and resizing as training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medvl.config.experiment import ExperimentConfig, experiment_from_dict
from medvl.data.dataset import Batch, Sample, collate
from medvl.data.images import IMAGE_SUFFIXES, load_grayscale, resize_square
from medvl.data.tokenizer import tokenizer_from_json
from medvl.infer.config import GenerationConfig
from medvl.models.families import MODEL_FAMILIES
from medvl.tasks import TASKS
from medvl.train.checkpoint import find_latest_checkpoint, load_checkpoint
from medvl.train.parallel import load_model_state


@dataclass
class LoadedModel:
    config: ExperimentConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    device: torch.device
    checkpoint: Path
    metadata: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        """The training run the checkpoint belongs to (checkpoints live in RUN/checkpoints/NAME)."""
        return self.checkpoint.parent.parent if self.checkpoint.parent.name == "checkpoints" else self.checkpoint.parent


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (then its best, else last, else newest step checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path} (give a checkpoint directory such as "
                                "runs/quickstart/checkpoints/best, or a run directory such as runs/quickstart)")
    if (path / "meta.json").is_file():
        return path
    for name in ("best", "last"):
        if (path / "checkpoints" / name / "meta.json").is_file():
            return path / "checkpoints" / name
    found = find_latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint (no meta.json) nor a run directory with checkpoints/")
    return found


def load_trained(path: str | Path, device: str = "auto", use_ema: bool = True) -> LoadedModel:
    """Rebuild model + tokenizer + task from a checkpoint (EMA weights when the run kept them)."""
    ckpt_dir = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_dir, load_train_state=False)
    cfg = experiment_from_dict(ckpt.metadata["config"])
    family = MODEL_FAMILIES.get(cfg.model_family)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model = family.build(family.reload_config(cfg.model))
    state = ckpt.model_state
    if use_ema and "ema" in ckpt.extra:
        state = {**state, **{k: v for k, v in ckpt.extra["ema"].items() if k in state}}
    load_model_state(model, state)
    model.to(dev).eval()
    tokenizer = tokenizer_from_json(ckpt.metadata["tokenizer"], ckpt.metadata.get("tokenizer_specials"))
    task = TASKS.get(family.task)()(model, tokenizer)
    return LoadedModel(cfg, model, tokenizer, task, dev, ckpt_dir, ckpt.metadata)


def images_to_batch(loaded: LoadedModel, studies: Sequence[Sequence[str | Path]], ids: Sequence[str]) -> Batch:
    """One batch from lists of image paths (one list per study, frontal first)."""
    mc = loaded.config.model
    samples = []
    for sid, paths in zip(ids, studies, strict=True):
        views = [resize_square(load_grayscale(p), mc.image_size) for p in list(paths)[: mc.max_views]]
        bos = loaded.tokenizer.bos_token_id
        samples.append(Sample(sid, np.stack(views), list(range(len(views))), [bos], "", None))
    return collate(samples, max_views=mc.max_views, pad_id=loaded.tokenizer.pad_token_id).to(loaded.device)


def predict_reports(loaded: LoadedModel, studies: Sequence[Sequence[str | Path]], gen: GenerationConfig,
                    ids: Sequence[str] | None = None) -> list[str]:
    ids = list(ids) if ids is not None else [str(i) for i in range(len(studies))]
    out: list[str] = []
    for start in range(0, len(studies), gen.batch_size):
        batch = images_to_batch(loaded, studies[start : start + gen.batch_size], ids[start : start + gen.batch_size])
        out += loaded.task.generate(batch, gen)
    return out


def collect_studies(inputs: Sequence[str | Path]) -> tuple[list[tuple[str, list[Path]]], bool]:
    """Studies from command-line inputs, and whether they came from a folder.

    Image files given together form ONE study (its views, frontal first). A folder gives one study per sub-folder
    holding images (its views in file-name order) and one single-view study per loose image file.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("give at least one image file or a folder of images")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"input not found: {', '.join(missing)}")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        studies = []
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                views = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if views:
                    studies.append((entry.name, views))
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                studies.append((entry.stem, [entry]))
        if not studies:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} or its sub-folders")
        return studies, True
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise ValueError(f"give either image files (one study) or a single folder, not both: {', '.join(folders)}")
    return [(paths[0].stem, paths)], False
