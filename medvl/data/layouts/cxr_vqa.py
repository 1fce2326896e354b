"""Visual questions about the synthetic chest X-ray set, answered by its ground truth (`cxr_vqa_synthetic`).

The synthetic set (`medvl.data.synth`) records, per study, a 0/1 label per finding (`medvl.findings.FINDINGS`) and
the attributes of each positive finding (`findings_detail`: the side of an effusion or pneumothorax, the size of a
nodule or mass...). Each study's frontal view gets these questions, one `Study` each (meta as the VQA sources give
it, `medvl.data.layouts.vqa`):

    presence  closed  "is there a pleural effusion?" -> yes | no: every positive finding of the study and as many
                      absent ones (at least one), drawn by a hash of the study id, so yes and no are about equally
                      common and the majority answer is no better than chance
    side      open    "on which side is the pleural effusion?" -> right | left | bilateral (and the pneumothorax's)
    size      open    "how large is the nodule or mass?" -> under 1 cm | 1 to 3 cm | over 3 cm
    count     open    "how many abnormal findings are there?" -> 0, 1, 2... (support devices are not counted)

Ids: "<study id>_<question type>[_<finding>]"; the split is the study's, so the questions of one image never straddle
splits.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from medvl.data.study import DataSourceError, Study, group_splits, read_json

LAYOUT = "ROOT/annotation.json (+ images/) as `medvl data synth` writes it, with labels and findings_detail"
PRESENCE = {
    "cardiomegaly": "is the heart enlarged?",
    "pleural_effusion": "is there a pleural effusion?",
    "pneumothorax": "is there a pneumothorax?",
    "consolidation": "is there consolidation?",
    "nodule_mass": "is there a nodule or mass?",
    "atelectasis": "is there atelectasis?",
    "edema": "is there pulmonary edema?",
    "support_devices": "are there support devices?",
}
"""The presence question of each finding (its keys are `medvl.findings.FINDINGS`)."""
SIDED = {
    "pleural_effusion": "on which side is the pleural effusion?",
    "pneumothorax": "on which side is the pneumothorax?",
}
SIZE_QUESTION = "how large is the nodule or mass?"
COUNT_QUESTION = "how many abnormal findings are there?"
NOT_ABNORMAL = ("support_devices",)


def size_answer(size_mm: float) -> str:
    """The size class of a nodule or mass: under 1 cm, 1 to 3 cm (a nodule), over 3 cm (a mass, by definition)."""
    return "under 1 cm" if size_mm < 10 else "1 to 3 cm" if size_mm <= 30 else "over 3 cm"


def _rank(study_id: str, finding: str) -> str:
    return hashlib.sha256(f"{study_id}/{finding}".encode()).hexdigest()


def questions(record: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(key, question, answer, answer type, question type) of one annotation record, in a fixed order."""
    sid, labels = str(record["id"]), record.get("labels") or {}
    details = record.get("findings_detail") or {}
    if set(PRESENCE) - set(labels):
        raise DataSourceError(f"study {sid} has no label for {min(set(PRESENCE) - set(labels))}: {LAYOUT} expected")
    positive = [f for f in PRESENCE if labels[f]]
    absent = sorted((f for f in PRESENCE if not labels[f]), key=lambda f: _rank(sid, f))
    asked = set(positive) | set(absent[: max(1, len(positive))])
    out = [
        (f"presence_{f}", PRESENCE[f], "yes" if labels[f] else "no", "closed", "presence")
        for f in PRESENCE
        if f in asked
    ]
    for f, question in SIDED.items():
        side = (details.get(f) or {}).get("side")
        if labels[f] and side:
            out.append((f"side_{f}", question, str(side), "open", "side"))
    size = (details.get("nodule_mass") or {}).get("size_mm")
    if labels["nodule_mass"] and size is not None:
        out.append(("size_nodule_mass", SIZE_QUESTION, size_answer(float(size)), "open", "size"))
    count = sum(int(labels[f]) for f in PRESENCE if f not in NOT_ABNORMAL)
    out.append(("count", COUNT_QUESTION, str(count), "open", "count"))
    return out


def read_questions(root: str | Path) -> dict[str, list[Study]]:
    """The questions of a synthetic set already in `root` (see the module docstring)."""
    root = Path(root)
    raw = read_json(root / "annotation.json", LAYOUT)
    if not isinstance(raw, dict):
        raise DataSourceError(f"{root / 'annotation.json'} must map split names to lists of studies")
    studies = []
    for split, records in raw.items():
        for r in records:
            paths = r.get("image_path") or []
            image = paths[0] if isinstance(paths, list) and paths else str(paths)
            path = root / "images" / image
            problem = "" if path.is_file() else f"image file not found: {path}"
            for key, question, answer, atype, qtype in questions(r):
                meta = {"answer_type": atype, "question_type": qtype, "image": image, "study": str(r["id"])}
                studies.append(
                    Study(
                        f"{r['id']}_{key}",
                        (path,),
                        "",
                        split,
                        (0,),
                        None,
                        problem=problem,
                        meta=meta,
                        question=question,
                        answer=answer,
                    )
                )
    return group_splits(studies)
