"""Regression of k numbers per study (a cyclone centre (x, y) per clip) on the one runner.

The task contract (`medvl.tasks.base.Task`):
- needs: `targets` (`Study.targets`, k floats in the data set's units: tile pixels for the medicane clips);
- model: any family whose model maps (images [B, V, C, H, W], view_ids, view_mask) -> [B, num_outputs]; its head
  (LayerNorm + linear on the pooled tokens) regresses the k values: `model_fields` sets `num_outputs = k`;
- assets: the target names (`task.target_names`), the training targets' mean and std (k each). With
  `task.normalize` (default) the model learns (target - mean) / std and predictions are mapped back; both are in
  the checkpoint's metadata, so `evaluate`, `predict` and `serve` undo the same normalization;
- loss: `task.loss` mse, huber (`task.huber_delta`, in normalized units when normalizing) or l1, over all k
  outputs of the batch;
- validation: `error_mean` and `error_median` (the Euclidean distance between predicted and true point, in target
  units), `error_mean` selects the best checkpoint (mode min);
- evaluation (`medvl.evaluate.regression`): the error in pixels and in km (`task.km_per_pixel`: 3.5 for the seed's
  full-frame pixels, about 12.25 for the 64 px synthetic tiles), mean and median with bootstrap 95% intervals, next
  to the baselines "mean training target" (always predict it) and "tile centre" (the centre of each study's first
  frame, ((W - 1) / 2, (H - 1) / 2)); report.html;
- prediction record: {"coordinates": {name: value}} in target units;
- saliency: the sum of the (normalized) outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.dataset import Skipped, StudyDataset, TargetBatch, ViewLoader, collate_views
from medvl.data.study import Study
from medvl.tasks.base import Task

LOSSES = ("mse", "huber", "l1")


@dataclass
class RegressionOptions:
    """The `task:` section of a regression recipe (`task.name: regression`)."""

    target_names: list[str] = field(default_factory=lambda: ["x", "y"])
    """Names of the k regressed values, in the order of `Study.targets` (the medicane centre: x, y)."""
    normalize: bool = True
    """Learn (target - mean) / std with the training split's mean and std; predictions are mapped back."""
    loss: str = "mse"
    """mse, huber or l1."""
    huber_delta: float = 1.0
    """Where the Huber loss turns from quadratic to linear (normalized units when `normalize`)."""
    km_per_pixel: float = 3.5
    """Kilometres per target unit, for the errors in km (3.5: a pixel of the seed's 1290x420 frame)."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"task.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.target_names:
            raise ValueError("task.target_names must name at least one value")
        if self.huber_delta <= 0 or self.km_per_pixel <= 0:
            raise ValueError("task.huber_delta and task.km_per_pixel must be > 0")


@dataclass
class RegressionSample:
    id: str
    images: np.ndarray
    view_ids: list[int]
    targets: np.ndarray
    """float32 [k]."""


RegressionBatch = TargetBatch
"""Its batch: views and one target row per study (`medvl.data.dataset.TargetBatch`)."""


class RegressionDataset(StudyDataset):
    def encode(self, i: int, images: np.ndarray) -> RegressionSample:
        study = self.studies[i]
        return RegressionSample(
            study.id, images, list(study.view_ids[: self.views.max_views]), np.asarray(study.targets, dtype=np.float32)
        )


def target_stats(train: Sequence[Study], k: int) -> tuple[list[float], list[float]]:
    """Mean and std (population; 1.0 where a value does not vary) of the training targets."""
    values = np.array([s.targets for s in train if len(s.targets) == k], dtype=np.float64)
    if not len(values):
        raise ValueError(
            f"no training study has {k} targets: regression needs a source with targets (clips with "
            "x_pix,y_pix, clips_synthetic)"
        )
    std = values.std(axis=0)
    return values.mean(axis=0).tolist(), np.where(std > 1e-8, std, 1.0).tolist()


def frame_centre(study: Study) -> tuple[float, float] | None:
    """((W - 1) / 2, (H - 1) / 2) of a study's first frame (pixel centres at integer coordinates), None if
    unreadable."""
    if not study.image_paths:
        return None
    path = Path(study.image_paths[0])
    try:
        if path.suffix.lower() == ".npy":
            h, w = np.load(path, mmap_mode="r").shape[:2]
        else:
            from PIL import Image

            with Image.open(path) as img:
                w, h = img.size
    except (OSError, ValueError):
        return None
    return (w - 1) / 2, (h - 1) / 2


class RegressionTask(Task):
    name = "regression"
    needs = ("targets",)
    options_class = RegressionOptions
    default_select_metric = "error_mean"
    default_select_mode = "min"
    endpoint = "regressions"
    prediction_fields = {"coordinates": (dict[str, float], "name -> predicted value, in target units (pixels)")}
    headline_metrics = ("loss", "error_mean", "error_median")

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        self.names: list[str] = list(assets["target_names"])
        k = len(self.names)
        normalize = bool(assets.get("normalize", True))
        self.mean = torch.tensor(assets["mean"] if normalize else [0.0] * k, dtype=torch.float32)
        self.std = torch.tensor(assets["std"] if normalize else [1.0] * k, dtype=torch.float32)
        self.train_mean = np.asarray(assets["mean"], dtype=np.float64)

    # ------------------------------------------------------------------------------------------------ assets
    @classmethod
    def usable(cls, study: Study) -> str:
        return "" if study.targets else "no targets (task regression needs them; e.g. a clip without a centre)"

    @classmethod
    def build_assets(cls, cfg: Any, train: Sequence[Study], save_dir: Path | None) -> dict[str, Any]:
        opts: RegressionOptions = cfg.task
        k = len(opts.target_names)
        wrong = next((s for s in train if s.targets and len(s.targets) != k), None)
        if wrong is not None:
            raise ValueError(
                f"study {wrong.id} has {len(wrong.targets)} targets but task.target_names names {k} "
                f"({opts.target_names})"
            )
        mean, std = target_stats(train, k)
        return {"target_names": list(opts.target_names), "mean": mean, "std": std, "normalize": opts.normalize}

    @classmethod
    def assets_from_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        return dict(metadata["regression"])

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        return {"num_outputs": len(assets["target_names"])}

    def metadata(self) -> dict[str, Any]:
        return {
            "regression": {
                "target_names": self.names,
                "mean": self.train_mean.tolist(),
                "std": self.assets["std"],
                "normalize": bool(self.assets.get("normalize", True)),
            }
        }

    # -------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> RegressionDataset:
        mc = self.cfg.model
        views = ViewLoader(mc.image_size, mc.max_views, mc.in_chans, self.cfg.data.cache_images)
        return RegressionDataset(studies, views, self.cfg.data.strict)

    def collate(self, items: Sequence[Any]) -> RegressionBatch:
        samples = [x for x in items if isinstance(x, RegressionSample)]
        images, view_ids, view_mask = collate_views(samples, self.cfg.model.max_views)
        targets = (
            torch.from_numpy(np.stack([s.targets for s in samples])) if samples else torch.zeros(0, len(self.names))
        )
        return RegressionBatch(
            [s.id for s in samples], images, view_ids, view_mask, targets, [x for x in items if isinstance(x, Skipped)]
        )

    # ------------------------------------------------------------------------------------------------- train
    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean.to(values.device)) / self.std.to(values.device)

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std.to(values.device) + self.mean.to(values.device)

    def _raw(self, batch: RegressionBatch) -> torch.Tensor:
        return self.model(batch.images, batch.view_ids, batch.view_mask).float()

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The configured loss between raw (normalized) outputs and targets in target units."""
        y = self.normalize(targets.float())
        if self.options.loss == "huber":
            return F.huber_loss(raw, y, delta=self.options.huber_delta)
        if self.options.loss == "l1":
            return F.l1_loss(raw, y)
        return F.mse_loss(raw, y)

    def __call__(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        return {"loss": self.loss(self._raw(batch), batch.targets), "weight": torch.tensor(len(batch))}

    @torch.no_grad()
    def predictions(self, batch: RegressionBatch) -> np.ndarray:
        """float [B, k] predictions in target units."""
        return self.denormalize(self._raw(batch)).cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------------------------ validate / evaluate
    @torch.no_grad()
    def outputs(self, batch: RegressionBatch) -> list[dict[str, Any]]:
        pred, targets = self.predictions(batch), batch.targets.cpu().numpy().astype(np.float64)
        return [{"id": sid, "pred": pred[i], "target": targets[i]} for i, sid in enumerate(batch.ids)]

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        if not rows:
            return {}
        from medvl.evaluate.regression import point_errors

        errors = point_errors([r["pred"] for r in rows], [r["target"] for r in rows])
        return {"error_mean": float(errors.mean()), "error_median": float(np.median(errors))}

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from medvl.evaluate.regression import point_errors, regression_metrics

        rows = list(outputs.values())[-1]
        pred = np.stack([r["pred"] for r in rows])
        target = np.stack([r["target"] for r in rows])
        km = self.options.km_per_pixel
        result = regression_metrics(pred, target, km, self.names, options.bootstrap, options.seed)
        baselines = {"mean training target": np.tile(self.train_mean, (len(rows), 1))}
        by_id = {s.id: s for split in studies.values() for s in split}
        centres = [frame_centre(by_id[r["id"]]) if r["id"] in by_id else None for r in rows]
        if len(self.names) == 2 and all(c is not None for c in centres):
            baselines["tile centre"] = np.array(centres, dtype=np.float64)
        result["baselines"] = {
            name: regression_metrics(p, target, km, self.names, options.bootstrap, options.seed)
            for name, p in baselines.items()
        }
        result["baseline"] = result["baselines"].get("tile centre") or result["baselines"]["mean training target"]
        result["baseline_name"] = "tile centre" if "tile centre" in result["baselines"] else "mean training target"
        errors = point_errors(pred, target)
        predictions = []
        for r, e in zip(rows, errors, strict=True):
            study = by_id.get(r["id"])
            predictions.append(
                {
                    "id": r["id"],
                    "image_paths": [str(p) for p in study.image_paths] if study else [],
                    "predicted": {n: round(float(v), 4) for n, v in zip(self.names, r["pred"], strict=True)},
                    "target": {n: float(v) for n, v in zip(self.names, r["target"], strict=True)},
                    "error_px": round(float(e), 4),
                    "error_km": round(float(e * km), 4),
                }
            )
        return result, predictions

    def write_evaluation(
        self, out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        super().write_evaluation(out, result, rows, options, title)
        if options.html:
            from medvl.evaluate.regression import write_regression_report

            write_regression_report(out / "report.html", result, rows, title)

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        from medvl.evaluate.regression import format_regression_tables

        return format_regression_tables(result)

    def clinical_gap(self, result: dict[str, Any]) -> float | None:
        """Model minus baseline median error in pixels (negative: the model is better)."""
        base = (result.get("baseline") or {}).get("error_px_median")
        return None if base is None else result["error_px_median"] - base

    # ---------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> RegressionBatch:
        k = len(self.names)
        return self.collate([RegressionSample(s.id, s.pixels, s.view_ids, np.zeros(k, np.float32)) for s in studies])

    @torch.no_grad()
    def predict(self, batch: RegressionBatch) -> list[dict[str, Any]]:
        return [
            {"coordinates": {n: round(float(v), 4) for n, v in zip(self.names, p, strict=True)}}
            for p in self.predictions(batch)
        ]

    def explain_score(self, batch: RegressionBatch, record: dict[str, Any]) -> torch.Tensor:
        return self._raw(batch).sum()


__all__ = ["RegressionBatch", "RegressionOptions", "RegressionTask", "frame_centre", "target_stats"]
