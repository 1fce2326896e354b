"""A pre-norm Transformer text decoder with cross-attention and a KV cache for incremental decoding.

Contract:
- `TextDecoder.forward(tokens [N, T], cache, start)` -> (logits [N, T, vocab], cache): tokens sit at positions
  start..start+T-1; self-attention is causal and, with a cache, also sees every earlier position stored in it.
- The cache (`DecoderCache`) is made by `init_cache(memory [B, S, d], memory_mask [B, S] True=valid)`. Each layer
  computes its cross-attention keys/values from the memory in its first forward and stores them in the cache, where
  every later step reuses them; computing them inside the layer's own forward keeps each layer self-contained, which
  is what per-layer sharding (FSDP) needs. The decoder may run on N = B * K rows
  (K beams per row, row-major: row b's beams are b*K .. b*K+K-1); the K queries of a row then share that row's
  cross-attention keys/values instead of K copies of them.
- `init_cache(..., capacity=C)` (incremental decoding) makes each layer keep its self-attention keys/values in one
  buffer of C positions written in place, so a step costs O(1) copies instead of concatenating the whole history;
  without a capacity (teacher forcing) the keys/values are returned as computed. Either way a call may be followed
  by further calls on the cache it returns; a cache given to a call must not be used again afterwards (its buffers
  may have been written).
- `reorder_cache(cache, index [N])` reorders the self-attention keys/values by beam index; `index` must keep every
  sequence within its own row (beam search does), since the shared cross-attention keys/values are not moved.
- Dropout acts on embeddings and residual branches, not on attention probabilities (which would force the slow
  unfused attention kernel on CPU).
- The output projection is tied to the token embedding (`lm_head.weight is token_embed.weight`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class DecoderCache:
    memory: Tensor
    """[B, S, d]: the encoder output the cross-attention reads."""
    cross_kv: list[tuple[Tensor, Tensor]]
    """Per layer: cross-attention keys, values [B, heads, S, head_dim], shared by the K beams of a row; empty until
    the first forward."""
    cross_mask: Tensor
    """[B, 1, 1, S] bool, True where the memory position may be attended."""
    self_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    """Per layer: self-attention keys, values [N, heads, T, head_dim], of which the first `length` positions are
    filled (T = `capacity` when set, else `length`); empty before the first step."""
    capacity: int = 0
    """Positions each layer's key/value buffer holds (0: no buffer, keys/values grow by concatenation)."""
    length: int = 0
    """Positions already in the cache."""


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None, mask: Tensor | None, start: int = 0, capacity: int = 0
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attention of x (positions start..start+t-1) over the cached positions and itself; returns (output, the
        keys/values to cache: the in-place buffers when `capacity` is set, else all keys/values so far)."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if capacity:
            if past is None:
                past = (
                    k.new_empty(n, self.heads, capacity, d // self.heads),
                    v.new_empty(n, self.heads, capacity, d // self.heads),
                )
            past[0][:, :, start : start + t] = k
            past[1][:, :, start : start + t] = v
            buffers = past
            k, v = past[0][:, :, : start + t], past[1][:, :, : start + t]
            past = past if start else None  # what follows only asks whether earlier positions exist
        elif past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if mask is None and past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        elif mask is None and t == 1:  # one new token sees the whole cache: no mask needed
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(n, t, d)), buffers if capacity else (k, v)


class CrossAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        b, s, d = memory.shape
        k, v = self.kv(memory).view(b, s, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
        n, t, d = x.shape
        b = kv[0].shape[0]
        beams, hd = n // b, d // self.heads
        # The K beams of a row attend to the same memory: fold them into the query axis ([B, heads, K*T, hd]).
        q = self.q(x).view(b, beams * t, self.heads, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = SelfAttention(d, heads)
        self.cross_attn = CrossAttention(d, heads)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        past: tuple[Tensor, Tensor] | None,
        self_mask: Tensor | None,
        cross_kv: tuple[Tensor, Tensor] | None,
        memory: Tensor,
        cross_mask: Tensor,
        start: int = 0,
        capacity: int = 0,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Returns (output, the self-attention keys/values to cache, the cross-attention keys/values)."""
        if cross_kv is None:
            cross_kv = self.cross_attn.memory_kv(memory)
        y, kv = self.self_attn(self.norm1(x), past, self_mask, start, capacity)
        x = x + self.drop(y)
        x = x + self.drop(self.cross_attn(self.norm2(x), cross_kv, cross_mask))
        return x + self.drop(self.ffn(self.norm3(x))), kv, cross_kv


class TextDecoder(nn.Module):
    """Token + learned position embeddings, `n_layers` pre-norm layers, final norm, tied output projection."""

    def __init__(
        self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, ffn_mult: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.token_embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, ffn_mult, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.token_embed.weight  # tied: the embedding is registered first, so it owns the tensor
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed.weight, std=0.02)

    def init_cache(self, memory: Tensor, memory_mask: Tensor, capacity: int = 0) -> DecoderCache:
        """An empty cache for a batch of B memories (the layers fill in their cross-attention keys/values);
        `capacity` > 0: self-attention keys/values go to buffers of that many positions (incremental decoding)."""
        if not 0 <= capacity <= self.max_len:
            raise ValueError(f"cache capacity must be in [0, max_len={self.max_len}], got {capacity}")
        return DecoderCache(memory=memory, cross_kv=[], cross_mask=memory_mask[:, None, None, :], capacity=capacity)

    def forward(
        self, tokens: Tensor, cache: DecoderCache, start: int = 0, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, DecoderCache]:
        """Logits of `tokens` at positions start.., appending their self-attention keys/values to `cache`.

        Args:
            tokens: token ids [N, T].
            cache: from `init_cache` (and earlier calls); replaced, not modified in place.
            start: position of tokens[:, 0]; must equal the number of positions already in the cache.
            attention_mask: optional [N, T] (1 = real token) for an uncached call; padded keys are hidden. Right
                padding needs none: under the causal mask a pad only influences later pads.
        """
        n, t = tokens.shape
        if start + t > self.max_len:
            raise ValueError(f"decoder input reaches position {start + t} but model.max_len is {self.max_len}")
        if cache.capacity and start + t > cache.capacity:
            raise ValueError(f"decoder input reaches position {start + t} but the cache holds {cache.capacity}")
        positions = torch.arange(start, start + t, device=tokens.device)
        x = self.drop(self.token_embed(tokens) + self.pos_embed(positions))
        self_mask = None
        if attention_mask is not None and not _right_padded(attention_mask):
            if cache.self_kv:
                raise ValueError("attention_mask is only supported without cached positions")
            causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
            self_mask = (causal & attention_mask.bool()[:, None, None, :]) | torch.eye(
                t, dtype=torch.bool, device=tokens.device
            )
        elif cache.self_kv and t > 1:  # several new tokens after cached ones: causal with an offset
            self_mask = torch.ones(t, start + t, dtype=torch.bool, device=tokens.device).tril(diagonal=start)
        new_kv, cross_kv = [], []
        for i, layer in enumerate(self.layers):
            past = cache.self_kv[i] if cache.self_kv else None
            x, kv, layer_cross = layer(
                x,
                past,
                self_mask,
                cache.cross_kv[i] if cache.cross_kv else None,
                cache.memory,
                cache.cross_mask,
                start,
                cache.capacity,
            )
            new_kv.append(kv)
            cross_kv.append(layer_cross)
        logits = self.lm_head(self.norm(x))
        return logits, DecoderCache(cache.memory, cross_kv, cache.cross_mask, new_kv, cache.capacity, start + t)


def _right_padded(attention_mask: Tensor) -> bool:
    """True when every row is real tokens then padding, the case the causal mask alone already handles."""
    mask = attention_mask.bool()
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def reorder_cache(cache: DecoderCache, index: Tensor) -> DecoderCache:
    """The cache with its self-attention rows gathered by `index` [N] (beam search keeps each index in its row);
    buffers are reordered in place over their filled positions only."""
    if cache.capacity:
        n = cache.length
        for k, v in cache.self_kv:
            k[:, :, :n] = k[:, :, :n].index_select(0, index)
            v[:, :, :n] = v[:, :, :n].index_select(0, index)
        return cache
    self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache.self_kv]
    return DecoderCache(cache.memory, cache.cross_kv, cache.cross_mask, self_kv, 0, cache.length)
