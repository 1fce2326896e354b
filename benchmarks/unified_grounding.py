"""Does a unified (BiomedGPT) model read the image? What reaches its encoder from the ResNet stem, and how much the
answers depend on it, during training.

Trains a recipe (default `biomedgpt_vqa_tiny_synthetic`) with the ordinary `Trainer` and, at step 0 and every
--probe-every steps, measures on fixed batches (the first --probe-size VQA examples of train and of val, in order):

- `in_mean` / `in_std`: the normalized pixels the ResNet receives;
- `stem_mean` / `stem_std`: the ResNet's stage-3 features; `stem_spread` / `patch_spread`: the share of the energy
  of the stem features and of the patch embeddings (after projection, type embedding and LayerNorm) that differs
  between the studies of the batch, sum((x - batch mean)^2) / sum(x^2): 0 = every image looks the same;
- `patch_rms` / `text_rms`: the scale of the image and the instruction tokens entering the encoder;
- `loss` and `gap` (train and val batch): answer loss with each question's image swapped for another study's minus
  the loss with its own image (nats per token): ~0 means the answers do not depend on the pixels;
- `closed_acc` / `closed_acc_swapped` (val batch): teacher-forced accuracy of the first answer token of the closed
  questions (yes / no) with the own and the swapped images;
- `g_<part>`: gradient L2 norm per part (backbone = the ResNet, proj, embed = token / type / position tables and their
  norms, encoder, decoder) before clipping, and the total.

    PYTHONPATH=. .venv/bin/python benchmarks/unified_grounding.py --steps 300 --probe-every 50 [overrides...]

Prints one JSON line per probe. With --run RUN it trains nothing: it answers every VQA question of --split (test) with
the run's best checkpoint, by scoring every candidate answer, once with each question's own image and once with the
image of another study (the next question about another study), and prints overall / closed / open accuracy of both
in percent as [value, 95% CI low, high] (bootstrap over questions) and per question type: a model that reads the
image falls towards the blind prior when the images are swapped. With --probe-run RUN it prints, for the run's best
checkpoint, the own-image answer loss and the swapped-minus-own gap (train and val) and the gradient norm per part,
on --probe-size questions.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medvl.config.experiment import load_experiment  # noqa: E402
from medvl.infer.predictor import load_trained  # noqa: E402
from medvl.models.encoders import normalize_images  # noqa: E402
from medvl.models.unified.model import IMAGE_TYPE  # noqa: E402
from medvl.train.distributed import GlobalBatches  # noqa: E402
from medvl.train.loop import Trainer  # noqa: E402

PARTS = {
    "backbone": ("image_embed.backbone.",),
    "proj": ("image_embed.proj.",),
    "encoder": ("encoder_",),
    "decoder": ("decoder_", "cross_position_bias", "target_position"),
}


def _part(name: str) -> str:
    return next((p for p, prefixes in PARTS.items() if name.startswith(prefixes)), "embed")


def grad_norms(model: torch.nn.Module) -> dict[str, float]:
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq[_part(name)] = sq.get(_part(name), 0.0) + float(p.grad.float().pow(2).sum())
    out = {f"g_{k}": round(v**0.5, 4) for k, v in sorted(sq.items())}
    out["g_total"] = round(sum(sq.values()) ** 0.5, 4)
    return out


def spread(x: torch.Tensor) -> float:
    """Share of sum(x^2) that differs between the rows of the batch (dim 0)."""
    x = x.float()
    return float((x - x.mean(0, keepdim=True)).pow(2).sum() / x.pow(2).sum())


def _answer_loss(task, batch, images) -> tuple[float, torch.Tensor]:  # noqa: ANN001
    """(mean answer-token NLL, logits) of `batch` with `images` in place of its own."""
    prev = task._prev(batch.target_ids)
    prev_mask = torch.cat([torch.ones_like(batch.target_mask[:, :1]), batch.target_mask[:, :-1]], 1)
    logits = task.model(images, batch.image_valid, batch.src_ids, batch.src_mask, prev, prev_mask)
    allowed = task.allowed_mask(batch, logits.shape[-1])
    if allowed is not None:  # the loss the model is trained on: logits outside the candidates' trie masked
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    targets = batch.target_ids.masked_fill(~batch.target_mask, -100)
    return float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)), logits


def _swap(batch) -> torch.Tensor:  # noqa: ANN001
    """Every question gets the image of the next question in the batch that is about another study."""
    studies = [m.get("study", i) for i, m in enumerate(batch.meta)]
    n = len(studies)
    perm = []
    for i in range(n):
        j = next((k % n for k in range(i + 1, i + n) if studies[k % n] != studies[i]), i)
        perm.append(j)
    return batch.images[torch.tensor(perm)]


@torch.no_grad()
def probe(trainer: Trainer, train_batch, val_batch) -> dict[str, float]:  # noqa: ANN001
    model, task = trainer.model, trainer.task
    model.eval()
    c = model.config
    x = normalize_images(train_batch.images, c)
    stem = model.image_embed.backbone(x)[-1]
    patches = model.patch_norm(model.image_embed(x) + model.type_embedding.weight[IMAGE_TYPE])
    text = model.text_norm(model.embed_tokens(train_batch.src_ids))
    out = {
        "in_mean": round(float(x.mean()), 3),
        "in_std": round(float(x.std()), 3),
        "stem_mean": round(float(stem.mean()), 3),
        "stem_std": round(float(stem.std()), 3),
        "stem_spread": round(spread(stem), 4),
        "patch_spread": round(spread(patches), 4),
        "patch_rms": round(float(patches.pow(2).mean().sqrt()), 3),
        "text_rms": round(float(text[train_batch.src_mask].pow(2).mean().sqrt()), 3),
    }
    for name, batch in (("train", train_batch), ("val", val_batch)):
        own, logits = _answer_loss(task, batch, batch.images)
        swapped, swapped_logits = _answer_loss(task, batch, _swap(batch))
        out[f"{name}_loss"], out[f"{name}_gap"] = round(own, 4), round(swapped - own, 4)
        if name == "val":
            closed = torch.tensor([m.get("answer_type") == "closed" for m in batch.meta])
            first = batch.target_ids[:, 0]
            for key, lg in (("closed_acc", logits), ("closed_acc_swapped", swapped_logits)):
                hit = lg[:, 0].argmax(-1) == first
                out[key] = round(float(hit[closed].float().mean()), 3)
            yes = [batch.targets[k] == "yes" for k in range(len(batch)) if closed[k]]
            out["closed_share_yes"] = round(sum(yes) / max(1, len(yes)), 3)
    model.train()
    return out


def fixed_batch(trainer: Trainer, dataset, n: int):  # noqa: ANN001, ANN201
    """The first n VQA examples of `dataset` as one batch."""
    items = [dataset[i] for i in range(len(dataset)) if dataset.examples[dataset.order[i]].task == "vqa"][:n]
    return trainer.task.collate(items).to(trainer.device)


@torch.no_grad()
def swapped_image_accuracy(run: str, split: str, batch_size: int) -> dict[str, Any]:
    """Accuracy of the candidate answers scored with the own and with swapped images (see the module docstring):
    {"own": vqa_accuracy, "swapped": vqa_accuracy}, each with bootstrap 95% CIs and the per-question-type rows."""
    from medvl.data.sources import load_studies
    from medvl.evaluate.vqa import vqa_accuracy

    loaded = load_trained(run, device="cpu")
    task, cfg = loaded.task, loaded.config
    studies = [s for s in load_studies(cfg.data).get(split, []) if s.question and s.answer]
    dataset = task.dataset(studies)
    rows = [k for k in range(len(dataset)) if dataset.examples[dataset.order[k]].task == "vqa"]
    predicted: dict[str, list[str]] = {"own": [], "swapped": []}
    refs, answer_types, question_types = [], [], []
    for start in range(0, len(rows), batch_size):
        batch = task.collate([dataset[k] for k in rows[start : start + batch_size]])
        for name, images in (("own", batch.images), ("swapped", _swap(batch))):
            batch_images, batch.images = batch.images, images
            scores = task.candidate_scores(batch, list(range(len(batch))), "vqa")
            batch.images = batch_images
            predicted[name] += [task.answers[b] for b in scores.argmax(1).tolist()]
        refs += list(batch.targets)
        answer_types += [m.get("answer_type", "open") for m in batch.meta]
        question_types += [m.get("question_type", "") for m in batch.meta]
    return {name: vqa_accuracy(p, refs, answer_types, question_types) for name, p in predicted.items()}


def checkpoint_probe(run: str, n: int) -> dict[str, float]:
    """Of a trained run's best checkpoint: the answer loss with own images and the loss gap with swapped ones on the
    first n questions of every 4th train and val question (eval mode), and the gradient norm per part of that train
    batch's loss (train mode, before clipping)."""
    from medvl.data.sources import load_studies

    torch.manual_seed(0)
    loaded = load_trained(run, device="cpu")
    task, model = loaded.task, loaded.task.model
    splits = load_studies(loaded.config.data)
    out: dict[str, float] = {}
    for split in ("train", "val"):
        dataset = task.dataset([s for s in splits[split] if s.question and s.answer][: 4 * n])
        batch = task.collate([dataset[k] for k in range(0, len(dataset), 4)][:n])
        model.eval()
        with torch.no_grad():
            own, _ = _answer_loss(task, batch, batch.images)
            swapped, _ = _answer_loss(task, batch, _swap(batch))
        out[f"{split}_loss"], out[f"{split}_gap"] = round(own, 4), round(swapped - own, 4)
        if split == "train":
            model.train()
            with torch.enable_grad():
                prev = task._prev(batch.target_ids)
                prev_mask = torch.cat([torch.ones_like(batch.target_mask[:, :1]), batch.target_mask[:, :-1]], 1)
                logits = model(batch.images, batch.image_valid, batch.src_ids, batch.src_mask, prev, prev_mask)
                allowed = task.allowed_mask(batch, logits.shape[-1])
                if allowed is not None:
                    logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
                targets = batch.target_ids.masked_fill(~batch.target_mask, -100)
                F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100).backward()
            out |= grad_norms(model)
    return out


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """Percent accuracies with their CIs, overall / closed / open and per question type, of one vqa_accuracy."""
    out: dict[str, Any] = {}
    for key in ("accuracy", "closed_accuracy", "open_accuracy"):
        if result.get(key) is not None:
            out[key] = [round(100 * result[k], 1) for k in (key, f"{key}_ci_low", f"{key}_ci_high")]
    out["per_question_type"] = {
        qt: {"n": row["n"], "accuracy": round(100 * row["accuracy"], 1)}
        for qt, row in result.get("per_question_type", {}).items()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="biomedgpt_vqa_tiny_synthetic")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--probe-size", type=int, default=64)
    parser.add_argument("--run", default="", help="a trained run: score its questions with own vs swapped images")
    parser.add_argument("--split", default="test")
    parser.add_argument("--probe-run", default="", help="a trained run: loss gap and gradient norms per part")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    args = parser.parse_args()
    if args.probe_run:
        print(json.dumps(checkpoint_probe(args.probe_run, args.probe_size)), flush=True)
        return
    if args.run:
        result = swapped_image_accuracy(args.run, args.split, args.probe_size)
        print(json.dumps({name: _summary(r) for name, r in result.items()}), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_experiment(
            args.recipe,
            [
                f"train.output_dir={tmp}",
                "train.progress=false",
                "train.loggers=[]",
                f"train.max_steps={args.steps}",
                "train.eval_every=0",
                *args.overrides,
            ],
        )
        trainer = Trainer(cfg)
        trainer.model.train()
        train_batch = fixed_batch(trainer, trainer.train_set, args.probe_size)
        val_batch = fixed_batch(trainer, trainer.validator.dataset, args.probe_size)
        print(json.dumps({"step": 0, **probe(trainer, train_batch, val_batch)}), flush=True)
        step = 0
        while step < args.steps:
            epoch = GlobalBatches(len(trainer.train_set), trainer.plan, trainer.state.epoch, cfg.train.seed, 0)
            for micro in trainer._optimizer_steps(epoch):
                batch = micro[0].to(trainer.device)
                out = trainer.train_task(batch)
                out["loss"].backward()
                norms = grad_norms(trainer.model)
                trainer._optimizer_step()
                trainer.state.step_in_epoch += 1
                step = trainer.state.step
                if step % args.probe_every == 0 or step == args.steps:
                    row = {"step": step, "train_loss": round(float(out["loss"].detach()), 4), **norms}
                    row["lr"] = trainer.optimizer.param_groups[0]["lr"]
                    print(json.dumps({**row, **probe(trainer, train_batch, val_batch)}), flush=True)
                if step >= args.steps:
                    break
            trainer.state.epoch, trainer.state.step_in_epoch = trainer.state.epoch + 1, 0


if __name__ == "__main__":
    main()
