"""The "captioner" family: an R2Gen-style image-to-report model (multi-view image encoder + Transformer decoder).

Contract:
- `Captioner.encode(images [B, V, C, H, W] in [0, 1], view_ids [B, V], view_mask [B, V] True=present)` -> (memory
  [B, V*P, d_model], memory_mask [B, V*P] True=valid). Every present view goes through the shared image encoder
  (`ENCODERS[config.encoder]`, P patches each), is projected to d_model and gets a learned view-type embedding
  (0 = frontal, 1 = lateral) plus a learned 2D patch position; absent views are never encoded and are masked out.
- `Captioner.forward(images, view_ids, view_mask, input_ids [B, T], attention_mask [B, T], logits_at=None)` ->
  logits [B, T, vocab] (teacher forcing; input_ids start with BOS), or [M, vocab] at the M True positions of
  `logits_at` [B, T].
- `Captioner.generate(images, view_ids, view_mask, *, bos_id, eos_id, max_new_tokens, num_beams=1,
  no_repeat_ngram_size=0, length_penalty=1.0, **sampling)` -> [B, L] ids without BOS, each finished row ending
  with eos_id and right-padded with pad_id; BOS + generated tokens never exceed max_len. `sampling` (do_sample,
  temperature, top_k, top_p, seed) goes to `medvl.infer.generation.generate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medvl.infer.generation import generate as generate_ids
from medvl.models.attention import attend
from medvl.models.decoder import DecoderCache, TextDecoder, reorder_cache
from medvl.models.dropout import Dropout
from medvl.models.encoders import ENCODERS, ImageEncoderConfig, normalize_images

N_VIEW_TYPES = 2  # frontal, lateral


@dataclass
class CaptionerConfig(ImageEncoderConfig):
    image_size: int = 128
    """Side of the square input images, in pixels."""
    memory_layers: int = 0
    """Transformer layers over the patches of all views together, before the decoder (0 = none)."""
    d_model: int = 256
    """Decoder width (the memory is projected to it)."""
    n_layers: int = 3
    """Decoder layers."""
    n_heads: int = 4
    """Attention heads of the decoder and memory layers (must divide d_model)."""
    ffn_mult: int = 4
    """Feed-forward width as a multiple of the model width."""
    dropout: float = 0.1
    """Dropout on embeddings and residual branches (not on attention weights: it would disable fused kernels)."""
    max_len: int = 160
    """Longest token sequence, BOS and EOS included (size of the learned position table)."""
    max_views: int = 2
    """Images per study; extra views are dropped, missing ones masked."""
    vocab_size: int = 1200
    """Tokenizer vocabulary size (set from the trained tokenizer at training time)."""
    pad_id: int = 0
    """Padding token id, used to right-pad generated sequences."""

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        super().__post_init__()
        for name in ("image_size", "in_chans", "d_model", "n_layers", "n_heads", "ffn_mult", "max_views", "vocab_size"):
            check(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        check(self.max_len >= 2, f"model.max_len must be >= 2 (BOS + one token), got {self.max_len}")
        check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        check(self.image_std > 0, f"model.image_std must be > 0, got {self.image_std}")
        check(
            0 <= self.pad_id < self.vocab_size,
            f"model.pad_id={self.pad_id} is outside the vocabulary (model.vocab_size={self.vocab_size})",
        )
        check(self.memory_layers >= 0, f"model.memory_layers must be >= 0, got {self.memory_layers}")
        check(
            self.d_model % self.n_heads == 0,
            f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}",
        )


CAPTIONER_SIZES: dict[str, dict[str, Any]] = {
    # Unit tests: ~70k parameters, milliseconds per step.
    "tiny": {
        "image_size": 32,
        "conv_channels": (8, 16),
        "conv_blocks": (1, 1),
        "memory_layers": 0,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "ffn_mult": 2,
        "max_len": 64,
    },
    # The CPU quickstart (3.6M parameters): 8x8 patches per view at 128 px; one fp32 training step of 16 two-view
    # studies takes ~0.25 s on 2 CPU threads. A memory layer or a 4x FFN would add ~0.1 and ~0.03 s; dropout 0 would
    # save ~0.02 s (the README's quickstart figures were measured with this preset, dropout 0.1).
    "small": {
        "image_size": 128,
        "conv_channels": (32, 64, 128, 192),
        "conv_blocks": (1, 1, 1, 1),
        "memory_layers": 0,
        "d_model": 256,
        "n_layers": 3,
        "n_heads": 4,
        "ffn_mult": 2,
    },
    # GPU-sized: a ViT-Small-like encoder (14x14 patches per view at 224 px) and a 6-layer 512-wide decoder.
    "base": {
        "image_size": 224,
        "encoder": "vit",
        "patch_size": 16,
        "vit_dim": 384,
        "vit_depth": 8,
        "vit_heads": 6,
        "memory_layers": 1,
        "d_model": 512,
        "n_layers": 6,
        "n_heads": 8,
        "ffn_mult": 4,
    },
}


def config_for_reload(config: CaptionerConfig) -> CaptionerConfig:
    """The config to rebuild a trained model from its checkpoint: a torchvision/timm backbone's pretrained weights
    are in the checkpoint already, so the original weights file is not needed (it may not exist on this machine).
    An hf encoder keeps its directory, which also defines the architecture."""
    if config.encoder in ("torchvision", "timm") and config.encoder_weights:
        return dataclasses.replace(config, encoder_weights="")
    return config


class MemoryLayer(nn.Module):
    """Pre-norm self-attention + FFN over the memory of all views together; absent views are hidden as keys."""

    def __init__(self, d: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = attend(q, k, v, mask[:, None, None, :])
        x = x + self.drop(self.out(y.transpose(1, 2).reshape(b, s, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class Captioner(nn.Module):
    """Shared image encoder over the views -> memory of patch features -> cross-attending text decoder."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ENCODERS.get(config.encoder)(config)
        gh, gw = self.encoder.grid
        d = config.d_model
        self.proj = nn.Sequential(nn.Linear(self.encoder.out_dim, d), nn.LayerNorm(d))
        self.view_embed = nn.Embedding(N_VIEW_TYPES, d)
        self.row_embed = nn.Embedding(gh, d)
        self.col_embed = nn.Embedding(gw, d)
        for emb in (self.view_embed, self.row_embed, self.col_embed):
            nn.init.normal_(emb.weight, std=0.02)
        self.memory_layers = nn.ModuleList(
            MemoryLayer(d, config.n_heads, config.ffn_mult, config.dropout) for _ in range(config.memory_layers)
        )
        self.decoder = TextDecoder(
            config.vocab_size, d, config.n_layers, config.n_heads, config.ffn_mult, config.max_len, config.dropout
        )

    def encode(self, images: Tensor, view_ids: Tensor, view_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(memory [B, V*P, d_model], memory_mask [B, V*P] True=valid) of a batch of studies."""
        b, v = view_mask.shape
        if images.shape[:2] != (b, v) or images.shape[2] != self.config.in_chans:
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not match view_mask {tuple(view_mask.shape)} "
                f"and model.in_chans={self.config.in_chans} (expected [B, V, C, H, W])"
            )
        view_mask = view_mask.bool()
        x = normalize_images(images[view_mask], self.config)
        # Only present views are encoded: absent ones cost nothing and stay out of BatchNorm statistics.
        present = self.proj(self.encoder(x)) if x.shape[0] else None
        p, d = self.row_embed.num_embeddings * self.col_embed.num_embeddings, self.config.d_model
        feats = images.new_zeros(b, v, p, d, dtype=self.proj[0].weight.dtype if present is None else present.dtype)
        if present is not None:
            feats = feats.index_put((view_mask,), present)
        pos = (self.row_embed.weight[:, None, :] + self.col_embed.weight[None, :, :]).reshape(p, d)
        memory = (feats + pos + self.view_embed(view_ids.clamp(0, N_VIEW_TYPES - 1))[:, :, None, :]).flatten(1, 2)
        memory_mask = view_mask[:, :, None].expand(b, v, p).reshape(b, v * p)
        # A study without any image would leave attention nothing to attend to (NaN); let it see the blank memory.
        memory_mask = memory_mask | ~memory_mask.any(dim=1, keepdim=True)
        for layer in self.memory_layers:
            memory = layer(memory, memory_mask)
        return memory, memory_mask

    def forward(
        self,
        images: Tensor,
        view_ids: Tensor,
        view_mask: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced next-token logits [B, T, vocab] of input_ids (BOS first); with `logits_at` [B, T] bool,
        logits [M, vocab] of its M True positions only (row-major): training scores no padding position, so it
        need not project them to the vocabulary."""
        memory, memory_mask = self.encode(images, view_ids, view_mask)
        cache = self.decoder.init_cache(memory, memory_mask)
        logits, _ = self.decoder(input_ids, cache, 0, attention_mask, logits_at=logits_at)
        return logits

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        view_ids: Tensor,
        view_mask: Tensor,
        *,
        bos_id: int,
        eos_id: int,
        max_new_tokens: int,
        num_beams: int = 1,
        no_repeat_ngram_size: int = 0,
        length_penalty: float = 1.0,
        **sampling: Any,
    ) -> Tensor:
        """Report ids [B, L] without BOS (see `medvl.infer.generation`); at most max_len - 1 new tokens.

        Under bf16 autocast on a CPU the encoder runs in bf16 and the decoding loop in fp32: a step over a few dozen
        rows is bound by per-op overhead there, which autocast's casts add to (the quickstart model decoded 1.4x
        slower under autocast than in fp32, measured with `benchmarks/train_throughput.py --precision bf16`)."""
        memory, memory_mask = self.encode(images, view_ids, view_mask)
        precision: contextlib.AbstractContextManager = contextlib.nullcontext()
        if memory.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            precision, memory = torch.autocast("cpu", enabled=False), memory.float()
        max_new_tokens = min(max_new_tokens, self.config.max_len - 1)
        # Keys/values go to buffers written in place; beams reorder a mask over them, never the keys/values.
        cache = self.decoder.init_cache(memory, memory_mask, capacity=max_new_tokens)

        def step(tokens: Tensor, cache: DecoderCache, position: int) -> tuple[Tensor, DecoderCache]:
            logits, cache = self.decoder(tokens, cache, position)
            return logits[:, -1], cache

        with precision:
            return generate_ids(
                step,
                reorder_cache,
                cache,
                memory.shape[0],
                bos_id=bos_id,
                eos_id=eos_id,
                pad_id=self.config.pad_id,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                no_repeat_ngram_size=no_repeat_ngram_size,
                length_penalty=length_penalty,
                device=memory.device,
                **sampling,
            )
