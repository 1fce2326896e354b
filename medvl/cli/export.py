"""Weights out and in: `medvl export` (an HF-style folder, optionally pushed to the Hub) and `medvl convert`
(MiniGPT-4 / XrayGPT / BLIP-2 checkpoints to medvl weights).
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_export(args: argparse.Namespace) -> int:
    from medvl.export import export_hf, push_to_hub

    out = export_hf(args.checkpoint, args.out, use_ema=not args.no_ema, overwrite=args.overwrite)
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))}); it loads with medvl predict/serve/demo")
    if args.push_to_hub:
        print(f"pushed to {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from medvl.models.minigpt4 import convert_minigpt4, read_pth
    from medvl.outputs import atomic_file, refuse_existing

    out = refuse_existing(args.out, args.overwrite)
    state, skipped = convert_minigpt4(read_pth(args.pth))
    if not state:
        raise ValueError(f"no MiniGPT-4 / XrayGPT / BLIP-2 weights in {args.pth} ({len(skipped)} other tensors)")
    with atomic_file(out, args.overwrite) as partial:
        save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    groups: dict[str, int] = {}
    for key in state:
        groups[key.split(".")[0]] = groups.get(key.split(".")[0], 0) + 1
    print(f"wrote {len(state)} tensors to {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items())))
    reasons: dict[str, int] = {}
    for why in skipped.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in sorted(reasons.items()):
        print(f"skipped {count}: {why}")
    print(f"use it with: medvl train RECIPE train.init_from={out}")
    return 0


def add_export(sub: Any) -> None:
    """Add `medvl export`."""
    p = sub.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face-style folder (and push it to the Hub)",
        description="Write CKPT as DIR in HF conventions (model.safetensors, config.json, "
        "generation_config.json, preprocessor_config.json, tokenizer files, README.md). "
        "medvl predict/serve/demo load DIR like a checkpoint. --push-to-hub uploads it "
        "with huggingface_hub when online (HF_HUB_OFFLINE=1 or no network: a clear "
        "message, never a hang).",
    )
    p.add_argument("checkpoint", help="checkpoint directory, or a run directory")
    p.add_argument("out", metavar="DIR", help="folder to write")
    p.add_argument("--format", default="hf", choices=("hf",), help="export format (hf)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even when the run kept an EMA")
    p.add_argument("--overwrite", action="store_true", help="replace DIR when it is not empty")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="then upload DIR to this Hub repository")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private")
    p.set_defaults(func=cmd_export)


def add_convert(sub: Any) -> None:
    """Add `medvl convert minigpt4`."""
    p = sub.add_parser(
        "convert",
        help="convert third-party checkpoints to medvl weights",
        description="Convert a MiniGPT-4 / XrayGPT / BLIP-2 (LAVIS) .pth checkpoint to the xraygpt "
        "family's parameter names (tensors only; nothing in the file is executed).",
    )
    conv = p.add_subparsers(dest="convert_command", required=True, metavar="FORMAT")
    q = conv.add_parser("minigpt4", help="MiniGPT-4 / XrayGPT / BLIP-2 .pth -> .safetensors for train.init_from")
    q.add_argument("pth", help="the .pth checkpoint (e.g. XrayGPT's or MiniGPT-4's stage checkpoint)")
    q.add_argument("--out", required=True, help="output .safetensors file")
    q.add_argument("--overwrite", action="store_true", help="replace the --out file when it exists")
    q.set_defaults(func=cmd_convert)
