"""Masked modeling (VideoMAE / VideoMAEv2 pretraining) of the "mae" family, on the one runner.

The task contract (`medvl.tasks.base.Task`):
- needs: nothing but images (a study's views are a clip's frames, or one image);
- masks: tube masking (the same `mask_ratio` of patch positions hidden in every tubelet of a clip; for an image,
  MAE's random patch masking) and, with `decoder_mask_ratio` > 0, VideoMAEv2's dual masking: the decoder gets mask
  tokens only at the positions of a running-cell pattern (2x2 cells, `decoder_mask_ratio` of each cell dropped, the
  cell shifting by one each tubelet, a random phase per clip) and the loss is taken over the hidden tokens among
  them. Training masks come from torch's global (CPU) RNG, which checkpoints carry, so a resumed run draws the same
  masks; validation and evaluation draw from a generator seeded by (task.seed, study id), so a study is always masked
  the same way, and prediction from one seeded by task.seed alone (the answer does not depend on the request's id);
  outside training the decoder reconstructs every hidden token;
- loss: MSE between the decoder's patches and the target patches, per-patch normalized pixels (`norm_pix_loss`, each
  channel of a patch to zero mean and unit variance) or the model's normalized pixels, averaged over hidden tokens;
- validation: the loss (selects the best checkpoint, mode min), the baseline's loss and their ratio;
- evaluation: the reconstruction loss of the split with a bootstrap 95% interval next to a baseline that learned
  nothing: with per-patch normalized targets each patch's mean (the normalized target 0, a loss of (n - 1) / n by
  construction), with the model's normalized pixels the mean colour of the clip's visible pixels, and the per-study
  difference model minus baseline with a paired bootstrap interval (the same resampled studies for both); and, for the
  first `eval_images` studies, PNG panels (original | masked | reconstruction, one row per frame) in
  reconstructions/ and report.html;
- prediction record: {"reconstruction_loss", "baseline_loss", "mask_ratio"} of the study under the seeded mask.
"""

from __future__ import annotations

import html
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medvl.data.dataset import Skipped, StudyDataset, ViewLoader, collate_views
from medvl.data.study import Study
from medvl.tasks.base import Task

_CELL = 4  # a running cell is 2x2 patches
BASELINE_NAMES = {True: "per-patch mean (normalized target 0)", False: "mean colour of the visible pixels"}


