"""Image encoders: one normalized view in, a grid of patch features out.

Contract of every entry in `ENCODERS`: a builder `(config) -> nn.Module` (config: an `ImageEncoderConfig`) whose
module has `out_dim: int` (feature width), `grid: tuple[int, int]` (patch rows, columns at `config.image_size`) and
`forward(x [N, C, H, W] normalized) -> [N, grid[0] * grid[1], out_dim]`, patches in row-major order.

Entries: "conv" and "vit" are built from scratch; "torchvision", "timm" and "hf" wrap third-party backbones, built
without any download and loaded from the local file or directory in `config.encoder_weights` (empty: random init).
Third-party libraries are imported only when their entry is built.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvl.models.attention import attend
from medvl.models.dropout import Dropout
from medvl.registry import Registry


@dataclass
class ImageEncoderConfig:
    """The image input and image-encoder fields shared by every family config that embeds an `ENCODERS` encoder
    (the captioner, the classifier); a family's config subclasses it, adding its own fields and defaults."""

    image_size: int = 128
    """Side of the square input images, in pixels."""
    in_chans: int = 1
    """Image channels: 1 grayscale (X-rays), 3 RGB (photographs), N for multispectral frames (.npy)."""
    image_mean: float = 0.5
    """Pixel mean subtracted inside the model (images arrive in [0, 1]); match a pretrained encoder's statistics."""
    image_std: float = 0.25
    """Pixel std the model divides by after subtracting image_mean."""
    channel_mean: tuple[float, ...] = ()
    """Per-channel pixel mean (one value per model.in_chans), overriding image_mean; empty = read from the pretrained
    encoder's preprocessing config (HF preprocessor_config.json, timm pretrained_cfg) when it has one."""
    channel_std: tuple[float, ...] = ()
    """Per-channel pixel std matching channel_mean."""
    encoder: str = "conv"
    """Image encoder, a name in `medvl.models.encoders.ENCODERS`: conv, vit, torchvision, timm, hf."""
    encoder_name: str = ""
    """Backbone name for encoder=torchvision or timm (e.g. resnet18, resnet50, densenet121)."""
    encoder_weights: str = ""
    """Local weights for the backbone: a .pth/.safetensors state dict, or for encoder=hf a model directory.
    Empty: random init. Nothing is ever downloaded."""
    conv_channels: tuple[int, ...] = (32, 64, 128, 192)
    """encoder=conv: channels of each stage; the total stride is 2**len ."""
    conv_blocks: tuple[int, ...] = (1, 1, 1, 1)
    """encoder=conv: residual blocks per stage (same length as conv_channels)."""
    patch_size: int = 16
    """encoder=vit: patch side in pixels (image_size must be a multiple)."""
    vit_dim: int = 192
    """encoder=vit: token width."""
    vit_depth: int = 4
    """encoder=vit: Transformer blocks."""
    vit_heads: int = 3
    """encoder=vit: attention heads (must divide vit_dim)."""

    def __post_init__(self) -> None:
        check_encoder_fields(self)


EncoderBuilder = Callable[[Any], nn.Module]
ENCODERS: Registry[EncoderBuilder] = Registry("image encoder")


def check_encoder_fields(config: Any) -> None:
    """Validate the encoder fields of a model config (`encoder`, conv/vit shape fields, `encoder_name`) and make the
    conv tuples tuples; shared by every family config that embeds an image encoder.

    Raises:
        ValueError: an unknown encoder or a shape the chosen encoder cannot build.
    """
    from medvl.registry import UnknownNameError

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    config.conv_channels, config.conv_blocks = tuple(config.conv_channels), tuple(config.conv_blocks)
    try:
        ENCODERS.get(config.encoder)
    except UnknownNameError as err:  # a ValueError, so the config loader reports it like any other bad value
        raise ValueError(f"model.encoder: {err}") from None
    check(
        config.image_size >= 1 and config.in_chans >= 1,
        f"model.image_size and model.in_chans must be >= 1, got {config.image_size} and {config.in_chans}",
    )
    if config.encoder == "conv":
        check(
            len(config.conv_channels) >= 1 and len(config.conv_channels) == len(config.conv_blocks),
            f"model.conv_channels {config.conv_channels} and model.conv_blocks {config.conv_blocks} must be "
            "non-empty and of the same length (one entry per stage)",
        )
        stride = 2 ** len(config.conv_channels)
        check(
            config.image_size % stride == 0,
            f"model.image_size={config.image_size} must be a multiple of the conv "
            f"encoder's stride {stride} (2 ** len(model.conv_channels))",
        )
    if config.encoder == "vit":
        check(
            config.patch_size >= 1 and config.image_size % config.patch_size == 0,
            f"model.image_size={config.image_size} must be a multiple of model.patch_size={config.patch_size}",
        )
        check(
            config.vit_dim % config.vit_heads == 0,
            f"model.vit_dim={config.vit_dim} must be divisible by model.vit_heads={config.vit_heads}",
        )
    if config.encoder in ("torchvision", "timm"):
        check(bool(config.encoder_name), f"model.encoder={config.encoder!r} needs model.encoder_name (e.g. resnet18)")
    if hasattr(config, "channel_mean"):
        config.channel_mean, config.channel_std = tuple(config.channel_mean), tuple(config.channel_std)
        resolve_normalization(config)


