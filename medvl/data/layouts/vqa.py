"""Medical visual question answering data sets in their public layouts: one `Study` per question.

    vqa_rad   ROOT/trainset.json, ROOT/testset.json (optional) + ROOT/images/<image_name>
              records: qid, image_name, question, answer, answer_type (CLOSED | OPEN), question_type (PRES, POS,
              ABN, SIZE, ...), phrase_type, image_organ (the MEVF / data_RAD release of VQA-RAD, Lau et al. 2018)
    slake     ROOT/train.json, ROOT/validate.json, ROOT/test.json (each optional but train) + ROOT/imgs/<img_name>
              (imgs/xmlab1/source.jpg as released) or ROOT/images/ (flattened: images/xmlab1.png)
              records: qid, img_name, question, answer, q_lang (en | zh), answer_type, content_type, location,
              modality, base_type (SLAKE 1.0, Liu et al. 2021); English questions only (`q_lang == "en"`)
    pathvqa   ROOT/qas/<split>/<split>_qa.pkl (or <split>_qa.json) + ROOT/images/<split>/<image>.jpg, split in
              train | val | test; records: image (file stem), question, answer (PathVQA, He et al. 2020). The
              pickles hold plain lists of dicts of strings and are read by an unpickler that refuses every global,
              so they cannot execute code.

A study: `image_paths` the question's one image, `question`, `answer` (numbers as text), `view_ids` (0,), and
`meta` {"answer_type": "closed" | "open", "question_type": ..., "image": the image name as the question file gives
it, ...}. Study ids are "<file split>_<qid>" (train_12, test_12: VQA-RAD numbers its two files separately).

Images are found by the name in the question file and, when that file is absent, by the same stem with another image
suffix (the PNG conversions of the original JPEGs), or, for SLAKE, by the flattened name images/<folder>.<suffix>;
the count of such substitutions is printed once per read, not per question. A question whose image is found under no
name is kept with `problem` set, so it is counted.

Validation: a data set without a validation file (VQA-RAD always; SLAKE without validate.json; PathVQA without val)
gets one carved out of train by image: the questions of about `VQA_VAL_SHARE` of the training images, chosen by a
hash of the image name (questions repeat images, so a split by question would leak images), move to val. This is
printed, with the counts.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from medvl.data.config import VQA_VAL_SHARE, DataConfig
from medvl.data.study import DataSourceError, Study, group_splits, read_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VQA_RAD_LAYOUT = "ROOT/trainset.json [+ ROOT/testset.json] + ROOT/images/<image_name> (VQA-RAD, MEVF data_RAD)"
SLAKE_LAYOUT = (
    "ROOT/train.json [+ validate.json, test.json] + ROOT/imgs/<img_name> (SLAKE 1.0) or ROOT/images/<folder>.png"
)
PATHVQA_LAYOUT = "ROOT/qas/<split>/<split>_qa.pkl (or .json) + ROOT/images/<split>/<image>.jpg (PathVQA)"


class ImageFinder:
    """Finds a question's image by its name under `folders`, falling back to the same stem with another suffix and
    (for SLAKE's flattened copies) to "<folder>.<suffix>" for a name "<folder>/<file>"; counts the fallbacks."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self.folders = [f for f in folders if f.is_dir()]
        self.by_stem: dict[tuple[Path, str], list[Path]] = {}
        self._indexed: set[Path] = set()
        self.fallbacks = 0
        self.examples: list[str] = []
        self._cache: dict[str, tuple[Path | None, bool]] = {}

    def _stem_index(self, folder: Path) -> None:
        if folder in self._indexed:
            return
        self._indexed.add(folder)
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    self.by_stem.setdefault((folder, p.stem), []).append(p)

    def find(self, name: str) -> Path | None:
        """The file of image `name`, or None when there is none under any of the accepted names."""
        if name not in self._cache:
            self._cache[name] = self._find(name)
        found, fell_back = self._cache[name]
        self.fallbacks += fell_back
        return found

    def _find(self, name: str) -> tuple[Path | None, bool]:
        rel = Path(name)
        for folder in self.folders:
            if (folder / rel).is_file():
                return folder / rel, False
        candidates = [(folder / rel.parent, rel.stem) for folder in self.folders]
        if len(rel.parts) > 1:  # imgs/xmlab1/source.jpg flattened to images/xmlab1.png
            candidates += [(folder / rel.parent.parent, rel.parent.name) for folder in self.folders]
        for folder, stem in candidates:
            self._stem_index(folder)
            hits = self.by_stem.get((folder, stem))
            if hits:
                if not self.examples:
                    self.examples.append(f"{name} -> {hits[0].name}")
                return hits[0], True
        return None, False

    def report(self, source: str, n_questions: int) -> None:
        """Print, once, how many questions' images were found under another name than the question file gives."""
        if self.fallbacks:
            print(
                f"{source}: {self.fallbacks} of {n_questions} questions name an image file that is absent; used the "
                f"file of the same name with another image suffix or folder layout instead, e.g. "
                f"{self.examples[0]}",
                file=sys.stderr,
            )


def image_hash_share(name: str) -> float:
    """A number in [0, 1) from a hash of an image name: stable across runs, machines and Python versions."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0x100000000


def carve_val(studies: dict[str, list[Study]], source: str, share: float = VQA_VAL_SHARE) -> dict[str, list[Study]]:
    """Move the questions of about `share` of the training images (by `image_hash_share` of the image name) to val,
    when there is no val split; say so. Every question of one image stays in one split."""
    if studies.get("val") or not studies.get("train"):
        return studies
    train: list[Study] = []
    val: list[Study] = []
    for s in studies["train"]:
        (val if image_hash_share(str((s.meta or {}).get("image", s.id))) < share else train).append(s)
    images = len({(s.meta or {}).get("image") for s in val})
    total = len({(s.meta or {}).get("image") for s in studies["train"]})
    print(
        f"{source}: no validation file; the {len(val)} questions on {images} of the {total} training images "
        f"(those whose name hashes below {share:.3g}) moved from train to val",
        file=sys.stderr,
    )
    return {**studies, "train": train, "val": [replace(s, split="val") for s in val]}


def answer_type(value: Any, answer: str) -> str:
    """ "closed" or "open" from a record's answer_type (CLOSED, "CLOSED ", OPEN...), else closed for a yes/no answer."""
    text = str(value or "").strip().lower()
    if text in ("closed", "open"):
        return text
    return "closed" if answer.strip().lower() in ("yes", "no") else "open"


def vqa_study(
    sid: str,
    split: str,
    image: str,
    finder: ImageFinder,
    question: Any,
    answer: Any,
    atype: Any,
    qtype: Any,
    extra: dict[str, Any] | None = None,
) -> Study:
    """One question as a `Study` (see the module docstring); an image found under no name sets `problem`."""
    answer_text = str(answer).strip() if answer is not None else ""
    path = finder.find(image)
    folders = ", ".join(str(f) for f in finder.folders) or "no folder"
    problem = "" if path is not None else f"image file not found: {image} is under none of {folders}"

    if not str(question or "").strip() or not answer_text:
        problem = problem or "no question or no answer in the record"
    meta = {
        "answer_type": answer_type(atype, answer_text),
        "question_type": str(qtype or "").strip(),
        "image": image,
        **(extra or {}),
    }
    first = finder.folders[0] if finder.folders else Path(".")
    return Study(
        sid,
        (path or first / image,),
        "",
        split,
        (0,),
        None,
        problem=problem,
        meta=meta,
        question=str(question or "").strip(),
        answer=answer_text,
    )


def _records(path: Path, layout: str) -> list[dict[str, Any]]:
    raw = read_json(path, layout)
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise DataSourceError(f"{path} must be a JSON list of question records. Expected layout: {layout}")
    return raw


def _require(record: dict[str, Any], keys: tuple[str, ...], where: Path) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataSourceError(f"a record of {where} has no {', '.join(map(repr, missing))} field: {str(record)[:160]}")


def read_vqa_rad(cfg: DataConfig) -> dict[str, list[Study]]:
    """Questions of a VQA-RAD directory (see the module docstring): train (+ val carved by image), and test when
    testset.json is there."""
    root = Path(cfg.root)
    if not (root / "trainset.json").is_file() and not (root / "testset.json").is_file():
        raise DataSourceError(f"no trainset.json or testset.json in {root}. Expected layout: {VQA_RAD_LAYOUT}")
    finder = ImageFinder([root / "images"])
    studies = []
    for split, file in (("train", "trainset.json"), ("test", "testset.json")):
        if not (root / file).is_file():
            continue
        for r in _records(root / file, VQA_RAD_LAYOUT):
            _require(r, ("qid", "image_name", "question", "answer"), root / file)
            extra: dict[str, Any] = {k: r[k] for k in ("image_organ", "phrase_type") if k in r}
            studies.append(
                vqa_study(
                    f"{split}_{r['qid']}",
                    split,
                    str(r["image_name"]),
                    finder,
                    r["question"],
                    r["answer"],
                    r.get("answer_type"),
                    str(r.get("question_type", "")).upper(),
                    extra,
                )
            )
    finder.report("vqa_rad", len(studies))
    return carve_val(group_splits(studies), "vqa_rad")


def read_slake(cfg: DataConfig) -> dict[str, list[Study]]:
    """English questions of a SLAKE directory (see the module docstring)."""
    root = Path(cfg.root)
    files = {"train": "train.json", "val": "validate.json", "test": "test.json"}
    if not any((root / f).is_file() for f in files.values()):
        raise DataSourceError(f"no train.json, validate.json or test.json in {root}. Expected layout: {SLAKE_LAYOUT}")
    finder = ImageFinder([root / "imgs", root / "images"])
    studies, other_languages = [], 0
    for split, file in files.items():
        if not (root / file).is_file():
            continue
        for r in _records(root / file, SLAKE_LAYOUT):
            _require(r, ("qid", "img_name", "question", "answer"), root / file)
            if str(r.get("q_lang", "en")).strip().lower() != "en":
                other_languages += 1
                continue
            extra: dict[str, Any] = {k: r[k] for k in ("location", "modality", "base_type", "img_id") if k in r}
            studies.append(
                vqa_study(
                    f"{split}_{r['qid']}",
                    split,
                    str(r["img_name"]),
                    finder,
                    r["question"],
                    r["answer"],
                    r.get("answer_type"),
                    r.get("content_type", ""),
                    extra,
                )
            )
    finder.report("slake", len(studies))
    if other_languages:
        print(f"slake: {other_languages} questions in other languages than English left out", file=sys.stderr)
    return carve_val(group_splits(studies), "slake")


class _PlainUnpickler(pickle.Unpickler):
    """Reads pickles of plain containers and strings only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise DataSourceError(
            f"the question file refers to {module}.{name}; medvl reads only plain lists and dicts "
            "from PathVQA pickles (nothing loaded from disk may execute code)"
        )


def _pathvqa_records(root: Path, split: str) -> list[dict[str, Any]] | None:
    base = root / "qas" / split / f"{split}_qa"
    if base.with_suffix(".json").is_file():
        return _records(base.with_suffix(".json"), PATHVQA_LAYOUT)
    if not base.with_suffix(".pkl").is_file():
        return None
    with open(base.with_suffix(".pkl"), "rb") as f:
        try:
            raw = _PlainUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise DataSourceError(f"cannot read {base.with_suffix('.pkl')}: {e}") from e
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise DataSourceError(f"{base.with_suffix('.pkl')} must hold a list of question records")
    return raw


def read_pathvqa(cfg: DataConfig) -> dict[str, list[Study]]:
    """Questions of a PathVQA directory (see the module docstring); closed = a yes/no answer, the question type is
    the question's first word (PathVQA names none)."""
    root = Path(cfg.root)
    studies = []
    for split in ("train", "val", "test"):
        records = _pathvqa_records(root, split)
        if records is None:
            continue
        finder = ImageFinder([root / "images" / split])
        for k, r in enumerate(records):
            _require(r, ("image", "question", "answer"), root / "qas" / split)
            image = str(r["image"])
            image = image if Path(image).suffix else f"{image}.jpg"
            words = str(r["question"]).strip().lower().split()
            studies.append(
                vqa_study(
                    f"{split}_{k}", split, image, finder, r["question"], r["answer"], None, words[0] if words else ""
                )
            )
        finder.report("pathvqa", len(records))
    if not studies:
        raise DataSourceError(f"no question file in {root / 'qas'}. Expected layout: {PATHVQA_LAYOUT}")
    return carve_val(group_splits(studies), "pathvqa")
