"""The unified encoder-decoder (BiomedGPT, built on OFA): every task is text generation chosen by an instruction.

Contract (batch-first):
- `UnifiedModel.encode(images [B, C, H, W] in [0, 1], image_valid Bool [B], src_ids [B, S], src_mask Bool [B, S])`
  -> (memory [B, P + S, D], memory_mask Bool [B, P + S]). The image's P = (image_size / 16)**2 patches come first,
  then the instruction tokens. An example with image_valid False is text-only: its patch slots are masked out and
  its image tensor is never read (pass zeros). Images are normalized inside the model (`channel_mean`/`image_mean`).
- `UnifiedModel.decode(memory, memory_mask, prev_ids [B, T], prev_mask=None)` -> logits [B, T, vocab]; prev_ids
  is the decoder input (BOS + target[:-1]), causal.
- `UnifiedModel.forward(images, image_valid, src_ids, src_mask, prev_ids, prev_mask=None)` = decode(encode(...)).
- `generate` and `score_candidates`: see `medvl.models.unified.generation`.

One token embedding serves the encoder input, the decoder input and the output projection (OFA's
share_all_embeddings). Positions never enter the token stream: they are attention biases (`positions.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvl.models.encoders import normalize_images
from medvl.models.unified.config import UnifiedConfig
from medvl.models.unified.layers import DecoderLayer, EncoderLayer, KVCache, masked_bias
from medvl.models.unified.positions import (
    AbsolutePositionBias,
    image_position_ids,
    image_relative_buckets,
    relative_table,
    token_relative_buckets,
)

IMAGE_TYPE, TEXT_TYPE = 1, 0


def _drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first layer to `rate` at the last (OFA, timm)."""
    return [rate * i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n  # plain floats: builds on the meta device


def _embedding(n: int, d: int) -> nn.Embedding:
    """A table initialised as fairseq's (and OFA's) `Embedding`: normal with std d**-0.5, the scale of the token
    embedding, so no table added to the tokens drowns them."""
    table = nn.Embedding(n, d)
    nn.init.normal_(table.weight, std=d**-0.5)
    return table


class ImageEmbedder(nn.Module):
    """A timm ResNet's stem and stages 1-3 (total stride 16), then a linear map to the model width.

    forward(images [N, C, H, W] normalized) -> [N, (H/16) * (W/16), d_model], patches row-major.
    """

    def __init__(self, config: UnifiedConfig) -> None:
        super().__init__()
        import timm

        if config.resnet not in timm.list_models(module="resnet"):
            raise ValueError(
                f"model.resnet={config.resnet!r} is not a timm ResNet; use resnet50, resnet101 or "
                "resnet152 (OFA's stems) or another name from timm.list_models(module='resnet')"
            )
        self.backbone = timm.create_model(
            config.resnet,
            pretrained=False,
            features_only=True,
            out_indices=(3,),
            in_chans=config.in_chans,
            drop_path_rate=config.resnet_drop_path_rate,
        )
        if self.backbone.feature_info.reduction()[-1] != 16:
            raise ValueError(
                f"model.resnet={config.resnet!r}: stages 1-3 do not have stride 16; use resnet50, "
                "resnet101 or resnet152"
            )
        self.proj = nn.Linear(self.backbone.feature_info.channels()[-1], config.d_model)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(self.backbone(images)[-1].flatten(2).transpose(1, 2))


@dataclass
class DecoderState:
    """What the decoder keeps across generation steps, per row (example or beam)."""

    cross_kv: list[KVCache]
    """Per layer, the memory's keys/values for cross-attention [R, H, N, head_dim] (computed once)."""
    memory_mask: Tensor
    """Bool [R, N]."""
    memory_positions: Tensor
    """The encoder's position embeddings [N, D] (the keys of the cross-attention position bias)."""
    cache: list[KVCache] | None = None
    """Per layer, the self-attention keys/values of the positions decoded so far [R, H, t, head_dim]."""

    @property
    def length(self) -> int:
        return 0 if self.cache is None else self.cache[0][0].shape[2]

    def select(self, rows: Tensor) -> DecoderState:
        """The state of rows `rows` (Long [R']): beam reordering, or expanding examples into beams."""

        def pick(kv: KVCache) -> KVCache:
            return kv[0].index_select(0, rows), kv[1].index_select(0, rows)

        return DecoderState(
            [pick(kv) for kv in self.cross_kv],
            self.memory_mask.index_select(0, rows),
            self.memory_positions,
            None if self.cache is None else [pick(kv) for kv in self.cache],
        )

    def reorder_beams(self, rows: Tensor) -> DecoderState:
        """As `select` for rows that each come from a beam of the same example: the memory's keys/values are the
        same for all of an example's beams, so only the self-attention cache is gathered."""
        cache = (
            None if self.cache is None else [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cache]
        )
        return DecoderState(self.cross_kv, self.memory_mask, self.memory_positions, cache)

    def broadcast_row(self, row: int, n: int) -> DecoderState:
        """Row `row` repeated n times as a broadcast view (no copy of the keys/values), without a cache: the state
        for scoring n candidate continuations of one example."""

        def rep(kv: KVCache) -> KVCache:
            return kv[0][row : row + 1].expand(n, -1, -1, -1), kv[1][row : row + 1].expand(n, -1, -1, -1)

        return DecoderState(
            [rep(kv) for kv in self.cross_kv], self.memory_mask[row : row + 1].expand(n, -1), self.memory_positions
        )


class UnifiedModel(nn.Module):
    """BiomedGPT/OFA encoder-decoder; the contract is in the module docstring. Parameter names: `embed_tokens` (the
    shared embedding and output projection), `image_embed` (ResNet + projection), `encoder_*` / `decoder_*` (layers,
    position biases, relative tables), `text_positions` / `image_positions` / `target_positions` (absolute tables)."""

    def __init__(self, config: UnifiedConfig) -> None:
        super().__init__()
        self.config = c = config
        d, h = c.d_model, c.n_heads
        self.embed_tokens = nn.Embedding(c.vocab_size, d, padding_idx=c.pad_id)
        nn.init.normal_(self.embed_tokens.weight, std=d**-0.5)  # fairseq's init of a shared embedding
        with torch.no_grad():
            self.embed_tokens.weight[c.pad_id].zero_()
        # encoder inputs
        self.image_embed = ImageEmbedder(c)
        # fairseq's Embedding init (std d**-0.5), as OFA builds it: at nn.Embedding's std 1 the type vector, the same
        # for every patch, outweighed the fresh ResNet's features (std ~0.05) about 20 to 1, and after patch_norm all
        # patches of all images were the same token (0.02% of their energy differed between images)
        self.type_embedding = _embedding(2, d)
        self.text_norm = nn.LayerNorm(d)
        self.patch_norm = nn.LayerNorm(d)
        self.embed_dropout = nn.Dropout(c.dropout)
        # encoder positions: text table, image grid table, their projections to a bias, relative tables per layer
        self.text_positions = _embedding(c.max_source_positions, d)
        self.image_positions = _embedding(c.image_bucket_size**2, d)
        self.text_position_norm = nn.LayerNorm(d)
        self.image_position_norm = nn.LayerNorm(d)
        self.encoder_position_bias = AbsolutePositionBias(d, h, c.attn_scale_factor)
        self.encoder_token_rel = nn.ModuleList(
            relative_table(2 * c.token_bucket_size - 1, h) for _ in range(c.encoder_layers)
        )
        self.encoder_image_rel = nn.ModuleList(
            relative_table((2 * c.image_bucket_size - 1) ** 2, h) for _ in range(c.encoder_layers)
        )
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(c, r) for r in _drop_path_rates(c.encoder_drop_path_rate, c.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(d)
        # decoder
        self.decoder_embed_norm = nn.LayerNorm(d)
        self.target_positions = _embedding(c.max_target_positions, d)
        self.target_position_norm = nn.LayerNorm(d)
        self.decoder_position_bias = AbsolutePositionBias(d, h, c.attn_scale_factor)
        self.cross_position_bias = AbsolutePositionBias(d, h, c.attn_scale_factor)
        self.decoder_token_rel = nn.ModuleList(
            relative_table(2 * c.token_bucket_size - 1, h) for _ in range(c.decoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(c, r) for r in _drop_path_rates(c.decoder_drop_path_rate, c.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d)

    @property
    def n_patches(self) -> int:
        return self.config.grid**2

    # ---- encoder ----
    def source_positions(self, n_text: int) -> Tensor:
        """Position embeddings of the encoder sequence [image patches | n_text tokens] -> [P + n_text, D]."""
        c, device = self.config, self.text_positions.weight.device
        image = self.image_position_norm(self.image_positions(image_position_ids(c.grid, c.image_bucket_size, device)))
        text = self.text_position_norm(self.text_positions(torch.arange(n_text, device=device)))
        return torch.cat([image, text])

    def _check_inputs(self, images: Tensor, image_valid: Tensor, src_ids: Tensor, src_mask: Tensor) -> None:
        c = self.config
        b, s = src_ids.shape
        if tuple(images.shape) != (b, c.in_chans, c.image_size, c.image_size):
            raise ValueError(
                f"images must be [B={b}, in_chans={c.in_chans}, {c.image_size}, {c.image_size}] "
                f"(model.image_size), got {list(images.shape)}"
            )
        if image_valid.shape != (b,) or src_mask.shape != (b, s):
            raise ValueError(
                f"image_valid must be [B={b}] and src_mask [B, S]={[b, s]}, got "
                f"{list(image_valid.shape)} and {list(src_mask.shape)}"
            )
        if s > c.max_source_positions:
            raise ValueError(
                f"instructions of {s} tokens exceed model.max_source_positions="
                f"{c.max_source_positions}; truncate them or raise the limit"
            )

    def encode(self, images: Tensor, image_valid: Tensor, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """See the module docstring. -> (memory [B, P + S, D], memory_mask Bool [B, P + S])."""
        self._check_inputs(images, image_valid, src_ids, src_mask)
        c, (b, s), p = self.config, src_ids.shape, self.n_patches
        image_valid, src_mask = image_valid.bool(), src_mask.bool()
        text = self.text_norm(self.embed_tokens(src_ids) + self.type_embedding.weight[TEXT_TYPE])
        patches = text.new_zeros(b, p, c.d_model)
        if image_valid.any():  # text-only examples never reach the ResNet (nor its BatchNorm statistics)
            emb = self.image_embed(normalize_images(images[image_valid], c).to(text.dtype))
            patches = patches.index_put(
                (image_valid.nonzero()[:, 0],), self.patch_norm(emb + self.type_embedding.weight[IMAGE_TYPE])
            )
        x = self.embed_dropout(torch.cat([patches, text], dim=1))
        mask = torch.cat([image_valid[:, None].expand(b, p), src_mask], dim=1)

        pos = self.source_positions(s)
        abs_bias = self.encoder_position_bias(pos, pos)  # [H, N, N], shared by the layers
        device = src_ids.device
        text_buckets = token_relative_buckets(
            torch.arange(s, device=device), torch.arange(s, device=device), c.token_bucket_size, c.max_source_positions
        )
        image_buckets = image_relative_buckets(c.grid, c.image_bucket_size, device)
        for layer, token_rel, image_rel in zip(self.encoder_layers, self.encoder_token_rel, self.encoder_image_rel):
            bias = abs_bias.clone()
            bias[:, p:, p:] += token_rel(text_buckets).permute(2, 0, 1)
            bias[:, :p, :p] += image_rel(image_buckets).permute(2, 0, 1)
            x = layer(x, masked_bias(bias[None], mask))
        return self.encoder_norm(x), mask

    # ---- decoder ----
    def decoder_state(self, memory: Tensor, memory_mask: Tensor) -> DecoderState:
        """The per-sequence decoder state: cross-attention keys/values projected once from the memory."""
        n_text = memory.shape[1] - self.n_patches
        if n_text < 0 or memory_mask.shape != memory.shape[:2]:
            raise ValueError(
                f"memory {list(memory.shape)} / memory_mask {list(memory_mask.shape)} do not come from "
                f"encode (it has {self.n_patches} image slots first)"
            )
        kv = [layer.cross_attn.attn.project_kv(memory) for layer in self.decoder_layers]
        return DecoderState(kv, memory_mask.bool(), self.source_positions(n_text))

    def decode_step(
        self, prev_ids: Tensor, state: DecoderState, prev_mask: Tensor | None = None, use_cache: bool = True
    ) -> tuple[Tensor, DecoderState]:
        """Decode the positions after `state.length` (all of prev_ids when the state has no cache).

        prev_ids [R, t] the new decoder inputs; prev_mask Bool [R, state.length + t] (True = real token) or None.
        -> (logits [R, t, vocab], the state with the self-attention cache grown by t positions when use_cache).
        """
        c, t, start = self.config, prev_ids.shape[1], state.length
        if start + t > c.max_target_positions:
            raise ValueError(
                f"decoding position {start + t} exceeds model.max_target_positions="
                f"{c.max_target_positions}; lower max_new_tokens or raise the limit"
            )
        device = prev_ids.device
        x = self.embed_dropout(self.decoder_embed_norm(self.embed_tokens(prev_ids)))
        key_idx, query_idx = torch.arange(start + t, device=device), torch.arange(start, start + t, device=device)
        key_pos = self.target_position_norm(self.target_positions(key_idx))
        query_pos = key_pos[start:]
        self_abs = self.decoder_position_bias(query_pos, key_pos)  # [H, t, start + t]
        buckets = token_relative_buckets(query_idx, key_idx, c.token_bucket_size, c.max_target_positions)
        future = key_idx[None, :] > query_idx[:, None]
        cross = masked_bias(self.cross_position_bias(query_pos, state.memory_positions)[None], state.memory_mask)
        cache = []
        for i, (layer, rel) in enumerate(zip(self.decoder_layers, self.decoder_token_rel)):
            bias = (self_abs + rel(buckets).permute(2, 0, 1)).masked_fill(future, torch.finfo(self_abs.dtype).min)
            bias = bias[None] if prev_mask is None else masked_bias(bias[None], prev_mask.bool())
            x, kv = layer(x, bias, state.cross_kv[i], cross, None if state.cache is None else state.cache[i])
            cache.append(kv)
        logits = F.linear(self.decoder_norm(x), self.embed_tokens.weight)
        new_state = DecoderState(
            state.cross_kv, state.memory_mask, state.memory_positions, cache if use_cache else None
        )
        return logits, new_state

    def decode(self, memory: Tensor, memory_mask: Tensor, prev_ids: Tensor, prev_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced decoding -> logits [B, T, vocab]."""
        logits, _ = self.decode_step(prev_ids, self.decoder_state(memory, memory_mask), prev_mask, use_cache=False)
        return logits

    def forward(
        self,
        images: Tensor,
        image_valid: Tensor,
        src_ids: Tensor,
        src_mask: Tensor,
        prev_ids: Tensor,
        prev_mask: Tensor | None = None,
    ) -> Tensor:
        memory, memory_mask = self.encode(images, image_valid, src_ids, src_mask)
        return self.decode(memory, memory_mask, prev_ids, prev_mask)

    # ---- generation (medvl.models.unified.generation) ----
    def generate(self, images: Tensor, image_valid: Tensor, src_ids: Tensor, src_mask: Tensor, **kwargs) -> Tensor:
        """Greedy or beam-search decoding with a key/value cache; see `generation.generate` for the arguments."""
        from medvl.models.unified.generation import generate

        return generate(self, images, image_valid, src_ids, src_mask, **kwargs)

    def score_candidates(
        self, images: Tensor, image_valid: Tensor, src_ids: Tensor, src_mask: Tensor, candidates: Tensor, **kwargs
    ) -> Tensor:
        """Summed log-probability of every candidate for every example -> [B, K]; see
        `generation.score_candidates`."""
        from medvl.models.unified.generation import score_candidates

        return score_candidates(self, images, image_valid, src_ids, src_mask, candidates, **kwargs)
