"""The VQA data sets as medvl reads them, and the majority-answer baselines on their validation part, in one run.

For each of VQA-RAD and SLAKE in `../shared/data` (test splits held back there) and the synthetic chest X-ray VQA
set: questions per split, closed/open share, and `medvl.evaluate.vqa` accuracy (closed, open, overall, bootstrap
95% CI) of the majority answer per (answer type, question type) and of the single overall majority answer, fitted
on train and scored on val. VQA-RAD has no validation file, so val is carved out of train by image
(`medvl.data.layouts.vqa.carve_val`); SLAKE's val is its official validate.json. These are the floors a trained
model must beat. Data sets that are absent are skipped with a message.

    PYTHONPATH=. .venv/bin/python benchmarks/vqa_baselines.py [--synth-root DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from medvl.data.config import DataConfig, SynthConfig
from medvl.data.sources import load_studies
from medvl.evaluate.vqa import format_vqa, majority_baselines

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _columns(studies: list) -> dict[str, list[str]]:
    return {
        "answers": [s.answer for s in studies],
        "answer_types": [s.meta["answer_type"] for s in studies],
        "question_types": [s.meta["question_type"] for s in studies],
    }


def measure(name: str, cfg: DataConfig) -> dict[str, Any]:
    splits = {k: [s for s in v if not s.problem] for k, v in load_studies(cfg).items()}
    counts = {
        k: {
            "questions": len(v),
            "images": len({s.meta["image"] for s in v}),
            "closed": sum(s.meta["answer_type"] == "closed" for s in v),
        }
        for k, v in splits.items()
    }
    train, val = _columns(splits["train"]), _columns(splits["val"])
    baselines = majority_baselines(train, val)
    print(
        f"\n== {name}: "
        + ", ".join(
            f"{k} {c['questions']} questions on {c['images']} images ({100 * c['closed'] / c['questions']:.1f}% closed)"
            for k, c in counts.items()
        )
    )
    print(
        format_vqa(
            baselines["majority_per_question_type"],
            {f"overall majority ({baselines['majority_overall']['answer']!r})": baselines["majority_overall"]},
        ).replace("model", "per-type majority", 1)
    )
    return {
        "counts": counts,
        **{k: {m: v.get(m) for m in v if not isinstance(v.get(m), dict)} for k, v in baselines.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synth-root", default=None, help="synthetic set folder (default: a temporary one, 2500 studies)")
    p.add_argument("--synth-n", type=int, default=2500)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    for name in ("vqa_rad", "slake"):
        if (SHARED / name).is_dir():
            results[name] = measure(name, DataConfig(source=name, root=str(SHARED / name)))
        else:
            print(f"{SHARED / name} is absent; skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.synth_root or str(Path(tmp) / "synth")
        results["cxr_vqa_synthetic"] = measure(
            "cxr_vqa_synthetic", DataConfig(source="cxr_vqa_synthetic", root=root, synth=SynthConfig(n=args.synth_n))
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
