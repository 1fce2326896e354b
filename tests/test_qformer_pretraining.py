"""BLIP-2's first stage for the xraygpt Q-Former at tiny size: the three losses, their attention masks, a run of the
task through the runner, and a report model started from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medvl.config.experiment import load_experiment
from medvl.models.qformer_text import _joint_mask, first_stage_losses
from medvl.tasks.qformer_pretraining import QFormerPretrainingTask
from medvl.tasks.report_generation import ReportTask
from medvl.train.loop import Trainer, train

from .conftest import tiny_overrides
from .test_xraygpt import XRAYGPT, _batch, _model, tokenizer  # noqa: F401 - the fixture is used by name


def test_joint_masks_follow_blip2() -> None:
    text = torch.tensor([[1, 1, 0]])  # two real tokens, one pad
    both = _joint_mask(text, 2, causal=False)[0, 0]
    assert both[:, :4].all() and not both[:, 4].any()  # everything sees queries and real text, nothing the pad
    gen = _joint_mask(text, 2, causal=True)[0, 0]
    assert gen[:2, :2].all() and not gen[:2, 2:].any()  # queries see queries only
    assert gen[2:, :2].all()  # text sees every query
    assert gen[2, 2] and not gen[2, 3] and gen[3, 2:4].all() and not gen[4, 4]  # earlier text only, never the pad


def test_losses_reach_every_part_and_fall(tokenizer) -> None:  # noqa: F811
    model = _model(tokenizer, qformer_text=True, freeze_vision=False)
    batch = _batch(tokenizer, n=4)
    task = QFormerPretrainingTask(model, tokenizer)
    model.train()
    torch.manual_seed(0)
    out = task(batch)
    assert set(out) >= {"loss", "itc", "itm", "itg"} and all(torch.isfinite(out[k]) for k in ("itc", "itm", "itg"))
    out["loss"].backward()
    for part in (
        "encoder.",
        "query_tokens",
        "qformer.encoder.layer.0.crossattention.",
        "qformer.encoder.layer.0.intermediate.",
        "qformer_text.token_embed",
        "qformer_text.itm_head",
        "qformer_text.temp",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and all(g is not None and float(g.abs().sum()) > 0 for g in grads), part
    assert all(p.grad is None for p in model.llm.parameters())  # stage 1 never runs the LLM
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = float(out["loss"].detach())
    for _ in range(3):
        optimizer.step()
        optimizer.zero_grad()
        torch.manual_seed(0)
        out = task(batch)
        out["loss"].backward()
    assert float(out["loss"].detach()) < first


def test_one_study_has_no_negatives_but_still_trains(tokenizer) -> None:  # noqa: F811
    model = _model(tokenizer, qformer_text=True)
    batch = _batch(tokenizer, n=1)
    out = first_stage_losses(
        model, batch.images, batch.view_ids, batch.view_mask, batch.input_ids, batch.attention_mask
    )
    assert float(out["itc_top1"]) == 1.0 and all(torch.isfinite(out[k]) for k in ("itc", "itm", "itg"))


def test_the_task_needs_the_text_side(tokenizer) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="model.qformer_text=true"):
        QFormerPretrainingTask(_model(tokenizer), tokenizer)
    with pytest.raises(ValueError, match="qformer_text needs model.bridge=qformer"):
        _model(tokenizer, qformer_text=True, bridge="mlp")


def test_pretrain_then_report_training_starts_from_its_qformer(synth_root: Path, tmp_path: Path) -> None:
    stage1 = tmp_path / "stage1"
    cfg = load_experiment(
        "xraygpt_qformer_pretrain_tiny_synthetic",
        tiny_overrides(synth_root, stage1, "train.max_steps=2", "train.eval_every=2"),
    )
    assert cfg.task_name == "qformer_pretraining"
    summary = train(cfg)
    assert {"loss", "itc", "itm", "itg", "itc_top1"} <= set(summary["final_val_metrics"])
    pretrained = load_file(stage1 / "checkpoints" / "last" / "model.safetensors")
    assert any(k.startswith("qformer_text.") for k in pretrained)
    report = Trainer(
        load_experiment(
            "xraygpt_tiny_synthetic",
            tiny_overrides(
                synth_root,
                tmp_path / "stage2",
                *XRAYGPT,
                "model.bridge=qformer",
                "train.max_steps=1",
                f"train.init_from={stage1}",
            ),
        )
    )
    assert isinstance(report.task, ReportTask) and report.model.qformer_text is None
    state = report.model.state_dict()
    for key in (
        "query_tokens",
        "qformer.encoder.layer.0.crossattention.attention.query.weight",
        "encoder.patch_embed.weight",
    ):
        assert torch.equal(state[key], pretrained[key]), key
