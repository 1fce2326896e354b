"""Decoding cost of the unified (BiomedGPT) model: key/value cache vs recompute, trie-constrained vs free beam search,
and scoring every candidate vs constrained beam search, all in one run on one model.

The model is the `tiny` preset (256 wide, 4+4 layers, ResNet-50 stem) from random init (seed 0) at 128 px with a
4,000-token vocabulary; a random model rarely emits EOS, so free decoding runs the full --gen-tokens (a fixed
workload). The candidate set is --candidates random answers of 1-4 tokens + EOS (the size of a VQA answer list).
Prints seconds per batch and the ratios, and how many outputs fall inside the candidate set. On a shared CPU set
OMP_NUM_THREADS=1 (thread oversubscription inflates every small op).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/unified_generation.py [--batch 4] [--gen-tokens 32] [--beams 4]
        [--candidates 200]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from medvl.models.families import MODEL_FAMILIES
from medvl.models.unified.trie import PrefixTrie

PAD, BOS, EOS, VOCAB = 0, 1, 2, 4000


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Best-of-`repeats` seconds of fn() and its last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    family = MODEL_FAMILIES.get("unified")
    config = family.make_config("tiny", {"vocab_size": VOCAB, "image_size": 128, "pad_id": PAD})
    torch.manual_seed(0)
    model = family.build(config).eval()
    g = torch.Generator().manual_seed(0)
    b = args.batch
    inputs = (
        torch.rand(b, 1, 128, 128, generator=g),
        torch.ones(b, dtype=torch.bool),
        torch.randint(3, VOCAB, (b, 12), generator=g),
        torch.ones(b, 12, dtype=torch.bool),
    )
    rng = random.Random(0)
    candidates = sorted(
        {tuple(rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 4))) + (EOS,) for _ in range(args.candidates)}
    )
    trie = PrefixTrie([list(c) for c in candidates])
    common = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)
    print(
        f"unified tiny, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, batch {b}, "
        f"{args.gen_tokens} new tokens, {args.beams} beams, {len(candidates)} candidates, "
        f"{torch.get_num_threads()} threads"
    )

    rows = []
    for name, kwargs in [("greedy", dict(num_beams=1)), (f"beam {args.beams}", dict(num_beams=args.beams))]:
        t_cache, out_cache = timed(
            lambda kw=kwargs: model.generate(*inputs, max_new_tokens=args.gen_tokens, **common, **kw), args.repeats
        )
        t_full, out_full = timed(
            lambda kw=kwargs: model.generate(*inputs, max_new_tokens=args.gen_tokens, use_cache=False, **common, **kw),
            args.repeats,
        )
        rows.append((f"{name}: cache vs recompute", t_cache, t_full, bool(torch.equal(out_cache, out_full))))

    short = max(len(c) for c in candidates)
    # length_penalty 0: hypotheses ranked by summed log-probability, the criterion score_candidates' argmax uses
    t_free, free = timed(
        lambda: model.generate(*inputs, max_new_tokens=short, num_beams=args.beams, length_penalty=0.0, **common),
        args.repeats,
    )
    t_trie, constrained = timed(
        lambda: model.generate(
            *inputs,
            max_new_tokens=short,
            num_beams=args.beams,
            length_penalty=0.0,
            allowed_tokens=trie.allowed_tokens,
            **common,
        ),
        args.repeats,
    )
    cand = torch.full((len(candidates), short), PAD)
    for i, c in enumerate(candidates):
        cand[i, : len(c)] = torch.tensor(c)
    t_score, scores = timed(lambda: model.score_candidates(*inputs, cand, bos_id=BOS), args.repeats)

    def inside(out: torch.Tensor) -> int:
        return sum(tuple(t for t in row if t != PAD) in set(candidates) for row in out.tolist())

    print(f"{'comparison':34s} {'A s/batch':>10s} {'B s/batch':>10s} {'B/A':>6s}  note")
    for label, a, bb, same in rows:
        print(f"{label:34s} {a:10.3f} {bb:10.3f} {bb / a:6.2f}  identical outputs: {same}")
    print(
        f"{'beam: trie-constrained vs free':34s} {t_trie:10.3f} {t_free:10.3f} {t_free / t_trie:6.2f}  inside the "
        f"candidate set: constrained {inside(constrained)}/{b}, free {inside(free)}/{b}"
    )
    best = scores.argmax(1)
    agree = sum(tuple(t for t in constrained[i].tolist() if t != PAD) == candidates[best[i]] for i in range(b))
    print(
        f"{'score all vs trie-constrained beam':34s} {t_trie:10.3f} {t_score:10.3f} {t_score / t_trie:6.2f}  "
        f"same answer as the best-scored candidate: {agree}/{b}"
    )


if __name__ == "__main__":
    main()
