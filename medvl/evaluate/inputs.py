"""Read reports written by any system (JSONL, JSON or CSV with an id and a text per study) and pair them up.

Contract: `read_reports(path, role, field)` returns {id: text} in file order; `pair_reports(refs, hyps,
missing_as_empty)` returns `Pairs` (ids, references, hypotheses, and the ids that were empty or missing). Nothing is
dropped silently: a file that is not UTF-8, a row without an id or text, a duplicated id, an empty reference, an id on
one side only, each raise `ReportFileError` naming the file, the line and the way out; an empty generated report is
kept, scored (it scores low) and listed.

Formats, chosen by extension:
- `.jsonl`: one JSON object per line;  `.json`: a list of objects, or {id: text};  `.csv` / `.tsv`: a header row.
- id column: `id`, `study_id`, `image_id`, `dicom_id` or `uid` (the first present).
- text column: `field` when given, else the first present of the role's candidates (references: reference, report,
  text, ground_truth, gt, findings; generated: generated, hypothesis, prediction, pred, report, text). medvl's own
  predictions.jsonl (id, reference, generated) therefore works as either side.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from medvl.jsonl import jsonl_records

ID_FIELDS = ("id", "study_id", "image_id", "dicom_id", "uid")
TEXT_FIELDS = {
    "reference": ("reference", "report", "text", "ground_truth", "gt", "findings"),
    "generated": ("generated", "hypothesis", "prediction", "pred", "report", "text"),
}
_SHOWN = 5


class ReportFileError(ValueError):
    """A reports file that cannot be scored as it is; the message says what and how to fix it."""


@dataclass
class Pairs:
    ids: list[str]
    references: list[str]
    hypotheses: list[str]
    empty_hypotheses: list[str] = field(default_factory=list)
    missing_hypotheses: list[str] = field(default_factory=list)


def _shown(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(repr(i) for i in items[:_SHOWN]) + more


def _decode(path: Path) -> str:
    if not path.is_file():
        raise ReportFileError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ReportFileError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}): re-save it as "
            "UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
        ) from None


def _records(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, record) pairs."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return jsonl_records(text, str(path), ReportFileError, "a JSON object with an id and a text")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ReportFileError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, dict):
            return [(0, {"id": k, "text": v}) for k, v in data.items()]
        if isinstance(data, list) and all(isinstance(r, dict) for r in data):
            return [(0, r) for r in data]
        raise ReportFileError(f"{path}: expected a list of objects or an {{id: text}} object")
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        return [(n + 2, dict(row)) for n, row in enumerate(reader)]
    raise ReportFileError(f"{path}: unknown format {suffix or '(no extension)'!r}; use .jsonl, .json, .csv or .tsv")


def read_reports(path: str | Path, role: str, field: str | None = None) -> dict[str, str]:
    """Reports of one side, {id: text} in file order.

    Args:
        path: a .jsonl, .json, .csv or .tsv file.
        role: "reference" or "generated" (which text columns to look for).
        field: the text column to use instead of the role's candidates.

    Raises:
        ReportFileError: see the module docstring.
    """
    path = Path(path)
    records = _records(path, _decode(path))
    if not records:
        raise ReportFileError(f"{path}: no reports in the file")
    where = (lambda n: f"{path} line {n}") if records[0][0] else (lambda n: f"{path}")
    keys = set().union(*(r.keys() for _, r in records))
    id_key = next((k for k in ID_FIELDS if k in keys), None)
    text_key = field or next((k for k in TEXT_FIELDS[role] if k in keys), None)
    if id_key is None:
        raise ReportFileError(f"{path}: no id column; name one of {', '.join(ID_FIELDS)} (found {sorted(keys)})")
    if text_key is None or text_key not in keys:
        wanted = field or " / ".join(TEXT_FIELDS[role])
        raise ReportFileError(
            f"{path}: no {role} text column {wanted!r} (found {sorted(keys)}); "
            f"name it with --{'ref' if role == 'reference' else 'hyp'}-field"
        )
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    duplicates: list[str] = []
    for n, record in records:
        sid, text = record.get(id_key), record.get(text_key)
        if sid is None or str(sid).strip() == "":
            raise ReportFileError(f"{where(n)}: missing {id_key!r}")
        sid = str(sid).strip()
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ReportFileError(f"{where(n)}: {text_key!r} of {sid!r} is a {type(text).__name__}, not text")
        if sid in out:
            duplicates.append(f"{sid} (lines {first_line[sid]} and {n})" if n else sid)
            continue
        out[sid], first_line[sid] = text, n
    if duplicates:
        raise ReportFileError(
            f"{path}: {len(duplicates)} duplicated ids: {_shown(duplicates)}; keep one report per study"
        )
    return out


def pair_reports(
    references: dict[str, str],
    hypotheses: dict[str, str],
    missing_as_empty: bool = False,
    ref_name: str = "references",
    hyp_name: str = "generated reports",
) -> Pairs:
    """Pair the two sides by id, in the references' order.

    Raises:
        ReportFileError: an empty reference; ids in the generated reports that no reference has; ids without a
            generated report (unless `missing_as_empty`, which scores them as empty reports and lists them).
    """
    empty_refs = [sid for sid, text in references.items() if not text.strip()]
    if empty_refs:
        raise ReportFileError(
            f"{ref_name}: {len(empty_refs)} empty reference reports ({_shown(empty_refs)}); a "
            "generated report cannot be scored against nothing: fix or remove them"
        )
    extra = [sid for sid in hypotheses if sid not in references]
    if extra:
        raise ReportFileError(
            f"{hyp_name}: {len(extra)} ids have no reference ({_shown(extra)}); "
            f"{len(hypotheses)} generated vs {len(references)} references: check that both files "
            "use the same ids"
        )
    missing = [sid for sid in references if sid not in hypotheses]
    if missing and not missing_as_empty:
        raise ReportFileError(
            f"{hyp_name}: {len(missing)} of {len(references)} references have no generated report "
            f"({_shown(missing)}); pass --missing-as-empty to score them as empty reports"
        )
    ids = list(references)
    hyps = [hypotheses.get(sid, "") for sid in ids]
    empty = [sid for sid, text in zip(ids, hyps, strict=True) if not text.strip() and sid in hypotheses]
    return Pairs(ids, [references[s] for s in ids], hyps, empty_hypotheses=empty, missing_hypotheses=missing)


__all__ = ["ID_FIELDS", "TEXT_FIELDS", "Pairs", "ReportFileError", "pair_reports", "read_reports"]
