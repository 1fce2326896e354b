"""Where training metrics go, chosen by name (`train.loggers`): JSONL (always readable), TensorBoard, W&B.

W&B runs offline unless the user sets WANDB_MODE=online, so a run never waits on the network.
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


class JsonlLogger:
    """Appends one JSON object per log call to RUN/metrics.jsonl (a resumed run keeps appending)."""

    def __init__(self, run_dir: Path) -> None:
        self.file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed by close()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardLogger:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path) -> None:
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


LOGGERS: Registry[Callable[[Path], Logger]] = Registry("logger")
LOGGERS.add("jsonl", JsonlLogger)
LOGGERS.add("tensorboard", TensorBoardLogger)
LOGGERS.add("wandb", WandbLogger)


def build_loggers(names: list[str], run_dir: str | Path) -> MultiLogger:
    factories = [LOGGERS.get(n) for n in names]  # all names checked before anything is opened
    return MultiLogger([f(Path(run_dir)) for f in factories])
