"""Training and generation throughput of the quickstart captioner next to an HF VisionEncoderDecoderModel.

Both models are built from random init and run on the SAME batches of the synthetic data set in the same process,
their steps interleaved (ours, peer, ours, peer...) so that a machine shared with other jobs slows both alike; the
ratios are what to quote. The peer is a ViT encoder + GPT-2 decoder with cross-attention at medvl's `small` widths,
its depth and feed-forward width chosen so that its parameter count is within 10% of medvl's (printed). The peer
sees one image per study (VisionEncoderDecoderModel has no multi-view input); medvl is measured with its two views
(as the quickstart trains) and with the frontal view only (like for like). Generation is timed at a fixed length
(EOS suppressed on both sides) so both decode the same number of tokens. Each figure is the median over the timed
rounds, in wall-clock time and in this process's CPU time: on a machine that other jobs oversubscribe, the CPU-time
ratio is the steadier comparison of the two implementations.

Efficiency: the FLOPs of one training step (forward + backward, counted by `torch.utils.flop_counter`) divided by its
time, next to this CPU's measured matmul peak (the best of a few 2048 x 2048 `torch.mm` in the benchmark's precision),
as a fraction (MFU). Generation floor: the time a frontal-only generation of one batch cannot go below with medvl's
weights (its encoder and its decoder's linear layers alone, once per token), and so the most it could be faster than
the peer.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--batch-size 16] [--gen-tokens 64]
        [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from medvl.config.experiment import load_experiment  # noqa: E402
from medvl.data.dataset import ReportDataset, check_studies, collate  # noqa: E402
from medvl.data.sources import load_studies  # noqa: E402
from medvl.data.tokenizer import train_bpe_tokenizer  # noqa: E402
from medvl.models.families import MODEL_FAMILIES  # noqa: E402
from medvl.tasks.report_generation import ReportGenerationTask  # noqa: E402


def build_peer(cfg, vocab_size: int, pad_id: int, bos_id: int, encoder_layers: int, ffn_mult: int):  # noqa: ANN001, ANN201
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    m = cfg.model
    encoder = ViTConfig(
        image_size=m.image_size,
        patch_size=16,
        num_channels=1,
        hidden_size=m.d_model,
        num_hidden_layers=encoder_layers,
        num_attention_heads=m.n_heads,
        intermediate_size=m.d_model * ffn_mult,
    )
    decoder = GPT2Config(
        vocab_size=vocab_size,
        n_positions=m.max_len,
        n_embd=m.d_model,
        n_layer=m.n_layers,
        n_head=m.n_heads,
        n_inner=m.d_model * ffn_mult,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        pad_token_id=pad_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = bos_id, pad_id
    return VisionEncoderDecoderModel(config=config)


def matched_peer(cfg, vocab_size: int, pad_id: int, bos_id: int, target: int):  # noqa: ANN001, ANN201
    """The peer (ViT depth 1..6, feed-forward 2x or 4x) whose parameter count is closest to `target`."""
    best = None
    for layers in range(1, 7):
        for mult in (2, 4):
            peer = build_peer(cfg, vocab_size, pad_id, bos_id, layers, mult)
            gap = abs(sum(p.numel() for p in peer.parameters()) - target)
            if best is None or gap < best[0]:
                best = (gap, peer)
    return best[1]


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` n x n matmuls in `dtype`: the practical peak of this CPU at these threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def step_flops(fn) -> int:  # noqa: ANN001
    """FLOPs of one call of `fn` (matmuls, convolutions, attention), forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def generation_floor(model, batch, beams: int, tokens: int, autocast, repeats: int = 5) -> float:  # noqa: ANN001
    """Seconds that a frontal-only generation of `batch` cannot go below with this model's weights: its encoder
    forward, the cross-attention key/value projections of the memory, and `tokens` times the decoder's linear layers
    (the output projection included) on random rows of the step's shape, with nothing else (no attention, LayerNorm,
    cache or search). The median over `repeats`."""
    import torch.nn.functional as F

    decoder = model.decoder
    rows = batch.images.shape[0] * beams
    per_step = [  # every linear layer a step runs; the cross-attention key/value projections run once, below
        m
        for layer in decoder.layers
        for m in layer.modules()
        if isinstance(m, torch.nn.Linear) and m is not layer.cross_attn.kv
    ]
    inputs = [torch.randn(rows, m.in_features) for m in per_step]
    head_in = torch.randn(rows, decoder.lm_head.in_features)

    @torch.inference_mode()
    def run() -> None:
        with autocast():
            memory, _ = model.encode(batch.images[:, :1], batch.view_ids[:, :1], batch.view_mask[:, :1])
            for layer in decoder.layers:
                layer.cross_attn.kv(memory)
            for _ in range(tokens):
                for m, x in zip(per_step, inputs, strict=True):
                    F.linear(x, m.weight, m.bias)
                F.linear(head_in, decoder.lm_head.weight)

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: list, repeats: int) -> list[tuple[float, float]]:  # noqa: ANN001
    """(wall seconds, CPU seconds) per call of each of `fns`, run in turn (one warm-up round, then `repeats`
    rounds), each the median over the rounds: on a machine shared with other jobs a round that lost the CPU to them
    is an outlier the median ignores. CPU seconds (this process, all its threads) do not count time spent waiting
    for a core, so they compare the two implementations' work even when the machine is oversubscribed."""
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for round_ in range(repeats + 1):
        for i, fn in enumerate(fns):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if round_:
                walls[i].append(time.perf_counter() - wall)
                cpus[i].append(time.process_time() - cpu)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data/synth", help="synthetic data set (generated if missing)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-tokens", type=int, default=64, help="tokens generated per report")
    parser.add_argument("--gen-batches", type=int, default=5, help="timed generation batches per setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, both models")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_experiment("quickstart", [f"data.root={args.data_root}"])
    studies = load_studies(cfg.data)
    train, _ = check_studies(studies["train"], strict=False)
    tok = train_bpe_tokenizer([s.report for s in train], vocab_size=cfg.tokenizer.vocab_size)
    cfg.model = dataclasses.replace(cfg.model, vocab_size=len(tok), pad_id=tok.pad_token_id)
    ds = ReportDataset(train[: args.batch_size * 4], tok, cfg.model.image_size, cfg.model.max_views, cfg.model.max_len)
    batches = [
        collate([ds[i] for i in range(k, k + args.batch_size)], cfg.model.max_views)
        for k in range(0, args.batch_size * 4, args.batch_size)
    ]

    ours = MODEL_FAMILIES.get("captioner").build(cfg.model)
    n_ours = sum(p.numel() for p in ours.parameters())
    peer = matched_peer(cfg, len(tok), tok.pad_token_id, tok.bos_token_id, n_ours)
    n_peer = sum(p.numel() for p in peer.parameters())
    task = ReportGenerationTask(ours, tok)
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    )
    # The same optimizer on both sides (torch's fused AdamW, which medvl's trainer uses): the ratio compares models.
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-4, fused=True)
    step_count = {"i": 0}

    def next_batch():  # noqa: ANN202
        step_count["i"] += 1
        return batches[step_count["i"] % len(batches)]

    def frontal_only(b):  # noqa: ANN001, ANN202
        return dataclasses.replace(b, images=b.images[:, :1], view_ids=b.view_ids[:, :1], view_mask=b.view_mask[:, :1])

    def step_ours(views: int):  # noqa: ANN202
        def run() -> None:
            b = next_batch()
            b = b if views == 2 else frontal_only(b)
            with autocast():
                loss = task(b)["loss"]
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)

        return run

    def step_peer() -> None:
        b = next_batch()
        labels = b.input_ids[:, 1:].masked_fill(b.attention_mask[:, 1:] == 0, -100)
        with autocast():
            out = peer(pixel_values=b.images[:, 0], labels=labels, decoder_attention_mask=b.attention_mask[:, :-1])
        out.loss.backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)

    bs = args.batch_size
    peak = matmul_peak(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    flops = [step_flops(fn) for fn in (step_ours(2), step_ours(1), step_peer)]
    timed = interleaved([step_ours(2), step_ours(1), step_peer], args.steps)
    times, cpu_times = [w for w, _ in timed], [c for _, c in timed]
    rows = [
        ("medvl captioner, 2 views", n_ours, times[0], cpu_times[0], flops[0]),
        ("medvl captioner, frontal only", n_ours, times[1], cpu_times[1], flops[1]),
        ("HF VisionEncoderDecoder (ViT+GPT-2)", n_peer, times[2], cpu_times[2], flops[2]),
    ]

    ours.eval()
    peer.eval()
    never = len(tok) + 7  # an id no model can produce: EOS never fires, every report has gen-tokens tokens

    def gen_ours(beams: int, views: int):  # noqa: ANN202
        @torch.inference_mode()
        def run() -> None:
            b = next_batch()
            b = b if views == 2 else frontal_only(b)
            with autocast():
                ours.generate(
                    b.images,
                    b.view_ids,
                    b.view_mask,
                    bos_id=tok.bos_token_id,
                    eos_id=never,
                    max_new_tokens=args.gen_tokens,
                    num_beams=beams,
                )

        return run

    def gen_peer(beams: int):  # noqa: ANN202
        @torch.inference_mode()
        def run() -> None:
            b = next_batch()
            with autocast():
                peer.generate(
                    pixel_values=b.images[:, 0],
                    max_new_tokens=args.gen_tokens,
                    min_new_tokens=args.gen_tokens,
                    num_beams=beams,
                    do_sample=False,
                    eos_token_id=None,
                    use_cache=True,
                )

        return run

    gen_rows = []
    for beams in (1, 3):
        names = [
            f"medvl, 2 views, beams={beams}",
            f"medvl, frontal only, beams={beams}",
            f"HF VisionEncoderDecoder, beams={beams}",
        ]
        for name, (seconds, cpu) in zip(
            names, interleaved([gen_ours(beams, 2), gen_ours(beams, 1), gen_peer(beams)], args.gen_batches), strict=True
        ):
            gen_rows.append((name, bs / seconds, bs / cpu))
    floors = {beams: generation_floor(ours, batches[0], beams, args.gen_tokens, autocast) for beams in (1, 3)}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}"
        f", batch {bs}, image {cfg.model.image_size}px, reports padded to the "
        f"batch's longest, {args.steps} timed steps each (interleaved), load average {load:.1f}"
    )
    print(f"matmul peak of this CPU: {peak / 1e9:.1f} GFLOP/s ({args.precision} 2048^3 torch.mm)\n")
    print(
        f"{'training':<40}{'params':>10}{'samples/s':>12}{'per CPU s':>11}{'GFLOP/step':>12}{'GFLOP/s':>10}"
        f"{'of peak':>9}"
    )
    for name, n, seconds, cpu, f in rows:
        print(
            f"{name:<40}{n / 1e6:>9.2f}M{bs / seconds:>12.1f}{bs / cpu:>11.1f}{f / 1e9:>12.1f}"
            f"{f / seconds / 1e9:>10.1f}{f / seconds / peak:>9.1%}"
        )
    for label, t in (("wall", times), ("CPU", cpu_times)):
        print(f"ratio medvl / peer ({label}): 2 views {t[2] / t[0]:.2f}x, frontal only {t[2] / t[1]:.2f}x")
    print(f"\n{'generation (' + str(args.gen_tokens) + ' tokens/report)':<40}{'reports/s':>12}{'per CPU s':>11}")
    for name, rate, cpu_rate in gen_rows:
        print(f"{name:<40}{rate:>12.1f}{cpu_rate:>11.1f}")
    for beams, k in ((1, 0), (3, 3)):
        for label, col in (("wall", 1), ("CPU", 2)):
            print(
                f"ratio medvl / peer, beams={beams} ({label}): 2 views {gen_rows[k][col] / gen_rows[k + 2][col]:.2f}x, "
                f"frontal only {gen_rows[k + 1][col] / gen_rows[k + 2][col]:.2f}x"
            )
    print(
        "\nfloor of medvl's frontal-only generation: the encoder plus the decoder's linear layers alone for every token"
        " (no attention, LayerNorm, cache or search)"
    )
    for beams, k in ((1, 0), (3, 3)):
        peer_seconds, ours_seconds = bs / gen_rows[k + 2][1], bs / gen_rows[k + 1][1]
        print(
            f"beams={beams}: floor {floors[beams] * 1e3:.0f} ms per batch, medvl {ours_seconds * 1e3:.0f} ms, "
            f"peer {peer_seconds * 1e3:.0f} ms: at most {peer_seconds / floors[beams]:.2f}x the peer with these weights"
        )


if __name__ == "__main__":
    main()
