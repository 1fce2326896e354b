"""Reading the tensors of a weights file someone else wrote (a VideoMAE `.pth`, a taming-transformers `.ckpt`, a
safetensors file) without executing code: the one reader behind `medvl.models.mae_weights` and
`medvl.models.vq.checkpoint`. medvl's own checkpoints are read by `medvl.train.checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

WRAPPER_KEYS = ("state_dict", "model", "module")
"""Entries that training frameworks wrap a state dict in (Lightning: state_dict; VideoMAE/DeiT: model, module)."""


def read_weight_tensors(path: str | Path, what: str, error: type[Exception] = ValueError) -> dict[str, Tensor]:
    """The tensors of a weights file: safetensors, or a torch pickle read with `weights_only=True`, unwrapped from
    `WRAPPER_KEYS` containers until a level holds tensors; entries that are not tensors are left out.

    Args:
        path: the file.
        what: how the error messages name it (e.g. "model.pretrained").
        error: the exception class for a file that cannot give tensors (a ValueError subclass of the caller's).

    Raises:
        FileNotFoundError: no such file.
        `error`: the pickle holds more than tensors and plain containers (the message says how to convert it once to
            safetensors where the file is trusted), or it holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler refuses anything but tensors and plain containers
        raise error(
            f"{what}: {path} cannot be read as tensors only ({type(err).__name__}: {str(err)[:200]}). medvl does not "
            'unpickle objects; where you trust the file, convert it once: python -c "import torch; '
            "from safetensors.torch import save_file; sd = torch.load('IN', weights_only=False)['state_dict']; "
            "save_file({k: v.contiguous() for k, v in sd.items()}, 'OUT.safetensors')\""
        ) from err
    while isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise error(
            f"{what}: {path} holds no tensors (a {type(state).__name__}; expected a state dict, or a dict with a "
            "'state_dict', 'model' or 'module' entry)"
        )
    return tensors
