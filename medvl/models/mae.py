"""The "mae" family: a ViT over images (T=1) or clips (T frames) with tubelet patches, pretrained as a masked
autoencoder (VideoMAE / VideoMAEv2) and fine-tuned with a pooled head.

Built on transformers' VideoMAE (`VideoMAEModel` for the encoder, `VideoMAEDecoder` for the light decoder), built from
a `transformers.VideoMAEConfig` derived from `MAEConfig`, randomly initialised, nothing downloaded. Why that one: it is
the reference VideoMAE architecture (tubelet Conv3d patch embedding, fixed sinusoidal positions, q/v-bias attention,
pre-norm blocks), it runs SDPA attention and gradient checkpointing, and its module names are those of the HF VideoMAE
checkpoints, so HF folders load with a prefix change and original VideoMAE/VideoMAEv2 `.pth` files with one key map
(`medvl.models.mae_weights`). timm's ViT is image-only (2-D patches, learned positions sized to one grid).
What medvl adds around it: VideoMAEv2's dual masking (the decoder gets mask tokens only at the positions it is asked to
reconstruct, any subset, not only "all masked tokens"), reconstruction targets computed from the [0, 1] pixels for any
channel count (HF's own loss un-normalizes with ImageNet statistics when C == 3), the pooled fine-tuning head on the
medvl model contract, layer ids for layer-wise lr decay, and local pretrained weights (`model.pretrained`).

Contract:
- `num_outputs > 0` (set by the classification / regression tasks): `forward(images [B, V, C, H, W] in [0, 1], view_ids
  [B, V], view_mask [B, V])` -> [B, num_outputs]: encoder tokens, pooled (`model.pooling`: mean by default), LayerNorm,
  dropout, linear. The V axis is the clip's frames (V = num_frames) or one image; absent frames are zeros.
- `num_outputs == 0` (the masked_modeling task): `forward(images, view_ids, view_mask, encoder_mask [B, N] bool, True
  = hidden from the encoder, decode [B, N] bool, True = reconstructed)` -> predicted patches [B, N_decode, patch_dim]
  in token order, with the same number of hidden and of decoded tokens in every row; `patchify(images)` gives the
  targets in that layout (tubelet, row, col, channel per token).
- Tokens are ordered (t, row, col) over the `token_grid` (num_frames // tubelet_size, image_size // patch_size, ...).
- The backbone's parameter names (`encoder.videomae.*`) are the same in the pretraining and the fine-tuning models,
  so `train.init_from` of a masked_modeling checkpoint loads the encoder (`init_state` drops the decoder's weights).
- `encoder` has a `grid` (patch rows, columns): Grad-CAM explains images (T=1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medvl.models.encoders import normalize_images, pretrained_normalization

POOLINGS = ("mean", "attention", "flatten")
"""The choices of `MAEConfig.pooling`."""


@dataclass
class MAEConfig:
    image_size: int = 224
    """Side of the square input frames, in pixels (a multiple of patch_size)."""
    in_chans: int = 3
    """Channels per frame (1 grayscale X-rays, 3 RGB, N satellite bands)."""
    image_mean: float = 0.5
    """Pixel mean subtracted inside the model (frames arrive in [0, 1])."""
    image_std: float = 0.25
    """Pixel std the model divides by after subtracting image_mean."""
    channel_mean: tuple[float, ...] = ()
    """Per-channel pixel mean, overriding image_mean; empty = from the pretrained folder's preprocessor_config.json."""
    channel_std: tuple[float, ...] = ()
    """Per-channel pixel std matching channel_mean."""
    num_frames: int = 1
    """Frames per clip: 1 for images, T for clips (the data path loads a study's first T views/frames)."""
    max_views: int = 0
    """Views (frames) per study the data path loads; 0 = num_frames (the only value allowed otherwise)."""
    tubelet_size: int = 0
    """Frames per patch in time; 0 = 1 for images, 2 for clips. num_frames must be a multiple."""
    patch_size: int = 16
    """Patch side in pixels."""
    embed_dim: int = 768
    """Token width of the encoder."""
    depth: int = 12
    """Encoder blocks."""
    num_heads: int = 12
    """Encoder attention heads (must divide embed_dim)."""
    mlp_dim: int = 3072
    """Encoder MLP hidden width (ViT-g/14: 6144 = 1408 x 48/11)."""
    decoder_dim: int = 384
    """Token width of the MAE decoder (pretraining only)."""
    decoder_depth: int = 4
    """MAE decoder blocks."""
    decoder_heads: int = 6
    """MAE decoder attention heads."""
    decoder_mlp_dim: int = 1536
    """MAE decoder MLP hidden width."""
    layer_norm_eps: float = 1e-6
    dropout: float = 0.0
    """Dropout before the head's linear layer (fine-tuning)."""
    pooling: str = "mean"
    """How the head pools the encoder's tokens [B, N, D] before its LayerNorm + linear (fine-tuning): `mean` (the
    seed's and VideoMAE's mean pooling -> [B, D]); `attention` (one learned query attends over the tokens,
    `model.num_heads` heads, as timm's `AttentionPoolLatent` without its MLP -> [B, D]: the weights can pick the tokens
    of one place, whose features carry their position); `flatten` (every token kept in (t, row, col) order, each
    LayerNormed, concatenated -> [B, N * D]: a linear head reads position directly). Mean pooling averages where a
    feature is away, which regression of a position needs (docs/families/mae.md, the medicanes tracking table)."""
    num_outputs: int = 0
    """0: the MAE pretraining model (encoder + decoder); > 0: encoder + pooled head with this many outputs (set by the
    classification and regression tasks)."""
    pretrained: str = ""
    """Local pretrained weights loaded at build time through `medvl.models.mae_weights.load_pretrained`: a VideoMAE /
    VideoMAEv2 .pth, an HF VideoMAE folder or a timm ViT state dict. Empty: random init. Nothing is downloaded."""

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"model.num_frames must be >= 1, got {self.num_frames}")
        self.max_views = self.max_views or self.num_frames
        if self.max_views != self.num_frames:
            raise ValueError(
                f"model.max_views={self.max_views} must equal model.num_frames={self.num_frames} for the "
                "mae family (a study's views are the clip's frames); set only model.num_frames"
            )
        self.tubelet_size = self.tubelet_size or (1 if self.num_frames == 1 else 2)
        if self.num_frames % self.tubelet_size:
            raise ValueError(
                f"model.num_frames={self.num_frames} must be a multiple of model.tubelet_size={self.tubelet_size}"
            )
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"model.image_size={self.image_size} must be a multiple of model.patch_size={self.patch_size}"
            )
        for dim, heads, where in (
            (self.embed_dim, self.num_heads, ""),
            (self.decoder_dim, self.decoder_heads, "decoder_"),
        ):
            if heads < 1 or dim % heads:
                raise ValueError(f"model.{where}dim={dim} must be divisible by model.{where}heads={heads}")
        for name in ("in_chans", "depth", "decoder_depth", "mlp_dim", "decoder_mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_outputs < 0:
            raise ValueError(f"model.num_outputs must be >= 0, got {self.num_outputs}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        self.channel_mean, self.channel_std = tuple(self.channel_mean), tuple(self.channel_std)
        if not self.channel_mean and not self.channel_std and self.pretrained:
            found = pretrained_normalization(self.pretrained)
            if found is not None and len(found[0]) in (1, self.in_chans):
                self.channel_mean, self.channel_std = found
        if len(self.channel_mean) != len(self.channel_std) or len(self.channel_mean) not in (0, 1, self.in_chans):
            raise ValueError(
                f"model.channel_mean {self.channel_mean} and model.channel_std {self.channel_std} need "
                f"one value each, or one per channel (model.in_chans={self.in_chans})"
            )


def _sizes(dim: int, depth: int, heads: int, mlp: int, ddim: int, ddepth: int, dheads: int) -> dict[str, Any]:
    return {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "mlp_dim": mlp,
        "decoder_dim": ddim,
        "decoder_depth": ddepth,
        "decoder_heads": dheads,
        "decoder_mlp_dim": 4 * ddim,
    }


MAE_SIZES: dict[str, dict[str, Any]] = {
    # Unit tests and CPU smoke runs: 32 px grayscale images, 4x4 patches of 8 px, two blocks.
    "tiny": {"image_size": 32, "in_chans": 1, "patch_size": 8, **_sizes(64, 2, 2, 128, 32, 1, 2)},
    # ViT-S/16 (VideoMAE small: decoder 192 wide, 4 blocks).
    "small": _sizes(384, 12, 6, 1536, 192, 4, 3),
    # ViT-B/16, ViT-L/16, ViT-H/16 as VideoMAE pretrains them.
    "base": _sizes(768, 12, 12, 3072, 384, 4, 6),
    "large": _sizes(1024, 24, 16, 4096, 512, 4, 8),
    "huge": _sizes(1280, 32, 16, 5120, 640, 4, 8),
    # ViT-g/14 of VideoMAEv2 (the seed's backbone): 1408 wide, 40 blocks, MLP 6144, 16 frames in tubelets of 2.
    "giant": {"patch_size": 14, "num_frames": 16, **_sizes(1408, 40, 16, 6144, 512, 4, 8)},
}


def config_for_reload(config: MAEConfig) -> MAEConfig:
    """A trained model's weights are in its checkpoint: rebuilding it does not need the pretrained file."""
    import dataclasses

    return dataclasses.replace(config, pretrained="") if config.pretrained else config


def token_grid(config: MAEConfig) -> tuple[int, int, int]:
    """(tubelets in time, patch rows, patch columns) of one clip or image."""
    side = config.image_size // config.patch_size
    return config.num_frames // config.tubelet_size, side, side


def hf_config(config: MAEConfig) -> Any:
    """The `transformers.VideoMAEConfig` of a medvl MAE config."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.in_chans,
        num_frames=config.num_frames,
        tubelet_size=config.tubelet_size,
        hidden_size=config.embed_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=config.mlp_dim,
        layer_norm_eps=config.layer_norm_eps,
        use_mean_pooling=False,
        qv_bias=True,
        decoder_hidden_size=config.decoder_dim,
        decoder_num_hidden_layers=config.decoder_depth,
        decoder_num_attention_heads=config.decoder_heads,
        decoder_intermediate_size=config.decoder_mlp_dim,
        norm_pix_loss=True,
    )


class VideoViTEncoder(nn.Module):
    """transformers' `VideoMAEModel` behind a tensor interface: normalized clips [B, T, C, H, W] (and optionally the
    tokens to hide) -> the visible tokens [B, N_visible, D] after the final LayerNorm."""

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        from transformers import VideoMAEModel

        self.videomae = VideoMAEModel(hf_config(config))
        self.token_grid = token_grid(config)
        self.grid = self.token_grid[1:]
        self.out_dim = config.embed_dim

    def forward(self, clips: Tensor, hidden: Tensor | None = None) -> Tensor:
        return self.videomae(clips, bool_masked_pos=hidden).last_hidden_state


def sinusoid_table(n: int, dim: int) -> Tensor:
    """The fixed sin-cos position table of VideoMAE, [1, n, dim]."""
    position = torch.arange(n, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim).double()
    angles = position / rates
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles[:, 0::2]), torch.cos(angles[:, 1::2])
    return table.float()[None]


class TokenPool(nn.Module):
    """The head's pooling (`MAEConfig.pooling`): tokens [B, N, D] and the head's LayerNorm over D -> [B, out_dim].

    `mean`: LayerNorm(mean over N), out_dim D. `attention`: a learned query [1, 1, D] attends over the tokens
    (`nn.MultiheadAttention`, `heads` heads), then LayerNorm, out_dim D. `flatten`: LayerNorm of each token, the N
    tokens concatenated, out_dim N * D (N fixed by the model's token grid)."""

    def __init__(self, mode: str, dim: int, heads: int, num_tokens: int) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {', '.join(POOLINGS)}, got {mode!r}")
        self.mode = mode
        self.out_dim = dim * num_tokens if mode == "flatten" else dim
        if mode == "attention":
            # Named as a ViT token so that AdamW leaves it undecayed (medvl.train.optim).
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, norm: nn.Module, tokens: Tensor) -> Tensor:
        if self.mode == "mean":
            return norm(tokens.mean(1))
        if self.mode == "flatten":
            return norm(tokens).flatten(1)
        pooled, _ = self.attn(self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens, tokens)
        return norm(pooled[:, 0])


_BLOCK = re.compile(r"^encoder\.videomae\.encoder\.layer\.(\d+)\.")


class MaskedVideoViT(nn.Module):
    """See the module docstring."""

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VideoViTEncoder(config)
        self.token_grid = token_grid(config)
        self.num_tokens = self.token_grid[0] * self.token_grid[1] * self.token_grid[2]
        self.patch_dim = config.tubelet_size * config.patch_size**2 * config.in_chans
        self.num_layers = config.depth
        """Blocks of the encoder; `layer_id` numbers the patch embedding 0, block i i + 1, the rest depth + 1."""
        if config.num_outputs > 0:
            self.pool = TokenPool(config.pooling, config.embed_dim, config.num_heads, self.num_tokens)
            self.fc_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
            self.drop = nn.Dropout(config.dropout)
            self.head = nn.Linear(self.pool.out_dim, config.num_outputs)
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        else:
            from transformers.models.videomae.modeling_videomae import VideoMAEDecoder

            self.encoder_to_decoder = nn.Linear(config.embed_dim, config.decoder_dim, bias=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            self.register_buffer("decoder_pos", sinusoid_table(self.num_tokens, config.decoder_dim), persistent=False)
            self.decoder = VideoMAEDecoder(self.encoder.videomae.config)  # the config with its attention kernel set
            self.decoder.apply(self.encoder.videomae._init_weights)
        if config.pretrained:
            from medvl.models.mae_weights import load_pretrained

            report = load_pretrained(self, config.pretrained)
            print(report.summary())

    # ------------------------------------------------------------------------------------------------- inputs
    def clips(self, images: Tensor, view_mask: Tensor) -> Tensor:
        """images [B, V, C, H, W] in [0, 1] -> normalized clips [B, T, C, H, W], absent frames zero."""
        c = self.config
        b, v = view_mask.shape
        if images.shape[:3] != (b, c.num_frames, c.in_chans) or images.shape[-1] != c.image_size:
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not match the mae model: expected [B, "
                f"{c.num_frames} frames (model.num_frames), {c.in_chans} channels (model.in_chans), "
                f"{c.image_size}, {c.image_size}] (model.image_size)"
            )
        x = normalize_images(images.flatten(0, 1), c).view(images.shape)
        return x * view_mask[:, :, None, None, None].to(x.dtype)

    def patchify(self, images: Tensor) -> Tensor:
        """[B, T, C, H, W] -> [B, N, tubelet * patch * patch * C], tokens in (t, row, col) order; the layout of the
        decoder's outputs (VideoMAE's)."""
        b, t, ch, hgt, wid = images.shape
        ts, p = self.config.tubelet_size, self.config.patch_size
        x = images.reshape(b, t // ts, ts, ch, hgt // p, p, wid // p, p)
        return x.permute(0, 1, 4, 6, 2, 5, 7, 3).reshape(b, -1, ts * p * p * ch)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """The inverse of `patchify`: [B, N, patch_dim] -> [B, T, C, H, W]."""
        c = self.config
        (tt, gh, gw), ts, p = self.token_grid, c.tubelet_size, c.patch_size
        x = patches.reshape(patches.shape[0], tt, gh, gw, ts, p, p, c.in_chans)
        return x.permute(0, 1, 4, 7, 2, 5, 3, 6).reshape(patches.shape[0], tt * ts, c.in_chans, gh * p, gw * p)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        images: Tensor,
        view_ids: Tensor | None = None,
        view_mask: Tensor | None = None,
        encoder_mask: Tensor | None = None,
        decode: Tensor | None = None,
    ) -> Tensor:
        if view_mask is None:
            view_mask = torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        clips = self.clips(images, view_mask.bool())
        if self.config.num_outputs > 0:
            return self.head(self.drop(self.pool(self.fc_norm, self.encoder(clips))))
        if encoder_mask is None or decode is None:
            raise ValueError(
                "the mae pretraining model (model.num_outputs=0) reconstructs patches: call it with "
                "encoder_mask and decode ([B, N] bool), as the masked_modeling task does; for a head, "
                "train it with task.name=classification or regression"
            )
        return self.reconstruct(clips, encoder_mask.bool(), decode.bool())

    def reconstruct(self, clips: Tensor, hidden: Tensor, decode: Tensor) -> Tensor:
        """Normalized clips, the tokens hidden from the encoder and those the decoder reconstructs -> predicted
        patches [B, N_decode, patch_dim] (VideoMAEv2's dual masking: decode may be any subset of the tokens)."""
        b = clips.shape[0]
        if hidden.shape != (b, self.num_tokens) or decode.shape != hidden.shape:
            raise ValueError(
                f"encoder_mask {tuple(hidden.shape)} and decode {tuple(decode.shape)} must be [B, "
                f"{self.num_tokens}] (the model's tokens {self.token_grid})"
            )
        visible = self.encoder_to_decoder(self.encoder(clips, hidden))  # [B, N_vis, Dd]
        pos = self.decoder_pos.to(visible.dtype).expand(b, -1, -1)
        dim = visible.shape[-1]
        pos_visible = pos[~hidden].reshape(b, -1, dim)
        pos_decode = pos[decode].reshape(b, -1, dim)
        tokens = torch.cat([visible + pos_visible, self.mask_token.to(visible.dtype) + pos_decode], dim=1)
        return self.decoder(tokens, pos_decode.shape[1]).logits

    # ------------------------------------------------------------------------------------ training support
    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise lr decay: 0 the patch embedding, i + 1 encoder block i, num_layers + 1
        everything after the encoder's blocks (final norm, head, decoder)."""
        if name.startswith("encoder.videomae.embeddings."):
            return 0
        found = _BLOCK.match(name)
        return int(found.group(1)) + 1 if found else self.num_layers + 1

    def init_state(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """The part of another mae checkpoint this model takes with `train.init_from`: (state, dropped keys). A
        fine-tuning model drops the MAE decoder of a pretraining checkpoint; a head whose width differs (another
        task's) is dropped and keeps its initialization."""
        own = self.state_dict()
        keep, dropped = {}, []
        for key, value in state.items():
            if key in own and own[key].shape == value.shape:
                keep[key] = value
            elif key not in own and key.split(".")[0] in (
                "encoder_to_decoder",
                "mask_token",
                "decoder",
                "pool",
                "fc_norm",
                "head",
            ):
                dropped.append(key)
            elif key in own and key.split(".")[0] in ("head", "fc_norm", "pool"):
                dropped.append(key)
            elif key in own:
                raise ValueError(
                    f"train.init_from: {key} has shape {tuple(value.shape)} in the checkpoint but "
                    f"{tuple(own[key].shape)} here: it was trained with another model size; give this "
                    "run the same model.* shape fields (embed_dim, depth, patch_size, in_chans, ...)"
                )
            else:
                keep[key] = value  # unexpected: the runner reports it
        return keep, dropped


__all__ = [
    "MAEConfig",
    "MAE_SIZES",
    "MaskedVideoViT",
    "POOLINGS",
    "TokenPool",
    "VideoViTEncoder",
    "config_for_reload",
    "hf_config",
    "token_grid",
]
