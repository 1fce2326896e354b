"""Training and generation throughput of the quickstart captioner next to an HF VisionEncoderDecoderModel.

Both models are built from random init at matched size (the peer: a ViT encoder + GPT-2 decoder with cross-attention,
widths and depths set to medvl's `small` preset) and run on the SAME batches of the synthetic data set in the same
process, so the figures are comparable. The peer sees one image per study (VisionEncoderDecoderModel has no multi-view
input); medvl is measured both with its two views (as the quickstart trains) and with the frontal view only (like for
like). Generation is timed at a fixed length (EOS suppressed on both sides) so both decode the same number of tokens.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--batch-size 16] [--gen-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from medvl.config.experiment import load_experiment  # noqa: E402
from medvl.data.dataset import ReportDataset, check_studies, collate  # noqa: E402
from medvl.data.sources import load_studies  # noqa: E402
from medvl.data.tokenizer import train_bpe_tokenizer  # noqa: E402
from medvl.models.families import MODEL_FAMILIES  # noqa: E402
from medvl.tasks.report_generation import ReportGenerationTask  # noqa: E402


def build_peer(cfg, vocab_size: int, pad_id: int, bos_id: int):  # noqa: ANN001, ANN201
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    m = cfg.model
    encoder = ViTConfig(image_size=m.image_size, patch_size=16, num_channels=1, hidden_size=m.d_model,
                        num_hidden_layers=max(2, m.n_layers), num_attention_heads=m.n_heads,
                        intermediate_size=m.d_model * m.ffn_mult)
    decoder = GPT2Config(vocab_size=vocab_size, n_positions=m.max_len, n_embd=m.d_model, n_layer=m.n_layers,
                         n_head=m.n_heads, add_cross_attention=True, is_decoder=True, bos_token_id=bos_id,
                         eos_token_id=bos_id, pad_token_id=pad_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = bos_id, pad_id
    return VisionEncoderDecoderModel(config=config)


def timed(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data/synth", help="synthetic data set (generated if missing)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-tokens", type=int, default=64, help="tokens generated per report")
    parser.add_argument("--gen-batches", type=int, default=2, help="timed generation batches per setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
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
    batches = [collate([ds[i] for i in range(k, k + args.batch_size)], cfg.model.max_views)
               for k in range(0, args.batch_size * 4, args.batch_size)]

    ours = MODEL_FAMILIES.get("captioner").build(cfg.model)
    peer = build_peer(cfg, len(tok), tok.pad_token_id, tok.bos_token_id)
    task = ReportGenerationTask(ours, tok)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-4)
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
            loss = task(b)["loss"]
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
        return run

    def step_peer() -> None:
        b = next_batch()
        labels = b.input_ids[:, 1:].masked_fill(b.attention_mask[:, 1:] == 0, -100)
        out = peer(pixel_values=b.images[:, 0], labels=labels, decoder_attention_mask=b.attention_mask[:, :-1])
        out.loss.backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)

    bs = args.batch_size
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    rows = [
        ("medvl captioner, 2 views", n_ours, bs / timed(step_ours(2), args.steps)),
        ("medvl captioner, frontal only", n_ours, bs / timed(step_ours(1), args.steps)),
        ("HF VisionEncoderDecoder (ViT+GPT-2)", n_peer, bs / timed(step_peer, args.steps)),
    ]

    ours.eval()
    peer.eval()
    never = len(tok) + 7  # an id no model can produce: EOS never fires, every report has gen-tokens tokens

    def gen_ours(beams: int, views: int):  # noqa: ANN202
        @torch.inference_mode()
        def run() -> None:
            b = next_batch()
            b = b if views == 2 else frontal_only(b)
            ours.generate(b.images, b.view_ids, b.view_mask, bos_id=tok.bos_token_id, eos_id=never,
                          max_new_tokens=args.gen_tokens, num_beams=beams)
        return run

    def gen_peer(beams: int):  # noqa: ANN202
        @torch.inference_mode()
        def run() -> None:
            b = next_batch()
            peer.generate(pixel_values=b.images[:, 0], max_new_tokens=args.gen_tokens, min_new_tokens=args.gen_tokens,
                          num_beams=beams, do_sample=False, eos_token_id=None, use_cache=True)
        return run

    gen_rows = []
    for beams in (1, 3):
        gen_rows.append((f"medvl, 2 views, beams={beams}", bs / timed(gen_ours(beams, 2), args.gen_batches)))
        gen_rows.append((f"medvl, frontal only, beams={beams}", bs / timed(gen_ours(beams, 1), args.gen_batches)))
        gen_rows.append((f"HF VisionEncoderDecoder, beams={beams}", bs / timed(gen_peer(beams), args.gen_batches)))

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}, image "
          f"{cfg.model.image_size}px, reports padded to the batch's longest, {args.steps} timed steps\n")
    print(f"{'training':<40}{'params':>10}{'samples/s':>12}")
    for name, n, rate in rows:
        print(f"{name:<40}{n / 1e6:>9.2f}M{rate:>12.1f}")
    print(f"\n{'generation (' + str(args.gen_tokens) + ' tokens/report)':<40}{'reports/s':>22}")
    for name, rate in gen_rows:
        print(f"{name:<40}{rate:>22.1f}")


if __name__ == "__main__":
    main()
