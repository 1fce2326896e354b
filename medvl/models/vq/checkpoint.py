"""Loading a VQ tokenizer: medvl's own (a `vq` run or checkpoint directory) or a taming-transformers checkpoint the
user brings (`.ckpt` / `.pt` / `.pth` with a `state_dict`, or `.safetensors`), read as tensors only.

`taming_state_dict(state, model)` is the one key mapping from a taming checkpoint to `VQModel`: it strips the
prefixes a wrapper adds (`model.`, `module.`, `first_stage_model.`, `vqvae.`), drops taming's training-only
`loss.*` weights (discriminator, LPIPS) and counts them, maps an EMA quantizer's `quantize.embedding.cluster_size` /
`embed_avg` onto medvl's EMA buffers, and reports what is missing or left over. It fails loudly (ValueError naming
keys and shapes) when a weight the tokenizer needs is absent or has another shape, or when the file holds weights of
the tokenizer's parts this architecture does not have: a tokenizer with random parts would emit meaningless codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medvl.models.vq.config import VQConfig, config_from_taming_yaml
from medvl.models.vq.model import VQModel
from medvl.models.weights_file import read_weight_tensors

WRAPPER_PREFIXES = ("model.", "module.", "first_stage_model.", "vqvae.")
"""Prefixes a training wrapper puts before a VQModel's keys (Lightning, DDP, taming's transformer/LDM stages)."""
PARTS = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
"""The VQModel's components: a file key under one of them that the model lacks means another architecture."""
_EMA_RENAMES = {
    "quantize.embedding.cluster_size": "quantize.cluster_size",
    "quantize.embedding.embed_avg": "quantize.embed_sum",
}


