"""`VQModel`: the VQ image tokenizer (encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder).

Contract (batch-first; images in [0, 1] as the data path gives them, mapped to [-1, 1] inside as taming does):
- `encode(images [B, C, H, W])` -> `Quantized` (z_q [B, D, H/f, W/f], codes long [B, H/f, W/f], losses);
- `codes(images)` -> long [B, H/f, W/f] (no gradient; what a downstream model predicts);
- `decode(z_q)` / `decode_codes(codes)` -> reconstructions [B, C, H, W] in [0, 1] units (not clamped);
- `forward(images)` -> (reconstruction in [0, 1] units, `Quantized`).
f = 2 ** (len(ch_mult) - 1). State-dict keys are those of taming-transformers' VQModel without its `loss.*`
(`encoder.*`, `decoder.*`, `quantize.embedding.weight`, `quant_conv.*`, `post_quant_conv.*`), plus, with the EMA
codebook, `quantize.cluster_size` and `quantize.embed_sum`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medvl.models.vq.config import VQConfig
from medvl.models.vq.layers import Decoder, Encoder
from medvl.models.vq.quantizer import GumbelQuantizer, Quantized, VectorQuantizer


class VQModel(nn.Module):
    config: VQConfig
    quantize: VectorQuantizer | GumbelQuantizer

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        if config.quantizer == "gumbel":
            self.quantize = GumbelQuantizer(config.embed_dim, config.n_embed, config.embed_dim)
        else:
            self.quantize = VectorQuantizer(
                config.n_embed, config.embed_dim, config.beta, config.ema_decay, config.dead_code_threshold
            )

    def _check(self, images: Tensor) -> None:
        c, f = self.config, self.config.downsample
        if images.ndim != 4 or images.shape[1] != c.in_chans or images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(
                f"the VQ tokenizer takes images [B, {c.in_chans}, H, W] with H and W multiples of {f}, got "
                f"{list(images.shape)}"
            )

    def encode(self, images: Tensor) -> Quantized:
        self._check(images)
        return self.quantize(self.quant_conv(self.encoder(images * 2 - 1)))

    @torch.no_grad()
    def codes(self, images: Tensor) -> Tensor:
        """long [B, H/f, W/f]: the code of each f x f cell."""
        return self.encode(images).codes

    def decode(self, z_q: Tensor) -> Tensor:
        return (self.decoder(self.post_quant_conv(z_q)) + 1) / 2

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.decode(self.quantize.lookup(codes))

    def forward(self, images: Tensor) -> tuple[Tensor, Quantized]:
        q = self.encode(images)
        return self.decode(q.z_q), q


__all__ = ["VQModel"]
