"""Normal/abnormal on real NIH ChestX-ray14 images: `cxr_classify_nih` from scratch next to a pixel-space peer.

Both are fitted on the same 600 training images of `../shared/data/nih1000` (64 px) and scored on its 200 test images
with the same metric code (`medvl.evaluate.classification`, AUROC with 1,000-resample bootstrap 95% intervals):

- medvl: the `cxr_classify_nih` recipe (a small conv classifier trained from scratch, best checkpoint on validation
  macro AUROC), evaluated with `medvl evaluate`;
- peer: scikit-learn logistic regression on the downsampled, standardized pixels (32 x 32 = 1,024 features), its
  inverse regularization C chosen on the validation images among 1e-4 .. 1.

Usage: .venv/bin/python benchmarks/cxr_classify_nih.py [--root ../shared/data/nih1000] [--out runs/bench_nih]
       [--init-from CKPT] [overrides ...]  (e.g. train.epochs=40). Skips cleanly when the data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _pixels(studies: list, size: int) -> np.ndarray:
    from medvl.data.images import load_pixels, resize_square

    return np.stack(
        [resize_square(load_pixels(s.image_paths[0]), size).astype(np.float32).ravel() / 255.0 for s in studies]
    )


def peer_auroc(root: Path, label: str, size: int = 32, bootstrap: int = 1000) -> dict:
    """Logistic regression on pixels: (test metrics dict, chosen C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from medvl.data.config import DataConfig
    from medvl.data.sources import load_studies
    from medvl.evaluate.classification import classification_metrics

    studies = load_studies(DataConfig(source="nih", root=str(root)))
    x = {k: _pixels(studies[k], size) for k in ("train", "val", "test")}
    y = {k: np.array([s.labels[label] for s in studies[k]]) for k in ("train", "val", "test")}
    scaler = StandardScaler().fit(x["train"])
    x = {k: scaler.transform(v) for k, v in x.items()}
    best = max(
        (
            roc_auc_score(
                y["val"],
                LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"]).predict_proba(x["val"])[:, 1],
            ),
            c,
        )
        for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    )
    model = LogisticRegression(C=best[1], max_iter=2000).fit(np.concatenate([x["train"]]), y["train"])
    probs = model.predict_proba(x["test"])[:, 1:]
    result = classification_metrics(probs, y["test"][:, None], [label], True, bootstrap=bootstrap, seed=0)
    return {"C": best[1], **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "nih1000"))
    parser.add_argument("--out", default="runs/bench_cxr_classify_nih")
    parser.add_argument("--init-from", default="", help="start from this checkpoint (e.g. cxr_mae_pretrain's)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not any(root.glob("Data_Entry_2017*.csv")):
        print(f"skipped: {root} has no NIH ChestX-ray14 data (Data_Entry_2017*.csv)")
        return 0
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import train

    overrides = [f"data.root={root}", f"train.output_dir={args.out}", "train.progress=false", *args.overrides]
    if args.init_from:
        overrides.append(f"train.init_from={args.init_from}")
    t0 = time.time()
    summary = train(load_experiment("cxr_classify_nih", overrides))
    train_s = time.time() - t0
    ours = evaluate(
        summary["best_checkpoint"] or summary["last_checkpoint"],
        split="test",
        progress=False,
        options=ScoringOptions(bootstrap=1000, seed=0),
    )
    t1 = time.time()
    peer = peer_auroc(root, "Abnormal")
    peer_s = time.time() - t1
    a, p = ours["per_class"]["Abnormal"], peer["per_class"]["Abnormal"]
    print(f"\nnormal/abnormal on the {ours['n_examples']} NIH test images (64 px), AUROC [95% CI]:")
    print(
        f"  medvl cxr_classify_nih (from scratch, {summary['steps']} steps, {train_s:.0f}s): "
        f"{a['auroc']:.3f} [{a['auroc_ci_low']:.3f}, {a['auroc_ci_high']:.3f}]"
    )
    print(
        f"  peer: logistic regression on 32x32 pixels (C={peer['C']:g}, {peer_s:.0f}s):   "
        f"{p['auroc']:.3f} [{p['auroc_ci_low']:.3f}, {p['auroc_ci_high']:.3f}]"
    )
    print(
        f"  medvl macro AUROC over the labels with test positives: {ours['auroc_macro']:.3f} "
        f"[{ours['auroc_macro_ci_low']:.3f}, {ours['auroc_macro_ci_high']:.3f}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
