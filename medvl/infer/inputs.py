"""What `medvl predict` reads: command-line inputs -> a list of studies (id, image paths, optional view names).

Contract of `collect_studies(inputs)`:
- image files given together (PNG, JPEG, DICOM...) form ONE study, their views (`StudyList.batch` is False);
- otherwise every input is a source of studies (`batch` is True), in the order given:
  - a folder: one study per sub-folder holding images (views in file-name order) and one single-view study per loose
    image file (DICOM files without a suffix count);
  - a glob pattern (quoted, so the shell leaves it alone: `'incoming/*.dcm'`): one study per matching image file,
    and per matching folder (its images are the views); ids are file stems / folder names, or, where these repeat
    within the pattern (`'incoming/*/0.png'`), the path below the pattern's fixed folder ("p1/0", "p2/0");
  - a listing, `.csv`/`.tsv` (header row) or `.jsonl`: one record per study or per image. Columns/keys: `id` (or
    study_id, study; default: the first image's file stem), `image` / `images` / `image_path` / `path` (several
    paths joined by `;` or `|` in CSV, a list in JSONL), optional `view` / `views` (PA, AP, LATERAL...). Records with
    the same id are one study. Relative paths are read from the listing's folder.
Problems with the inputs themselves (nothing found, a listing without image column, mixed files and folders, a
duplicated id) raise one clear error; a missing or corrupt image inside a listing is not checked here: it fails only
its own study when loaded.
"""

from __future__ import annotations

import csv
import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.data.images import IMAGE_SUFFIXES, is_image_file
from medvl.jsonl import jsonl_records

LISTING_SUFFIXES = (".csv", ".tsv", ".jsonl")
ID_KEYS = ("id", "study_id", "study")
IMAGE_KEYS = ("images", "image", "image_path", "image_paths", "path", "paths", "file", "files")
VIEW_KEYS = ("views", "view", "view_position")
_SEPARATORS = (";", "|")


@dataclass(frozen=True)
class StudyInput:
    id: str
    paths: tuple[Path, ...]
    views: tuple[str | None, ...] | None = None
    """View names from a listing (None: read them from the images, or go by position)."""


@dataclass
class StudyList:
    studies: list[StudyInput]
    batch: bool
    """False when the inputs were the image files of one study (print its report); True for folders, globs,
    listings (write one row per study)."""


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _from_folder(folder: Path) -> list[StudyInput]:
    studies = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            views = _images_in(entry)
            if views:
                studies.append(StudyInput(entry.name, tuple(views)))
        elif is_image_file(entry):
            studies.append(StudyInput(entry.stem, (entry,)))
    if not studies:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}, or DICOM) in {folder} or its sub-folders")
    return studies


def _from_glob(pattern: str) -> list[StudyInput]:
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    found: list[tuple[Path, tuple[Path, ...]]] = []
    for path in matches:
        if path.is_dir():
            views = _images_in(path)
            if views:
                found.append((path, tuple(views)))
        elif is_image_file(path):
            found.append((path, (path,)))
    if not found:
        raise FileNotFoundError(f"no image file or folder of images matches {pattern!r}")
    names = [path.stem if path.is_file() else path.name for path, _ in found]
    # 'incoming/*/0.png' matches one 0.png per folder: ids repeated within one pattern become the path below the
    # pattern's fixed part ("p1/0", "p2/0"), so they stay apart instead of being refused as duplicates.
    base = _fixed_part(pattern)
    repeated = {n for n in names if names.count(n) > 1}
    return [
        StudyInput(_relative_id(path, base) if name in repeated else name, views)
        for (path, views), name in zip(found, names, strict=True)
    ]


def _fixed_part(pattern: str) -> Path:
    """The folder of a glob pattern before its first wildcard ('incoming/*/0.png' -> 'incoming')."""
    parts = Path(pattern).parts
    first_magic = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))
    fixed = parts[:first_magic]
    return Path(*fixed) if fixed else Path()


