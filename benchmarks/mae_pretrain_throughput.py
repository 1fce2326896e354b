"""MAE pretraining throughput (clips/s) and peak memory: medvl's mae family next to transformers'
VideoMAEForPreTraining.

Both are built from random init at the same size (medvl's preset, the peer from the same `VideoMAEConfig`), take the
same clips and the same tube masks (ratio --mask-ratio), and run full training steps (forward, MSE on per-patch
normalized pixels, backward, AdamW) in the same invocation. medvl is measured twice: with VideoMAEv2's dual masking
(the decoder reconstructs only the running-cell half, --decoder-mask-ratio) and without it (decoding every hidden
token, the peer's work). Each measurement runs in its own spawned process so peak memory is its own: on CUDA
torch.cuda.max_memory_allocated, on CPU the process's peak resident set (ru_maxrss) minus its resident set after
the imports (weights, optimizer state, activations and allocator caches; not the libraries).

    .venv/bin/python benchmarks/mae_pretrain_throughput.py                      # CPU: ViT-S, 8 x 64 px clips
    .venv/bin/python benchmarks/mae_pretrain_throughput.py --device cuda --size base --image-size 224 \\
        --frames 16 --patch 16 --batch-size 32 --bf16                          # GPU: VideoMAE ViT-B/16 setting
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _measure(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    import resource

    import psutil
    import torch
    from transformers import VideoMAEForPreTraining

    from medvl.models.families import MODEL_FAMILIES
    from medvl.models.mae import hf_config
    from medvl.tasks.masked_modeling import running_cell_mask, tube_mask

    base_rss = psutil.Process().memory_info().rss / 2**20  # after the imports, before any model
    torch.manual_seed(0)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    family = MODEL_FAMILIES.get("mae")
    cfg = family.make_config(
        args["size"],
        {"image_size": args["image_size"], "num_frames": args["frames"], "patch_size": args["patch"], "in_chans": 3},
    )
    b = args["batch_size"]
    clips = torch.rand(b, cfg.num_frames, 3, cfg.image_size, cfg.image_size, device=device)
    mask_ratio, dec_ratio = args["mask_ratio"], args["decoder_mask_ratio"] if kind == "medvl_dual" else 0.0
    with device:  # built where it runs (a giant model's init on the CPU takes minutes)
        model = VideoMAEForPreTraining(hf_config(cfg)) if kind == "videomae_hf" else family.build(cfg)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    grid = (
        model.token_grid
        if kind != "videomae_hf"
        else (cfg.num_frames // cfg.tubelet_size, cfg.image_size // cfg.patch_size, cfg.image_size // cfg.patch_size)
    )
    views = torch.ones(b, cfg.num_frames, dtype=torch.bool, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args["bf16"])

    def step() -> None:
        hidden = tube_mask(grid, mask_ratio, b).to(device)
        with autocast:
            if kind == "videomae_hf":
                loss = model(clips, bool_masked_pos=hidden).loss
            else:
                decode = (
                    running_cell_mask(grid, dec_ratio, torch.randint(0, 4, (b,))).to(device) if dec_ratio else hidden
                )
                pred = model(clips, None, views, hidden, decode).float()
                with torch.no_grad():
                    patches = model.patchify(clips).view(b, model.num_tokens, -1, 3)
                    target = (patches - patches.mean(2, keepdim=True)) / (patches.var(2, keepdim=True).sqrt() + 1e-6)
                    target = target.view(b, model.num_tokens, -1)[decode].view(b, -1, pred.shape[-1])
                weight = hidden[decode].view(b, -1).float()
                loss = ((pred - target).pow(2).mean(-1) * weight).sum() / weight.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args["warmup"]):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args["steps"]):
        step()
    sync()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        where = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss  # ru_maxrss: KiB on Linux
        where = "peak RSS above the imports"
    return {
        "kind": kind,
        "clips_per_s": round(args["steps"] * b / seconds, 2),
        "peak_mib": round(peak, 1),
        "memory": where,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "tokens": grid[0] * grid[1] * grid[2],
    }


def _child(kind: str, args: dict[str, Any], queue: Any) -> None:
    queue.put(_measure(kind, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="mae preset: tiny, small, base, large, huge, giant")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    parser.add_argument("--decoder-mask-ratio", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--json", help="also write the results here")
    args = vars(parser.parse_args())
    ctx = mp.get_context("spawn")
    results = []
    for kind in ("videomae_hf", "medvl_full", "medvl_dual"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(kind, args, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    print(
        f"MAE pretraining, size {args['size']}, {args['frames']} frames x {args['image_size']} px, patch "
        f"{args['patch']}, mask {args['mask_ratio']}, batch {args['batch_size']}, {args['device']}"
        f"{' bf16' if args['bf16'] else ''}; {results[0]['tokens']} tokens, {results[0]['params_m']}M params"
    )
    names = {
        "videomae_hf": "transformers VideoMAEForPreTraining",
        "medvl_full": "medvl mae (decoder: every hidden token)",
        "medvl_dual": f"medvl mae (dual masking, decoder ratio {args['decoder_mask_ratio']})",
    }
    for r in results:
        print(
            f"  {names[r['kind']]:<55} {r['clips_per_s']:>9.2f} clips/s   peak {r['peak_mib']:>9.1f} MiB "
            f"({r['memory']})"
        )
    if args["json"]:
        with open(args["json"], "w") as f:
            json.dump({"args": args, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
