"""The explicit table of tasks: name -> a function returning the task class (imported lazily, so `import medvl` stays
cheap). A task implements `medvl.tasks.base.Task`; a model family names the task that trains it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medvl.registry import Registry


def _report_generation() -> type:
    from medvl.tasks.report_generation import ReportGenerationTask

    return ReportGenerationTask


def _instructed_report() -> type:
    from medvl.tasks.instructed_report import InstructedReportTask

    return InstructedReportTask


def _instructed_generation() -> type:
    from medvl.tasks.instructed_generation import InstructedGenerationTask

    return InstructedGenerationTask


def _qformer_pretraining() -> type:
    from medvl.tasks.qformer_pretraining import QFormerPretrainingTask

    return QFormerPretrainingTask


def _classification() -> type:
    from medvl.tasks.classification import ClassificationTask

    return ClassificationTask


def _masked_modeling() -> type:
    from medvl.tasks.masked_modeling import MaskedModelingTask

    return MaskedModelingTask


def _regression() -> type:
    from medvl.tasks.regression import RegressionTask

    return RegressionTask


def _vq_tokenizer() -> type:
    from medvl.tasks.vq_tokenizer import VQTokenizerTask

    return VQTokenizerTask


TASKS: Registry[Callable[[], Any]] = Registry("task")
TASKS.add("report_generation", _report_generation)
TASKS.add("instructed_report", _instructed_report)
TASKS.add("instructed_generation", _instructed_generation)
TASKS.add("qformer_pretraining", _qformer_pretraining)
TASKS.add("classification", _classification)
TASKS.add("masked_modeling", _masked_modeling)
TASKS.add("regression", _regression)
TASKS.add("vq_tokenizer", _vq_tokenizer)


def task_class(name: str) -> Any:
    """The task class registered as `name` (an error lists the valid names)."""
    return TASKS.get(name)()
