"""What a training run may do with its run folder (`train.output_dir`): one folder holds one run.

Contract of `prepare_run_folder(run_dir, resume, config)`, called before any data, tokenizer or model work; it returns
the checkpoint to resume from (None: start from step 0) or raises `RunFolderError` with one line naming the way out:

- `resume=None` (the default): a folder that already holds a run (checkpoints, metrics.jsonl, train_summary.json,
  config.json, tensorboard/) is refused: continue it with `--resume auto`, start over with `--resume never` or
  `--overwrite`, or choose another `train.output_dir`.
- `"auto"`: the newest resumable checkpoint whose files all load (`checkpoint.latest_checkpoint`). Checkpoints that
  cannot be read are named with why, and set aside as `NAME.damaged` (never deleted, never overwritten by the resumed
  run). A folder with checkpoints of which none loads is refused, never silently started over. A folder without
  checkpoints starts from scratch.
- `"never"`: start from scratch; an earlier run in the folder is moved, whole, into `RUN/previous_run_N/`.
- `"overwrite"`: start from scratch; an earlier run in the folder is deleted.
- a checkpoint path: resume from it.
When resuming, the current config must match the checkpoint's except for the settings in `FREE_ON_RESUME` (where
things go, how often to log and save, how long to train); the error lists what differs.

On every start, rank 0 also removes what killed checkpoint writes leave behind (hidden `.tmp-*` folders) and puts back
a checkpoint whose replacement was interrupted between its two renames (`.old-NAME-PID` while NAME is missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvl.train.checkpoint import latest_checkpoint, read_meta

RUN_MARKERS = ("checkpoints", "metrics.jsonl", "train_summary.json", "config.json", "tensorboard")
"""What makes a folder a used run folder (a non-empty checkpoints/ or any of the others)."""
RUN_FILES = (*RUN_MARKERS, "tokenizer", "wandb")
"""What belongs to a run, and moves aside (--resume never) or is deleted (--overwrite) with it (so do its
evaluations, RUN/eval_*)."""
FREE_ON_RESUME = (
    "train.output_dir",
    "train.epochs",
    "train.max_steps",
    "train.eval_every",
    "train.eval_max_studies",
    "train.save_every",
    "train.keep_checkpoints",
    "train.loggers",
    "train.log_every",
    "train.device",
    "train.num_threads",
    "train.progress",
    "train.dist_backend",
    "train.strategy",
    "train.init_from",
    "train.activation_checkpointing",
    "data.root",
    "data.num_workers",
    "data.cache_images",
    "data.strict",
    "model.vocab_size",
    "model.pad_id",
    "generation.",
    "task.predict_task",  # what inference runs without a question; training never reads it
)
"""Config keys (or prefixes ending in '.') that may differ between a checkpoint and the run that resumes it."""
MODES = ("auto", "never", "overwrite")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds another run, or no checkpoint of it loads)."""


def _run_contents(run_dir: Path) -> list[str]:
    """The names of what makes `run_dir` a used run folder (empty: a new folder)."""
    found = []
    for name in RUN_MARKERS:
        p = run_dir / name
        if name == "checkpoints":
            if p.is_dir() and any(not e.name.startswith(".") for e in p.iterdir()):
                found.append(name + "/")
        elif p.exists():
            found.append(name + ("/" if p.is_dir() else ""))
    return found


def clean_stale_writes(run_dir: Path, say: Callable[[str], None] = print) -> None:
    """Remove hidden `.tmp-*` folders of killed checkpoint writes; restore `.old-NAME-PID` when NAME is missing."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        old = re.fullmatch(r"\.old-(.+)-\d+", entry.name)
        if old and not (folder / old.group(1)).exists():
            os.replace(entry, folder / old.group(1))
            say(f"restored checkpoint {old.group(1)} whose replacement was interrupted")
        elif old or entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            say(f"removed {entry.name} left by an interrupted checkpoint write")


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _free(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in FREE_ON_RESUME)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: checkpoint X, now Y' for each setting that differs and may not differ on resume."""
    a, b = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(current)))
    return [
        f"{k}: checkpoint {a.get(k, '(unset)')!r}, now {b.get(k, '(unset)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not _free(k)
    ]


