"""Where the model looked: Grad-CAM over the image encoder's patch grid, for a generated report.

Contract: `gradcam(loaded, study, report)` -> float32 [V, S, S] in [0, 1], one map per view of `study` (a
`PreparedStudy`, S = the model's image size). The score explained is the summed log-probability of the report's
tokens under teacher forcing (the report the model generated, or any text); its gradient with respect to the image
encoder's patch features ([N, P, D], P = grid rows x columns) weights each feature channel by its mean gradient
(Grad-CAM), the ReLU of the weighted sum is the map, upsampled bilinearly and scaled to [0, 1] per view. It works for
any family whose model has `encoder` (with a `grid`) and whose task has `log_likelihood(batch)` (the captioner's and
XrayGPT's do); otherwise it raises `ValueError`. `overlay(gray, cam)` blends a map
onto the grayscale view as an RGB image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medvl.data.tokenizer import encode_report
from medvl.infer.predictor import LoadedModel, PreparedStudy, batch_studies


def gradcam(loaded: LoadedModel, study: PreparedStudy, report: str) -> np.ndarray:
    """Grad-CAM maps [V, S, S] of `study` for `report`; see the module docstring."""
    model = loaded.model
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "grid"):
        raise ValueError(f"saliency needs a model with an image encoder that has a patch grid; "
                         f"{type(model).__name__} has none")
    batch = batch_studies(loaded, [study])
    max_len = getattr(getattr(model, "config", None), "max_len", 512)
    ids, _ = encode_report(loaded.tokenizer, report, max_len)
    input_ids = torch.tensor([ids], device=loaded.device)
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # a frozen encoder: the map still needs the gradient at its output
            output = output.detach().requires_grad_(True)
        output.retain_grad()
        captured.append(output)
        return output

    if not hasattr(loaded.task, "log_likelihood"):
        raise ValueError(f"saliency needs a task with log_likelihood(batch); {type(loaded.task).__name__} has none")
    batch.input_ids, batch.attention_mask = input_ids, torch.ones_like(input_ids)
    hook = encoder.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = loaded.task.log_likelihood(batch)
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
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    mixed = np.clip((1 - alpha * cam[..., None]) * base + alpha * cam[..., None] * heat, 0, 1)
    rgb = (mixed * 255).round().astype(np.uint8)
    if size is not None and rgb.shape[0] != size:
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return rgb