def pretrained_normalization(weights: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Per-channel (mean, std) from the preprocessing config that comes with local pretrained weights, or None.

    Read, in order: an HF model folder's `preprocessor_config.json` (`image_mean`, `image_std`); a timm folder's
    `config.json` (`pretrained_cfg.mean` / `.std`, as timm writes it with `save_pretrained`); for a weights file, the
    same files beside it.
    """
    if not weights:
        return None
    path = Path(weights).expanduser()
    folder = path if path.is_dir() else path.parent
    import json

    for name, keys in (("preprocessor_config.json", ("image_mean", "image_std")), ("config.json", ("mean", "std"))):
        file = folder / name
        if not file.is_file():
            continue
        try:
            raw = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if name == "config.json":
            raw = raw.get("pretrained_cfg") or {}
        mean, std = raw.get(keys[0]), raw.get(keys[1])
        if isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) > 0:
            return tuple(float(m) for m in mean), tuple(float(v) for v in std)
    return None


def resolve_normalization(config: Any) -> None:
    """Fill `config.channel_mean` / `channel_std` from the pretrained weights' preprocessing config when they are
    not set (they are then recorded in every checkpoint, and prediction uses them without the weights folder)."""
    if config.channel_mean or config.channel_std:
        if len(config.channel_mean) != len(config.channel_std) or len(config.channel_mean) not in (1, config.in_chans):
            raise ValueError(
                f"model.channel_mean {config.channel_mean} and model.channel_std {config.channel_std} "
                f"need one value each, or one per channel (model.in_chans={config.in_chans})"
            )
        return
    found = pretrained_normalization(config.encoder_weights) if config.encoder_weights else None
    if found is not None:
        mean, std = found
        if config.in_chans == 1 and len(mean) == 3:  # grayscale repeated into an RGB backbone: its mean statistics
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        config.channel_mean, config.channel_std = tuple(mean), tuple(std)


def normalize_images(x: Tensor, config: Any) -> Tensor:
    """x float [N, C, H, W] in [0, 1] -> normalized by the per-channel statistics (`channel_mean`/`channel_std`,
    from the pretrained weights) or the scalar `image_mean`/`image_std`."""
    if config.channel_mean:
        mean = torch.tensor(config.channel_mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(config.channel_std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() - mean) / std
    return (x.float() - config.image_mean) / config.image_std


def _weights_path(config: Any) -> Path | None:
    """The local weights path of `config.encoder_weights`, or None for random init."""
    if not config.encoder_weights:
        return None
    path = Path(config.encoder_weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model.encoder_weights: {str(path)!r} does not exist (give a local weights file or "
            "directory, or leave model.encoder_weights empty for random init)"
        )
    return path


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors file or a torch .pth/.pt/.bin file (tensors only, never pickled code)."""
    from medvl.train.checkpoint import read_tensors

    if path.suffix == ".safetensors":
        return read_tensors(path, "model.encoder_weights")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, zip, EOF and size errors all mean "not a weights file"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"model.encoder_weights: {str(path)!r} is not a weights file torch can read safely "
            f"({first[:200]}); give a .safetensors or a .pth/.pt/.bin state dict"
        ) from e
    for key in ("state_dict", "model"):  # common checkpoint wrappers around the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"model.encoder_weights: {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def _to_tokens(out: Tensor, n_prefix: int) -> Tensor:
    """Backbone output -> [N, P, D]: feature maps are flattened, leading class/register tokens dropped."""
    if out.ndim == 4:
        return out.flatten(2).transpose(1, 2)
    if out.ndim == 3:
        return out[:, n_prefix:]
    raise ValueError(f"image encoder output has shape {tuple(out.shape)}; expected [N, C, H, W] or [N, tokens, D]")


@torch.no_grad()
def _probe(module: nn.Module, fn: Callable[[Tensor], Tensor], in_chans: int, image_size: int) -> Tensor:
    """Run `fn` once on a blank image in eval mode (so no BatchNorm statistic moves) to learn output shapes."""
    was_training = module.training
    module.eval()
    try:
        return fn(torch.zeros(1, in_chans, image_size, image_size))
    finally:
        module.train(was_training)