def _relative_id(path: Path, base: Path) -> str:
    try:
        rel = path.relative_to(base)
    except ValueError:
        rel = path
    return rel.with_suffix("").as_posix() if path.is_file() else rel.as_posix()


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    text = str(value)
    for sep in _SEPARATORS:
        if sep in text:
            return [v.strip() for v in text.split(sep) if v.strip()]
    return [text.strip()] if text.strip() else []


def _pick(record: dict[str, Any], keys: Sequence[str]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    return next((lowered[k] for k in keys if k in lowered), None)


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"listing {path} is not UTF-8 text: {e}") from e
    if path.suffix.lower() == ".jsonl":
        return jsonl_records(text, f"listing {path}", ValueError, "a JSON object with an images field")
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    fields = [str(f).strip().lower() for f in reader.fieldnames or []]
    if not any(k in fields for k in IMAGE_KEYS):
        raise ValueError(
            f"listing {path} has no image column (columns: {', '.join(fields) or 'none'}); name one of "
            f"{', '.join(IMAGE_KEYS[:4])}"
        )
    return [(n, row) for n, row in enumerate(reader, 2)]


def _from_listing(path: Path) -> list[StudyInput]:
    grouped: dict[str, tuple[list[Path], list[str | None]]] = {}
    for n, record in _records(path):
        images = _split(_pick(record, IMAGE_KEYS))
        if not images:
            raise ValueError(f"listing {path} line {n} names no image (fields: {', '.join(map(str, record))})")
        views = _split(_pick(record, VIEW_KEYS))
        if views and len(views) != len(images):
            raise ValueError(f"listing {path} line {n} has {len(images)} images but {len(views)} views")
        sid = str(_pick(record, ID_KEYS) or "").strip() or Path(images[0]).stem
        paths, names = grouped.setdefault(sid, ([], []))
        paths += [p if p.is_absolute() else path.parent / p for p in map(Path, images)]
        names += views or [None] * len(images)
    if not grouped:
        raise ValueError(f"listing {path} lists no study")
    return [
        StudyInput(sid, tuple(paths), tuple(names) if any(names) else None) for sid, (paths, names) in grouped.items()
    ]


def collect_studies(inputs: Sequence[str | Path]) -> StudyList:
    """Studies from command-line inputs; see the module docstring.

    Raises:
        ValueError: no input, mixed image files and folders, a bad listing, duplicated study ids.
        FileNotFoundError: an input that does not exist, a folder or glob without images.
    """
    if not inputs:
        raise ValueError("give image files of one study, or folders, glob patterns or a CSV/JSONL listing")
    texts = [str(p) for p in inputs]
    missing = [t for t in texts if not Path(t).exists() and not _is_glob(t)]
    if missing:
        raise FileNotFoundError(f"input not found: {', '.join(missing)}")
    plain = [Path(t) for t in texts if Path(t).exists()]
    files = [p for p in plain if p.is_file() and p.suffix.lower() not in LISTING_SUFFIXES]
    if len(files) == len(texts):
        return StudyList([StudyInput(files[0].stem, tuple(files))], batch=False)
    if files:
        raise ValueError(
            f"give either image files (one study) or folders / glob patterns / listings, not both: "
            f"{', '.join(map(str, files))}"
        )
    studies: list[StudyInput] = []
    for text in texts:
        path = Path(text)
        if path.is_dir():
            studies += _from_folder(path)
        elif path.is_file():
            studies += _from_listing(path)
        else:
            studies += _from_glob(text)
    seen: dict[str, StudyInput] = {}
    for study in studies:
        if study.id in seen:
            raise ValueError(
                f"study id {study.id!r} appears twice ({seen[study.id].paths[0]} and {study.paths[0]}): "
                "give one source at a time, or ids in a listing"
            )
        seen[study.id] = study
    return StudyList(studies, batch=True)
