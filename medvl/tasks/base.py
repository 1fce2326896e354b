"""The task contract: everything the runner, `medvl evaluate`, `predict`, `serve` and `demo` need from a task.

The loop and the commands never branch on a family or task name: they call these methods. A task owns, for its
family:

- `needs`: the record fields (`medvl.data.study.RECORD_FIELDS`) a study must carry; sources are checked against it
  before any work (`medvl.data.sources.check_provides`), single studies by `usable`.
- Assets fitted on the training data before the model exists (a tokenizer, the class names): `build_assets`,
  recorded in every checkpoint's metadata by `metadata()` and read back by `assets_from_metadata`; `model_fields`
  says what they set in the model config (vocab_size, num_classes...).
- Data: `dataset(studies)` (item i -> a sample or `Skipped`) and `collate(items)` -> a typed batch with `ids`,
  `skipped`, `__len__` and `to(device)`.
- Training: `task(batch)` -> {"loss": scalar tensor, "weight": what the loss is averaged over (tokens, labels)}.
- Validation and evaluation: `outputs(batch)` -> one row per example (e.g. reference + generated text, probabilities
  + targets); `validation_metrics(rows)` -> flat floats (the best checkpoint is chosen on one of them,
  `default_select_metric` unless the recipe says otherwise); `eval_splits(split)` -> the splits `medvl evaluate`
  needs outputs for (classification also needs validation, to choose thresholds); `evaluation(outputs, studies,
  options)` -> (metrics.json dict, predictions rows), next to the task's baseline; `write_evaluation` writes
  metrics.json, predictions.jsonl and report.html; `format_evaluation` renders the terminal tables.
- Inference: `inference_batch(prepared studies)`, `predict(batch)` -> one JSON record per study (what `predict`
  and `serve` return; `prediction_fields` describe it for the OpenAPI schema, `endpoint` names the REST path), and
  `explain_score(batch, record)` -> the scalar Grad-CAM explains for the demo.

`medvl.tasks.TASKS` maps names to task classes; a family names its task (`medvl.models.families`). A toy task in
`tests/test_task_contract.py` implements this contract outside the package and runs every command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from medvl.data.study import Study


@dataclass
class NoOptions:
    """A task without options of its own (the `task:` section of a recipe must then be empty)."""


class Task:
    """Base class of the tasks; see the module docstring for the contract. Methods without a default raise."""

    name: ClassVar[str] = ""
    """The task's name in `medvl.tasks.TASKS` (and in checkpoints)."""
    needs: ClassVar[tuple[str, ...]] = ()
    """Record fields every study must carry, e.g. ("report",) or ("labels",)."""
    takes_text_only: ClassVar[bool] = False
    """True when the task also reads studies without images (`image_paths == ()`, e.g. summarization pairs); their
    views are then empty ([0, S, S]) and their view mask all False. Other tasks skip such studies ("no image")."""
    options_class: ClassVar[type] = NoOptions
    """Dataclass of the recipe's `task:` section."""
    default_select_metric: ClassVar[str] = "loss"
    """Validation metric that picks the best checkpoint unless `train.select_metric` says otherwise."""
    default_select_mode: ClassVar[str] = "min"
    """"min" or "max": whether a lower or a higher `default_select_metric` is better."""
    endpoint: ClassVar[str] = "predictions"
    """REST path of `medvl serve`: POST /v1/<endpoint>."""
    supports_chat: ClassVar[bool] = False
    """True when the task answers follow-up questions: it then has `chat(batch, history, question, gen) -> str`."""
    prediction_fields: ClassVar[dict[str, tuple[Any, str]]] = {}
    """Field name -> (Python type, description) of one prediction record (besides id, views, timing)."""
    headline_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    """Validation metrics shown in the training log line."""

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        """`cfg` is the run's `ExperimentConfig` (None: the defaults, for a task built by hand around a model)."""
        if cfg is None:
            from medvl.config.experiment import ExperimentConfig

            cfg = ExperimentConfig(task=self.options_class())
        self.model = model
        self.assets = assets
        self.cfg = cfg
        self.options = cfg.task

    # ------------------------------------------------------------------------------------------- before the model
    @classmethod
    def build_assets(cls, cfg: Any, train: Sequence[Study], save_dir: Path | None) -> Any:
        """Fit what the model depends on from the training studies (None when nothing). `save_dir` is where to
        write files for people and other processes (rank 0), or None to read what rank 0 wrote there."""
        return None

    @classmethod
    def assets_from_metadata(cls, metadata: dict[str, Any]) -> Any:
        """The assets of a trained model from its checkpoint metadata."""
        return None

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        """Model config fields the assets decide (e.g. vocab_size)."""
        return {}

    def metadata(self) -> dict[str, Any]:
        """JSON-serializable entries for the checkpoint's meta.json (read back by `assets_from_metadata`)."""
        return {}

    @classmethod
    def usable(cls, study: Study) -> str:
        """Why a study cannot be used by this task ('' when it can): a needed field it lacks."""
        missing = [f for f in cls.needs if not study.has(f)]
        return f"no {' or '.join(missing)} (task {cls.name} needs it)" if missing else ""

    # ---------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> torch.utils.data.Dataset:
        """Item i -> a sample or `Skipped`; the dataset keeps `studies` (the training one may hold more items than
        studies, e.g. one per reference caption)."""
        raise NotImplementedError

    def collate(self, items: Sequence[Any]) -> Any:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- train / validate
    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def outputs(self, batch: Any) -> list[Any]:
        """One row per example of `batch` (in `batch.ids` order) for `validation_metrics` and `evaluation`."""
        raise NotImplementedError

    def validation_outputs(self, batch: Any) -> list[Any]:
        """The rows validation scores (default: `outputs`; report tasks decode greedily here, for speed)."""
        return self.outputs(batch)

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        """Flat metrics from the merged rows of the validation studies (rank 0 only)."""
        return {}

    # ------------------------------------------------------------------------------------------------ evaluate
    def eval_splits(self, split: str, available: Sequence[str]) -> list[str]:
        """The splits whose outputs `evaluation` needs, `split` last."""
        return [split]

    def scores_text(self) -> bool:
        """True when `evaluation` scores generated text with the NLG suite (METEOR then warms up during inference)."""
        return False

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(metrics.json dict, predictions rows) from the output rows of each split of `eval_splits` (the last is
        the evaluated one); `studies` are the data set's splits (the baseline is fitted on "train")."""
        raise NotImplementedError

    def write_evaluation(
        self, out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        """metrics.json and predictions.jsonl; tasks add their report.html."""
        from medvl.jsonl import write_evaluation_files

        write_evaluation_files(out, result, rows)

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        """Terminal tables of an evaluation result."""
        return json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}, indent=1)

    # ----------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> Any:
        """A batch from `medvl.infer.predictor.PreparedStudy` objects (images only, no targets)."""
        raise NotImplementedError

    def predict(self, batch: Any) -> list[dict[str, Any]]:
        """One JSON-serializable record per study of `batch` (`prediction_fields`)."""
        raise NotImplementedError

    def explain_score(self, batch: Any, record: dict[str, Any]) -> torch.Tensor:
        """The scalar whose gradient Grad-CAM maps for one study's prediction `record`."""
        raise NotImplementedError(f"task {self.name} has no saliency score")


__all__ = ["NoOptions", "Task"]
