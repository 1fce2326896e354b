"""The convolutional encoder and decoder of the VQ tokenizer.

The module tree mirrors taming-transformers' `diffusionmodules/model.py` Encoder/Decoder (attribute names
`conv_in`, `down[i].block[j]`, `down[i].attn[j]`, `down[i].downsample`, `mid.block_1`, `mid.attn_1`, `mid.block_2`,
`up[i]...`, `norm_out`, `conv_out`; residual blocks with `norm1/conv1/norm2/conv2/nin_shortcut`; attention with
`norm/q/k/v/proj_out`), so its state-dict keys are a taming VQ-GAN's; the code is medvl's own.

Shapes: `Encoder(x [B, in_chans, H, W]) -> [B, z_channels, H/f, W/f]`, `Decoder(z [B, z_channels, h, w]) ->
[B, in_chans, h*f, w*f]`, f = 2 ** (len(ch_mult) - 1). Images enter in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from medvl.models.vq.config import VQConfig


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)  # taming's eps


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, 1x1 convs for q/k/v/out, residual."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(ch, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # [B, 1, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right/bottom by one (taming's asymmetric padding: H -> H/2 exactly)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: residual blocks, attention blocks after them (maybe none), a resampler (maybe none)."""

    def __init__(self, blocks: Sequence[nn.Module], attns: Sequence[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def forward(self, h: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        resample = self._modules.get("downsample") or self._modules.get("upsample")  # set by the encoder/decoder
        return resample(h) if resample is not None else h


class _Mid(nn.Module):
    def __init__(self, ch: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups, dropout)
        self.attn_1 = AttnBlock(ch, groups)
        self.block_2 = ResnetBlock(ch, ch, groups, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, c: VQConfig) -> None:
        super().__init__()
        g, widths = c.norm_groups, [c.ch * m for m in c.ch_mult]
        self.conv_in = nn.Conv2d(c.in_chans, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width, side = c.ch, c.image_size
        for i, out in enumerate(widths):
            blocks, attns = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(width, out, g, c.dropout))
                width = out
                if side in c.attn_resolutions:
                    attns.append(AttnBlock(width, g))
            level = _Level(blocks, attns)
            if i < len(widths) - 1:
                level.downsample = Downsample(width)
                side //= 2
            self.down.append(level)
        self.mid = _Mid(width, g, c.dropout)
        self.norm_out = _norm(width, g)
        self.conv_out = nn.Conv2d(width, c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, c: VQConfig) -> None:
        super().__init__()
        g, widths = c.norm_groups, [c.ch * m for m in c.ch_mult]
        width, side = widths[-1], c.image_size // c.downsample
        self.conv_in = nn.Conv2d(c.z_channels, width, 3, padding=1)
        self.mid = _Mid(width, g, c.dropout)
        levels: list[_Level] = []
        for i in reversed(range(len(widths))):  # built coarse to fine, stored fine to coarse (up[i] is level i)
            blocks, attns = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(width, widths[i], g, c.dropout))
                width = widths[i]
                if side in c.attn_resolutions:
                    attns.append(AttnBlock(width, g))
            level = _Level(blocks, attns)
            if i > 0:
                level.upsample = Upsample(width)
                side *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(width, g)
        self.conv_out = nn.Conv2d(width, c.in_chans, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


__all__ = ["AttnBlock", "Decoder", "Downsample", "Encoder", "ResnetBlock", "Upsample"]
