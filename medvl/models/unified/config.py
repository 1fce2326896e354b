"""Config and size presets of the `unified` family (BiomedGPT / OFA encoder-decoder).

Sizes follow OFA's architectures, which BiomedGPT reuses (`ofa_tiny` .. `ofa_huge` in OFA's `models/ofa/ofa.py`):
tiny 256 wide, 4+4 layers, 4 heads, ResNet-50 stem; medium 512, 4+4, 8, ResNet-101; base 768, 6+6, 12, ResNet-101;
large 1024, 12+12, 16, ResNet-152; huge 1280, 24+12, 16, ResNet-152. The FFN is 4x the width. With OFA's 59,457-entry
dictionary (50,265 BPE + 8,192 image codes + 1,000 location bins) they count about 33M / 93M / 182M / 473M / 930M
parameters (BiomedGPT paper, Table 1; checked in tests/test_unified_model.py). medvl sets `vocab_size` from its own
tokenizer, so a medvl model of a size is smaller by (59,457 - vocab_size) x width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

OFA_VOCAB_SIZE = 59457
"""Entries in OFA's dictionary (BART's 50,265 BPE tokens + 8,192 VQ-GAN codes + 1,000 location bins): the vocabulary
the published parameter counts assume."""


@dataclass
class UnifiedConfig:
    # --- image input (the fields the data path reads) ---
    image_size: int = 256
    """Side of the square input images, in pixels (a multiple of 16: the ResNet stem has stride 16)."""
    in_chans: int = 1
    """Image channels: 1 grayscale (X-rays), 3 RGB."""
    max_views: int = 1
    """Images per example: the unified model takes one."""
    image_mean: float = 0.5
    """Pixel mean subtracted inside the model (images arrive in [0, 1])."""
    image_std: float = 0.25
    """Pixel std the model divides by after subtracting image_mean."""
    channel_mean: tuple[float, ...] = ()
    """Per-channel pixel mean (one value, or one per channel), overriding image_mean (e.g. ImageNet statistics)."""
    channel_std: tuple[float, ...] = ()
    """Per-channel pixel std matching channel_mean."""
    # --- image embedder ---
    resnet: str = "resnet50"
    """timm ResNet whose stem and stages 1-3 (stride 16) embed the image: resnet50 / resnet101 / resnet152 as in
    OFA; any timm ResNet name works (resnet18 in unit tests)."""
    resnet_drop_path_rate: float = 0.0
    """Stochastic depth inside the ResNet blocks (OFA's resnet_drop_path_rate; its default 0)."""
    # --- Transformer ---
    d_model: int = 256
    """Model width (embeddings, attention, the shared token embedding)."""
    encoder_layers: int = 4
    decoder_layers: int = 4
    n_heads: int = 4
    """Attention heads (must divide d_model)."""
    ffn_dim: int = 1024
    """Hidden width of the feed-forward blocks."""
    dropout: float = 0.1
    """Dropout on embeddings and residual branches."""
    attention_dropout: float = 0.0
    """Dropout on attention weights (OFA's default 0)."""
    attn_scale_factor: float = 2.0
    """Queries are scaled by (head_dim * attn_scale_factor) ** -0.5, as are the absolute-position queries (OFA)."""
    # --- positions ---
    max_source_positions: int = 1024
    """Size of the encoder's text position table (longest instruction)."""
    max_target_positions: int = 1024
    """Size of the decoder's position table (longest target, BOS included)."""
    token_bucket_size: int = 256
    """1D relative-position buckets for text: distances up to bucket/2 exact, then log-spaced (OFA's 256)."""
    image_bucket_size: int = 42
    """Side of the image position grid (OFA's 42: up to 42x42 patches, 672 px); also bounds 2D relative offsets."""
    # --- normalization tweaks (NormFormer, as OFA/BiomedGPT use them; the seed's setting is on) ---
    attn_ln: bool = True
    """LayerNorm on each attention block's output before the residual add (OFA's scale_attn)."""
    ffn_ln: bool = True
    """LayerNorm on the FFN hidden state, after the activation (OFA's scale_fc)."""
    head_scale: bool = True
    """Learnable per-head scale on the attention heads' outputs, initialised to 1 (OFA's scale_heads)."""
    encoder_drop_path_rate: float = 0.0
    """Stochastic depth of the encoder layers, rising linearly from 0 to this over depth (OFA's default 0;
    BiomedGPT's fine-tuning scripts use 0.1)."""
    decoder_drop_path_rate: float = 0.0
    """As encoder_drop_path_rate, for the decoder layers."""
    # --- vocabulary ---
    vocab_size: int = 1200
    """Tokenizer vocabulary size (set from the trained tokenizer at training time)."""
    pad_id: int = 0
    """Padding token id (its embedding row stays zero)."""

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        self.channel_mean, self.channel_std = tuple(self.channel_mean), tuple(self.channel_std)
        for name in (
            "image_size",
            "in_chans",
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "n_heads",
            "ffn_dim",
            "vocab_size",
            "max_source_positions",
            "max_target_positions",
            "token_bucket_size",
            "image_bucket_size",
        ):
            check(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        check(
            self.token_bucket_size >= 2,
            f"model.token_bucket_size must be >= 2 (exact buckets for offsets below "
            f"half of it), got {self.token_bucket_size}",
        )
        check(
            self.max_views == 1,
            f"model.max_views must be 1 for the unified family (one image per example), got {self.max_views}",
        )
        check(
            self.image_size % 16 == 0,
            f"model.image_size={self.image_size} must be a multiple of 16 (the stride of the ResNet stem's stages 1-3)",
        )
        grid = self.image_size // 16
        check(
            grid <= self.image_bucket_size,
            f"model.image_size={self.image_size} gives a {grid}x{grid} patch grid, "
            f"larger than model.image_bucket_size={self.image_bucket_size}; raise "
            f"image_bucket_size to at least {grid} or use smaller images",
        )
        check(
            self.d_model % self.n_heads == 0,
            f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}",
        )
        for name in (
            "dropout",
            "attention_dropout",
            "resnet_drop_path_rate",
            "encoder_drop_path_rate",
            "decoder_drop_path_rate",
        ):
            check(0.0 <= getattr(self, name) < 1.0, f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        check(self.attn_scale_factor > 0, f"model.attn_scale_factor must be > 0, got {self.attn_scale_factor}")
        check(self.image_std > 0, f"model.image_std must be > 0, got {self.image_std}")
        check(
            len(self.channel_mean) == len(self.channel_std) and len(self.channel_mean) in (0, 1, self.in_chans),
            f"model.channel_mean {self.channel_mean} and model.channel_std {self.channel_std} need one value each, "
            f"or one per channel (model.in_chans={self.in_chans})",
        )
        check(
            0 <= self.pad_id < self.vocab_size,
            f"model.pad_id={self.pad_id} is outside the vocabulary (model.vocab_size={self.vocab_size})",
        )

    @property
    def grid(self) -> int:
        """Patches per image side (image_size / 16)."""
        return self.image_size // 16


def _size(d_model: int, encoder_layers: int, decoder_layers: int, n_heads: int, resnet: str) -> dict[str, Any]:
    return {
        "d_model": d_model,
        "encoder_layers": encoder_layers,
        "decoder_layers": decoder_layers,
        "n_heads": n_heads,
        "ffn_dim": 4 * d_model,
        "resnet": resnet,
    }


UNIFIED_SIZES: dict[str, dict[str, Any]] = {
    "tiny": _size(256, 4, 4, 4, "resnet50"),
    "medium": _size(512, 4, 4, 8, "resnet101"),
    "base": _size(768, 6, 6, 12, "resnet101"),
    "large": _size(1024, 12, 12, 16, "resnet152"),
    "huge": _size(1280, 24, 12, 16, "resnet152"),
}
"""Size name -> fields (OFA's ofa_tiny .. ofa_huge, which BiomedGPT's S/M/B/L/H reuse)."""


def config_for_reload(config: UnifiedConfig) -> UnifiedConfig:
    """Nothing outside the checkpoint is read to rebuild the model (the ResNet is built without weights)."""
    return dataclasses.replace(config)
