"""The `Study` record every data source produces, and the helpers the layout readers share.

A layout reader returns `{split: [Study, ...]}`. A study it cannot use (no FINDINGS section, a duplicated id, an image
id with no file) is still returned, with `problem` set, so that `check_studies` and `medvl data prepare` count and
list it instead of it vanishing. A layout that is not there at all (a missing CSV, no index file) raises
`DataSourceError` naming the file and the expected layout.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

FRONTAL, LATERAL = 0, 1
_VIEW_NAMES = {
    "pa": FRONTAL,
    "ap": FRONTAL,
    "frontal": FRONTAL,
    "pa view": FRONTAL,
    "ap view": FRONTAL,
    "postero-anterior": FRONTAL,
    "antero-posterior": FRONTAL,
    "lateral": LATERAL,
    "lat": LATERAL,
    "ll": LATERAL,
    "rl": LATERAL,
    "lao": LATERAL,
    "rao": LATERAL,
}
SPLIT_NAMES = {
    "train": "train",
    "restval": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}
HASH_SPLIT = (("train", 0.7), ("val", 0.1), ("test", 0.2))
"""Split of layouts that have none (OpenI, the IU CSV, XrayGPT, Flickr CSV, DICOM): R2Gen's IU X-ray proportions,
drawn from a hash of the study id, so the same study lands in the same split whatever layout it is read from."""


class DataSourceError(ValueError):
    """A data source cannot provide studies (missing or inconsistent files)."""


@dataclass(frozen=True)
class Study:
    id: str
    image_paths: tuple[Path, ...]
    report: str
    split: str
    view_ids: tuple[int, ...]
    """0 = frontal, 1 = lateral, per image."""
    labels: dict[str, int] | None
    """Labels the data set gives, name -> 1 positive, 0 negative, -1 uncertain; a name the study lacks is not stated
    (missing). The synthetic set's findings (`medvl.findings.FINDINGS`), NIH ChestX-ray14's findings, CheXpert's
    observations, an image folder's class (one-hot)... None: the study has no labels."""
    problem: str = ""
    """Why the study cannot be used, found while reading its layout (no FINDINGS section, a duplicated id, an image
    id with no file...): `check_studies` skips it with this reason, or raises under data.strict."""
    meta: dict[str, Any] | None = None
    """Further labels and metadata as the data set gives them (NIH findings, CheXpert labels, every caption...)."""
    image_store: Path | None = None
    """For a prepared data set: the images.npy holding the decoded views (`image_paths` then name the original files,
    for reference only)."""
    image_rows: tuple[int, ...] = ()
    """Rows of `image_store`, one per view, in `image_paths` order."""
    references: tuple[str, ...] = ()
    """Every reference text when the data set has several (COCO/Flickr: five captions per image); `report` is one of
    them, the default training target. Empty: `report` is the only reference."""
    question: str = ""
    """A question about the images (visual question answering)."""
    answer: str = ""
    """The answer to `question`."""
    targets: tuple[float, ...] = ()
    """Numeric regression targets (e.g. a point's coordinates), in the data set's units."""

    def all_references(self) -> tuple[str, ...]:
        """The reference texts: `references` when the data set has several, else the one `report` (or none)."""
        return self.references or ((self.report,) if self.report else ())

    def has(self, field_name: str) -> bool:
        """Whether this study carries the record field `field_name` (one of `RECORD_FIELDS`)."""
        if field_name == "report":
            return bool(self.report.strip())
        if field_name == "references":
            return bool(self.all_references())
        if field_name == "labels":
            return bool(self.labels)
        return bool(getattr(self, field_name))


RECORD_FIELDS = ("report", "references", "labels", "question", "answer", "targets")
"""What a study may carry besides its views; a task names the ones it needs, a source the ones it provides."""


def view_id(name: str | None, index: int) -> int:
    """View id from a view name (PA/AP/frontal -> 0, lateral/LL -> 1); unknown names fall back to the position."""
    if name is not None and str(name).strip().lower() in _VIEW_NAMES:
        return _VIEW_NAMES[str(name).strip().lower()]
    return min(index, LATERAL)


def split_name(name: str, where: str, known_only: bool = True) -> str:
    """A data set's split name in medvl's words (validate/valid -> val, restval -> train); other names are an error,
    or kept lower-cased when `known_only` is false (a manifest may hold an "extra" split)."""
    key = str(name).strip().lower()
    if key not in SPLIT_NAMES:
        if not known_only and key:
            return key
        raise DataSourceError(f"{where}: unknown split {name!r}; expected one of {', '.join(sorted(SPLIT_NAMES))}")
    return SPLIT_NAMES[key]


