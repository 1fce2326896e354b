"""The "classifier" family: any medvl image encoder + a pooling head that names what an image shows.

Contract: `ImageClassifier.forward(images [B, V, C, H, W] in [0, 1], view_ids [B, V], view_mask [B, V] True=present)`
-> [B, num_outputs] (class logits, or regressed values). Each present view goes through the shared image encoder
(`ENCODERS[config.encoder]`: conv, vit, torchvision, timm or hf, P patches of width D), gets a learned view-type
embedding (0 = frontal, 1 = lateral) as the captioner's memory does, and the patch features of all present views of
a study are averaged (mean pooling), normalized (LayerNorm), passed through dropout and a linear layer. Absent views are
never encoded. `encoder` (with its `grid`) is exposed so Grad-CAM can explain a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medvl.models.encoders import ENCODERS, ImageEncoderConfig, normalize_images

N_VIEW_TYPES = 2  # frontal, lateral


@dataclass
class ClassifierConfig(ImageEncoderConfig):
    image_size: int = 64
    """Side of the square input images, in pixels."""
    max_views: int = 1
    """Images per study; extra views are dropped, missing ones masked."""
    ffn_mult: int = 4
    """encoder=vit: MLP width as a multiple of vit_dim."""
    dropout: float = 0.1
    """Dropout before the linear layer."""
    num_outputs: int = 2
    """Outputs of the head: one per class (classification) or per coordinate (regression); set by the task."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("image_size", "in_chans", "max_views", "num_outputs"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


CLASSIFIER_SIZES: dict[str, dict[str, Any]] = {
    # Unit tests: a few thousand parameters.
    "tiny": {"image_size": 32, "conv_channels": (8, 16), "conv_blocks": (1, 1)},
    # CPU recipes at 64 px (NIH ChestX-ray14 downsized, the synthetic set): 4 stages, 4x4 patches per view.
    "small": {"image_size": 64, "conv_channels": (32, 64, 128, 192), "conv_blocks": (1, 1, 1, 1)},
    # GPU-sized: a torchvision ResNet-50 trunk at 224 px (pretrained weights from model.encoder_weights).
    "base": {"image_size": 224, "encoder": "torchvision", "encoder_name": "resnet50"},
}


def config_for_reload(config: ClassifierConfig) -> ClassifierConfig:
    """As the captioner's: a torchvision/timm backbone's weights are in the checkpoint, the original file is not
    needed to rebuild it."""
    import dataclasses

    if config.encoder in ("torchvision", "timm") and config.encoder_weights:
        return dataclasses.replace(config, encoder_weights="")
    return config


class ImageClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ENCODERS.get(config.encoder)(config)
        d = self.encoder.out_dim
        self.view_embed = nn.Embedding(N_VIEW_TYPES, d)
        nn.init.zeros_(self.view_embed.weight)  # a single-view model starts as plain mean pooling
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(d, config.num_outputs)

    def forward(self, images: Tensor, view_ids: Tensor, view_mask: Tensor) -> Tensor:
        b, v = view_mask.shape
        if images.shape[:2] != (b, v) or images.shape[2] != self.config.in_chans:
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not match view_mask {tuple(view_mask.shape)} "
                f"and model.in_chans={self.config.in_chans} (expected [B, V, C, H, W])"
            )
        view_mask = view_mask.bool()
        feats = self.encoder(normalize_images(images[view_mask], self.config))  # [N, P, D], present views only
        feats = feats + self.view_embed(view_ids[view_mask].clamp(0, N_VIEW_TYPES - 1))[:, None]
        per_view = feats.mean(1)  # [N, D]
        study = torch.zeros(b, v, per_view.shape[-1], dtype=per_view.dtype, device=per_view.device)
        study[view_mask] = per_view
        pooled = study.sum(1) / view_mask.sum(1, keepdim=True).clamp_min(1)  # mean over present views
        return self.head(self.drop(self.norm(pooled)))


__all__ = ["CLASSIFIER_SIZES", "ClassifierConfig", "ImageClassifier", "config_for_reload"]
