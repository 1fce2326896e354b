"""Training throughput on 1 and 2 processes (torchrun, gloo, CPU) at the same global batch, and the scaling
efficiency, for the quickstart captioner on a synthetic set.

Each configuration trains the same recipe (`quickstart`, model.size=small, 128 px, two views) for `--steps` optimizer
steps at a global batch of `--global-batch` studies, one CPU thread per process, and is timed from the training
log (the steps after `--warmup` steps, so start-up, data loading into the cache and the final validation are not
counted). The peer of the 2-process run is the 1-process run with the same threads per process; the 1-process run
with as many threads as the 2-process run has in total is printed too, since that is what one would use on one
machine without torchrun.

    .venv/bin/python benchmarks/ddp_scaling.py [--steps 30] [--global-batch 32] [--studies 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, data: Path, processes: int, threads: int, args: argparse.Namespace) -> float:
    """Samples/s of one configuration, from its training log."""
    overrides = [
        f"data.root={data}",
        "data.source=iu_xray",
        f"train.output_dir={out}",
        "model.size=small",
        "model.image_size=128",
        f"data.batch_size={args.global_batch // processes}",
        f"train.global_batch_size={args.global_batch}",
        f"train.max_steps={args.steps}",
        f"train.num_threads={threads}",
        "train.log_every=1",
        "train.eval_max_studies=8",
        "train.progress=false",
        "train.loggers=[jsonl]",
        "train.warmup_steps=5",
        "tokenizer.vocab_size=600",
        "train.eval_every=1000000",
    ]  # no validation inside the timed steps
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "medvl", "train", "quickstart", *overrides]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            "-m",
            "medvl",
            "train",
            "quickstart",
            *overrides,
        ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:8])} ... failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = {r["step"]: r["time"] for r in rows if "train/loss" in r}
    first, last = args.warmup, max(times)
    return (last - first) * args.global_batch / (times[last] - times[first])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="steps not timed (the first epoch fills the image cache: 10 steps for the default 400 studies)",
    )
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--studies", type=int, default=400, help="synthetic studies to generate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "medvl",
                "data",
                "synth",
                "--out",
                str(data),
                "--n",
                str(args.studies),
                "--image-size",
                "128",
                "--workers",
                "2",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        one = run(Path(tmp) / "one", data, 1, 1, args)
        two = run(Path(tmp) / "two", data, 2, 1, args)
        one_two_threads = run(Path(tmp) / "one_2t", data, 1, 2, args)
    print(
        f"captioner/small, 128 px, two views, global batch {args.global_batch}, steps {args.warmup}-{args.steps} "
        f"timed, CPU ({os.cpu_count()} cores)\n"
    )
    print(f"{'configuration':<46}{'samples/s':>10}")
    print(f"{'1 process x 1 thread':<46}{one:>10.1f}")
    print(f"{'2 processes x 1 thread (torchrun, DDP, gloo)':<46}{two:>10.1f}")
    print(f"{'1 process x 2 threads':<46}{one_two_threads:>10.1f}")
    print(f"\nscaling efficiency, 2 processes vs 1 (same threads per process): {two / (2 * one):.0%}")


if __name__ == "__main__":
    main()
