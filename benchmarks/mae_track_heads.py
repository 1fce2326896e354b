"""Which head settings let the tiny mae ViT track the synthetic medicane centre? Variants compared at equal steps.

Trains the `medicanes_track_tiny_synthetic` model (mae/tiny, 8 frames of 64 px, 3 bands) on the clips of
`data.source=clips_synthetic` that have a centre, in one process with the clips held in memory (the runner's loop
without its checkpoints and evaluation, so a variant costs only its steps), and prints, per variant, the validation
and test median centre error in pixels next to the tile centre's. What it varies (one `--variant` each, as
`name:field=value,field=value`): the pooling before the head (`pooling`: mean, attention, flatten), the patch and
tubelet size, the loss (mse, huber, l1), target normalization, lr, layer decay, steps and augmentation (`flip`: random
horizontal/vertical flips and 90-degree turns of the whole clip, with the target moved alike). The encoder starts
from random weights, or from a run's checkpoint (`--init RUN`, through the model's `init_state` as `train.init_from`).

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mae_track_heads.py --root /tmp/mae-track/medicanes_synth \\
    --steps 300 --variant mean:pooling=mean --variant attention:pooling=attention
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "image_size": 64,
    "in_chans": 3,
    "num_frames": 8,
    "patch_size": 8,
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 3,
    "mlp_dim": 384,
}
"""The model of medicanes_track_tiny_synthetic."""
MODEL_FIELDS = ("pooling", "patch_size", "tubelet_size", "dropout", "depth", "embed_dim")
TRAIN_FIELDS = {"lr": 1e-3, "layer_decay": 0.75, "weight_decay": 0.05, "loss": "huber", "normalize": 1, "flip": 0}


def load_split(root: str, tracks: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Clips with a centre, per split: (float [N, T, C, S, S] in [0, 1], float [N, 2] (x, y) pixels)."""
    from medvl.config.experiment import load_experiment
    from medvl.data.dataset import ViewLoader
    from medvl.data.sources import load_studies

    cfg = load_experiment("medicanes_track_tiny_synthetic", [f"data.root={root}", f"data.synth_clips.tracks={tracks}"])
    views = ViewLoader(cfg.model.image_size, cfg.model.num_frames, cfg.model.in_chans, cache_images=False)
    out = {}
    for split, studies in load_studies(cfg.data).items():
        kept = [s for s in studies if s.targets]
        clips = np.stack([views(s) for s in kept])  # uint8 [N, T, S, S, C]
        images = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255.0
        out[split] = (images, torch.tensor([s.targets for s in kept], dtype=torch.float32))
    return out


