"""Does MAE pretraining put normal/abnormal information into the encoder? A linear probe on real NIH images.

The encoder of a `cxr_mae_pretrain` checkpoint and the same encoder at its random initialization (seed 0) are frozen;
each of the 1,000 images of `../shared/data/nih1000` (64 px) becomes its mean-pooled final tokens; scikit-learn
logistic regression on the standardized features, its C chosen on the validation images among 1e-4 .. 1, is scored
on the 200 test images (AUROC of "Abnormal" with a 1,000-resample bootstrap 95% interval, `medvl.evaluate`'s metric
code). The pixel peer of `benchmarks/cxr_classify_nih.py` (logistic regression on 32 x 32 pixels) runs alongside.
What it separates: if the MAE probe beats the random-encoder probe, pretraining learned something about the labels,
and a fine-tune that does not gain is an optimization/overfitting matter; if not, the 600-image pretraining did not.

Usage: .venv/bin/python benchmarks/mae_linear_probe_nih.py CKPT_OR_RUN_DIR [--root ../shared/data/nih1000]
Skips cleanly when the data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


@torch.no_grad()
def features(model: torch.nn.Module, studies: list, batch: int = 100) -> np.ndarray:
    """[N, D] mean-pooled final encoder tokens of each study's first image."""
    from medvl.data.images import load_pixels, resize_square

    size = model.config.image_size
    out = []
    for i in range(0, len(studies), batch):
        px = np.stack([resize_square(load_pixels(s.image_paths[0]), size) for s in studies[i : i + batch]])
        images = torch.from_numpy(px.astype(np.float32) / 255.0)[:, None, None]  # [B, V=1, C=1, H, W]
        clips = model.clips(images, torch.ones(images.shape[:2], dtype=torch.bool))
        out.append(model.encoder(clips).mean(1).numpy())
    return np.concatenate(out)


def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray], label: str) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from medvl.evaluate.classification import classification_metrics

    scaler = StandardScaler().fit(x["train"])
    x = {k: scaler.transform(v) for k, v in x.items()}
    best = max(
        (
            roc_auc_score(
                y["val"],
                LogisticRegression(C=c, max_iter=3000).fit(x["train"], y["train"]).predict_proba(x["val"])[:, 1],
            ),
            c,
        )
        for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    )
    model = LogisticRegression(C=best[1], max_iter=3000).fit(x["train"], y["train"])
    probs = model.predict_proba(x["test"])[:, 1:]
    result = classification_metrics(probs, y["test"][:, None], [label], True, bootstrap=1000, seed=0)
    return {"C": best[1], **result["per_class"][label]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a cxr_mae_pretrain run directory or checkpoint")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "nih1000"))
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not any(root.glob("Data_Entry_2017*.csv")):
        print(f"skipped: {root} has no NIH ChestX-ray14 data (Data_Entry_2017*.csv)")
        return 0
    from cxr_classify_nih import peer_auroc

    from medvl.data.config import DataConfig
    from medvl.data.sources import load_studies
    from medvl.infer.predictor import resolve_checkpoint
    from medvl.models.families import MODEL_FAMILIES
    from medvl.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint), load_train_state=False)
    model_cfg = dict(ckpt.metadata["config"]["model"])
    family = MODEL_FAMILIES.get("mae")
    fields = {k: v for k, v in model_cfg.items() if k not in ("family", "size")}
    studies = load_studies(DataConfig(source="nih", root=str(root)))
    y = {k: np.array([s.labels["Abnormal"] for s in studies[k]]) for k in ("train", "val", "test")}
    rows = []
    for name, load in (("random-init encoder", False), ("MAE encoder", True)):
        torch.manual_seed(0)
        model = family.build(family.make_config(model_cfg["size"], {**fields, "num_outputs": 1})).eval()
        if load:
            state, _ = model.init_state(ckpt.model_state)
            missing, unexpected = model.load_state_dict(state, strict=False)
            assert not unexpected and all(not k.startswith("encoder.") for k in missing), (missing, unexpected)
        t0 = time.time()
        x = {k: features(model, studies[k]) for k in ("train", "val", "test")}
        rows.append((name, probe(x, y, "Abnormal"), time.time() - t0))
    t0 = time.time()
    peer = peer_auroc(root, "Abnormal")
    rows.append(("pixels 32x32 (peer)", {"C": peer["C"], **peer["per_class"]["Abnormal"]}, time.time() - t0))
    print(f"\nlinear probe, normal/abnormal on the {len(y['test'])} NIH test images (64 px), AUROC [95% CI]:")
    for name, r, seconds in rows:
        print(
            f"  {name:22s} {r['auroc']:.3f} [{r['auroc_ci_low']:.3f}, {r['auroc_ci_high']:.3f}]  C={r['C']:g}  "
            f"{seconds:.0f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
