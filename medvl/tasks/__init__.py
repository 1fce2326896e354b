"""Tasks turn (model, batch) into a dict with `loss`; `TASKS` maps task names to their classes (imported lazily)."""

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


TASKS: Registry[Callable[[], Any]] = Registry("task")
TASKS.add("report_generation", _report_generation)
TASKS.add("instructed_report", _instructed_report)
