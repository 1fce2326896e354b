"""Config and size presets of the `vq` family (VQ image tokenizer).

The field names follow taming-transformers' `ddconfig` (`ch`, `ch_mult`, `num_res_blocks`, `attn_resolutions`,
`z_channels`, `in_channels` as `in_chans`, `resolution` as `image_size`) plus `n_embed` and `embed_dim`, so a taming
yaml maps onto it one to one (`config_from_taming_yaml`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class VQConfig:
    # --- image input (the fields the data path reads) ---
    image_size: int = 64
    """Side of the square training images, in pixels (a multiple of the downsampling factor 2**(len(ch_mult)-1));
    the network is convolutional, so it encodes other multiples too."""
    in_chans: int = 1
    """Image channels: 1 grayscale (X-rays), 3 RGB (taming's VQ-GANs)."""
    max_views: int = 1
    """Images per example: one."""
    # --- encoder / decoder (taming's ddconfig) ---
    ch: int = 16
    """Channels of the first level; level i has ch * ch_mult[i]."""
    ch_mult: tuple[int, ...] = (1, 2, 4)
    """Channel multiplier per resolution level; len(ch_mult) - 1 halvings (the codes' stride)."""
    num_res_blocks: int = 1
    """Residual blocks per level in the encoder (the decoder has one more, as in taming)."""
    attn_resolutions: tuple[int, ...] = ()
    """Feature-map sides (at image_size input) where a self-attention block follows each residual block."""
    z_channels: int = 32
    """Channels of the encoder output / decoder input."""
    dropout: float = 0.0
    """Dropout inside the residual blocks."""
    norm_groups: int = 8
    """GroupNorm groups (taming: 32); must divide ch * every ch_mult."""
    # --- quantizer ---
    quantizer: str = "vq"
    """vq: nearest codebook entry (VQ-VAE / taming VQModel); gumbel: taming's GumbelVQ (codes = argmax of a 1x1
    projection; loaded checkpoints only, it does not train here)."""
    n_embed: int = 256
    """Codebook size K (the number of image codes)."""
    embed_dim: int = 32
    """Dimension of a codebook vector."""
    beta: float = 0.25
    """Commitment-loss weight (VQ-VAE's beta)."""
    ema_decay: float = 0.99
    """Codebook update by exponential moving averages of the assigned encoder outputs (VQ-VAE, appendix); 0 =
    learned by the codebook loss instead (taming)."""
    dead_code_threshold: float = 1.0
    """With EMA: a code whose moving-average count per batch falls below this is restarted at a random encoder
    output of the batch (0 = never)."""

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        self.ch_mult, self.attn_resolutions = tuple(self.ch_mult), tuple(self.attn_resolutions)
        for name in ("image_size", "in_chans", "ch", "num_res_blocks", "z_channels", "n_embed", "embed_dim"):
            check(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        check(len(self.ch_mult) >= 1 and min(self.ch_mult) >= 1, f"model.ch_mult must be >= 1, got {self.ch_mult}")
        check(self.max_views == 1, f"model.max_views must be 1 for the vq family, got {self.max_views}")
        check(
            self.image_size % self.downsample == 0,
            f"model.image_size={self.image_size} must be a multiple of the codes' stride {self.downsample} "
            f"(2 ** (len(model.ch_mult) - 1))",
        )
        widths = sorted({self.ch * m for m in self.ch_mult})
        check(
            self.norm_groups >= 1 and all(w % self.norm_groups == 0 for w in widths),
            f"model.norm_groups={self.norm_groups} must divide every level's channels {widths}",
        )
        check(self.quantizer in ("vq", "gumbel"), f"model.quantizer must be vq or gumbel, got {self.quantizer!r}")
        check(0.0 <= self.ema_decay < 1.0, f"model.ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.beta >= 0 and self.dead_code_threshold >= 0, "model.beta and model.dead_code_threshold must be >= 0")
        check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def downsample(self) -> int:
        """Pixels per code along a side: 2 ** (len(ch_mult) - 1)."""
        return 2 ** (len(self.ch_mult) - 1)


VQ_SIZES: dict[str, dict[str, Any]] = {
    # CPU-sized VQ-VAE for 64 px grayscale images: stride 4 (16x16 codes), 256 codes.
    "tiny": {"ch": 16, "ch_mult": (1, 2, 4), "num_res_blocks": 1, "z_channels": 32, "embed_dim": 32, "n_embed": 256},
    # A small stride-8 VQ-VAE (1024 codes) for 128-256 px images on one GPU.
    "small": {
        "ch": 64,
        "ch_mult": (1, 1, 2, 4),
        "num_res_blocks": 2,
        "z_channels": 128,
        "embed_dim": 64,
        "n_embed": 1024,
        "norm_groups": 32,
    },
    # taming-transformers' ImageNet VQ-GAN f16 (vqgan_imagenet_f16_1024 / _16384 with n_embed=16384), 3 channels.
    "taming_f16": {
        "image_size": 256,
        "in_chans": 3,
        "ch": 128,
        "ch_mult": (1, 1, 2, 2, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "z_channels": 256,
        "embed_dim": 256,
        "n_embed": 1024,
        "norm_groups": 32,
        "ema_decay": 0.0,
    },
}
"""Size name -> fields."""


def config_from_taming_yaml(path: str | Path, **overrides: Any) -> VQConfig:
    """The `VQConfig` of a taming-transformers model yaml (`model.params.ddconfig`, `model.params.n_embed`,
    `model.params.embed_dim`; GumbelVQ when `model.target` names it).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the yaml has no model.params.ddconfig (not a taming VQ model config), or a setting medvl's
            VQModel does not build (double_z, out_ch != in_channels).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VQ tokenizer config {path} does not exist (a taming-transformers model yaml)")
    doc = yaml.safe_load(path.read_text()) or {}
    params = (doc.get("model") or {}).get("params") or {}
    dd = params.get("ddconfig")
    if not isinstance(dd, dict) or "n_embed" not in params:
        raise ValueError(
            f"{path} has no model.params.ddconfig / model.params.n_embed: it is not a taming-transformers VQ "
            "model config (configs/*.yaml next to the checkpoint)"
        )
    if dd.get("double_z", False):
        raise ValueError(f"{path}: ddconfig.double_z is true (a KL autoencoder, not a VQ model)")
    if dd.get("out_ch", dd.get("in_channels", 3)) != dd.get("in_channels", 3):
        raise ValueError(f"{path}: ddconfig.out_ch must equal ddconfig.in_channels")
    gumbel = "gumbel" in str(doc["model"].get("target", "")).lower()
    fields = {
        "image_size": int(dd.get("resolution", 256)),
        "in_chans": int(dd.get("in_channels", 3)),
        "ch": int(dd["ch"]),
        "ch_mult": tuple(int(m) for m in dd["ch_mult"]),
        "num_res_blocks": int(dd["num_res_blocks"]),
        "attn_resolutions": tuple(int(r) for r in dd.get("attn_resolutions", ())),
        "z_channels": int(dd["z_channels"]),
        "dropout": float(dd.get("dropout", 0.0)),
        "norm_groups": 32,
        "n_embed": int(params["n_embed"]),
        "embed_dim": int(params["embed_dim"]),
        "quantizer": "gumbel" if gumbel else "vq",
        "ema_decay": 0.0,
    }
    return VQConfig(**{**fields, **overrides})


def config_for_reload(config: VQConfig) -> VQConfig:
    """Nothing outside the checkpoint is read to rebuild the model."""
    return dataclasses.replace(config)


__all__ = ["VQ_SIZES", "VQConfig", "config_for_reload", "config_from_taming_yaml"]
