"""Findings in a report as highlighted spans: the CheXpert labeler's mentions, each with its label in its sentence.

Contract: `highlight_findings(report)` -> [(text, tag or None), ...] whose texts join back to the report exactly; a
tag is "positive", "negative" or "uncertain" and covers one mention of a CheXpert observation, labeled as the
rule-based labeler labels that observation in the mention's own sentence (so "No pneumothorax." is negative even in
a report that is positive elsewhere). `mentions(report)` gives the same spans as (start, end, observation, label).
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def mentions(report: str) -> list[tuple[int, int, str, str]]:
    """(start, end, observation, label) of each CheXpert mention, in order, without overlaps."""
    from medvl.evaluate.chexpert import CHEXPERT
    from medvl.evaluate.labeler import label_report

    mention_re, _ = CHEXPERT.compiled
    spans: list[tuple[int, int, str, str]] = []
    for sentence in _SENTENCE.finditer(report):
        text = sentence.group()
        labels = label_report(text, CHEXPERT)
        lowered = text.lower()
        for name, label in labels.items():
            if label is None or name not in mention_re:
                continue
            for m in mention_re[name].finditer(lowered):
                if m.end() > m.start():
                    spans.append((sentence.start() + m.start(), sentence.start() + m.end(), name, label))
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept: list[tuple[int, int, str, str]] = []
    for span in spans:  # the earliest, then longest, mention wins where two overlap
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept


def highlight_findings(report: str) -> list[tuple[str, str | None]]:
    """Segments for a highlighted-text view; see the module docstring."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    for start, end, _name, label in mentions(report):
        if start > pos:
            out.append((report[pos:start], None))
        out.append((report[start:end], label))
        pos = end
    if pos < len(report):
        out.append((report[pos:], None))
    return out
