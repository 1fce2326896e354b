"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

Layout of a checkpoint directory:

    meta.json               format, metadata (config, tokenizer, step, metrics, versions), tied-weight aliases
    model.safetensors       the model state dict (tied weights stored once)
    ema.safetensors         optional extra tensor sets (here: EMA weights), one file per name
    train_state.safetensors + train_state.json   optimizer / scheduler / RNG / run counters, only in resumable ones

Nothing is unpickled on load. A checkpoint is first written to a hidden temporary directory beside its final path and
then renamed into place, so a kill during a save leaves at most a hidden `.tmp-*` directory, which nothing reads
(`medvl.train.run_folder` removes stale ones on the next start).

A damaged file (truncated, empty, a bad header, a pickle renamed .safetensors) raises `CheckpointError` naming the file
and what is wrong, never a library traceback. `check_checkpoint` reads every header without loading tensors;
`latest_checkpoint` gives the newest resumable checkpoint that passes it, with the newer ones it skipped and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

FORMAT = "medvl-checkpoint/1"
META = "meta.json"


class CheckpointError(ValueError):
    """A path that is not a readable medvl checkpoint."""


@dataclass
class Checkpoint:
    """A checkpoint read back by `load_checkpoint`: weights, metadata and (for resuming) the training state."""

    path: Path
    model_state: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    train_state: dict[str, Any] | None
    extra: dict[str, dict[str, torch.Tensor]]


# ----------------------------------------------------------------------------------------------- tensors with ties
def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store tensors that share memory once: safetensors refuses shared storage. Returns (tensors, alias -> name)."""
    tensors, aliases, owner = {}, {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() > 0 and key in owner:
            aliases[name] = owner[key]
        else:
            owner[key] = name
            tensors[name] = t.detach().contiguous().cpu()
    return tensors, aliases


def _with_aliases(tensors: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    return {**tensors, **{alias: tensors[name] for alias, name in aliases.items()}}


# ----------------------------------------------------------------------- nested train state <-> tensors + JSON
def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able structure with tensors/arrays replaced by references into `tensors`."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint's train state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------- save / load
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    train_state: dict[str, Any] | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing one of the same name) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors, aliases = _dedupe(model_state)
    save_file(tensors, str(tmp / "model.safetensors"))
    extra_aliases = {}
    for name, state in (extra_tensors or {}).items():
        t, a = _dedupe(state)
        save_file(t, str(tmp / f"{name}.safetensors"))
        extra_aliases[name] = a
    if train_state is not None:
        flat: dict[str, torch.Tensor] = {}
        structure = _flatten(train_state, flat)
        save_file(flat, str(tmp / "train_state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(structure))
    meta = {"format": FORMAT, "tied": aliases, "extra": extra_aliases, "resumable": train_state is not None, **metadata}
    (tmp / META).write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if path.exists():  # replace: move the old one aside first, so a crash leaves either old or new in place
        old = path.parent / f".old-{path.name}-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of checkpoint directory `path` (config, task assets, step, metrics, versions).

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        CheckpointError: meta.json missing or not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable medvl checkpoint (no valid {META}): {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a readable medvl checkpoint ({META} holds no object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META} has format {meta.get('format')!r}; this medvl reads {FORMAT!r}")
    return meta


def _what_is_wrong(file: Path, err: BaseException) -> str:
    """Why a weights file does not load, in words: empty, a pickle, truncated, or the library's first line."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty (0 bytes)"
    if head[:1] == b"\x80" or head[:2] == b"PK":
        return "is a pickle/torch file, not safetensors (medvl never unpickles)"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "not fully covered" in first or "incomplete" in first:
        return f"is truncated ({size} bytes; {first})"
    return f"is damaged ({first})"


def read_tensors(file: str | Path, what: str = "checkpoint file") -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, or a `CheckpointError` naming the file and what is wrong with it."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{what} {file} is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{what} {file} {_what_is_wrong(file, e)}") from e


def _check_tensors(file: Path) -> None:
    """Raise `CheckpointError` unless `file` is a complete safetensors file (headers and sizes only, no tensor read)."""
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file} {_what_is_wrong(file, e)}") from e


def _train_structure(path: Path) -> Any:
    file = path / "train_state.json"
    try:
        return json.loads(file.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{file} is missing") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file} is damaged ({e})") from e


def check_checkpoint(path: str | Path, train_state: bool = True) -> dict[str, Any]:
    """The meta.json of a checkpoint whose files are all complete (headers and sizes checked, tensors not read).

    Raises:
        CheckpointError: naming the first damaged or missing file and what is wrong with it.
    """
    path = Path(path)
    meta = read_meta(path)
    files = ["model", *meta.get("extra", {})]
    if train_state and meta.get("resumable"):
        files.append("train_state")
        _train_structure(path)
    for name in files:
        _check_tensors(path / f"{name}.safetensors")
    return meta


def load_checkpoint(path: str | Path, load_train_state: bool = True) -> Checkpoint:
    """Every tensor and setting of a checkpoint directory.

    Raises:
        FileNotFoundError: nothing at `path`.
        CheckpointError: no valid meta.json, or a missing or damaged file (named in the message).
    """
    path = Path(path)
    meta = read_meta(path)
    model_state = _with_aliases(read_tensors(path / "model.safetensors"), meta.get("tied", {}))
    extra = {
        name: _with_aliases(read_tensors(path / f"{name}.safetensors"), aliases)
        for name, aliases in meta.get("extra", {}).items()
    }
    train_state = None
    if load_train_state and meta.get("resumable"):
        flat = read_tensors(path / "train_state.safetensors")
        try:
            train_state = _unflatten(_train_structure(path), flat)
        except (KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path / 'train_state.json'} does not match train_state.safetensors ({e})") from e
    metadata = {k: v for k, v in meta.items() if k not in ("tied", "extra")}
    return Checkpoint(path, model_state, metadata, train_state, extra)


STEP_NAME = re.compile(r"step_\d+")
"""The names of periodic checkpoints (a damaged one set aside as step_N.damaged does not match)."""


def latest_checkpoint(run_dir: str | Path) -> tuple[Path | None, dict[Path, str]]:
    """The resumable checkpoint with the highest step in RUN/checkpoints whose files are all complete (None if there is
    none), and every checkpoint directory that could not be read, with why."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None, {}
    candidates, damaged = [], {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or entry.name.endswith(".damaged"):
            continue
        try:
            meta = read_meta(entry)
        except (CheckpointError, FileNotFoundError) as e:
            damaged[entry] = str(e)
            continue
        if meta.get("resumable"):
            candidates.append((int(meta.get("step", -1)), 1 if entry.name == "last" else 0, entry))
    for _, _, entry in sorted(candidates, reverse=True):
        try:
            check_checkpoint(entry)
        except CheckpointError as e:
            damaged[entry] = str(e)
            continue
        return entry, damaged
    return None, damaged


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint in RUN/checkpoints that loads completely (None if there is none)."""
    return latest_checkpoint(run_dir)[0]


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` readable step_* checkpoints (best/ and last/ are never touched, and neither is
    a checkpoint whose meta.json cannot be read: what could not be read is never deleted)."""
    folder = Path(run_dir) / "checkpoints"
    steps = []
    for p in folder.glob("step_*"):
        if not (p.is_dir() and STEP_NAME.fullmatch(p.name)):
            continue
        try:
            steps.append((int(check_checkpoint(p).get("step", -1)), p))
        except (CheckpointError, FileNotFoundError):
            continue
    steps.sort()
    for _, old in steps[: max(0, len(steps) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)