def _grid_from_tokens(n_tokens: int, image_size: int, patch: int | None) -> tuple[tuple[int, int], int]:
    """(grid, number of leading non-patch tokens) of a token sequence from a square image."""
    side = image_size // patch if patch else math.isqrt(n_tokens)
    while side > 0 and side * side > n_tokens:
        side -= 1
    if side == 0:
        raise ValueError(f"cannot read a patch grid from {n_tokens} encoder tokens at image size {image_size}")
    return (side, side), n_tokens - side * side


# --- conv: a small ResNet trained from scratch ------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (a 1x1 projection where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: stable training from scratch
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            # Average-pool then 1x1 conv (as in ResNet-D): uses every pixel, and avoids the strided 1x1 conv, whose
            # channels-last backward on CPU corrupts memory for some shapes (odd batch, 8 channels) in torch 2.x.
            pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class ConvEncoder(nn.Module):
    """Stem (stride 2) then one stage per entry of `channels`, each but the last halving the resolution.

    With 4 channel entries the total stride is 16 (128 px -> 8x8 patches): fine enough to keep small findings
    (a nodule, a thin pneumothorax line) as distinct patches instead of pooling them away.
    """

    def __init__(self, in_chans: int, channels: tuple[int, ...], blocks: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)
        )
        stages, c_prev = [], channels[0]
        for i, (c, n) in enumerate(zip(channels, blocks, strict=True)):
            # Downsample on entering every stage but the last: no 3x3 conv ever runs at the stem's full resolution
            # (the costliest place on a CPU), and the widest stage keeps the final grid.
            stride = 2 if i < len(channels) - 1 else 1
            stages.append(
                nn.Sequential(*[BasicBlock(c_prev if j == 0 else c, c, stride if j == 0 else 1) for j in range(n)])
            )
            c_prev = c
        self.stages = nn.Sequential(*stages)
        self.out_dim = channels[-1]
        stride = 2 ** len(channels)
        self.grid = (image_size // stride, image_size // stride)
        # Channels-last kernels and activations: about 2x faster convolutions on CPU (oneDNN) and GPU, same math.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return self.stages(self.stem(x)).flatten(2).transpose(1, 2)


@ENCODERS.register("conv")
def build_conv(config: Any) -> nn.Module:
    """The from-scratch CNN of `config.conv_channels` / `config.conv_blocks`."""
    return ConvEncoder(config.in_chans, tuple(config.conv_channels), tuple(config.conv_blocks), config.image_size)


# --- vit: a plain pre-norm Vision Transformer trained from scratch ----------------------------------------------------


class ViTBlock(nn.Module):
    """Pre-norm self-attention + MLP block over patch tokens (no masking: every patch is real; dropout on branches)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = attend(q, k, v)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(n, t, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ViTEncoder(nn.Module):
    """Patch embedding + learned positions + pre-norm blocks + final norm; every patch token is an output."""

    def __init__(
        self,
        in_chans: int,
        image_size: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.grid = (image_size // patch, image_size // patch)
        self.out_dim = dim
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@ENCODERS.register("vit")
def build_vit(config: Any) -> nn.Module:
    """The from-scratch ViT of `config.patch_size`, `vit_dim`, `vit_depth`, `vit_heads`."""
    return ViTEncoder(
        config.in_chans,
        config.image_size,
        config.patch_size,
        config.vit_dim,
        config.vit_depth,
        config.vit_heads,
        config.ffn_mult,
        config.dropout,
    )


# --- third-party backbones --------------------------------------------------------------------------------------------


class BackboneEncoder(nn.Module):
    """A third-party backbone behind the encoder contract.

    Args:
        backbone: the wrapped module (its parameters are trained with the rest of the model).
        features: backbone, x -> raw output ([N, C, H, W] maps or [N, tokens, D]).
        in_chans: channels of the images given to `forward`.
        backbone_chans: channels the backbone expects; a 1-channel image is repeated to 3 (keeps pretrained
            first-layer weights usable as they are).
        image_size: side of the square input, used once to probe the output grid.
        patch: the backbone's patch size when its output is a token sequence (None: infer a square grid).
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: Callable[[nn.Module, Tensor], Tensor],
        in_chans: int,
        backbone_chans: int,
        image_size: int,
        patch: int | None = None,
    ) -> None:
        super().__init__()
        if in_chans != backbone_chans and in_chans != 1:
            raise ValueError(
                f"model.in_chans={in_chans} but the backbone takes {backbone_chans} channels; only "
                "1-channel images are adapted (repeated) automatically"
            )
        self.backbone = backbone
        self._features = features
        self.repeat = backbone_chans if in_chans != backbone_chans else 1
        self.n_prefix = 0
        out = _probe(backbone, self._raw, in_chans, image_size)
        self.feature_map = out.ndim == 4
        if self.feature_map:
            self.grid = (out.shape[2], out.shape[3])
            self.out_dim = out.shape[1]
        else:
            self.grid, self.n_prefix = _grid_from_tokens(out.shape[1], image_size, patch)
            self.out_dim = out.shape[2]

    def _raw(self, x: Tensor) -> Tensor:
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, -1, -1)
        return self._features(self.backbone, x)

    def forward(self, x: Tensor) -> Tensor:
        return _to_tokens(self._raw(x), self.n_prefix)


