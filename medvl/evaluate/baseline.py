"""The majority-report baseline: the most frequent training report, written for every study.

A report generator that does not beat it has not learned to look at the image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def majority_report(train_reports: Sequence[str]) -> str:
    """The most frequent report after whitespace normalization (ties: the one seen first)."""
    normalized = [" ".join(r.split()) for r in train_reports if r and r.strip()]
    if not normalized:
        raise ValueError("no training reports to pick the majority report from")
    counts = Counter(normalized)
    return max(counts, key=counts.__getitem__)  # Counter keeps first-seen order and max() keeps the first maximum
