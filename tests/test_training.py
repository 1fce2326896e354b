"""The runner: a few steps lower the loss; checkpoints are complete; an interrupted run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medvl.config.experiment import load_experiment
from medvl.train.checkpoint import find_latest_checkpoint, load_checkpoint
from medvl.train.loop import Trainer, train

from .conftest import CLIPS_SETTINGS, REPO, clips_overrides, tiny_overrides


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last", load_train_state=False).model_state


def test_a_few_steps_lower_the_loss(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_experiment(
        "quickstart", tiny_overrides(synth_root, tmp_path, "train.max_steps=30", "train.lr=3e-3", "train.eval_every=30")
    )
    trainer = Trainer(cfg)
    from medvl.data.dataset import collate

    batch = collate([trainer.train_set[i] for i in range(4)], max_views=cfg.model.max_views)
    with torch.no_grad():
        trainer.model.eval()
        before = float(trainer.task(batch)["loss"])
    summary = trainer.fit()
    with torch.no_grad():
        trainer.model.eval()
        after = float(trainer.task(batch)["loss"])
    assert summary["steps"] == 30
    assert after < before - 0.5, (before, after)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in row for row in log) and any("train/loss" in row for row in log)
    assert (tmp_path / "checkpoints" / "best" / "meta.json").is_file()
    meta = json.loads((tmp_path / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["config"]["model"]["family"] == "captioner" and "tokenizer" in meta


def test_grad_accumulation_and_ema_and_bf16_run(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_experiment(
        "quickstart",
        tiny_overrides(
            synth_root,
            tmp_path,
            "train.max_steps=3",
            "train.grad_accum=2",
            "train.ema_decay=0.9",
            "train.precision=bf16",
            "train.label_smoothing=0.1",
            "train.schedule=linear",
        ),
    )
    summary = train(cfg)
    assert summary["steps"] == 3
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert "ema" in ckpt.extra and ckpt.train_state is not None


class _Stop(Exception):
    pass


@pytest.mark.parametrize("grouping", [[], ["data.group_by_length=true"]])
def test_resume_in_process_matches_uninterrupted(
    synth_root: Path,
    tmp_path: Path,
    monkeypatch,
    grouping: list[str],  # noqa: ANN001
) -> None:
    extra = ("train.max_steps=12", "train.save_every=1", "train.ema_decay=0.9", "train.eval_every=5", *grouping)
    train(load_experiment("quickstart", tiny_overrides(synth_root, tmp_path / "full", *extra)))

    interrupted = tmp_path / "interrupted"
    original = Trainer.save

    def save_then_die_at_step_7(self, name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        path = original(self, name, *args, **kwargs)
        if name == "step_0000007":
            raise _Stop
        return path

    monkeypatch.setattr(Trainer, "save", save_then_die_at_step_7)
    with pytest.raises(_Stop):
        train(load_experiment("quickstart", tiny_overrides(synth_root, interrupted, *extra)))
    monkeypatch.setattr(Trainer, "save", original)
    assert load_checkpoint(find_latest_checkpoint(interrupted)).metadata["step"] == 7
    summary = train(load_experiment("quickstart", tiny_overrides(synth_root, interrupted, *extra)), resume="auto")
    assert summary["steps"] == 12 and summary["steps_this_run"] == 5
    a, b = _weights(tmp_path / "full"), _weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.slow
def test_sigkill_then_resume_auto_matches_uninterrupted(synth_root: Path, tmp_path: Path) -> None:
    extra = ["train.max_steps=150", "train.save_every=3", "train.eval_every=50"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "medvl", "train", "quickstart"]
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        cmd + tiny_overrides(synth_root, killed_dir, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed_dir / "checkpoints" / "step_0000012").exists():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_dir / "checkpoints" / "last").exists()
    resumed = subprocess.run(
        cmd + tiny_overrides(synth_root, killed_dir, *extra) + ["--resume", "auto"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    full_dir = tmp_path / "full"
    full = subprocess.run(
        cmd + tiny_overrides(synth_root, full_dir, *extra), env=env, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr[-3000:]
    a, b = _weights(full_dir), _weights(killed_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_resume_from_missing_path_is_a_clear_error(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_experiment("quickstart", tiny_overrides(synth_root, tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist.*--resume auto"):
        Trainer(cfg, resume=str(tmp_path / "nope"))


def test_too_little_data_is_a_clear_error(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_experiment("quickstart", tiny_overrides(synth_root, tmp_path, "data.batch_size=64"))
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        Trainer(cfg)


# The session's tiny synthetic set read by the synthetic source (which provides its findings as labels).
SYNTH_FIXTURE = ["data.source=synthetic", "data.synth.n=40", "data.synth.seed=3", "data.synth.image_size=64"]
# Recipes that read weights the user brings run here with those parts at random init.
NO_PRETRAINED = [
    "model.encoder=vit",
    "model.encoder_weights=",
    "model.llm_path=",
    "tokenizer.path=",
    "train.init_from=",
    "model.llm_dtype=float32",
    "train.precision=fp32",
]

# mae clip recipes on the fixture's clips (their frame count; a GPU recipe's global batch would need 64 steps).
CLIPS_FOR_MAE = [
    f"model.num_frames={CLIPS_SETTINGS['frames']}",
    "model.channel_mean=[]",
    "model.channel_std=[]",
    "train.global_batch_size=0",
]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_trains_at_a_tiny_size(
    recipe: Path, synth_root: Path, clips_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    text = recipe.read_text()
    extra = NO_PRETRAINED if "family: xraygpt" in text else []
    if "family: classifier" in text or "name: classification" in text:  # the tiny synthetic set as a labelled
        extra = [*SYNTH_FIXTURE, "task.labels=[]", "train.select_metric="]  # source; its 8 findings as classes
    if "family: unified" in text:  # BiomedGPT: the session's synthetic set (reports, labels, questions) serves
        extra = list(SYNTH_FIXTURE)  # each recipe's sub-tasks
        if "source: mixture" in text:
            synth = "{n: 40, seed: 3, image_size: 64}"
            extra.append(
                f"data.mixture=[{{source: synthetic, root: {synth_root}, synth: {synth}}}, "
                f"{{source: cxr_vqa_synthetic, root: {synth_root}, synth: {synth}}}]"
            )
            extra[0] = "data.source=mixture"
        elif "tasks: [vqa]" in text:
            extra[0] = "data.source=cxr_vqa_synthetic"
        elif "class_names:" in text:
            extra.append("task.class_names=[]")
        if "mim:" in text:  # the frozen VQ tokenizer of the chain's first stage (vq_tokenizer_tiny_synthetic)
            extra.append(f"task.mim.tokenizer={request.getfixturevalue('tiny_vq_tokenizer')}")
    if "family: vq" in text:  # a crop that fits the tiny 32 px images
        extra = ["task.train_crop=16"]
    if "source: clips" in text:  # satellite clips: the session's tiny synthetic clips, whatever the family
        extra = [*clips_overrides(clips_root), "train.precision=fp32"]
    if "family: mae" in text:  # no pretrained weights or previous stage here; a clip's frames are the model's
        extra = [*extra, "model.pretrained=", "train.init_from=", *(CLIPS_FOR_MAE if "source: clips" in text else [])]
    cfg = load_experiment(
        recipe,
        tiny_overrides(synth_root, tmp_path, "train.max_steps=2", "train.eval_every=2", "data.num_workers=0", *extra),
    )
    summary = train(cfg)
    assert summary["steps"] == 2 and (tmp_path / "checkpoints" / "last" / "meta.json").is_file()
    assert cfg.train.select_metric in summary["final_val_metrics"]


def test_a_checkpoint_with_a_pretrained_backbone_loads_without_the_original_weights_file(
    synth_root: Path, tmp_path: Path
) -> None:
    torchvision = pytest.importorskip("torchvision")
    from medvl.infer.predictor import load_trained

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    cfg = load_experiment(
        "quickstart",
        tiny_overrides(
            synth_root,
            tmp_path / "run",
            "train.max_steps=1",
            "model.encoder=torchvision",
            "model.encoder_name=resnet18",
            f"model.encoder_weights={weights}",
            "model.image_size=64",
        ),
    )
    train(cfg)
    weights.unlink()  # e.g. the checkpoint was copied to another machine
    loaded = load_trained(tmp_path / "run")
    assert loaded.config.model.encoder_weights == str(weights)  # the record of what it was trained from is kept
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last").model_state
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, trained[key], msg=key)