_HEAD_NAMES = {"avgpool", "fc", "classifier", "head", "heads", "global_pool", "flatten", "dropout"}


@ENCODERS.register("torchvision")
def build_torchvision(config: Any) -> nn.Module:
    """A torchvision CNN (resnet18/50, densenet121, efficientnet_b0, convnext_tiny, ...) cut before its pooling head."""
    import torchvision

    if not config.encoder_name:
        raise ValueError("model.encoder='torchvision' needs model.encoder_name, e.g. resnet18, resnet50, densenet121")
    try:
        model = torchvision.models.get_model(config.encoder_name, weights=None)
    except ValueError as err:
        raise ValueError(
            f"model.encoder_name={config.encoder_name!r} is not a torchvision model ({err}); names: "
            "torchvision.models.list_models()"
        ) from None
    path = _weights_path(config)
    if path is not None:
        if path.is_dir():
            raise ValueError(
                f"model.encoder_weights={str(path)!r} is a directory; torchvision needs a .pth or "
                ".safetensors state dict file"
            )
        model.load_state_dict(load_state_dict_file(path))
    # The children up to the pooling head run in sequence for the CNN families; the last map is the patch grid.
    trunk = nn.Sequential(*[m for name, m in model.named_children() if name not in _HEAD_NAMES])
    if config.encoder_name.startswith("densenet"):
        trunk.append(nn.ReLU())  # densenet applies this in forward(), outside its `features`
    encoder = BackboneEncoder(trunk, lambda m, x: m(x), config.in_chans, 3, config.image_size)
    if not encoder.feature_map:
        raise ValueError(
            f"torchvision model {config.encoder_name!r} is not a CNN with a final feature map; use "
            "model.encoder='timm' or 'hf' for transformer backbones"
        )
    return encoder


@ENCODERS.register("timm")
def build_timm(config: Any) -> nn.Module:
    """timm.create_model(encoder_name, pretrained=False) with local weights; patches from `forward_features`."""
    try:
        import timm
    except ImportError:
        raise ImportError("model.encoder='timm' needs the timm package: pip install timm") from None
    if not config.encoder_name:
        raise ValueError("model.encoder='timm' needs model.encoder_name, e.g. resnet50 or vit_small_patch16_224")
    # Built with 3 input channels (grayscale is repeated) so that ImageNet-style weight files load unchanged.
    kwargs: dict[str, Any] = {"pretrained": False, "in_chans": 3, "num_classes": 0}
    if "vit" in config.encoder_name or "deit" in config.encoder_name:
        kwargs["img_size"] = config.image_size
    model = timm.create_model(config.encoder_name, **kwargs)
    path = _weights_path(config)
    if path is not None:
        state = load_state_dict_file(path)
        missing, _ = model.load_state_dict(state, strict=False)  # the dropped classifier head is "unexpected"
        if missing:
            raise ValueError(
                f"model.encoder_weights {str(path)!r} lacks {len(missing)} weights of timm model "
                f"{config.encoder_name!r}, e.g. {missing[:3]}"
            )
    patch = None
    if hasattr(model, "patch_embed"):
        size = getattr(model.patch_embed, "patch_size", None)
        patch = size[0] if isinstance(size, (tuple, list)) else size
    return BackboneEncoder(model, lambda m, x: m.forward_features(x), config.in_chans, 3, config.image_size, patch)


@ENCODERS.register("hf")
def build_hf(config: Any) -> nn.Module:
    """A local transformers vision model directory (config.json + weights): AutoModel, `last_hidden_state`."""
    from transformers import AutoModel

    path = _weights_path(config)
    if path is None or not path.is_dir():
        raise ValueError(
            "model.encoder='hf' needs model.encoder_weights set to a local transformers model directory "
            "(the output of save_pretrained)"
        )
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    chans = int(getattr(model.config, "num_channels", config.in_chans))
    patch = getattr(model.config, "patch_size", None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    extra = {}
    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        extra["interpolate_pos_encoding"] = True  # lets a ViT run at model.image_size, not only its training size
    return BackboneEncoder(
        model,
        lambda m, x: m(pixel_values=x, **extra).last_hidden_state,
        config.in_chans,
        chans,
        config.image_size,
        patch,
    )
