"""Shared fixtures: a tiny synthetic data set generated once per session, and tiny experiment configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Nothing in the tests may reach a model hub.
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A model small enough that a few training steps take well under a second.
TINY_OVERRIDES = [
    "model.size=tiny",
    "model.image_size=32",
    "data.batch_size=4",
    "train.progress=false",
    "train.loggers=[jsonl]",
    "train.warmup_steps=2",
    "train.num_threads=1",
    "generation.num_beams=1",
    "generation.max_new_tokens=12",
    "tokenizer.vocab_size=300",
    # Tests pin fp32: recipes with train.precision=auto (the quickstart) would compute in bf16 on CPUs that have it,
    # and what the tests compare (golden losses, 1 vs 2 processes, resume) must not depend on the test machine.
    "train.precision=fp32",
]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic studies (both views, 64 px) in the R2Gen layout, generated once per test session."""
    from medvl.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, n=40, seed=3, image_size=64, lateral=True, workers=1)
    return root


# A tiny set of synthetic satellite clips (random tracks: no dependency on ../shared) for the clip recipes.
CLIPS_SETTINGS = {"n": 80, "seed": 1, "tile_size": 32, "frames": 4, "minutes": 5, "channels": 3, "tracks": ""}


@pytest.fixture(scope="session")
def clips_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 synthetic clips (4 frames, 32 px, 3 bands) in the clip layout, generated once per test session."""
    from medvl.data.synth_clips import generate_clips

    root = tmp_path_factory.mktemp("clips") / "data"
    generate_clips(root, workers=1, **CLIPS_SETTINGS)
    return root


def clips_overrides(clips_root: Path) -> list[str]:
    """Overrides that point a clip recipe at the session's tiny synthetic clips."""
    return [
        "data.source=clips_synthetic",
        f"data.root={clips_root}",
        *(f"data.synth_clips.{k}={v}" for k, v in CLIPS_SETTINGS.items()),
        f"model.max_views={CLIPS_SETTINGS['frames']}",
        f"model.in_chans={CLIPS_SETTINGS['channels']}",
    ]


def tiny_overrides(synth_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides that point any recipe at the tiny synthetic set and a tiny model."""
    return [
        "data.source=iu_xray",
        f"data.root={synth_root}",
        f"train.output_dir={run_dir}",
        *TINY_OVERRIDES,
        *extra,
    ]


@pytest.fixture(scope="session")
def trained_checkpoint(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny captioner trained for a few steps on the tiny synthetic set, shared by the inference/serving tests."""
    from medvl.config.experiment import load_experiment
    from medvl.train.loop import train

    run = tmp_path_factory.mktemp("trained")
    cfg = load_experiment("quickstart", tiny_overrides(synth_root, run, "train.max_steps=8", "train.eval_every=8"))
    summary = train(cfg)
    return Path(summary["best_checkpoint"] or summary["last_checkpoint"])


@pytest.fixture(scope="session")
def tiny_vq_tokenizer(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a tiny VQ tokenizer (vq_tokenizer_tiny_synthetic at 32 px, 2 steps): the frozen tokenizer
    of the MIM recipes in the tests."""
    from medvl.config.experiment import load_experiment
    from medvl.train.loop import train

    run = tmp_path_factory.mktemp("vq_tokenizer")
    extra = ["train.max_steps=2", "train.eval_every=2", "task.train_crop=16", "data.num_workers=0"]
    train(load_experiment("vq_tokenizer_tiny_synthetic", tiny_overrides(synth_root, run, *extra)))
    return run
