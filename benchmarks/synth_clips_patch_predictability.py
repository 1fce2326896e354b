"""How predictable is a hidden patch of the synthetic satellite clips, in the two target spaces of masked modeling?

For clips drawn by `medvl.data.synth_clips` (64 px, 8 frames, 3 bands, tubelets of 2 frames, 8 px patches) it prints
the loss of simple copy predictors, per token and channel as `masked_modeling` computes it:
- per-patch normalized pixels (VideoMAE's `norm_pix_loss`): the patch mean scores (n - 1) / n; copying the normalized
  patch 1, 2 or 3 patches to the left, or the same patch one tubelet earlier (what tube masking hides);
- the model's normalized pixels ((x - 0.5) / 0.25): the clip's mean colour, and the neighbour copies.
A copy below the mean means there is spatial information to learn; above it, the target is mostly unpredictable.
This is why `medicanes_specialize_tiny_synthetic` trains on the model's normalized pixels.

Usage: .venv/bin/python benchmarks/synth_clips_patch_predictability.py [--clips 120] [--tracks CSV]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def tokens(clip: np.ndarray, tubelet: int = 2, patch: int = 8) -> np.ndarray:
    """uint8 [T, H, W, C] -> float [T/ts, H/p, W/p, C, ts*p*p] in [0, 1]."""
    t, h, w, c = clip.shape
    x = clip.astype(np.float64).reshape(t // tubelet, tubelet, h // patch, patch, w // patch, patch, c) / 255.0
    return x.transpose(0, 2, 4, 6, 1, 3, 5).reshape(t // tubelet, h // patch, w // patch, c, -1)


def copy_losses(z: np.ndarray, mean: np.ndarray) -> dict[str, float]:
    out = {"mean": float(((z - mean) ** 2).mean())}
    for d in (1, 2, 3):
        out[f"left {d}"] = float(((z[:, :, :-d] - z[:, :, d:]) ** 2).mean())
    out["previous tubelet"] = float(((z[:-1] - z[1:]) ** 2).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument(
        "--tracks",
        default=str(REPO.parent / "shared/data/medicane_tracks/medicanes_new_windows.csv"),
        help="real tracks CSV; built-in random tracks when absent",
    )
    args = parser.parse_args(argv)
    from medvl.data.synth_clips.generate import load_tracks, make_clip
    from medvl.data.synth_clips.tracks import resample

    tracks, source = load_tracks(args.tracks, 0)
    fine = [f for f in (resample(hourly, 5) for _, hourly in tracks) if len(f) >= 8]
    print(f"tracks: {source}")
    normed, raw = [], []
    for i in range(args.clips):
        _, pixels = make_clip(0, i, fine[i % len(fine)], 64, 8, 3)
        x = tokens(pixels)
        n = x.shape[-1]
        z = (x - x.mean(-1, keepdims=True)) / (x.std(-1, ddof=1, keepdims=True) + 1e-6)
        normed.append(copy_losses(z, np.zeros(1)))
        y = (x - 0.5) / 0.25
        raw.append(copy_losses(y, y.mean((0, 1, 2, 4), keepdims=True)))
    for name, rows in (("per-patch normalized pixels", normed), ("model-normalized pixels", raw)):
        print(f"{name} (MSE per token, {args.clips} clips, {n} pixels per token and channel):")
        for key in rows[0]:
            print(f"  {key:18s} {np.mean([r[key] for r in rows]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
