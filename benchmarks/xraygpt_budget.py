"""Training-step time of xraygpt configurations next to the quickstart captioner, interleaved in one process.

Each configuration (a recipe plus dotted overrides) gets its own `Trainer` (its recipe's precision, batch size and
data, the ordinary training step: forward, backward, clipping, AdamW); their steps alternate (quickstart, variant 1,
variant 2, quickstart, ...) so a machine shared with other jobs slows all alike, and the ratios are what to quote.
For each it prints the median step time, its ratio to the quickstart's, the sequence length the model reads (image
tokens included, for the xraygpt family) and how many of its steps fit in the time of the quickstart's
`qs_steps` (1,000: 8 epochs of 125 steps).

With `--validate` it also times one validation pass of each configuration (its recipe's `eval_max_studies` and
decoding: the quickstart's 200 studies with 3-beam search, the xraygpt recipe's 100 greedy) and estimates each run's
whole training time as its own steps x step time + its validations (as many as `Trainer.fit` runs) x their time, the
figure a user waits for; the quickstart's is the budget.

    PYTHONPATH=. .venv/bin/python benchmarks/xraygpt_budget.py --steps 10 --validate \
        --variant "model.merge_size=1" --variant "model.bridge=qformer"

The default variants are the xraygpt_tiny_synthetic recipe as shipped and the recipe before issue 17's sweep (a
4-layer Llama reading 2x2-merged patch tokens).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medvl.config.experiment import load_experiment  # noqa: E402
from medvl.train.distributed import GlobalBatches  # noqa: E402
from medvl.train.loop import Trainer  # noqa: E402


def make_trainer(recipe: str, overrides: list[str], out: str) -> Trainer:
    cfg = load_experiment(
        recipe,
        [f"train.output_dir={out}", "train.progress=false", "train.loggers=[]", *overrides],
    )
    trainer = Trainer(cfg)
    trainer.model.train()
    return trainer


def batches(trainer: Trainer):  # noqa: ANN201
    epoch = 0
    while True:
        plan = GlobalBatches(len(trainer.train_set), trainer.plan, epoch, trainer.cfg.train.seed, 0)
        yield from trainer._optimizer_steps(plan)
        epoch += 1


def sequence_length(trainer: Trainer, micro: list) -> float:  # noqa: ANN001
    """Mean tokens per study the model's decoder reads in this step (prompt, image slots and report for xraygpt)."""
    task, batch = trainer.task, micro[0]
    if not hasattr(task, "_sequences"):
        return float(batch.attention_mask.sum(1).float().mean())
    prompt = task.template.single_turn(task.template.prompts[0])
    seq = task._sequences([prompt] * len(batch), task._answers(batch), False)
    return float(seq["attention_mask"].sum(1).float().mean())


def validations(trainer: Trainer) -> int:
    """How many validation passes `Trainer.fit` runs: every `eval_every` steps, or at each epoch's end when it is 0,
    and always at the last step."""
    total, every = trainer.total_steps, trainer.cfg.train.eval_every
    per_epoch = len(trainer.train_set) // trainer.plan.global_batch
    due = (lambda s: s % every == 0) if every else (lambda s: s % per_epoch == 0)
    return sum(1 for s in range(1, total + 1) if due(s) or s == total)


def validation_seconds(trainer: Trainer) -> float:
    """Wall seconds of one validation pass with the run's own settings (studies, decoding, precision)."""
    trainer.model.eval()
    t0 = time.perf_counter()
    trainer.validate()
    seconds = time.perf_counter() - t0
    trainer.model.train()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--recipe", default="xraygpt_tiny_synthetic")
    parser.add_argument("--variant", action="append", default=None, help="space-separated overrides of --recipe")
    parser.add_argument("--qs-steps", type=int, default=1000, help="the quickstart's optimizer steps")
    parser.add_argument("--validate", action="store_true", help="also time one validation pass of each")
    args = parser.parse_args()
    variants = args.variant if args.variant is not None else ["", "model.llm_depth=4 model.merge_size=2"]
    configs = [("quickstart", [])] + [(args.recipe, v.split()) for v in variants]
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i, (recipe, overrides) in enumerate(configs):
            trainer = make_trainer(recipe, overrides, os.path.join(tmp, str(i)))
            runs.append((recipe, overrides, trainer, batches(trainer)))
        times: list[list[float]] = [[] for _ in runs]
        lengths = [0.0] * len(runs)
        for step in range(args.steps + 1):
            for i, (_, _, trainer, it) in enumerate(runs):
                micro = next(it)
                if step == 0:
                    lengths[i] = sequence_length(trainer, micro)
                t0 = time.perf_counter()
                trainer._train_step(micro)
                if step:  # the first step warms up allocators and kernels
                    times[i].append(time.perf_counter() - t0)
        val_s = [validation_seconds(trainer) if args.validate else 0.0 for _, _, trainer, _ in runs]
    base = statistics.median(times[0])
    budget = args.qs_steps * base + validations(runs[0][2]) * val_s[0]
    header = ("params", "prec", "tokens", "step s", "ratio", "steps in budget")
    if args.validate:
        header += ("steps", "vals", "val s", "train s (est.)", "vs budget")
    print(f"{'configuration':62s} " + " ".join(f"{h:>{max(len(h), 7)}s}" for h in header))
    for (recipe, overrides, trainer, _), ts, length, vs in zip(runs, times, lengths, val_s, strict=True):
        median = statistics.median(ts)
        params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
        name = " ".join([recipe, *overrides])
        row = (
            f"{name:62s} {params:6.2f}M {trainer.precision:>7s} {length:7.0f} {median:7.3f} {median / base:7.2f} "
            f"{round(args.qs_steps * base / median):15d}"
        )
        if args.validate:
            n = validations(trainer)
            total = trainer.total_steps * median + n * vs
            row += f" {trainer.total_steps:7d} {n:7d} {vs:7.1f} {total:14.0f} {total / budget:9.2f}"
        print(row)


if __name__ == "__main__":
    main()
