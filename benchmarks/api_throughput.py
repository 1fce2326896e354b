"""API throughput (reports/s) and latency (p50/p95) of `medvl serve`, with and without dynamic batching.

One model, one process, one run: the API is served on loopback (uvicorn in a thread, as `medvl serve` runs it) and
HTTP clients post two-view studies of the synthetic set (multipart PNG uploads), 1 and 8 at a time, first with
batching off (--max-batch-size 1: one forward pass per request) and then on (up to 8 requests per forward pass).
Without --checkpoint the quickstart's `small` captioner is built from random init (seed 0) with a tokenizer trained on
the synthetic reports: a random model rarely emits EOS, so every report decodes the full --gen-tokens (a fixed
workload, like benchmarks/train_throughput.py). Pass a trained checkpoint (e.g. runs/quickstart) to time real reports.

    .venv/bin/python benchmarks/api_throughput.py [--checkpoint CKPT] [--requests 48] [--gen-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import torch  # noqa: E402

from medvl.config.experiment import load_experiment  # noqa: E402
from medvl.data.sources import load_studies  # noqa: E402
from medvl.data.tokenizer import tokenizer_to_json, train_bpe_tokenizer  # noqa: E402
from medvl.infer.predictor import load_trained  # noqa: E402
from medvl.models.families import MODEL_FAMILIES  # noqa: E402
from medvl.serve.app import ServeSettings, create_app  # noqa: E402
from medvl.serve.server import running_server  # noqa: E402
from medvl.train.checkpoint import save_checkpoint  # noqa: E402


def random_checkpoint(data: list[str], out: Path) -> Path:
    """The quickstart model (captioner/small) from random init, saved as a medvl checkpoint."""
    cfg = load_experiment("quickstart", data)
    train = load_studies(cfg.data)["train"]
    tok = train_bpe_tokenizer([s.report for s in train], vocab_size=cfg.tokenizer.vocab_size)
    cfg.model = dataclasses.replace(cfg.model, vocab_size=len(tok), pad_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = MODEL_FAMILIES.get("captioner").build(cfg.model)
    meta = {"kind": "benchmark", "step": 0, "config": cfg.to_dict(), "tokenizer": tokenizer_to_json(tok)}
    return save_checkpoint(out, model.state_dict(), meta)


def run_clients(url: str, bodies: list[list[bytes]], clients: int) -> tuple[float, list[float], list[int]]:
    """(seconds, per-request latencies in ms, batch sizes) of posting every study, `clients` at a time."""

    def post(client: httpx.Client, views: list[bytes]) -> tuple[float, int]:
        t0 = time.perf_counter()
        res = client.post("/v1/reports", files=[("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(views)])
        res.raise_for_status()
        return (time.perf_counter() - t0) * 1000, res.json()["batch_size"]

    with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda v: post(client, v), bodies[: 2 * clients]))  # warm-up
        t0 = time.perf_counter()
        results = list(pool.map(lambda v: post(client, v), bodies))
        seconds = time.perf_counter() - t0
    return seconds, [r[0] for r in results], [r[1] for r in results]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: random-init small model)")
    parser.add_argument(
        "--data-root",
        default=None,
        help="synthetic data set to draw requests from (default: 200 studies generated in a temporary folder)",
    )
    parser.add_argument("--requests", type=int, default=48, help="timed requests per setting")
    parser.add_argument("--gen-tokens", type=int, default=64, help="longest report, in tokens")
    parser.add_argument("--num-beams", type=int, default=1, help="beam width (1 = greedy)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests per forward pass when batching")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="batching wait once a batch is ready")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="medvl-bench-") as tmp:
        data = [f"data.root={args.data_root}"] if args.data_root else [f"data.root={tmp}/synth", "data.synth.n=200"]
        ckpt = args.checkpoint or random_checkpoint(data, Path(tmp) / "random")
        loaded = load_trained(ckpt, device="cpu")
        gen = dataclasses.replace(loaded.config.generation, num_beams=args.num_beams, max_new_tokens=args.gen_tokens)
        cfg = load_experiment("quickstart", data)
        studies = load_studies(cfg.data)["test"]
        bodies = [[p.read_bytes() for p in s.image_paths[:2]] for s in studies]
        bodies = (bodies * (args.requests // max(len(bodies), 1) + 1))[: args.requests]
        mc = loaded.config.model
        print(
            f"model: {loaded.config.model_family}/{loaded.config.model_size}, "
            f"{sum(p.numel() for p in loaded.model.parameters()) / 1e6:.2f}M parameters, {mc.image_size} px, "
            f"{len(bodies[0])} views per study; {'greedy' if args.num_beams == 1 else f'{args.num_beams} beams'}, "
            f"up to {args.gen_tokens} tokens; {args.requests} requests per setting; torch threads "
            f"{torch.get_num_threads()}"
        )
        print("\n| dynamic batching | clients | reports/s | p50 latency (ms) | p95 latency (ms) | mean batch |")
        print("|---|---|---|---|---|---|")
        for batching in (False, True):
            settings = ServeSettings(
                max_batch_size=args.max_batch_size if batching else 1, max_wait_ms=args.max_wait_ms
            )
            with running_server(create_app(loaded, gen, settings)) as url:
                for clients in (1, 8):
                    seconds, latencies, sizes = run_clients(url, bodies, clients)
                    mode = f"on (up to {args.max_batch_size})" if batching else "off"
                    print(
                        f"| {mode} | {clients} | {len(bodies) / seconds:.1f} | {percentile(latencies, 50):.0f} | "
                        f"{percentile(latencies, 95):.0f} | {statistics.mean(sizes):.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
