"""Training a VQ image tokenizer (the `vq` family) on the user's images: VQ-VAE reconstruction + commitment.

The task contract (`medvl.tasks.base.Task`):
- needs: nothing but images (each study's first view);
- loss: reconstruction error in taming's [-1, 1] pixel units (`task.recon_loss`: mse as VQ-VAE, or l1 as
  taming's pixel term; no perceptual or adversarial term) + the quantizer's loss (beta x commitment; the codebook
  follows the EMA of its vectors, or learns by the codebook loss with `model.ema_decay=0`; `medvl.models.vq.quantizer`);
- validation: `recon_mse` (mean squared error in [0, 1] pixel units) next to the baseline `baseline_mse` (each image
  replaced by its own mean intensity: a tokenizer that kept only the brightness) and their ratio `mse_ratio`, and
  `cell_mean_mse` (each f x f cell of a code replaced by its mean: one real number per cell where the tokenizer keeps
  one of K symbols, a reference rather than a bar to clear);
  `code_usage` (share of the K codes used on the split) and `perplexity` (exp of the entropy of the code histogram;
  K when every code is used equally, 1 when one code takes all);
- evaluation: the same over the split, with a bootstrap 95% interval of recon_mse;
- prediction record: {"codes" (h x w code grid), "reconstruction_mse", "text" (the grid as <code_k> tokens)}.
A trained run is what `task.mim.tokenizer` of the unified family's MIM sub-task points at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.data.dataset import Skipped, StudyDataset, ViewLoader, collate_views
from medvl.data.study import Study
from medvl.tasks.base import Task


@dataclass
class VQTokenizerOptions:
    """The `task:` section of a vq_tokenizer recipe."""

    recon_loss: str = "mse"
    """Reconstruction term: mse (VQ-VAE) or l1 (taming's pixel loss, without its perceptual/GAN terms)."""
    train_crop: int = 0
    """Side of a random square crop of each training image (0 = the whole image), as taming trains its VQ-GANs:
    cheaper steps, and the tokenizer of a MIM model then sees its central region at the same pixel scale."""

    def __post_init__(self) -> None:
        if self.recon_loss not in ("mse", "l1"):
            raise ValueError(f"task.recon_loss must be mse or l1, got {self.recon_loss!r}")
        if self.train_crop < 0:
            raise ValueError(f"task.train_crop must be >= 0 (0 = no crop), got {self.train_crop}")


@dataclass
class ImageSample:
    id: str
    images: np.ndarray
    """uint8 [1, S, S] or [1, S, S, C]."""
    view_ids: list[int]


@dataclass
class ImageBatch:
    ids: list[str]
    images: Tensor
    """float [B, C, S, S] in [0, 1]."""
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> ImageBatch:
        self.images = self.images.to(device, non_blocking=True)
        return self


class ImageDataset(StudyDataset):
    def encode(self, i: int, images: np.ndarray) -> ImageSample:
        return ImageSample(self.studies[i].id, images[:1], [0])


def code_statistics(codes: np.ndarray, n_embed: int) -> dict[str, float]:
    """{"code_usage": share of the n_embed codes that occur, "perplexity": exp(entropy of their histogram)}."""
    counts = np.bincount(codes.ravel(), minlength=n_embed).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum()
    return {"code_usage": float((counts > 0).mean()), "perplexity": float(math.exp(entropy))}


class VQTokenizerTask(Task):
    name = "vq_tokenizer"
    options_class = VQTokenizerOptions
    endpoint = "codes"
    prediction_fields = {
        "codes": (list, "the image's code grid (rows of code indices, h x w = image side / stride)"),
        "reconstruction_mse": (float, "mean squared error of the decoded codes, in [0, 1] pixel units"),
        "text": (str, "the code grid written as the MIM sub-task's tokens: <code_k>, one line per row"),
    }
    headline_metrics = ("loss", "recon_mse", "baseline_mse", "code_usage")

    # -------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> ImageDataset:
        mc = self.cfg.model
        return ImageDataset(studies, ViewLoader(mc.image_size, 1, mc.in_chans, self.cfg.data.cache_images))

    def collate(self, items: Sequence[Any]) -> ImageBatch:
        samples = [x for x in items if isinstance(x, ImageSample)]
        mc = self.cfg.model
        if samples:
            images = collate_views(samples, 1)[0][:, 0]
        else:
            images = torch.zeros(0, mc.in_chans, mc.image_size, mc.image_size)
        return ImageBatch([s.id for s in samples], images, [x for x in items if isinstance(x, Skipped)])

    def __init__(self, model: torch.nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        crop, mc = self.options.train_crop, self.cfg.model
        if crop and (crop > mc.image_size or crop % mc.downsample):
            raise ValueError(
                f"task.train_crop={crop} must be at most model.image_size={mc.image_size} and a multiple of the "
                f"codes' stride {mc.downsample}"
            )

    # ------------------------------------------------------------------------------------------------- train
    def _crop(self, images: Tensor) -> Tensor:
        """A random `train_crop` square of each image (offsets from torch's global RNG, which checkpoints carry)."""
        side, crop = images.shape[-1], self.options.train_crop
        tops = torch.randint(0, side - crop + 1, (len(images), 2)).tolist()
        return torch.stack([im[:, y : y + crop, x : x + crop] for im, (y, x) in zip(images, tops)])

    def __call__(self, batch: ImageBatch) -> dict[str, Tensor]:
        training = self.model.training and torch.is_grad_enabled()
        images = self._crop(batch.images) if training and self.options.train_crop else batch.images
        recon, q = self.model(images)
        diff = (recon.float() - images) * 2  # taming's [-1, 1] units
        rec = diff.abs().mean() if self.options.recon_loss == "l1" else diff.pow(2).mean()
        return {
            "loss": rec + q.loss.float(),
            "weight": torch.tensor(float(len(batch))),
            "recon_loss": rec.detach(),
            "commitment": q.commitment.detach(),
        }

    # ------------------------------------------------------------------------------------ validate / evaluate
    @torch.no_grad()
    def _rows(self, batch: ImageBatch) -> list[dict[str, Any]]:
        recon, q = self.model(batch.images)
        err = (recon.float().clamp(0, 1) - batch.images).pow(2).flatten(1).mean(1)
        flat = batch.images.flatten(1)
        base = (flat - flat.mean(1, keepdim=True)).pow(2).mean(1)
        f = self.cfg.model.downsample
        cells = F.interpolate(F.avg_pool2d(batch.images, f), scale_factor=f, mode="nearest")
        cell = (cells - batch.images).pow(2).flatten(1).mean(1)
        codes = q.codes.cpu().numpy()
        return [
            {
                "id": sid,
                "mse": float(err[k]),
                "baseline_mse": float(base[k]),
                "cell_mse": float(cell[k]),
                "codes": codes[k],
            }
            for k, sid in enumerate(batch.ids)
        ]

    def outputs(self, batch: ImageBatch) -> list[dict[str, Any]]:
        return self._rows(batch)

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        if not rows:
            return {}
        mse = float(np.mean([r["mse"] for r in rows]))
        base = float(np.mean([r["baseline_mse"] for r in rows]))
        cell = float(np.mean([r["cell_mse"] for r in rows]))
        stats = code_statistics(np.stack([r["codes"] for r in rows]), self.cfg.model.n_embed)
        ratio = mse / base if base > 0 else float("nan")
        return {"recon_mse": mse, "baseline_mse": base, "mse_ratio": ratio, "cell_mean_mse": cell, **stats}

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = list(outputs.values())[-1]
        metrics = self.validation_metrics(rows)
        result: dict[str, Any] = {
            "recon_mse": metrics["recon_mse"],
            "n_examples": len(rows),
            "n_embed": self.cfg.model.n_embed,
            "code_grid": list(rows[0]["codes"].shape) if rows else [],
            "code_usage": metrics["code_usage"],
            "perplexity": metrics["perplexity"],
            "mse_ratio": metrics["mse_ratio"],
            "baseline": {"recon_mse": metrics["baseline_mse"]},
            "baseline_name": "each image's mean intensity",
            "cell_mean_mse": metrics["cell_mean_mse"],
        }
        mse = np.array([r["mse"] for r in rows])
        if options.bootstrap and len(rows) > 1:
            rng = np.random.default_rng(options.seed)
            means = mse[rng.integers(0, len(rows), (options.bootstrap, len(rows)))].mean(1)
            result["recon_mse_ci"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
        paths = {s.id: [str(p) for p in s.image_paths] for split in studies.values() for s in split}
        predictions = [
            {"id": r["id"], "image_paths": paths.get(r["id"], []), "reconstruction_mse": r["mse"]} for r in rows
        ]
        return result, predictions

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        ci = result.get("recon_mse_ci")
        shown = f" (95% CI {ci[0]:.5f}-{ci[1]:.5f})" if ci else ""
        return "\n".join(
            [
                f"reconstruction MSE    {result['recon_mse']:.5f}{shown} over {result['n_examples']} images",
                f"baseline ({result['baseline_name']})   {result['baseline']['recon_mse']:.5f}",
                f"ratio to baseline     {result['mse_ratio']:.4f}",
                f"cell means (one real number per code cell, for reference)   {result['cell_mean_mse']:.5f}",
                f"codes used            {result['code_usage']:.1%} of {result['n_embed']}, perplexity "
                f"{result['perplexity']:.1f}, grid {result['code_grid']}",
            ]
        )

    # ---------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> ImageBatch:
        return self.collate([ImageSample(s.id, s.pixels[:1], [0]) for s in studies])

    def predict(self, batch: ImageBatch) -> list[dict[str, Any]]:
        return [
            {
                "codes": r["codes"].tolist(),
                "reconstruction_mse": round(r["mse"], 6),
                "text": "\n".join(" ".join(f"<code_{c}>" for c in row) for row in r["codes"].tolist()),
            }
            for r in self._rows(batch)
        ]


__all__ = ["ImageBatch", "VQTokenizerOptions", "VQTokenizerTask", "code_statistics"]