def hash_split(study_id: str) -> str:
    """The split of a study in a layout without splits (`HASH_SPLIT`), from a hash of its id: stable across runs."""
    x = int(hashlib.sha256(study_id.encode()).hexdigest()[:8], 16) / 0x100000000
    for name, share in HASH_SPLIT:
        if x < share:
            return name
        x -= share
    return HASH_SPLIT[-1][0]


def known_view(name: str | None) -> int | None:
    """FRONTAL or LATERAL for a view name medvl knows (PA, AP, LATERAL, LL...), None for a missing or unknown one."""
    return _VIEW_NAMES.get(str(name).strip().lower()) if name is not None else None


def order_views(names: Sequence[str | None]) -> tuple[list[int], list[int]]:
    """(order, view ids) of a study's views: known frontal views first, then views of unknown type, then known
    laterals (a stable sort), so a single-view model reads a frontal view when there is one and never a lateral
    before an unknown view. A known view keeps its id; an unknown one gets the id of its place in that order (first
    = frontal, later = lateral), and its name stays unknown."""
    known = [known_view(n) for n in names]
    rank = [0 if k == FRONTAL else 2 if k == LATERAL else 1 for k in known]
    order = sorted(range(len(names)), key=lambda i: rank[i])
    return order, [known[i] if known[i] is not None else min(pos, LATERAL) for pos, i in enumerate(order)]


def frontal_first(paths: Iterable[Path], views: Iterable[str | None]) -> tuple[tuple[Path, ...], tuple[int, ...]]:
    """Views ordered frontal first, unknown next, lateral last (`order_views`), with their view ids."""
    paths, views = list(paths), list(views)
    if len(paths) != len(views):
        raise ValueError(f"{len(paths)} image paths but {len(views)} view names")
    order, ids = order_views(views)
    return tuple(paths[i] for i in order), tuple(ids)


def group_splits(studies: Iterable[Study]) -> dict[str, list[Study]]:
    """Studies by split, in order; a repeated id keeps the first study and marks the others unusable, with why."""
    out: dict[str, list[Study]] = {}
    seen: dict[str, str] = {}
    for study in studies:
        if study.id in seen and not study.problem:
            study = replace(
                study,
                problem=f"duplicated study id {study.id!r} (first seen in split {seen[study.id]!r});"
                " study ids must be unique, this one is not used",
            )
        seen.setdefault(study.id, study.split)
        out.setdefault(study.split, []).append(study)
    return out


def require_file(path: Path, what: str, layout: str) -> Path:
    """`path` if it is a file, else a `DataSourceError` saying what is missing and what the layout looks like."""
    if not path.is_file():
        raise DataSourceError(f"missing {what}: {path} does not exist. Expected layout: {layout}")
    return path


def read_json(path: Path, layout: str) -> Any:
    """Parsed JSON of a layout's index file, or a `DataSourceError` saying what is wrong with it."""
    require_file(path, "index file", layout)
    try:
        return json.loads(decode_text(path.read_bytes(), path))
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{path} is not valid JSON: {e}") from e


def read_csv(path: Path, columns: Iterable[str], layout: str, delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a CSV file (plain or .gz) with the given columns present, keys and values stripped of spaces.

    Raises:
        DataSourceError: the file is missing, or lacks one of `columns` (the message lists the columns it has).
    """
    if not path.is_file() and path.with_name(path.name + ".gz").is_file():
        path = path.with_name(path.name + ".gz")
    require_file(path, "CSV file", layout)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataSourceError(f"cannot read {path}: {e}") from e
    reader = csv.reader(io.StringIO(decode_text(data, path), newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataSourceError(
            f"{path} lacks the column(s) {', '.join(missing)} (it has: {', '.join(header)}). Expected layout: {layout}"
        )
    return [
        {k: (v or "").strip() for k, v in zip(header, row, strict=False)} | {"_line": str(n)}
        for n, row in enumerate(reader, start=2)
        if row
    ]


class TextEncodingError(DataSourceError):
    """A text file (CSV, report) holding bytes that are not UTF-8."""


def decode_text(data: bytes, path: Path | str) -> str:
    """UTF-8 text of a file's bytes, without a leading byte-order mark.

    Raises:
        TextEncodingError: naming the file, the line and the byte, and how to convert the file.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TextEncodingError(
            f"{path} line {line} is not UTF-8 (byte 0x{data[e.start]:02x} at column {column}): "
            "save it as UTF-8, e.g. iconv -f cp1252 -t utf-8 FILE > NEW"
        ) from None
