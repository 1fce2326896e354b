"""Pre-norm Transformer layers of the unified model, with NormFormer's three tweaks as OFA uses them.

- `head_scale`: a learnable scale per attention head on the heads' outputs before the output projection, init 1.
- `attn_ln`: LayerNorm on each attention block's output before the dropout and residual add (where OFA's
  `unify_transformer_layer.py` applies it: after the output projection).
- `ffn_ln`: LayerNorm on the FFN hidden state after the activation, before the second linear.
Residual branches go through stochastic depth (timm's DropPath) when a drop-path rate is set.

Attention is `F.scaled_dot_product_attention` with an additive float bias [B or 1, H, Tq, Tk] that already holds the
position biases and -inf-like entries for masked keys (callers build it; see `masked_bias`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from medvl.models.unified.config import UnifiedConfig

KVCache = tuple[Tensor, Tensor]
"""Keys and values of one attention, [B, H, T, head_dim] each."""


def masked_bias(bias: Tensor, key_mask: Tensor) -> Tensor:
    """bias [B or 1, H, Tq, Tk] float, key_mask Bool [B, Tk] (True = attend) -> bias with the masked keys at the
    dtype's lowest value (not -inf: a row with every key masked then stays finite instead of NaN)."""
    return bias.masked_fill(~key_mask[:, None, None, :], torch.finfo(bias.dtype).min)


class Attention(nn.Module):
    """Multi-head attention; self-attention when `kv` is None in forward, else cross-attention over `kv`."""

    def __init__(self, d_model: int, n_heads: int, attn_scale_factor: float, dropout: float, head_scale: bool) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.scale = (self.head_dim * attn_scale_factor) ** -0.5
        self.dropout = dropout
        self.head_scale = nn.Parameter(torch.ones(n_heads)) if head_scale else None

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def project_kv(self, x: Tensor) -> KVCache:
        """x [B, T, D] -> (keys, values) [B, H, T, head_dim]."""
        return self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def forward(self, x: Tensor, bias: Tensor, kv: KVCache | None = None) -> Tensor:
        """x [B, Tq, D]; bias [B or 1, H, Tq, Tk]; kv: precomputed keys/values (cross-attention, or the cache of a
        self-attention including this step) or None for plain self-attention over x -> [B, Tq, D]."""
        k, v = self.project_kv(x) if kv is None else kv
        q = self._heads(self.q_proj(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )
        if self.head_scale is not None:
            out = out * self.head_scale[:, None, None]
        return self.out_proj(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float, ffn_ln: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.ffn_ln = nn.LayerNorm(ffn_dim) if ffn_ln else None
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.fc1(x))  # OFA's activation_fn default: gelu
        if self.ffn_ln is not None:
            h = self.ffn_ln(h)
        return self.dropout(self.fc2(h))


class AttentionBlock(nn.Module):
    """norm -> attention -> [attn_ln] -> dropout -> drop path -> residual add."""

    def __init__(self, d_model: int, n_heads: int, config: UnifiedConfig, drop_path: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, config.attn_scale_factor, config.attention_dropout, config.head_scale)
        self.attn_ln = nn.LayerNorm(d_model) if config.attn_ln else None
        self.dropout = nn.Dropout(config.dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: Tensor, bias: Tensor, kv: KVCache | None = None, past: KVCache | None = None
    ) -> tuple[Tensor, KVCache]:
        """x [B, t, D]; kv: keys/values to attend to (cross-attention) or None for self-attention over x, appended
        to `past` (the cached keys/values of earlier positions) when given -> (output, the keys/values used)."""
        h = self.norm(x)
        if kv is None:
            kv = self.attn.project_kv(h)
            if past is not None:
                kv = (torch.cat([past[0], kv[0]], dim=2), torch.cat([past[1], kv[1]], dim=2))
        h = self.attn(h, bias, kv)
        if self.attn_ln is not None:
            h = self.attn_ln(h)
        return x + self.drop_path(self.dropout(h)), kv


class EncoderLayer(nn.Module):
    """Self-attention + FFN over the [image patches | text] sequence."""

    def __init__(self, config: UnifiedConfig, drop_path: float) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = AttentionBlock(d, config.n_heads, config, drop_path)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = FeedForward(d, config.ffn_dim, config.dropout, config.ffn_ln)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x [B, N, D]; bias [B, H, N, N] (positions + padding) -> [B, N, D]."""
        x, _ = self.self_attn(x, bias)
        return x + self.drop_path(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention (with a growing key/value cache) + cross-attention over the encoder memory + FFN."""

    def __init__(self, config: UnifiedConfig, drop_path: float) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = AttentionBlock(d, config.n_heads, config, drop_path)
        self.cross_attn = AttentionBlock(d, config.n_heads, config, drop_path)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = FeedForward(d, config.ffn_dim, config.dropout, config.ffn_ln)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: Tensor, self_bias: Tensor, cross_kv: KVCache, cross_bias: Tensor, cache: KVCache | None = None
    ) -> tuple[Tensor, KVCache]:
        """x [B, t, D] (the new positions); self_bias [B or 1, H, t, past + t]; cross_kv: the memory's keys/values
        for this layer (`cross_attn.attn.project_kv(memory)`, computed once per sequence); cross_bias
        [B, H, t, N]; cache: this layer's self-attention keys/values of the `past` earlier positions or None.
        -> (output [B, t, D], the cache grown by the t new positions)."""
        x, cache = self.self_attn(x, self_bias, past=cache)
        x, _ = self.cross_attn(x, cross_bias, cross_kv)
        return x + self.drop_path(self.ffn(self.ffn_norm(x))), cache
