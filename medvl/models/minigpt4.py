"""Convert MiniGPT-4 / XrayGPT / BLIP-2 (LAVIS) `.pth` checkpoints to the xraygpt family's parameter names.

Contract: `convert_minigpt4(state)` -> (state with medvl names, {skipped key: why}); `read_pth(path)` loads the
tensors of a LAVIS-style checkpoint (`{"model": state_dict, ...}` or a bare state dict) with
`torch.load(weights_only=True)`, so no code in the file is ever run. The result is saved as safetensors by
`medvl convert minigpt4 PTH --out FILE` and used with `train.init_from=FILE` (or loaded by hand).

Mapping (LAVIS -> medvl):
- `llama_proj.*` -> `proj.*` (XrayGPT's projection into the LLM);  `query_tokens` -> `query_tokens`;
  `ln_vision.*` -> `ln_vision.*`;
- `Qformer.bert.embeddings.LayerNorm.*` -> `qformer.layernorm.*`;
  `Qformer.bert.encoder.layer.N.{attention,crossattention}.self.*` -> `qformer.encoder.layer.N.{...}.attention.*`;
  the rest of `Qformer.bert.encoder.layer.N.*` (attention outputs, `intermediate_query`, `output_query`) keeps its
  name under `qformer.encoder.layer.N.`;
- `llama_model.*` (a fine-tuned LLM) -> `llm.*`;
- skipped, with the reason: the Q-Former's text-only parts (`intermediate.*`, `output.*`, word/position embeddings,
  `cls.*`), which image-to-LLM use never runs, and `visual_encoder.*` (EVA ViT-g's layout; load the vision encoder
  from its own weights through model.encoder / model.encoder_weights instead).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

_QFORMER_LAYER = re.compile(r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(.+)$")


def read_pth(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a LAVIS/MiniGPT-4 checkpoint, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} cannot be read as tensors only ({type(err).__name__}: {str(err)[:200]}); medvl "
            "never unpickles code from checkpoints"
        ) from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path} does not hold a state dict (expected {{'model': {{name: tensor}}}} or {{name: tensor}}}})"
        )
    return state


def _qformer_layer_key(rest: str) -> tuple[str | None, str]:
    """medvl name (or None) and a reason for the part of a Q-Former layer key after `layer.N.`."""
    for block in ("attention", "crossattention"):
        if rest.startswith(f"{block}.self."):
            return f"{block}.attention.{rest[len(block) + 6 :]}", ""
        if rest.startswith(f"{block}.output."):
            return rest, ""
    if rest.startswith(("intermediate_query.", "output_query.")):
        return rest, ""
    if rest.startswith(("intermediate.", "output.")):
        return None, "Q-Former text branch (unused for images)"
    return None, "unknown Q-Former layer part"


def convert_minigpt4(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename a MiniGPT-4 / XrayGPT / BLIP-2 state dict for `medvl.models.xraygpt.XrayGPT` (see the module doc)."""
    out: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in state.items():
        new, why = None, ""
        if key.startswith("llama_proj."):
            new = "proj." + key[len("llama_proj.") :]
        elif key == "query_tokens" or key.startswith("ln_vision."):
            new = key
        elif key.startswith("Qformer.bert.embeddings.LayerNorm."):
            new = "qformer.layernorm." + key.rsplit(".", 1)[-1]
        elif match := _QFORMER_LAYER.match(key):
            rest, why = _qformer_layer_key(match.group(2))
            new = f"qformer.encoder.layer.{match.group(1)}.{rest}" if rest else None
        elif key.startswith(("Qformer.bert.embeddings.", "Qformer.cls.")):
            why = "Q-Former text embeddings / head (unused for images)"
        elif key.startswith("llama_model."):
            new = "llm." + key[len("llama_model.") :]
        elif key.startswith("visual_encoder."):
            why = "EVA ViT-g layout: load the vision encoder from its own weights (model.encoder_weights)"
        else:
            why = "not a MiniGPT-4 / BLIP-2 parameter"
        if new is None:
            skipped[key] = why
        else:
            out[new] = value
    return out, skipped


__all__ = ["convert_minigpt4", "read_pth"]
