"""JSON Lines: one JSON object per line, blank lines ignored, every problem named by file and line; and the writer of
an evaluation's metrics.json + predictions.jsonl.

Shared by everything that reads user-written JSONL (report files for `medvl score`, study listings for
`medvl predict`, the manifest data source), so they accept and refuse the same things in the same words.
"""

from __future__ import annotations

import json
from typing import Any


def jsonl_records(
    text: str, where: str, error: type[Exception] = ValueError, expected: str = "a JSON object"
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of `text`.

    Args:
        text: the file's decoded text.
        where: how messages name the file.
        error: the exception class to raise (the caller's user-error type).
        expected: what a line should be, for the message when it is valid JSON but not an object.

    Raises:
        error: "WHERE line N: not valid JSON (...)" or "WHERE line N: expected EXPECTED".
    """
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{where} line {n}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise error(f"{where} line {n}: expected {expected}")
        out.append((n, record))
    return out


__all__ = ["jsonl_records"]


def write_evaluation_files(out: Any, result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """OUT/metrics.json (`result`, indented) and OUT/predictions.jsonl (one row per line, UTF-8 kept)."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
