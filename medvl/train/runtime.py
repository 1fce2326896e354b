"""Where and how a run computes: its device and precision, the random generators' state a checkpoint carries, and
the library versions a checkpoint records (used by `medvl.train.loop`)."""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np
import torch


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device for `train.device`; under torchrun with CUDA, process `local_rank` gets GPU `local_rank`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and local_rank is not None and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but no CUDA device is available; use train.device=cpu or auto")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32 or bf16 for `train.precision`; auto is bf16 where `device` computes bf16 natively (a GPU that supports
    it; a CPU whose oneDNN has bf16 kernels: AVX512-BF16 or AMX), else fp32 (emulated bf16 would be slower)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return "bf16" if supported is not None and supported() else "fp32"
    return "fp32"


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of every global generator ("python", "numpy", "torch", and "cuda" with a GPU), for a checkpoint."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state()`'s dict (the CUDA states only when both runs have a GPU)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def library_versions() -> dict[str, str]:
    """Versions of medvl, Python, torch and transformers, recorded in every checkpoint's metadata."""
    import transformers

    import medvl

    return {
        "medvl": medvl.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }
