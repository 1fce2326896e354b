"""Masked image modelling (MIM), a sub-task of instructed generation (BiomedGPT / OFA pretraining).

The model sees the image with its central region zeroed and an instruction (OFA's " what is the image in the middle
part?"), and generates the codes a frozen VQ image tokenizer gives that region: the middle half of each side (rows
and columns [S/4, 3S/4) of an S-pixel image), as OFA cuts the 128 x 128 centre of a 256 x 256 image for its VQ-GAN.
Codes are tokens of a reserved vocabulary range appended after the text tokenizer's: code k is token
`code_offset + k` (written `<code_k>`), so the model's vocabulary is len(text tokenizer) + K. Training and generation
allow only code tokens at the L = h * w code positions and only EOS after them (masked logits; label smoothing
spreads over the allowed tokens), so every output is a complete code grid.

The tokenizer (`medvl.models.vq`) is loaded from `task.mim.tokenizer`: a medvl `vq` run or checkpoint directory, or
a taming-transformers checkpoint file with its yaml (`task.mim.tokenizer_config`) or sizes
(`task.mim.tokenizer_model`). It is frozen; codes are computed once per image and kept in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.models.vq.model import VQModel

OFA_MIM_PROMPT = " what is the image in the middle part?"


@dataclass
class MIMOptions:
    """The `task.mim:` section: the image tokenizer of the MIM sub-task (needed when task.tasks names mim)."""

    tokenizer: str = ""
    """The frozen VQ tokenizer: a `vq` run or checkpoint directory (`medvl train vq_tokenizer_tiny_synthetic`), or a
    taming-transformers checkpoint file (.ckpt/.pt/.pth with a state_dict, or .safetensors), read as tensors only."""
    tokenizer_config: str = ""
    """For a taming checkpoint: its model yaml (model.params.ddconfig, n_embed, embed_dim)."""
    tokenizer_model: dict[str, Any] = field(default_factory=dict)
    """For a taming checkpoint without a yaml (or to override it): `VQConfig` fields, e.g. {size: taming_f16,
    n_embed: 16384}."""
    prompt: str = OFA_MIM_PROMPT
    """The MIM instruction (OFA's)."""
    code_image_size: int = 0
    """Side the central region is resized to before it is tokenized (0 = as cut: half the model's image_size)."""


def central_box(size: int) -> tuple[int, int]:
    """(start, stop) of the middle half of a side of `size` pixels: [size // 4, size // 4 + size // 2)."""
    start = size // 4
    return start, start + size // 2


def mask_center(image: np.ndarray) -> np.ndarray:
    """A copy of uint8 [S, S] or [S, S, C] with the central region (`central_box` on both axes) set to 0."""
    out = image.copy()
    r0, r1 = central_box(image.shape[0])
    c0, c1 = central_box(image.shape[1])
    out[r0:r1, c0:c1] = 0
    return out


class ImageCoder:
    """Image -> the VQ codes of its central region, as token ids of the code range.

    Args:
        vq: the frozen `VQModel`.
        code_offset: token id of code 0 (the text tokenizer's size).
        code_image_size: side the central region is resized to (0 = as cut).
    """

    def __init__(self, vq: VQModel, code_offset: int, code_image_size: int = 0) -> None:
        self.vq, self.code_offset, self.code_image_size = vq, code_offset, code_image_size
        self.n_codes = vq.config.n_embed

    def grid(self, image_size: int) -> tuple[int, int]:
        """(h, w) of the code grid of an `image_size` image's central region; ValueError when the region does not
        divide into whole codes."""
        side = self.code_image_size or image_size // 2
        f = self.vq.config.downsample
        if side % f or side < f:
            raise ValueError(
                f"the central region of a {image_size} px image is {side} px (task.mim.code_image_size or half of "
                f"model.image_size), not a multiple of the tokenizer's {f} px per code: set model.image_size to a "
                f"multiple of {2 * f} or task.mim.code_image_size to a multiple of {f}"
            )
        return side // f, side // f

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> list[int]:
        """uint8 [S, S] or [S, S, C] -> token ids (code_offset + code) of the central region's codes, row-major."""
        r0, r1 = central_box(image.shape[0])
        c0, c1 = central_box(image.shape[1])
        pixels = torch.from_numpy(np.ascontiguousarray(image[r0:r1, c0:c1])).float().div_(255.0)
        x = pixels.permute(2, 0, 1)[None] if pixels.ndim == 3 else pixels[None, None]
        want = self.vq.config.in_chans
        if x.shape[1] != want:
            if x.shape[1] == 1:  # a grayscale image through an RGB tokenizer (taming's VQ-GANs)
                x = x.expand(-1, want, -1, -1)
            else:
                raise ValueError(
                    f"the VQ tokenizer takes {want}-channel images, the model's images have {x.shape[1]} channels"
                )
        if self.code_image_size and x.shape[-1] != self.code_image_size:
            x = F.interpolate(x, size=(self.code_image_size,) * 2, mode="bicubic", align_corners=False).clamp(0, 1)
        device = next(self.vq.parameters()).device
        codes = self.vq.codes(x.to(device))[0].flatten()
        return (codes.cpu() + self.code_offset).tolist()


def code_mask(lengths: Tensor, target_len: int, vocab: int, code_offset: int, n_codes: int, eos_id: int) -> Tensor:
    """bool [B, T, V]: True where token v may come at target position t of a MIM example with lengths[b] codes:
    the code range before that, EOS at it, anything after (padding, ignored by the loss)."""
    b = lengths.shape[0]
    mask = torch.ones(b, target_len, vocab, dtype=torch.bool)
    codes = torch.zeros(vocab, dtype=torch.bool)
    codes[code_offset : code_offset + n_codes] = True
    eos = torch.zeros(vocab, dtype=torch.bool)
    eos[eos_id] = True
    for row, n in enumerate(lengths.tolist()):
        mask[row, :n] = codes
        if n < target_len:
            mask[row, n] = eos
    return mask


def allowed_codes(length: int, code_offset: int, n_codes: int, eos_id: int) -> Any:
    """The `allowed_tokens(example, prefix)` callback of generation: a code while fewer than `length` were
    generated, then EOS."""
    codes = list(range(code_offset, code_offset + n_codes))

    def allowed(example: int, prefix: list[int]) -> list[int]:
        return codes if len(prefix) < length else [eos_id]

    return allowed


def codes_text(ids: list[int], code_offset: int, n_codes: int) -> str:
    """Token ids -> "<code_k> <code_j> ..." (ids outside the code range are left out)."""
    return " ".join(f"<code_{i - code_offset}>" for i in ids if code_offset <= i < code_offset + n_codes)


def text_codes(text: str) -> list[int]:
    """ "<code_k> <code_j> ..." -> [k, j, ...]."""
    return [int(word[6:-1]) for word in text.split() if word.startswith("<code_") and word.endswith(">")]


def mim_metrics(rows: list[dict[str, Any]], n_codes: int) -> dict[str, float]:
    """Validation numbers of the MIM rows: `mim_code_accuracy` (share of code positions generated right),
    `mim_nll` (mean negative log-likelihood per code under teacher forcing, allowed codes only, nats) next to
    `mim_uniform_nll` = log K (a model that learned nothing) and `mim_unigram_nll` (the entropy of the code
    frequencies of these rows: the best a model that ignores the image can do, fitted on the rows themselves)."""
    if not rows:
        return {}
    hits = []
    for r in rows:
        got, want = text_codes(r["generated"]), text_codes(r["reference"])
        hits.append(sum(a == b for a, b in zip(got, want)) / max(len(want), 1))  # a short output misses the rest
    refs = np.concatenate([np.array(text_codes(r["reference"])) for r in rows])
    p = np.bincount(refs, minlength=n_codes) / max(len(refs), 1)
    unigram = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    return {
        "mim_code_accuracy": float(np.mean(hits)),
        "mim_nll": float(np.mean([r["nll"] for r in rows])),
        "mim_uniform_nll": math.log(n_codes),
        "mim_unigram_nll": unigram,
    }


__all__ = [
    "OFA_MIM_PROMPT",
    "ImageCoder",
    "MIMOptions",
    "allowed_codes",
    "central_box",
    "code_mask",
    "codes_text",
    "mask_center",
    "mim_metrics",
    "text_codes",
]
