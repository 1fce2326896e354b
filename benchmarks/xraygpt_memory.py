"""Memory and throughput of the XrayGPT family at tiny and small sizes: parameters (trainable vs total), peak RSS,
training samples/s, on the CPU.

Each configuration runs in its own process (so peak RSS is its own): build the model, run `--steps` optimizer steps
of the instructed-report task on random two-view images and synthetic reports (batch `--batch-size`), timed after
two warm-up steps. Configurations:
- tiny, XrayGPT-style freezing: vision encoder and LLM frozen, Q-Former + projection train;
- tiny + LoRA (r 8) on the frozen LLM;
- small as `xraygpt_tiny_synthetic` trains it: everything trainable.
The captioner of the quickstart is printed next to them as the reference peer from the same run.

    .venv/bin/python benchmarks/xraygpt_memory.py [--steps 10] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "xraygpt tiny, frozen vision + LLM": ("xraygpt", "tiny", {}),
    "xraygpt tiny, frozen + LoRA r8 on the LLM": ("xraygpt", "tiny", {"lora_r": 8}),
    "xraygpt small, all trainable (tiny_synthetic)": ("xraygpt", "small", {}),
    "captioner small (the quickstart model)": ("captioner", "small", {}),
}


def measure(family: str, size: str, fields: dict, steps: int, batch_size: int) -> dict:
    """Run in a child process: build, train `steps` steps, report counts, samples/s and peak RSS."""
    import resource
    import time

    import numpy as np
    import torch

    from medvl.data.dataset import Sample, collate
    from medvl.data.tokenizer import encode_report, train_bpe_tokenizer
    from medvl.models.families import MODEL_FAMILIES
    from medvl.tasks import TASKS

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    reports = [
        "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
        "Moderate cardiomegaly with a small left pleural effusion and bibasilar atelectasis.",
    ] * 50
    tok = train_bpe_tokenizer(reports, vocab_size=600)
    fam = MODEL_FAMILIES.get(family)
    cfg = fam.make_config(size, {**fields, "vocab_size": len(tok), "pad_id": tok.pad_token_id})
    model = fam.build(cfg)
    task = TASKS.get(fam.task)()(model, tok)
    rng = np.random.default_rng(0)
    batch = collate(
        [
            Sample(
                str(i),
                rng.integers(0, 255, (2, cfg.image_size, cfg.image_size), dtype=np.uint8),
                [0, 1],
                encode_report(tok, reports[i], cfg.max_len)[0],
                reports[i],
                None,
            )
            for i in range(batch_size)
        ],
        max_views=2,
        pad_id=tok.pad_token_id,
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    start = None
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        task(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "total": total,
        "trainable": trainable,
        "samples_per_s": steps * batch_size / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        family, size, fields = CONFIGS[args.child]
        print(json.dumps(measure(family, size, fields, args.steps, args.batch_size)))
        return
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    print(
        f"{args.steps} training steps of batch {args.batch_size} (two views each), CPU, "
        f"{os.environ.get('BENCH_THREADS', '2')} threads\n"
    )
    print(f"{'configuration':<48}{'total':>10}{'trainable':>11}{'samples/s':>11}{'peak RSS MB':>13}")
    for name in CONFIGS:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{name:<48}{r['total'] / 1e6:>9.2f}M{r['trainable'] / 1e6:>10.2f}M{r['samples_per_s']:>11.1f}"
            f"{r['peak_rss_mb']:>13.0f}"
        )


if __name__ == "__main__":
    main()
