"""Where the model looked: Grad-CAM over the image encoder's patch grid, for a generated report.

Contract: `gradcam(loaded, study, prediction)` -> float32 [V, S, S] in [0, 1], one map per view of `study` (a
`PreparedStudy`, S = the model's image size). The score explained is the task's `explain_score` for the prediction
record: for report tasks the summed log-probability of the report's tokens under teacher forcing (the report the
model generated, or any text), for classification the logit of the predicted class; its gradient with respect to
the image encoder's patch features ([N, P, D], P = grid rows x columns) weights each feature channel by its mean
gradient (Grad-CAM), the ReLU of the weighted sum is the map, upsampled bilinearly and scaled to [0, 1] per view. It
works for any family whose model has `encoder` (with a `grid`) and whose task has an `explain_score`; otherwise it
raises `ValueError`. `overlay(gray, cam)` blends a map onto the grayscale view as an RGB image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medvl.infer.predictor import LoadedModel, PreparedStudy, batch_studies


def gradcam(loaded: LoadedModel, study: PreparedStudy, prediction: str | dict[str, Any]) -> np.ndarray:
    """Grad-CAM maps [V, S, S] of `study` for its prediction record (a report text stands for {"report": text});
    see the module docstring."""
    record = {"report": prediction} if isinstance(prediction, str) else prediction
    model = loaded.model
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "grid"):
        raise ValueError(
            f"saliency needs a model with an image encoder that has a patch grid; {type(model).__name__} has none"
        )
    batch = batch_studies(loaded, [study])
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # a frozen encoder: the map still needs the gradient at its output
            output = output.detach().requires_grad_(True)
        output.retain_grad()
        captured.append(output)
        return output

    hook = encoder.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            try:
                score = loaded.task.explain_score(batch, record)
            except NotImplementedError as e:
                raise ValueError(str(e)) from None
            model.zero_grad(set_to_none=True)
            score.backward()
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    feats = captured[0]
    weights = feats.grad.mean(dim=1, keepdim=True)  # [N, 1, D]: a channel's importance
    cam = torch.relu((feats.detach() * weights).sum(-1))  # [N, P]
    gh, gw = encoder.grid
    cam = F.interpolate(cam.view(-1, 1, gh, gw), size=study.pixels.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu().numpy().astype(np.float32)


def overlay(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.45, size: int | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the grayscale view with the map blended on top (inferno colors), resized to `size`."""
    from matplotlib import colormaps
    from PIL import Image

    heat = colormaps["inferno"](cam)[..., :3]
    if gray.ndim == 3:  # a colour (or N-band) view: its first three channels, or its mean
        gray = gray[..., :3] if gray.shape[-1] >= 3 else gray.mean(-1).astype(np.uint8)
    base = gray.astype(np.float32) / 255.0
    base = np.repeat(base[..., None], 3, axis=-1) if base.ndim == 2 else base
    mixed = np.clip((1 - alpha * cam[..., None]) * base + alpha * cam[..., None] * heat, 0, 1)
    rgb = (mixed * 255).round().astype(np.uint8)
    if size is not None and rgb.shape[0] != size:
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return rgb
