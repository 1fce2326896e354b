"""The majority-report baseline: the most frequent training report, written for every study.

Contract: `majority_report(train_reports)` returns the most frequent report after whitespace normalization (runs of
whitespace become one space, ends stripped); blank reports are ignored; ties go to the report seen first. A report
generator that does not beat this constant answer has not learned to look at the image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def majority_report(train_reports: Sequence[str]) -> str:
    """The most frequent training report.

    Args:
        train_reports: the training split's report texts.

    Returns:
        The most frequent whitespace-normalized report (ties: the one seen first).

    Raises:
        ValueError: when there is no non-blank report.
    """
    counts = Counter(" ".join(r.split()) for r in train_reports if r and r.strip())
    if not counts:
        raise ValueError("no training reports to pick the majority report from: the training split is empty or blank")
    # Counter keeps first-seen order and max() returns the first maximum, so ties go to the report seen first.
    return max(counts, key=counts.__getitem__)


__all__ = ["majority_report"]
