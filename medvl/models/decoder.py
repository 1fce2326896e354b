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
  buffer of C positions written in place, so a step costs O(1) copies instead of concatenating the whole history.
  With K beams the buffer holds C * K slots, one per (position, beam) in the order they were computed; a beam's
  history is a per-beam mask over them (`DecoderCache.ancestry`), so reordering beams moves a [N, C*K] bool mask
  instead of the keys/values (the K beams of a row attend to their row's slots through that mask). Without a
  capacity (teacher forcing) the keys/values are returned as computed and a later call concatenates to them.
  Either way a call may be followed by further calls on the cache it returns; a cache given to a call must not be
  used again afterwards (its buffers may have been written).
- Teacher forcing with `logits_at` (training) packs the real tokens: embeddings, norms, linear layers, dropout and
  the output projection run on the M scored tokens only ([M, d], M rounded up to a multiple of 64 with padding
  positions); attention alone sees the padded [N, T] layout (`PackedRows`). The quickstart's batches hold 1.5-2.0
  positions per real token, so this skips 35-50% of the decoder's work (`benchmarks/train_throughput.py`); the
  logits are those of the padded computation.
- `reorder_cache(cache, index [N])` reorders the beams' histories by beam index; `index` must keep every sequence
  within its own row (beam search does), since the shared cross-attention keys/values are not moved.
- Dropout acts on embeddings and residual branches, not on attention probabilities (which would force the slow
  unfused attention kernel on CPU).
- The output projection is tied to the token embedding (`lm_head.weight is token_embed.weight`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medvl.models.attention import attend
from medvl.models.dropout import Dropout


@dataclass
class DecoderCache:
    memory: Tensor
    """[B, S, d]: the encoder output the cross-attention reads."""
    cross_kv: list[tuple[Tensor, Tensor]]
    """Per layer: cross-attention keys, values [B, heads, S, head_dim] (contiguous), shared by the K beams of a row;
    empty until the first forward."""
    cross_mask: Tensor
    """[B, 1, 1, S] bool, True where the memory position may be attended."""
    self_kv: list = field(default_factory=list)
    """Per layer, without a capacity: self-attention keys, values [N, heads, length, head_dim]; with one: a buffer
    [2, B, heads, capacity * K, head_dim] of keys and values by slot (position * K + beam that computed it).
    Empty before the first step."""
    capacity: int = 0
    """Positions each layer's key/value buffer holds (0: no buffer, keys/values grow by concatenation)."""
    length: int = 0
    """Positions already in the cache."""
    beams: int = 1
    """K, decoder rows per memory row (set by the first forward)."""
    ancestry: Tensor | None = None
    """[N, capacity * K] bool, with a capacity and K > 1: slot s holds a key/value of row n's own history."""


@dataclass
class PackedRows:
    """Where the M tokens of a right-padded [n, t] batch that are computed sit: `index` [M], flat positions.

    Linear layers, norms and dropout see only these tokens ([M, d]); attention scatters them back to the padded
    [n, t, ...] layout (`pad`, zeros elsewhere) and gathers its output (`pack`)."""

    index: Tensor
    n: int
    t: int
    scored: int
    """The first `scored` entries of `index` are the scored positions (row-major); any after them are padding
    positions computed only to round the row count (see `TextDecoder._packed_rows`)."""

    def pad(self, x: Tensor) -> Tensor:
        """[M, c] -> [n, t, c], zeros at padding."""
        return x.new_zeros(self.n * self.t, x.shape[-1]).index_copy(0, self.index, x).view(self.n, self.t, -1)

    def pack(self, x: Tensor) -> Tensor:
        """[n, t, c] -> [M, c]."""
        return x.reshape(self.n * self.t, -1).index_select(0, self.index)


PACK_MULTIPLE = 64
"""Packed teacher forcing computes a multiple of this many token rows (see `TextDecoder._packed_rows`)."""


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None, mask: Tensor | None, causal: bool = False
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attention of x over the keys/values in `past` (concatenated before x's own) and x's own; returns (output,
        all keys/values so far). `causal`: x's own positions see only earlier ones (no past, no mask)."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = attend(q, k, v, mask, causal)
        return self.out(y.transpose(1, 2).reshape(n, t, d)), (k, v)

    def forward_buffered(
        self,
        x: Tensor,
        buffer: Tensor | None,
        capacity: int,
        start: int,
        beams: int,
        mask: Tensor | None,
        causal: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Attention of x [N, T, d] (positions start..start+T-1, N = B * beams) over the slots of `buffer`
        [2, B, heads, capacity * beams, head_dim] up to its own, after writing its keys/values to their slots in
        place; `mask` [B, 1, beams * T, (start + T) * beams] says which slots each query sees (None: all of them, or
        the causal mask when `causal`, for one beam from position 0). Returns (output, the buffer, made on the first
        call in the keys' dtype)."""
        n, t, d = x.shape
        b, heads, hd = n // beams, self.heads, d // self.heads
        qkv = self.qkv(x).view(b, beams, t, 3, heads, hd)
        if buffer is None:
            buffer = qkv.new_empty(2, b, heads, capacity * beams, hd)
        slots = buffer.view(2, b, heads, capacity, beams, hd)
        slots[:, :, :, start : start + t] = qkv[:, :, :, 1:].permute(3, 0, 4, 2, 1, 5)
        kv = slots[:, :, :, : start + t].flatten(3, 4)  # [2, B, heads, (start + T) * beams, hd], a view
        # The K beams of a row fold into the query axis ([B, heads, K*T, hd]) and share the row's slots.
        q = qkv[:, :, :, 0].permute(0, 3, 1, 2, 4).reshape(b, heads, beams * t, hd)
        y = attend(q, kv[0], kv[1], mask, causal)
        return self.out(y.view(b, heads, beams, t, hd).permute(0, 2, 3, 1, 4).reshape(n, t, d)), buffer

    def forward_packed(self, x: Tensor, rows: PackedRows) -> Tensor:
        """Causal attention of packed tokens x [M, d] within their rows (see `PackedRows`); returns [M, d]."""
        d = x.shape[-1]
        qkv = rows.pad(self.qkv(x)).view(rows.n, rows.t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = attend(qkv[0], qkv[1], qkv[2], None, causal=True)
        return self.out(rows.pack(y.transpose(1, 2).reshape(rows.n, rows.t, d)))


class CrossAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys, values [B, heads, S, head_dim] of the memory, each contiguous (read at every decoding step)."""
        b, s, d = memory.shape
        kv = self.kv(memory).view(b, s, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).contiguous()
        return kv[0], kv[1]

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
        n, t, d = x.shape
        b = kv[0].shape[0]
        beams, hd = n // b, d // self.heads
        # The K beams of a row attend to the same memory: fold them into the query axis ([B, heads, K*T, hd]).
        q = self.q(x).view(b, beams * t, self.heads, hd).transpose(1, 2)
        y = attend(q, kv[0], kv[1], mask)
        return self.out(y.transpose(1, 2).reshape(n, t, d))

    def forward_packed(self, x: Tensor, rows: PackedRows, kv: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
        """Attention of packed tokens x [M, d] (one row per memory row) over their row's memory; returns [M, d]."""
        d = x.shape[-1]
        q = rows.pad(self.q(x)).view(rows.n, rows.t, self.heads, d // self.heads).transpose(1, 2)
        y = attend(q, kv[0], kv[1], mask)
        return self.out(rows.pack(y.transpose(1, 2).reshape(rows.n, rows.t, d)))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = SelfAttention(d, heads)
        self.cross_attn = CrossAttention(d, heads)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
        self.drop = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        cache: DecoderCache,
        layer: int,
        self_mask: Tensor | None,
        causal: bool,
        start: int,
        packed: PackedRows | None = None,
    ) -> tuple[Tensor, object, tuple[Tensor, Tensor] | None]:
        """Returns (output, this layer's self-attention keys/values or buffer to cache, cross-attention keys/values).
        `self_mask`/`causal` as `TextDecoder.forward` computed them for every layer. With `packed`, x is [M, d]
        packed tokens (`forward_packed`) and nothing is returned to cache. The packed path goes through this call too,
        so that what wraps a layer (FSDP's parameter gathering, activation checkpointing) applies to it."""
        if packed is not None:
            return self.forward_packed(x, packed, cache), None, None
        cross_kv = cache.cross_kv[layer] if cache.cross_kv else self.cross_attn.memory_kv(cache.memory)
        past = cache.self_kv[layer] if cache.self_kv else None
        h = self.norm1(x)
        if cache.capacity:
            y, past = self.self_attn.forward_buffered(h, past, cache.capacity, start, cache.beams, self_mask, causal)
        else:
            y, past = self.self_attn(h, past, self_mask, causal)
        x = x + self._drop(y)
        x = x + self._drop(self.cross_attn(self.norm2(x), cross_kv, cache.cross_mask))
        return x + self._drop(self.ffn(self.norm3(x))), past, cross_kv

    def forward_packed(self, x: Tensor, rows: PackedRows, cache: DecoderCache) -> Tensor:
        """The layer on packed tokens x [M, d] (see `PackedRows`), teacher-forced from position 0."""
        cross_kv = self.cross_attn.memory_kv(cache.memory)
        x = x + self._drop(self.self_attn.forward_packed(self.norm1(x), rows))
        x = x + self._drop(self.cross_attn.forward_packed(self.norm2(x), rows, cross_kv, cache.cross_mask))
        return x + self._drop(self.ffn(self.norm3(x)))

    def _drop(self, x: Tensor) -> Tensor:
        # Dropout is the identity outside training: skipping its module call saves 9 of the ~130 ops of a decoding step.
        return self.drop(x) if self.training else x


class TextDecoder(nn.Module):
    """Token + learned position embeddings, `n_layers` pre-norm layers, final norm, tied output projection."""

    def __init__(
        self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, ffn_mult: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.token_embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.drop = Dropout(dropout)
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
        self,
        tokens: Tensor,
        cache: DecoderCache,
        start: int = 0,
        attention_mask: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> tuple[Tensor, DecoderCache]:
        """Logits of `tokens` at positions start.., appending their self-attention keys/values to `cache`.

        Args:
            tokens: token ids [N, T].
            cache: from `init_cache` (and earlier calls); not to be used again (its buffers may be written).
            start: position of tokens[:, 0]; must equal the number of positions already in the cache.
            attention_mask: optional [N, T] (1 = real token) for an uncached call; padded keys are hidden. Right
                padding needs none: under the causal mask a pad only influences later pads.
            logits_at: optional [N, T] mask (bool, or 0/1 of any dtype): return logits [M, vocab] of the M True
                positions only (row-major), so that training projects to the vocabulary only where a target is
                scored. From an empty cache with one row per memory row and the True positions of every row a
                prefix of its real tokens (a right-padded training batch), only those positions are computed at
                all (`PackedRows`) and the cache is returned as given: padding costs no linear-layer work, and
                nothing is cached.
        """
        n, t = tokens.shape
        if start + t > self.max_len:
            raise ValueError(f"decoder input reaches position {start + t} but model.max_len is {self.max_len}")
        if cache.capacity and start + t > cache.capacity:
            raise ValueError(f"decoder input reaches position {start + t} but the cache holds {cache.capacity}")
        if start != cache.length:
            raise ValueError(f"decoder input starts at position {start} but the cache holds {cache.length} positions")
        b = cache.memory.shape[0]
        if n % b:
            raise ValueError(f"{n} decoder rows are not a whole number of beams per memory row ({b} rows)")
        if not cache.self_kv:
            cache.beams = n // b
        elif n != b * cache.beams:
            raise ValueError(f"the cache holds {b * cache.beams} rows, got {n}")
        if logits_at is not None:
            if logits_at.shape != tokens.shape:
                raise ValueError(f"logits_at has shape {tuple(logits_at.shape)}, the tokens {tuple(tokens.shape)}")
            # A mask either way: indexing with an integer tensor (the padded path) would gather rows instead.
            logits_at = logits_at.bool()
            if start == 0 and not cache.self_kv and not cache.capacity and n == b:
                packed = self._packed_rows(logits_at, attention_mask)
                if packed is not None:
                    return self._forward_packed(tokens, cache, packed), cache
        x = self.drop(self.token_embed(tokens) + self.pos_embed.weight[start : start + t])
        self_mask, causal = self._self_mask(cache, tokens, start, attention_mask)
        new_kv, cross_kv = [], []
        for i, layer in enumerate(self.layers):
            x, kv, layer_cross = layer(x, cache, i, self_mask, causal, start)
            new_kv.append(kv)
            cross_kv.append(layer_cross)
        if logits_at is not None:
            x = x[logits_at]
        logits = self.lm_head(self.norm(x))
        return logits, DecoderCache(
            cache.memory, cross_kv, cache.cross_mask, new_kv, cache.capacity, start + t, cache.beams, cache.ancestry
        )

    def _packed_rows(self, scored: Tensor, attention_mask: Tensor | None) -> PackedRows | None:
        """The packing of a teacher-forced call (`scored`: the bool `logits_at` [N, T]) when it gives the same logits
        as the padded one: every row's scored positions are a prefix, inside its attention mask (then causal
        attention never lets a scored position see the unscored ones after it); None otherwise or when there is
        nothing to save."""
        if not _right_padded(scored) or bool(scored.all()):
            return None
        if attention_mask is not None and bool((scored & ~attention_mask.bool()).any()):
            return None
        flat = scored.flatten()
        index = flat.nonzero().squeeze(1)
        # Rounded up to a multiple of PACK_MULTIPLE rows with positions after the scored ones (which no scored
        # position attends to; their logits are dropped): every batch would otherwise give the linear layers a new
        # row count, and oneDNN builds its bf16 kernels per shape (varying row counts made a linear layer ~2.5x
        # slower on this CPU), while a few dozen rounded counts stay in its kernel cache.
        extra = min(-index.numel() % PACK_MULTIPLE, flat.numel() - index.numel())
        if extra:
            index = torch.cat([index, (~flat).nonzero().squeeze(1)[:extra]])
        n, t = scored.shape
        return PackedRows(index, n, t, scored=index.numel() - extra)

    def _forward_packed(self, tokens: Tensor, cache: DecoderCache, rows: PackedRows) -> Tensor:
        positions = rows.index % rows.t
        x = self.drop(self.token_embed(tokens.flatten().index_select(0, rows.index)) + self.pos_embed(positions))
        for i, layer in enumerate(self.layers):
            x, _, _ = layer(x, cache, i, None, False, 0, packed=rows)
        return self.lm_head(self.norm(x))[: rows.scored]

    def _self_mask(
        self, cache: DecoderCache, tokens: Tensor, start: int, attention_mask: Tensor | None
    ) -> tuple[Tensor | None, bool]:
        """(mask for every layer's self-attention, whether to use SDPA's causal mask instead); with beams in
        buffers, also records the new positions in each beam's ancestry."""
        n, t = tokens.shape
        device = tokens.device
        if attention_mask is not None and not _right_padded(attention_mask):
            if cache.self_kv or (cache.beams > 1 and cache.capacity):
                raise ValueError(
                    "attention_mask with padding before real tokens is only supported in the first call of a cache "
                    "with one row per memory row; right-pad the tokens instead"
                )
            causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
            diagonal = torch.eye(t, dtype=torch.bool, device=device)  # a padded query still needs one key
            return (causal & attention_mask.bool()[:, None, None, :]) | diagonal, False
        k = cache.beams
        if cache.capacity and k > 1:
            if cache.ancestry is None:
                cache.ancestry = torch.zeros(n, cache.capacity * k, dtype=torch.bool, device=device)
            # Each beam computes the slots (p, its own index) of its new positions p.
            own = cache.ancestry.view(n // k, k, cache.capacity, k)[:, :, start : start + t]
            own |= torch.eye(k, dtype=torch.bool, device=device)[None, :, None, :]
            seen = cache.ancestry[:, : (start + t) * k]
            if t == 1:
                return seen.view(n // k, 1, k, (start + 1) * k), False
            slot_position = torch.arange((start + t) * k, device=device) // k
            later = slot_position[None, :] <= torch.arange(start, start + t, device=device)[:, None]  # [T, L]
            return (seen.view(n // k, k, 1, -1) & later).view(n // k, 1, k * t, -1), False
        if t == 1:
            return None, False  # one new token sees the whole cache
        if start == 0:
            return None, True
        return torch.ones(t, start + t, dtype=torch.bool, device=device).tril(diagonal=start), False


def _right_padded(attention_mask: Tensor) -> bool:
    """True when every row is real tokens then padding, the case the causal mask alone already handles."""
    mask = attention_mask.bool()
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def reorder_cache(cache: DecoderCache, index: Tensor) -> DecoderCache:
    """The cache with its rows' self-attention histories gathered by `index` [N] (beam search keeps each index in
    its row): with buffers only the [N, C*K] ancestry mask moves; without, the keys/values are gathered."""
    if cache.capacity:
        if cache.ancestry is not None:
            cache.ancestry = cache.ancestry.index_select(0, index)
        elif not torch.equal(index, torch.arange(index.numel(), device=index.device)):
            raise ValueError("a cache with one row per memory row cannot reorder its rows")
        return cache
    self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache.self_kv]
    return DecoderCache(cache.memory, cache.cross_kv, cache.cross_mask, self_kv, 0, cache.length, cache.beams)
