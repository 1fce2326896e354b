"""Pretrained weights for the "mae" family from a local path, through one key map.

`load_pretrained(model, path)` reads
- a VideoMAE / VideoMAEv2 `.pth` (the weights under `model`, `module` or `state_dict`; keys with any of the prefixes
  `module.`, `backbone.`, `encoder.`): `patch_embed.proj`, `blocks.i.{norm1, attn.qkv, attn.q_bias, attn.v_bias,
  attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, and for a pretraining checkpoint `encoder_to_decoder`, `mask_token`,
  `decoder.blocks.i.*`, `decoder.norm`, `decoder.head`;
- an HF VideoMAE folder (`config.json` + `model.safetensors` or `pytorch_model.bin`; `VideoMAEForPreTraining`,
  `VideoMAEModel` or `VideoMAEForVideoClassification`; their attention biases saved as `q_bias`/`v_bias`, as the hub
  files and transformers' own save_pretrained write them) or such a state dict file;
- a timm ViT state dict (`patch_embed.proj` 2-D, `blocks.i.attn.qkv` with a full bias: the key bias is dropped, which
  changes nothing since softmax ignores a per-query constant; learned `pos_embed` / `cls_token` are not used, VideoMAE
  has fixed sin-cos positions);
and maps it onto the model's names (`encoder.videomae.*` and the decoder's). A 2-D patch kernel is inflated over the
tubelet (repeated / tubelet, as I3D), an RGB kernel summed to one channel for grayscale models. The report lists
what loaded, what the model kept at its initialization (missing), what the file had that the model does not use
(unused) and the shape mismatches; it raises when fewer than half of the encoder's tensors loaded, which is what a
checkpoint of another architecture (or a wrongly stripped prefix) gives, instead of silently training from scratch.
Heads (`head`, `fc_norm`, `classifier`) are never loaded: the task sets its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from medvl.models.weights_file import read_weight_tensors

MIN_ENCODER_SHARE = 0.5
_PREFIXES = ("module.", "backbone.", "model.")
_BLOCK_MAP = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_HEADS = re.compile(r"^(head|fc_norm|classifier|heads?\.)")


class PretrainedWeightsError(ValueError):
    """Pretrained weights that do not fit the model."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Model tensors the file did not provide (they keep their initialization)."""
    unused: list[str] = field(default_factory=list)
    """Tensors of the file the model has no place for."""
    mismatched: list[str] = field(default_factory=list)
    """'name: file shape vs model shape'."""
    encoder_share: float = 0.0

    def summary(self) -> str:
        parts = [
            f"model.pretrained {self.path}: loaded {len(self.loaded)} tensors ({self.encoder_share:.0%} of the "
            f"encoder's)"
        ]
        for name, items in (
            ("missing (kept at init)", self.missing),
            ("unused", self.unused),
            ("shape mismatch", self.mismatched),
        ):
            if items:
                parts.append(f"{len(items)} {name}, e.g. {', '.join(items[:4])}")
        return "; ".join(parts)