@dataclass
class MaskedModelingOptions:
    """The `task:` section of a masked_modeling recipe."""

    mask_ratio: float = 0.9
    """Share of patch positions hidden from the encoder (tube masking; VideoMAE: 0.9 for clips, MAE: 0.75 images)."""
    decoder_mask_ratio: float = 0.5
    """VideoMAEv2 dual masking: share of each 2x2 running cell the decoder does not reconstruct (0.25, 0.5 or 0.75);
    0 = off (the decoder reconstructs every hidden token). Applies in training; evaluation reconstructs all."""
    norm_pix_loss: bool = True
    """Targets are per-patch normalized pixels (VideoMAE's default); False: the model's normalized pixels."""
    seed: int = 0
    """Seeds the masks of validation, evaluation and prediction (with the study id)."""
    eval_images: int = 16
    """Reconstructions `medvl evaluate` writes as PNG panels (0 = none)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"task.mask_ratio must be in (0, 1), got {self.mask_ratio} (VideoMAE uses 0.75-0.9)")
        if self.decoder_mask_ratio and round(self.decoder_mask_ratio * _CELL) not in (1, 2, 3):
            raise ValueError(
                f"task.decoder_mask_ratio must be 0 (off), 0.25, 0.5 or 0.75 (a share of a 2x2 running "
                f"cell), got {self.decoder_mask_ratio}"
            )
        if self.eval_images < 0:
            raise ValueError(f"task.eval_images must be >= 0, got {self.eval_images}")


@dataclass
class ClipSample:
    id: str
    images: np.ndarray
    """uint8 [V, H, W] or [V, H, W, C]."""
    view_ids: list[int]


@dataclass
class ClipBatch:
    ids: list[str]
    images: Tensor
    """float [B, T, C, H, W] in [0, 1]."""
    view_ids: Tensor
    view_mask: Tensor
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> ClipBatch:
        for name in ("images", "view_ids", "view_mask"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self


class ClipDataset(StudyDataset):
    def encode(self, i: int, images: np.ndarray) -> ClipSample:
        study = self.studies[i]
        return ClipSample(study.id, images, list(study.view_ids[: self.views.max_views]))


def tube_mask(
    grid: tuple[int, int, int], ratio: float, batch: int, generators: Sequence[torch.Generator] | None = None
) -> Tensor:
    """bool [batch, T * H * W], True = hidden: the same round(ratio * H * W) random positions in every tubelet."""
    t, h, w = grid
    n = h * w
    k = min(n - 1, max(1, round(ratio * n)))
    if generators is None:
        scores = torch.rand(batch, n)
    else:
        scores = torch.stack([torch.rand(n, generator=g) for g in generators])
    hidden = torch.zeros(batch, n, dtype=torch.bool)
    hidden.scatter_(1, scores.argsort(1)[:, :k], True)
    return hidden[:, None, :].expand(batch, t, n).reshape(batch, t * n)


def running_cell_mask(grid: tuple[int, int, int], ratio: float, phases: Tensor) -> Tensor:
    """bool [B, T * H * W], True = decoded: VideoMAEv2's running cell. Each 2x2 cell keeps (1 - ratio) of its patches
    for the decoder; the pattern rolls by one position per tubelet, starting at each row's phase (0..3)."""
    t, h, w = grid
    dropped = round(ratio * _CELL)
    queue = torch.tensor([True] * dropped + [False] * (_CELL - dropped))  # True = not decoded
    frames = torch.arange(t)
    index = (torch.arange(_CELL)[None, None, :] + phases[:, None, None] + frames[None, :, None] + 1) % _CELL
    cells = queue[index].view(len(phases), t, 2, 2)  # [B, T, 2, 2]
    tiled = cells.repeat(1, 1, (h + 1) // 2, (w + 1) // 2)[:, :, :h, :w]
    return ~tiled.reshape(len(phases), t * h * w)


class MaskedModelingTask(Task):
    name = "masked_modeling"
    needs = ()
    options_class = MaskedModelingOptions
    default_select_metric = "loss"
    default_select_mode = "min"
    endpoint = "reconstructions"
    prediction_fields = {
        "reconstruction_loss": (float, "MSE of the reconstructed hidden patches (in the task's target pixels)"),
        "baseline_loss": (
            float,
            (
                "the same loss of the baseline (each patch's mean for per-patch normalized "
                "targets, else the clip's visible mean colour)"
            ),
        ),
        "mask_ratio": (float, "share of patches hidden from the encoder"),
    }
    headline_metrics = ("loss", "baseline_loss", "loss_ratio")

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        from medvl.models.mae import token_grid

        self.grid = token_grid(self.cfg.model)
        self._panels_left = self.options.eval_images
        self._panels: dict[str, np.ndarray] = {}

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        return {"num_outputs": 0}

    # -------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> ClipDataset:
        mc = self.cfg.model
        return ClipDataset(
            studies,
            ViewLoader(mc.image_size, mc.max_views, mc.in_chans, self.cfg.data.cache_images),
            self.cfg.data.strict,
        )

    def collate(self, items: Sequence[Any]) -> ClipBatch:
        samples = [x for x in items if isinstance(x, ClipSample)]
        mc = self.cfg.model
        if samples:
            images, view_ids, view_mask = collate_views(samples, mc.max_views)
        else:
            images = torch.zeros(0, mc.max_views, mc.in_chans, mc.image_size, mc.image_size)
            view_ids = torch.zeros(0, mc.max_views, dtype=torch.long)
            view_mask = torch.zeros(0, mc.max_views, dtype=torch.bool)
        return ClipBatch(
            [s.id for s in samples], images, view_ids, view_mask, [x for x in items if isinstance(x, Skipped)]
        )

    # ------------------------------------------------------------------------------------------------- masks
    def masks(self, batch: ClipBatch, training: bool, by_id: bool = True) -> tuple[Tensor, Tensor]:
        """(hidden, decoded) bool [B, N]; see the module docstring for where their randomness comes from (`by_id`
        False: every study gets the mask of `task.seed` alone, so a prediction does not depend on the request id)."""
        opts, b = self.options, len(batch)
        if training:
            hidden = tube_mask(self.grid, opts.mask_ratio, b)
            if opts.decoder_mask_ratio:
                phases = torch.randint(0, _CELL, (b,))
                if self.grid[1] % 2 or self.grid[2] % 2:  # odd grids: one phase per batch keeps counts equal
                    phases = phases[:1].expand(b)
                decoded = running_cell_mask(self.grid, opts.decoder_mask_ratio, phases)
            else:
                decoded = hidden
        else:
            generators = [
                torch.Generator().manual_seed(zlib.crc32(f"{opts.seed}:{sid if by_id else ''}".encode()))
                for sid in batch.ids
            ]
            hidden = tube_mask(self.grid, opts.mask_ratio, b, generators)
            decoded = hidden
        device = batch.images.device
        return hidden.to(device), decoded.to(device)

    def targets(self, batch: ClipBatch) -> Tensor:
        """[B, N, patch_dim] reconstruction targets of every token."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        if self.options.norm_pix_loss:
            patches = model.patchify(batch.images.float())
            c = self.cfg.model.in_chans
            per_channel = patches.view(*patches.shape[:2], -1, c)
            mean, var = per_channel.mean(2, keepdim=True), per_channel.var(2, unbiased=True, keepdim=True)
            return ((per_channel - mean) / (var.sqrt() + 1e-6)).view(patches.shape)
        return model.patchify(model.clips(batch.images, batch.view_mask.bool()))

    def _reconstruct(
        self, batch: ClipBatch, training: bool, by_id: bool = True
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(predicted [B, Nd, P], target [B, Nd, P], weight [B, Nd] 1 on hidden tokens, decoded [B, N], the
        baseline's prediction [B, Nd, P])."""
        hidden, decoded = self.masks(batch, training, by_id)
        pred = self.model(batch.images, batch.view_ids, batch.view_mask, hidden, decoded).float()
        b, p = len(batch), pred.shape[-1]
        with torch.no_grad():
            every = self.targets(batch)
            target = every[decoded].view(b, -1, p)
            baseline = self._baseline(every, hidden)[:, None, :].expand_as(target)
        weight = hidden[decoded].view(b, -1).float()
        return pred, target, weight, decoded, baseline

    def _baseline(self, targets: Tensor, hidden: Tensor) -> Tensor:
        """[B, P] what a model that learned nothing predicts for every hidden patch. Per-patch normalized targets:
        the patch's own mean (0). Model-normalized pixels: the mean colour of the clip's visible pixels, channel by
        channel (predicting the hidden patch's own mean would use what is hidden)."""
        if self.options.norm_pix_loss:
            return targets.new_zeros(targets.shape[0], targets.shape[-1])
        c = self.cfg.model.in_chans
        per_channel = targets.view(*targets.shape[:2], -1, c)  # [B, N, pixels, C]
        visible = (~hidden).to(targets.dtype)  # [B, N]
        total = (per_channel * visible[:, :, None, None]).sum((1, 2))  # [B, C]
        mean = total / (visible.sum(1, keepdim=True) * per_channel.shape[2]).clamp_min(1)
        return mean[:, None, :].expand(-1, targets.shape[-1] // c, -1).reshape(targets.shape[0], -1)

    def __call__(self, batch: ClipBatch) -> dict[str, Tensor]:
        pred, target, weight, _, _ = self._reconstruct(batch, training=self.model.training)
        per_token = (pred - target).pow(2).mean(-1)
        n = weight.sum()
        return {"loss": (per_token * weight).sum() / n.clamp_min(1), "weight": n}

    # ------------------------------------------------------------------------------------ validate / evaluate
    @torch.no_grad()
    def _rows(self, batch: ClipBatch, panels: bool, by_id: bool = True) -> list[dict[str, Any]]:
        pred, target, weight, decoded, guess = self._reconstruct(batch, training=False, by_id=by_id)
        n = weight.sum(1).clamp_min(1)
        loss = ((pred - target).pow(2).mean(-1) * weight).sum(1) / n
        baseline = ((guess - target).pow(2).mean(-1) * weight).sum(1) / n
        rows = [{"id": sid, "loss": float(loss[k]), "baseline": float(baseline[k])} for k, sid in enumerate(batch.ids)]
        if panels and self._panels_left > 0:
            for k in range(min(self._panels_left, len(rows))):
                rows[k]["panel"] = self._panel(batch, k, pred[k], decoded[k])
            self._panels_left -= min(self._panels_left, len(rows))
        return rows

    def outputs(self, batch: ClipBatch) -> list[dict[str, Any]]:
        return self._rows(batch, panels=True)

    def validation_outputs(self, batch: ClipBatch) -> list[dict[str, Any]]:
        return self._rows(batch, panels=False)

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        if not rows:
            return {}
        base = float(np.mean([r["baseline"] for r in rows]))
        loss = float(np.mean([r["loss"] for r in rows]))
        return {"baseline_loss": base, "loss_ratio": loss / base if base > 0 else float("nan")}

    def _panel(self, batch: ClipBatch, k: int, pred: Tensor, decoded: Tensor) -> np.ndarray:
        """uint8 [rows * S, 3 * S, 3]: per frame (at most 8), original | masked | reconstruction."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        images = batch.images[k : k + 1].float()  # [1, T, C, H, W] in [0, 1]
        patches = model.patchify(images)[0]  # [N, P]
        full = patches.clone()
        if self.options.norm_pix_loss:  # undo the per-patch normalization with the true patch statistics
            c = self.cfg.model.in_chans
            per_channel = patches.view(patches.shape[0], -1, c)
            mean, std = per_channel.mean(1, keepdim=True), per_channel.var(1, unbiased=True, keepdim=True).sqrt()
            guess = (pred.view(pred.shape[0], -1, c) * (std[decoded] + 1e-6) + mean[decoded]).view(pred.shape)
        else:  # the model's normalization, undone
            mc, c = self.cfg.model, self.cfg.model.in_chans
            mean = torch.tensor(mc.channel_mean or (mc.image_mean,), device=pred.device)
            std = torch.tensor(mc.channel_std or (mc.image_std,), device=pred.device)
            guess = (pred.view(pred.shape[0], -1, c) * std + mean).view(pred.shape)
        full[decoded] = guess.to(full.dtype)
        masked = patches.clone()
        masked[decoded] = 0.5 * patches[decoded] + 0.25  # hidden patches dimmed
        views = [images[0], model.unpatchify(masked[None])[0], model.unpatchify(full[None])[0]]
        frames = np.linspace(0, images.shape[1] - 1, min(8, images.shape[1])).round().astype(int)
        rows = [np.concatenate([_to_rgb(v[f]) for v in views], axis=1) for f in frames]
        return np.concatenate(rows, axis=0)

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = list(outputs.values())[-1]
        loss = np.array([r["loss"] for r in rows])
        base = np.array([r["baseline"] for r in rows])
        result: dict[str, Any] = {
            "reconstruction_loss": float(loss.mean()),
            "n_examples": len(rows),
            "mask_ratio": self.options.mask_ratio,
            "norm_pix_loss": self.options.norm_pix_loss,
            "baseline": {"reconstruction_loss": float(base.mean())},
            "baseline_name": BASELINE_NAMES[self.options.norm_pix_loss],
            "loss_ratio": float(loss.mean() / base.mean()) if base.mean() > 0 else None,
        }
        if options.bootstrap and len(rows) > 1:
            rng = np.random.default_rng(options.seed)
            draws = rng.integers(0, len(rows), (options.bootstrap, len(rows)))
            means = loss[draws].mean(1)
            result["reconstruction_loss_ci"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
            # Paired: the same resampled studies for model and baseline, so the interval is that of the gain.
            gains = (loss - base)[draws].mean(1)
            result["difference_to_baseline_ci"] = [float(np.percentile(gains, 2.5)), float(np.percentile(gains, 97.5))]
        result["difference_to_baseline"] = float((loss - base).mean())
        paths = {s.id: [str(p) for p in s.image_paths] for split in studies.values() for s in split}
        self._panels = {}
        predictions = []
        for r in rows:
            record = {
                "id": r["id"],
                "image_paths": paths.get(r["id"], []),
                "reconstruction_loss": r["loss"],
                "baseline_loss": r["baseline"],
            }
            if "panel" in r:
                name = f"reconstructions/{len(self._panels):04d}_{_safe(r['id'])}.png"
                self._panels[name] = r["panel"]
                record["image"] = name
            predictions.append(record)
        return result, predictions

    def write_evaluation(
        self, out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        super().write_evaluation(out, result, rows, options, title)
        from PIL import Image

        (out / "reconstructions").mkdir(parents=True, exist_ok=True)
        for name, panel in self._panels.items():
            Image.fromarray(panel).save(out / name)
        if options.html:
            (out / "report.html").write_text(_report_html(result, rows, title), encoding="utf-8")

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        ci = result.get("reconstruction_loss_ci")
        shown = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
        return "\n".join(
            [
                f"reconstruction loss   {result['reconstruction_loss']:.4f}{shown}  "
                f"over {result['n_examples']} studies, "
                f"mask ratio {result['mask_ratio']}",
                f"baseline ({result['baseline_name']})   {result['baseline']['reconstruction_loss']:.4f}",
                f"ratio to baseline     {result['loss_ratio']:.4f}" if result.get("loss_ratio") is not None else "",
                _difference(result),
            ]
        )

    # ---------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> ClipBatch:
        return self.collate([ClipSample(s.id, s.pixels, s.view_ids) for s in studies])

    def predict(self, batch: ClipBatch) -> list[dict[str, Any]]:
        return [
            {
                "reconstruction_loss": round(r["loss"], 6),
                "baseline_loss": round(r["baseline"], 6),
                "mask_ratio": self.options.mask_ratio,
            }
            for r in self._rows(batch, panels=False, by_id=False)
        ]


def _difference(result: dict[str, Any]) -> str:
    """The model-minus-baseline line of an evaluation (a paired bootstrap interval when there is one)."""
    if result.get("difference_to_baseline") is None:  # evaluations written before it existed
        return ""
    ci = result.get("difference_to_baseline_ci")
    shown = f" (paired 95% CI {ci[0]:.4f} to {ci[1]:.4f})" if ci else ""
    return f"model minus baseline  {result['difference_to_baseline']:.4f}{shown}"


def _to_rgb(frame: Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> uint8 [H, W, 3] (grayscale repeated; more than 3 channels: the first one)."""
    x = frame.detach().float().clamp(0, 1).cpu()
    x = x[:3] if x.shape[0] == 3 else x[:1].expand(3, -1, -1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]


def _report_html(result: dict[str, Any], rows: list[dict[str, Any]], title: str) -> str:
    ci = result.get("reconstruction_loss_ci")
    table = [
        (
            "reconstruction loss",
            f"{result['reconstruction_loss']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""),
        ),
        (f"baseline: {result['baseline_name']}", f"{result['baseline']['reconstruction_loss']:.4f}"),
        ("model minus baseline, paired", _difference(result).split("  ", 1)[-1].strip()),
        ("studies", str(result["n_examples"])),
        ("mask ratio", str(result["mask_ratio"])),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in table)
    figures = "".join(
        f'<figure><img src="{html.escape(r["image"])}"><figcaption>{html.escape(r["id"])}: loss '
        f"{r['reconstruction_loss']:.4f} (baseline {r['baseline_loss']:.4f})</figcaption></figure>"
        for r in rows
        if "image" in r
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>'
        "body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;text-align:left}"
        "img{image-rendering:pixelated;max-width:100%}figure{display:inline-block;margin:1em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{cells}</table>"
        "<h2>Reconstructions (original | masked | reconstruction)</h2>"
        f"{figures or '<p>none written (task.eval_images=0)</p>'}</body></html>"
    )


__all__ = ["MaskedModelingOptions", "MaskedModelingTask", "running_cell_mask", "tube_mask"]
