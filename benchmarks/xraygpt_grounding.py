"""Does an xraygpt model read the image? What reaches its LLM, and how much the LLM uses it, during training.

Trains a recipe (default `xraygpt_tiny_synthetic`) with the ordinary `Trainer` and, at step 0 and every
--probe-every steps, measures on one fixed training batch:

- `img_rms` / `txt_rms`: root-mean-square of the image embeddings fed to the LLM and of the LLM's text token
  embeddings (the scale the two kinds of input arrive at);
- `spread_vision` / `spread_img`: the share of the energy of the vision tokens (bridge input) and of the image
  embeddings (bridge output) that differs between the studies of the batch, sum((x - batch mean)^2) / sum(x^2):
  0 = every study looks the same;
- `attn_img`: attention mass that report tokens put on the image positions, averaged over layers and heads (the LLM
  is switched to eager attention for this one forward pass);
- `gap`: answer loss with each study's images shuffled to another study minus the loss with its own images (nats
  per token): ~0 means the LLM does not use the pixels;
- `g_<part>`: gradient L2 norm per part (encoder, vision extras = ln_vision/pos/view embeddings, bridge = Q-Former
  and query tokens, proj, llm) before clipping, and the pre-clip total.

    PYTHONPATH=. .venv/bin/python benchmarks/xraygpt_grounding.py --steps 200 --probe-every 50 [overrides...]

Prints one JSON line per probe.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medvl.config.experiment import load_experiment  # noqa: E402
from medvl.tasks.instructed_report import IGNORE  # noqa: E402
from medvl.train.loop import Trainer  # noqa: E402

PARTS = {
    "encoder": ("encoder.",),
    "vision_extra": ("ln_vision.", "pos_embed", "view_embed."),
    "bridge": ("qformer.", "query_tokens", "bridge."),
    "proj": ("proj.",),
    "llm": ("llm.",),
}


def _part(name: str) -> str:
    return next((p for p, prefixes in PARTS.items() if name.startswith(prefixes)), "other")


def grad_norms(model: torch.nn.Module) -> dict[str, float]:
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq[_part(name)] = sq.get(_part(name), 0.0) + float(p.grad.float().pow(2).sum())
    out = {f"g_{k}": round(v**0.5, 4) for k, v in sq.items()}
    out["g_total"] = round(sum(sq.values()) ** 0.5, 4)
    return out


def spread(x: torch.Tensor) -> float:
    """Share of sum(x^2) that differs between the rows of the batch (dim 0)."""
    x = x.float()
    return float((x - x.mean(0, keepdim=True)).pow(2).sum() / x.pow(2).sum())


@torch.no_grad()
def probe(trainer: Trainer, batch) -> dict[str, float]:  # noqa: ANN001
    model, task = trainer.model, trainer.task
    model.eval()
    prompts = [task.template.single_turn(task.template.prompts[0])] * len(batch)
    seq = task._sequences(prompts, task._answers(batch), False)
    feats, _ = model.vision_tokens(batch.images, batch.view_ids, batch.view_mask)
    image = model.encode_images(batch.images, batch.view_ids, batch.view_mask)  # [B, Q, d]
    text = model.llm.get_input_embeddings().weight
    out = {
        "img_rms": float(image.pow(2).mean().sqrt()),
        "txt_rms": float(text.pow(2).mean().sqrt()),
        "spread_vision": spread(feats),
        "spread_img": spread(image),
    }

    def loss(images, view_ids, view_mask, attentions=False):  # noqa: ANN001, ANN202
        embeds = model._embed(images, view_ids, view_mask, seq["input_ids"], seq["image_mask"])
        res = model.llm(
            inputs_embeds=embeds, attention_mask=seq["attention_mask"], use_cache=False, output_attentions=attentions
        )
        targets = seq["labels"][:, 1:]
        ce = F.cross_entropy(res.logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return float(ce), res

    own, res = _eager(model, lambda: loss(batch.images, batch.view_ids, batch.view_mask, True))
    perm = torch.roll(torch.arange(len(batch)), 1)
    shuffled, _ = loss(batch.images[perm], batch.view_ids[perm], batch.view_mask[perm])
    answer = seq["labels"] != IGNORE  # [B, T]
    img = seq["image_mask"].float()  # [B, T]
    masses = [(att.mean(1) @ img[:, :, None])[..., 0][answer].mean() for att in res.attentions]  # per layer
    out.update(
        loss=own,
        gap=shuffled - own,
        attn_img=float(torch.stack(masses).mean()),
        attn_img_per_layer=[round(float(m), 3) for m in masses],
    )
    model.train()
    return out


def _eager(model, fn):  # noqa: ANN001, ANN202
    llm = model.llm
    before = llm.config._attn_implementation
    llm.set_attn_implementation("eager")
    try:
        return fn()
    finally:
        llm.set_attn_implementation(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="xraygpt_tiny_synthetic")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.bridge=mlp")
    args = parser.parse_args()
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
        loader_steps = trainer._optimizer_steps
        from medvl.train.distributed import GlobalBatches  # noqa: PLC0415 - only here

        fixed = None
        step = 0
        while step < args.steps:
            epoch = GlobalBatches(len(trainer.train_set), trainer.plan, trainer.state.epoch, cfg.train.seed, 0)
            for micro in loader_steps(epoch):
                batch = micro[0].to(trainer.device)
                if fixed is None:
                    fixed = batch
                    print(json.dumps({"step": 0, **probe(trainer, fixed)}), flush=True)
                out = trainer.train_task(batch)
                out["loss"].backward()
                norms = grad_norms(trainer.model)
                trainer._optimizer_step()
                trainer.state.step_in_epoch += 1
                step = trainer.state.step
                if step % args.probe_every == 0 or step == args.steps:
                    print(
                        json.dumps(
                            {
                                "step": step,
                                "train_loss": round(float(out["loss"].detach()), 4),
                                **norms,
                                "lr": trainer.optimizer.param_groups[0]["lr"],
                                **probe(trainer, fixed),
                            }
                        ),
                        flush=True,
                    )
                if step >= args.steps:
                    break
            trainer.state.epoch, trainer.state.step_in_epoch = trainer.state.epoch + 1, 0


if __name__ == "__main__":
    main()