def read_state(path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file or HF folder (never executes pickled code)."""
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_state(path / name)
        raise FileNotFoundError(
            f"model.pretrained: folder {str(path)!r} has no model.safetensors or "
            "pytorch_model.bin (an HF VideoMAE folder written by save_pretrained)"
        )
    return read_weight_tensors(path, "model.pretrained", PretrainedWeightsError)


def _block(rest: str, prefix: str, value: Tensor, out: dict[str, Tensor]) -> bool:
    """Map one key of an original (timm-named) transformer block onto VideoMAE's HF names; False if unknown."""
    for old, new in _BLOCK_MAP.items():
        if rest.startswith(old + "."):
            out[f"{prefix}.{new}.{rest[len(old) + 1 :]}"] = value
            return True
    attn = f"{prefix}.attention.attention"
    if rest in ("attn.qkv.weight", "attn.qkv.bias"):
        q, k, v = value.chunk(3, dim=0)
        kind = rest.rsplit(".", 1)[1]
        out[f"{attn}.query.{kind}"], out[f"{attn}.value.{kind}"] = q, v
        if kind == "weight":
            out[f"{attn}.key.weight"] = k
        return True  # a key bias (timm) is dropped: softmax over keys ignores it
    if rest in ("attn.q_bias", "attn.v_bias"):
        out[f"{attn}.{'query' if rest == 'attn.q_bias' else 'value'}.bias"] = value
        return True
    return False


def map_keys(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """(state under the mae model's names, keys that have no place in it)."""
    out: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if name.startswith("videomae."):  # HF VideoMAEForPreTraining / ForVideoClassification
            out["encoder." + name] = value
            continue
        if name.startswith(("embeddings.", "encoder.layer.", "layernorm.")):  # HF VideoMAEModel
            out["encoder.videomae." + name] = value
            continue
        if name.startswith(("decoder.decoder_layers.", "decoder.norm.", "decoder.head.")) or name in (
            "mask_token",
            "encoder_to_decoder.weight",
        ):
            out[name] = value  # HF and original pretraining decoders share these names
            continue
        if name.startswith("decoder.blocks."):
            i, rest = name[len("decoder.blocks.") :].split(".", 1)
            if _block(rest, f"decoder.decoder_layers.{i}", value, out):
                continue
        if name.startswith("encoder."):
            name = name[len("encoder.") :]
        if name.startswith("patch_embed.proj."):
            out["encoder.videomae.embeddings.patch_embeddings.projection." + name.rsplit(".", 1)[1]] = value
            continue
        if name.startswith("norm."):
            out["encoder.videomae.layernorm." + name[len("norm.") :]] = value
            continue
        if name.startswith("blocks."):
            i, rest = name[len("blocks.") :].split(".", 1)
            if _block(rest, f"encoder.videomae.encoder.layer.{i}", value, out):
                continue
        unused.append(key)
    for name in [k for k in out if k.endswith(("attention.attention.q_bias", "attention.attention.v_bias"))]:
        kind = "query" if name.endswith("q_bias") else "value"  # HF VideoMAE files (transformers 4 layout)
        out[name.rsplit(".", 1)[0] + f".{kind}.bias"] = out.pop(name)
    return out, unused


def _adapt(name: str, value: Tensor, target: Tensor) -> Tensor | None:
    """Fit a patch-embedding kernel to the model's (tubelet inflation, RGB -> grayscale); None if it cannot."""
    if value.shape == target.shape:
        return value
    if not name.endswith("patch_embeddings.projection.weight") or target.ndim != 5:
        return None
    if value.ndim == 4:  # a 2-D (image) kernel: inflate over the tubelet
        value = value[:, :, None].repeat(1, 1, target.shape[2], 1, 1) / target.shape[2]
    elif value.ndim == 5 and value.shape[2] != target.shape[2]:  # another tubelet: average, then inflate
        value = value.mean(2, keepdim=True).repeat(1, 1, target.shape[2], 1, 1)
    if value.shape[1] != target.shape[1] and target.shape[1] == 1:
        value = value.sum(1, keepdim=True)  # RGB weights for a grayscale model
    return value if value.shape == target.shape else None


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load local pretrained weights into a `MaskedVideoViT`; see the module docstring.

    Raises:
        FileNotFoundError: nothing at `path`.
        PretrainedWeightsError: fewer than half of the encoder's tensors could be loaded.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model.pretrained: {str(path)!r} does not exist (give a local VideoMAE .pth, an HF "
            "VideoMAE folder or a timm ViT state dict, or leave model.pretrained empty)"
        )
    mapped, unused = map_keys(read_state(path))
    own = model.state_dict()
    report = LoadReport(str(path))
    take: dict[str, Tensor] = {}
    for name, value in mapped.items():
        if _HEADS.match(name):
            continue
        if name not in own:
            unused.append(name)
            continue
        fitted = _adapt(name, value, own[name])
        if fitted is None:
            report.mismatched.append(f"{name}: {tuple(value.shape)} vs {tuple(own[name].shape)}")
            continue
        take[name] = fitted.to(own[name].dtype)
    report.unused = [k for k in unused if not _HEADS.match(k)]
    report.loaded = sorted(take)
    report.missing = [k for k in own if k not in take and not _HEADS.match(k)]
    encoder = [k for k in own if k.startswith("encoder.")]
    report.encoder_share = sum(k in take for k in encoder) / max(1, len(encoder))
    if report.encoder_share < MIN_ENCODER_SHARE:
        raise PretrainedWeightsError(
            f"{report.summary()}. Only {report.encoder_share:.0%} of the encoder's tensors matched: {str(path)!r} is "
            "not a VideoMAE/VideoMAEv2, HF VideoMAE or timm ViT checkpoint of this size (check model.size, "
            "model.patch_size, model.embed_dim and model.depth against it), so nothing meaningful would load"
        )
    model.load_state_dict(take, strict=False)
    return report


__all__ = ["LoadReport", "PretrainedWeightsError", "load_pretrained", "map_keys", "read_state"]
