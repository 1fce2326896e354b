"""One rule for the files a command writes (`--out`): an existing file is refused unless the user passes
`--overwrite`, and a file only appears under its name once it is complete.

`atomic_file(path, overwrite)` yields a hidden `.NAME.partial` path beside the target and renames it into place when
the block ends without an error; `open_atomic(path, overwrite)` does the same for a text stream. After a failure or a
kill the partial file stays (what was written is not lost) and the target is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def refuse_existing(path: str | Path, overwrite: bool, option: str = "--out") -> Path:
    """`path`, unless it exists and `overwrite` is false (then a `FileExistsError` naming the way out)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another {option} or pass --overwrite to replace it")
    return path


@contextmanager
def atomic_file(path: str | Path, overwrite: bool = False, option: str = "--out") -> Iterator[Path]:
    """A temporary path to write; renamed to `path` (atomically) when the block succeeds. See the module docstring."""
    path = refuse_existing(path, overwrite, option)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    yield partial
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, path)


@contextmanager
def open_atomic(path: str | Path, overwrite: bool = False, option: str = "--out") -> Iterator[TextIO]:
    """A text stream whose file appears as `path` only once the block succeeds. See the module docstring."""
    with atomic_file(path, overwrite, option) as partial:
        with open(partial, "w", newline="", encoding="utf-8") as fh:
            yield fh
