"""Where training metrics go, chosen by name (`train.loggers`): JSONL (always readable), TensorBoard, W&B.

W&B runs offline unless the user sets WANDB_MODE=online, so a run never waits on the network.
Loggers are built with the step the run starts at: a resumed run drops what was logged after its checkpoint
(metrics.jsonl is cut back, TensorBoard purges later events), so each step appears once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from medvl.registry import Registry


class Logger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the lines of a metrics.jsonl logged at steps <= `step` (atomically); returns how many were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            logged = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):  # a line cut by a kill: drop it
            dropped += 1
            continue
        if logged <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


class JsonlLogger:
    """Appends one JSON object per log call to RUN/metrics.jsonl; a run starting at step S first drops what an earlier
    attempt logged after S."""

    def __init__(self, run_dir: Path, start_step: int = 0) -> None:
        truncate_metrics(run_dir / "metrics.jsonl", start_step)
        self.file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed by close()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardLogger:
    def __init__(self, run_dir: Path, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events an earlier attempt wrote at steps after the one this run resumes from.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path, start_step: int = 0) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("train.loggers includes wandb but it is not installed: pip install wandb") from e
        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = wandb.init(project="medvl", dir=str(run_dir), name=run_dir.name)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MultiLogger:
    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for logger in self.loggers:
            logger.log(clean, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


LOGGERS: Registry[Callable[[Path, int], Logger]] = Registry("logger")
LOGGERS.add("jsonl", JsonlLogger)
LOGGERS.add("tensorboard", TensorBoardLogger)
LOGGERS.add("wandb", WandbLogger)


def build_loggers(names: list[str], run_dir: str | Path, start_step: int = 0) -> MultiLogger:
    """The loggers named, for a run that starts at `start_step` (0 = from scratch; see the module docstring)."""
    factories = [LOGGERS.get(n) for n in names]  # all names checked before anything is opened
    return MultiLogger([f(Path(run_dir), start_step) for f in factories])
