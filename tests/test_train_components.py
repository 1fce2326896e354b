"""Runner components: checkpoint files, optimizer groups, LR schedules, EMA, loggers."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medvl.registry import UnknownNameError
from medvl.train.checkpoint import (
    CheckpointError,
    find_latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from medvl.train.ema import ModelEma
from medvl.train.loggers import build_loggers
from medvl.train.optim import build_optimizer
from medvl.train.schedules import build_scheduler


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def _train_state(model: nn.Module) -> dict:
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    sched = build_scheduler(opt, "cosine", warmup=2, total=10)
    model.head(model.proj(model.norm(model.embed(torch.tensor([1, 2]))))).sum().backward()
    opt.step()
    sched.step()
    return {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "run": {"step": 1, "best_metric": None, "skipped": {"a": "why"}},
    }


def test_checkpoint_round_trip_with_tied_weights_and_train_state(tmp_path: Path) -> None:
    model = Tied()
    state = _train_state(model)
    path = save_checkpoint(
        tmp_path / "checkpoints" / "step_0000001",
        model.state_dict(),
        {"step": 1, "x": [1, 2]},
        train_state=state,
        extra_tensors={"ema": ModelEma(model, 0.9).state_dict()},
    )
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["step"] == 1 and ckpt.metadata["x"] == [1, 2]
    assert set(ckpt.model_state) == set(model.state_dict())
    torch.testing.assert_close(ckpt.model_state["head.weight"], model.embed.weight.detach())
    again = Tied()
    again.load_state_dict(ckpt.model_state)
    assert again.head.weight is again.embed.weight
    opt = build_optimizer(again, lr=1e-2, weight_decay=0.1)
    opt.load_state_dict(ckpt.train_state["optimizer"])
    torch.testing.assert_close(opt.state_dict()["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert ckpt.train_state["rng"]["python"] == state["rng"]["python"]
    np.testing.assert_array_equal(ckpt.train_state["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert ckpt.train_state["run"]["skipped"] == {"a": "why"} and set(ckpt.extra["ema"]) == set(model.state_dict())
    assert load_checkpoint(path, load_train_state=False).train_state is None


def test_a_broken_or_half_written_checkpoint_is_never_resumed(tmp_path: Path) -> None:
    model = Tied()
    state = _train_state(model)
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts / "step_0000002", model.state_dict(), {"step": 2}, train_state=state)
    save_checkpoint(ckpts / "best", model.state_dict(), {"step": 9})  # weights only: not resumable
    (ckpts / ".tmp-step_0000003-123").mkdir()  # what a kill during a save leaves behind
    (ckpts / "step_0000004").mkdir()  # a directory without meta.json
    (ckpts / "step_0000005").mkdir()
    (ckpts / "step_0000005" / "meta.json").write_text("{truncated")
    assert find_latest_checkpoint(tmp_path) == ckpts / "step_0000002"
    with pytest.raises(CheckpointError, match="not a readable medvl checkpoint"):
        load_checkpoint(ckpts / "step_0000005")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(ckpts / "nope")
    assert find_latest_checkpoint(tmp_path / "empty") is None


def test_save_replaces_atomically_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    model = Tied()
    for step in range(1, 5):
        save_checkpoint(tmp_path / "checkpoints" / f"step_{step:07d}", model.state_dict(), {"step": step})
    save_checkpoint(tmp_path / "checkpoints" / "last", model.state_dict(), {"step": 1})
    save_checkpoint(tmp_path / "checkpoints" / "last", model.state_dict(), {"step": 2})
    assert json.loads((tmp_path / "checkpoints" / "last" / "meta.json").read_text())["step"] == 2
    prune_checkpoints(tmp_path, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last", "step_0000003", "step_0000004"]


def test_no_weight_decay_on_norms_biases_and_embeddings() -> None:
    model = Tied()
    decay, no_decay = build_optimizer(model, lr=1e-3, weight_decay=0.1).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.proj.weight)}
    assert len(no_decay["params"]) == 4  # embedding (= tied head), norm weight + bias, proj bias


def test_lr_multipliers_scale_a_part_at_every_step_and_reject_bad_prefixes() -> None:
    from medvl.train.config import TrainConfig

    model = Tied()
    # the longest prefix wins: proj.weight 4x, proj.bias 2x; the tied embedding / head and the norm keep 1x
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, lr_multipliers={"proj": 2.0, "proj.weight": 4.0})
    sched = build_scheduler(opt, "cosine", warmup=2, total=10, min_lr_ratio=0.1)

    def lr_of(param: nn.Parameter) -> float:
        return next(g["lr"] for g in opt.param_groups if any(p is param for p in g["params"]))

    bases = []
    for _ in range(6):
        bases.append(sched.get_last_lr()[0])  # group 0 carries the peak schedule
        base = bases[-1]
        assert lr_of(model.embed.weight) == pytest.approx(base) and lr_of(model.norm.weight) == pytest.approx(base)
        assert lr_of(model.proj.weight) == pytest.approx(4 * base) and lr_of(model.proj.bias) == pytest.approx(2 * base)
        opt.step()
        sched.step()
    assert bases[:2] == pytest.approx([5e-3, 1e-2]) and bases[-1] < 1e-2  # warm-up, then decay; the ratios held
    wd = {g["weight_decay"] for g in opt.param_groups if any(p is model.proj.weight for p in g["params"])}
    assert wd == {0.1}  # the multiplier keeps the parameter's weight-decay rule
    # without multipliers: the two-group layout of earlier checkpoints
    assert len(build_optimizer(model, lr=1e-2, weight_decay=0.1, lr_multipliers={}).param_groups) == 2
    with pytest.raises(ValueError, match=r"starts with \['prj'\].*'proj'"):
        build_optimizer(model, lr=1e-2, weight_decay=0.1, lr_multipliers={"prj": 2.0})
    with pytest.raises(ValueError, match="must be a number > 0"):
        TrainConfig(lr_multipliers={"proj": 0.0})
    assert TrainConfig(lr_multipliers={"proj": 3}).lr_multipliers == {"proj": 3.0}


@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
def test_schedules_warm_up_then_decay(name: str) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, name, warmup=4, total=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert max(lrs) == pytest.approx(1.0)
    if name == "constant":
        assert lrs[-1] == pytest.approx(1.0)
    else:
        assert lrs[-1] < 0.2 and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 if name != "constant" else 1.0)


def test_unknown_schedule_lists_valid_names() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UnknownNameError, match="cosine"):
        build_scheduler(opt, "cosin", 1, 10)


def test_ema_tracks_weights_and_swaps_in_and_out() -> None:
    model = Tied()
    ema = ModelEma(model, decay=0.5)
    start = model.proj.weight.detach().clone()
    with torch.no_grad():
        model.proj.weight.add_(1.0)
    ema.update(model, step=100)  # decay 0.5 at this step
    expected = start + 0.5
    torch.testing.assert_close(ema.state_dict()["proj.weight"], expected)
    with ema.apply_to(model):
        torch.testing.assert_close(model.proj.weight.detach(), expected)
    torch.testing.assert_close(model.proj.weight.detach(), start + 1.0)
    assert ema.state_dict()["head.weight"] is ema.state_dict()["embed.weight"]  # tied weights share one shadow


def test_loggers_write_jsonl_and_reject_unknown_names(tmp_path: Path) -> None:
    logger = build_loggers(["jsonl", "tensorboard"], tmp_path)
    logger.log({"train/loss": 1.5, "note": "ignored"}, step=3)
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 3 and rows[0]["train/loss"] == 1.5 and "note" not in rows[0]
    assert any((tmp_path / "tensorboard").iterdir())
    with pytest.raises(UnknownNameError, match="jsonl"):
        build_loggers(["jsonl", "tensorbord"], tmp_path / "x")


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively() -> None:
    from medvl.train.runtime import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


@pytest.mark.parametrize("index_keyed", [True, False])
def test_a_checkpoint_from_before_fused_adamw_resumes_fused_with_the_same_update(index_keyed: bool) -> None:
    """A checkpoint written before the trainer fused AdamW stores `fused: None` in its groups, and loading replaces a
    group's hyperparameters by the stored ones: the resumed optimizer must still be fused (not silently the ~3x slower
    loop ever after), with its moments in the channels-last layout of their weights, and step as the loop did."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from medvl.train.distributed import DistInfo
    from medvl.train.optim import param_groups
    from medvl.train.parallel import ParallelModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2)).to(memory_format=torch.channels_last)
    model(torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)).square().sum().backward()
    resumed = copy.deepcopy(model)  # without gradients, as a resumed run loads its optimizer state
    # The trainer's optimizer before fusing (7e5b794's build_optimizer), one step into training.
    loop = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-2, betas=(0.9, 0.98))
    loop.step()
    state = copy.deepcopy(loop.state_dict() if index_keyed else get_optimizer_state_dict(model, loop))
    resumed.load_state_dict(model.state_dict())
    loop.step()  # the step the resumed run takes next (the same gradients)

    optimizer = build_optimizer(resumed, lr=1e-2, weight_decay=0.05)
    ParallelModel(resumed, "none", DistInfo(), torch.device("cpu")).load_optimizer_state(optimizer, state)
    assert all(group["fused"] for group in optimizer.param_groups)
    conv = resumed[0].weight
    assert all(optimizer.state[conv][key].stride() == conv.stride() for key in ("exp_avg", "exp_avg_sq"))
    for copied, param in zip(resumed.parameters(), model.parameters(), strict=True):
        copied.grad = param.grad.clone()
    optimizer.step()
    for name, param in resumed.named_parameters():
        torch.testing.assert_close(param, dict(model.named_parameters())[name], rtol=0, atol=1e-6, msg=name)