@dataclass
class LoadReport:
    """What `taming_state_dict` did with a checkpoint's tensors."""

    loaded: int
    """Model tensors filled from the file."""
    ignored_loss: int
    """`loss.*` tensors (discriminator, perceptual network) left out: taming trains with them, encoding does not."""
    derived: list[str] = field(default_factory=list)
    """Model tensors the file lacks that are set from what it holds (EMA statistics from the codebook)."""
    unexpected: list[str] = field(default_factory=list)
    """File keys outside the tokenizer's parts, not used (reported, harmless)."""

    def summary(self) -> str:
        text = f"{self.loaded} tensors loaded, {self.ignored_loss} loss.* (discriminator/perceptual) ignored"
        if self.derived:
            text += f", {len(self.derived)} EMA statistics set from the codebook"
        if self.unexpected:
            text += f", {len(self.unexpected)} other keys unused (e.g. {self.unexpected[:3]})"
        return text


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, read without executing code (`medvl.models.weights_file`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds more than tensors and plain containers, or no tensors.
    """
    return read_weight_tensors(path, "VQ tokenizer checkpoint")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix) and not key.startswith(PARTS):
                key, changed = key[len(prefix) :], True
    return key


def taming_state_dict(state: dict[str, torch.Tensor], model: VQModel) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """A taming-transformers VQModel/GumbelVQ state dict -> `model`'s state dict, and what was done (see the module
    docstring).

    Raises:
        ValueError: a needed weight is missing or has another shape, or the file has tokenizer weights the model
            lacks (another ch_mult / num_res_blocks / attn_resolutions / quantizer); the message names them.
    """
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    ignored, unexpected, foreign = 0, [], []
    for raw, tensor in state.items():
        key = _EMA_RENAMES.get(_strip(raw), _strip(raw))
        if key.startswith("loss."):
            ignored += 1
        elif key in own:
            mapped[key] = tensor
        elif key.startswith(PARTS):
            foreign.append(key)
        else:
            unexpected.append(raw)
    derived = []
    if "quantize.embedding.weight" in mapped:  # EMA buffers medvl keeps for training: neutral values suffice
        book = mapped["quantize.embedding.weight"]
        for key, value in (("quantize.cluster_size", torch.ones(book.shape[0])), ("quantize.embed_sum", book)):
            if key in own and key not in mapped:
                mapped[key] = value.clone()
                derived.append(key)
    missing = [k for k in own if k not in mapped]
    shapes = [
        f"{k}: file {list(mapped[k].shape)} vs model {list(own[k].shape)}"
        for k in mapped
        if mapped[k].shape != own[k].shape
    ]
    if missing or shapes or foreign or not mapped:
        details = []
        if not mapped:
            details.append(f"none of its {len(state)} keys is a VQ tokenizer weight (e.g. {list(state)[:3]})")
        if missing:
            details.append(f"{len(missing)} of the tokenizer's {len(own)} weights missing (e.g. {missing[:3]})")
        if shapes:
            details.append(f"{len(shapes)} with another shape (e.g. {shapes[:2]})")
        if foreign:
            details.append(f"{len(foreign)} tokenizer weights this architecture lacks (e.g. {foreign[:3]})")
        raise ValueError(
            "the checkpoint does not fit the VQ tokenizer's configuration: " + "; ".join(details) + ". Give the "
            "checkpoint's own taming yaml (task.mim.tokenizer_config: configs/model.yaml) or set its ddconfig in "
            "task.mim.tokenizer_model (ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, embed_dim, n_embed)"
        )
    return mapped, LoadReport(len(mapped) - len(derived), ignored, derived, unexpected)


def load_taming(path: str | Path, config: VQConfig) -> tuple[VQModel, LoadReport]:
    """A `VQModel` of `config` holding the weights of the taming checkpoint at `path` (eval mode, frozen)."""
    model = VQModel(config)
    mapped, report = taming_state_dict(read_state_dict(path), model)
    model.load_state_dict(mapped)
    return freeze(model), report


def freeze(model: VQModel) -> VQModel:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


FOREIGN_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def load_vq_tokenizer(
    path: str | Path, config_path: str = "", fields: dict[str, Any] | None = None
) -> tuple[VQModel, str]:
    """The frozen VQ tokenizer at `path` and a line saying what was loaded.

    Args:
        path: a medvl `vq` run directory or checkpoint directory, or a taming checkpoint file.
        config_path: for a taming file, its model yaml (`configs/model.yaml`).
        fields: for a taming file without a yaml, the `VQConfig` fields (a `size` preset name allowed); also
            overrides the yaml's.

    Raises:
        FileNotFoundError: nothing at `path` / `config_path`.
        ValueError: a medvl checkpoint of another family, a taming file without a configuration, or weights that do
            not fit it.
    """
    path = Path(path)
    if path.is_file() and path.suffix in FOREIGN_SUFFIXES:
        fields = dict(fields or {})
        if config_path:
            config = config_from_taming_yaml(config_path, **{k: v for k, v in fields.items() if k != "size"})
        elif fields:
            from medvl.models.families import MODEL_FAMILIES

            size = fields.pop("size", "taming_f16")
            config = MODEL_FAMILIES.get("vq").make_config(size, fields, "task.mim.tokenizer_model")
        else:
            raise ValueError(
                f"{path} is a foreign checkpoint without a configuration: give its taming yaml "
                "(task.mim.tokenizer_config) or its sizes (task.mim.tokenizer_model: {size: taming_f16, n_embed: ...})"
            )
        model, report = load_taming(path, config)
        return model, f"VQ tokenizer {path}: {report.summary()}"
    from medvl.infer.predictor import load_trained

    loaded = load_trained(path, device="cpu")
    if loaded.config.model_family != "vq" or not isinstance(loaded.model, VQModel):
        raise ValueError(
            f"{path} is a {loaded.config.model_family} checkpoint, not a VQ tokenizer; train one with "
            "`medvl train vq_tokenizer_tiny_synthetic` or give a taming-transformers checkpoint file"
        )
    return freeze(loaded.model), f"VQ tokenizer {loaded.checkpoint} ({loaded.config.model.n_embed} codes)"


__all__ = ["LoadReport", "load_taming", "load_vq_tokenizer", "read_state_dict", "taming_state_dict"]