def flip(images: torch.Tensor, xy: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random one of the 8 flips/turns of the square per clip; xy (pixel centres at integer coordinates) follows."""
    side = images.shape[-1] - 1
    images, xy = images.clone(), xy.clone()
    for i in range(len(images)):
        if torch.rand(1, generator=g) < 0.5:
            images[i], xy[i, 0] = images[i].flip(-1), side - xy[i, 0].clone()
        if torch.rand(1, generator=g) < 0.5:
            images[i], xy[i, 1] = images[i].flip(-2), side - xy[i, 1]
        if torch.rand(1, generator=g) < 0.5:  # transpose: x <-> y
            images[i], xy[i] = images[i].transpose(-1, -2).clone(), xy[i].flip(0)
    return images, xy


def run_variant(name: str, fields: dict[str, str], data: dict, args: argparse.Namespace) -> dict[str, float]:
    from medvl.models.families import MODEL_FAMILIES
    from medvl.train.optim import param_groups

    torch.manual_seed(args.seed)
    model_fields = {
        k: (v if k == "pooling" else float(v) if k == "dropout" else int(v))
        for k, v in fields.items()
        if k in MODEL_FIELDS
    }
    train = {k: type(v)(fields[k]) if k in fields else v for k, v in TRAIN_FIELDS.items()}
    unknown = set(fields) - set(MODEL_FIELDS) - set(TRAIN_FIELDS) - {"steps"}
    if unknown:
        raise SystemExit(f"unknown variant fields {sorted(unknown)}: use {MODEL_FIELDS} or {tuple(TRAIN_FIELDS)}")
    steps = int(fields.get("steps", args.steps))
    base = {**BASE, "num_outputs": 2}
    family = MODEL_FAMILIES.get("mae")
    model = family.build(family.make_config("tiny", {**base, **model_fields}))
    if args.init:
        from medvl.train.checkpoint import load_checkpoint

        state, _ = model.init_state(
            load_checkpoint(Path(args.init) / "checkpoints" / "last", load_train_state=False).model_state
        )
        model.load_state_dict(state, strict=False)
    images, xy = data["train"]
    mean, std = xy.mean(0), xy.std(0, unbiased=False)
    if not train["normalize"]:
        mean, std = torch.zeros(2), torch.ones(2)
    opt = torch.optim.AdamW(
        param_groups(model, train["weight_decay"], train["layer_decay"], train["lr"]),
        lr=train["lr"],
        betas=(0.9, 0.999),
    )
    warmup = 30
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    g = torch.Generator().manual_seed(args.seed)
    loss_fn = {"huber": F.huber_loss, "l1": F.l1_loss, "mse": F.mse_loss}[train["loss"]]
    t0 = time.time()
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (args.batch,), generator=g)
        x, y = images[idx], xy[idx]
        if train["flip"]:
            x, y = flip(x, y, g)
        loss = loss_fn(model(x), (y - mean) / std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    seconds = time.time() - t0
    model.eval()
    result = {"seconds": seconds, "steps": steps, "train_loss": float(loss.detach())}
    with torch.no_grad():
        for split in ("val", "test"):
            x, y = data[split]
            pred = torch.cat([model(x[i : i + 32]) for i in range(0, len(x), 32)]) * std + mean
            err = (pred - y).norm(dim=1)
            centre = (y - (x.shape[-1] - 1) / 2).norm(dim=1)
            result[f"{split}_median"] = float(err.median())
            result[f"{split}_mean"] = float(err.mean())
            result[f"{split}_centre"] = float(centre.median())
    print(
        f"{name:28s} steps {steps:4d} {seconds:6.0f} s  train loss {result['train_loss']:.3f}  val median "
        f"{result['val_median']:5.1f} px (centre {result['val_centre']:.1f})  test median {result['test_median']:5.1f}"
        f" px mean {result['test_mean']:5.1f} (centre {result['test_centre']:.1f})",
        flush=True,
    )
    return result


def probe(name: str, init: str, data: dict) -> None:
    """Frozen encoder -> ridge regression of (x, y) from the mean-pooled tokens [N, D] and from every token flattened
    [N, T' * h * w * D] (after the encoder's final LayerNorm): how much of the centre each keeps, linearly."""
    from sklearn.linear_model import RidgeCV

    from medvl.models.families import MODEL_FAMILIES

    family = MODEL_FAMILIES.get("mae")
    torch.manual_seed(0)
    model = family.build(family.make_config("tiny", {**BASE, "num_outputs": 2}))
    if init:
        from medvl.train.checkpoint import load_checkpoint

        state = load_checkpoint(Path(init) / "checkpoints" / "last", load_train_state=False).model_state
        model.load_state_dict(model.init_state(state)[0], strict=False)
    model.eval()
    feats = {}
    with torch.no_grad():
        for split, (x, _) in data.items():
            ones = torch.ones(x.shape[:2], dtype=torch.bool)
            tokens = torch.cat(
                [model.encoder(model.clips(x[i : i + 32], ones[i : i + 32])) for i in range(0, len(x), 32)]
            )
            feats[split] = {"mean": tokens.mean(1).numpy(), "flatten": tokens.flatten(1).numpy()}
    line = []
    for kind in ("mean", "flatten"):
        ridge = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(feats["train"][kind], data["train"][1].numpy())
        for split in ("val", "test"):
            err = np.linalg.norm(ridge.predict(feats[split][kind]) - data[split][1].numpy(), axis=1)
            line.append(f"{kind} {split} median {np.median(err):5.1f} px")
    print(f"probe {name:22s} " + "  ".join(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="the synthetic clips (generated there on first use)")
    p.add_argument("--tracks", default=str(REPO.parent / "shared/data/medicane_tracks/medicanes_new_windows.csv"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="", help="a run directory whose last checkpoint starts the encoder")
    p.add_argument("--variant", action="append", default=[], help="name:field=value,field=value")
    p.add_argument("--probe", action="append", default=[], help="name:RUN (empty RUN: random init): frozen probe")
    args = p.parse_args(argv)
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    data = load_split(args.root, args.tracks)
    print({k: len(v[0]) for k, v in data.items()}, "clips with a centre", flush=True)
    for spec in args.probe:
        name, _, run = spec.partition(":")
        probe(name, run, data)
    for spec in args.variant:
        name, _, rest = spec.partition(":")
        fields = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        run_variant(name, fields, data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