def check_compatible(
    checkpoint: Path,
    config: dict[str, Any],
    say: Callable[[str], None] = print,
    derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Raise `RunFolderError` when `config` differs from the checkpoint's in a setting that must stay the same.

    `derived(meta)`: the model fields the task derives from the checkpoint's assets (`Task.model_fields`, e.g. a
    classifier's `num_outputs` from its class names); the checkpoint's config holds them as derived, while `config`
    is the recipe's, so they are applied to it before comparing (a resumed run derives them the same way)."""
    meta = read_meta(checkpoint)
    saved = meta.get("config")
    if not isinstance(saved, dict):
        return
    if derived is not None:
        config = {**config, "model": {**config.get("model", {}), **derived(meta)}}
    diffs = config_differences(saved, config)
    if diffs:
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise RunFolderError(
            f"cannot resume {checkpoint}: the config differs from the checkpoint's in "
            f"{'; '.join(diffs[:3])}{more}. Resume with the checkpoint's settings, or start a new "
            "run in another train.output_dir"
        )
    steps = [k for k in ("train.max_steps", "train.epochs") if _flat(saved).get(k) != _flat(config).get(k)]
    if steps:
        say(
            f"resuming with a new length ({', '.join(f'{k}={_flat(config)[k]}' for k in steps)}); the schedule "
            "follows it"
        )


def _run_entries(run_dir: Path) -> list[Path]:
    return [run_dir / n for n in RUN_FILES if (run_dir / n).exists()] + sorted(run_dir.glob("eval_*"))


def _set_aside(run_dir: Path, say: Callable[[str], None]) -> Path:
    n = 1
    while (run_dir / f"previous_run_{n}").exists():
        n += 1
    dest = run_dir / f"previous_run_{n}"
    dest.mkdir()
    for p in _run_entries(run_dir):
        os.replace(p, dest / p.name)
    say(f"--resume never: the earlier run in {run_dir} was moved to {dest}")
    return dest


def _delete_run(run_dir: Path, say: Callable[[str], None]) -> None:
    for p in _run_entries(run_dir):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    say(f"--overwrite: deleted the earlier run in {run_dir}")


def _set_aside_damaged(damaged: dict[Path, str], say: Callable[[str], None]) -> None:
    for path, why in damaged.items():
        dest = path.with_name(path.name + ".damaged")
        n = 1
        while dest.exists():
            n, dest = n + 1, path.with_name(f"{path.name}.damaged{n}")
        os.replace(path, dest)
        say(f"skipped checkpoint {path.name}: {why}; kept as {dest.name}")


def prepare_run_folder(
    run_dir: str | Path,
    resume: str | None,
    config: dict[str, Any],
    main: bool = True,
    say: Callable[[str], None] = print,
    derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Path | None:
    """The checkpoint to resume from (None: from scratch), after applying the run-folder policy; see the module
    docstring. Only `main` (rank 0) changes files; other ranks call it after rank 0 and only read. `derived`: as in
    `check_compatible`.

    Raises:
        RunFolderError: a used folder without a resume mode, no loadable checkpoint, or an incompatible config.
        FileNotFoundError: a checkpoint path that does not exist.
    """
    run_dir = Path(run_dir)
    say = say if main else (lambda _msg: None)
    if main:
        clean_stale_writes(run_dir, say)
    used = _run_contents(run_dir)
    if resume in ("never", "overwrite"):
        if used and main:
            (_set_aside if resume == "never" else _delete_run)(run_dir, say)
        return None
    if not resume:
        if used:
            raise RunFolderError(
                f"{run_dir} already holds a run ({', '.join(used)}): continue it with --resume auto, "
                "start over with --resume never (keeps it in previous_run_N/) or --overwrite "
                "(deletes it), or choose another train.output_dir"
            )
        return None
    if resume == "auto":
        found, damaged = latest_checkpoint(run_dir)
        if found is None and damaged:
            why = "; ".join(f"{p.name}: {w}" for p, w in damaged.items())
            raise RunFolderError(
                f"--resume auto: no checkpoint in {run_dir / 'checkpoints'} loads ({why}); start over "
                "with --resume never (keeps them in previous_run_N/) or --overwrite, or choose "
                "another train.output_dir"
            )
        if found is None:
            say(f"resume=auto: no checkpoint in {run_dir / 'checkpoints'}, starting from scratch")
            return None
        check_compatible(found, config, say, derived)
        if main:
            _set_aside_damaged(damaged, say)
        return found
    path = Path(resume)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint to resume from does not exist: {path} (use --resume auto to pick the "
            f"newest one in {run_dir / 'checkpoints'})"
        )
    check_compatible(path, config, say, derived)
    return path
