"""The task contract is real: a toy task and a toy model, defined here and registered from this file, go through the
public entry points (train, validate, resume, evaluate, predict, serve) without any change to a medvl module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medvl.data.dataset import Skipped, StudyDataset, ViewLoader, collate_views
from medvl.data.study import Study
from medvl.models.families import MODEL_FAMILIES, ModelFamily
from medvl.tasks import TASKS
from medvl.tasks.base import Task


# ------------------------------------------------------------------------------------------------ the toy model
@dataclass
class ToyConfig:
    image_size: int = 16
    max_views: int = 1
    in_chans: int = 1
    hidden: int = 8


class ToyModel(nn.Module):
    """Brightness -> one logit: is the image bright?"""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(1, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.mean(dim=(1, 2, 3, 4))[:, None])[:, 0]


# ------------------------------------------------------------------------------------------------- the toy task
@dataclass
class ToyOptions:
    threshold: float = 0.5


@dataclass
class ToyBatch:
    ids: list[str]
    images: torch.Tensor
    target: torch.Tensor
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: Any) -> ToyBatch:
        self.images, self.target = self.images.to(device), self.target.to(device)
        return self


@dataclass
class ToySample:
    id: str
    images: np.ndarray
    view_ids: list[int]
    target: float


class ToyDataset(StudyDataset):
    def encode(self, i: int, images: np.ndarray) -> ToySample:
        study = self.studies[i]
        return ToySample(study.id, images, [0], float((study.labels or {}).get("bright", 0)))


class ToyTask(Task):
    name = "toy_brightness"
    needs = ("labels",)
    options_class = ToyOptions
    default_select_metric = "accuracy"
    default_select_mode = "max"
    endpoint = "brightness"
    prediction_fields = {"bright": (bool, "is the image bright"), "probability": (float, "P(bright)")}
    headline_metrics = ("loss", "accuracy")

    @classmethod
    def build_assets(cls, cfg: Any, train: Sequence[Study], save_dir: Path | None) -> Any:
        return {"prevalence": float(np.mean([s.labels["bright"] for s in train]))}

    @classmethod
    def assets_from_metadata(cls, metadata: dict[str, Any]) -> Any:
        return {"prevalence": metadata["toy_prevalence"]}

    def metadata(self) -> dict[str, Any]:
        return {"toy_prevalence": self.assets["prevalence"]}

    def dataset(self, studies: Sequence[Study], training: bool = False) -> ToyDataset:
        mc = self.cfg.model
        return ToyDataset(studies, ViewLoader(mc.image_size, mc.max_views, mc.in_chans))

    def collate(self, items: Sequence[Any]) -> ToyBatch:
        samples = [x for x in items if isinstance(x, ToySample)]
        images, _, _ = collate_views(samples, 1)
        target = torch.tensor([s.target for s in samples], dtype=torch.float32)
        return ToyBatch([s.id for s in samples], images, target, [x for x in items if isinstance(x, Skipped)])

    def __call__(self, batch: ToyBatch) -> dict[str, torch.Tensor]:
        logits = self.model(batch.images)
        return {
            "loss": nn.functional.binary_cross_entropy_with_logits(logits, batch.target),
            "weight": torch.tensor(len(batch)),
        }

    @torch.no_grad()
    def outputs(self, batch: ToyBatch) -> list[Any]:
        probs = torch.sigmoid(self.model(batch.images)).tolist()
        return [{"id": i, "p": p, "y": y} for i, p, y in zip(batch.ids, probs, batch.target.tolist(), strict=True)]

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        return {"accuracy": float(np.mean([(r["p"] >= self.options.threshold) == (r["y"] == 1) for r in rows]))}

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = outputs["test"]
        result = {
            **self.validation_metrics(rows),
            "n_examples": len(rows),
            "baseline": {"accuracy": float(np.mean([r["y"] == (self.assets["prevalence"] >= 0.5) for r in rows]))},
        }
        return result, [{"id": r["id"], "probability": r["p"]} for r in rows]

    def inference_batch(self, studies: Sequence[Any]) -> ToyBatch:
        return self.collate([ToySample(s.id, s.pixels, s.view_ids, 0.0) for s in studies])

    @torch.no_grad()
    def predict(self, batch: ToyBatch) -> list[dict[str, Any]]:
        probs = torch.sigmoid(self.model(batch.images)).tolist()
        return [{"bright": p >= self.options.threshold, "probability": p} for p in probs]


# --------------------------------------------------------------------------------------------------- the test
def _toy_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    with open(root / "manifest.jsonl", "w") as f:
        for i in range(48):
            bright = i % 2
            level = rng.integers(150, 255) if bright else rng.integers(0, 100)
            Image.fromarray(np.full((20, 20), level, np.uint8)).save(root / "img" / f"{i}.png")
            split = "train" if i < 32 else ("val" if i < 40 else "test")
            f.write(
                json.dumps(
                    {"id": f"s{i}", "image_paths": [f"img/{i}.png"], "labels": {"bright": bright}, "split": split}
                )
                + "\n"
            )


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS._entries, "toy_brightness", lambda: ToyTask)
    family = ModelFamily(
        "toy", lambda: ToyConfig, lambda: {"tiny": {}}, ToyModel, task="toy_brightness", default_size="tiny"
    )
    monkeypatch.setitem(MODEL_FAMILIES._entries, "toy", family)


def test_a_task_defined_outside_medvl_runs_every_command(
    toy_registered: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from medvl.cli import main
    from medvl.config.experiment import experiment_from_dict
    from medvl.evaluate.run import evaluate
    from medvl.infer.predictor import load_trained
    from medvl.serve.app import create_app
    from medvl.train.loop import train

    data, run = tmp_path / "data", tmp_path / "run"
    _toy_data(data)

    def cfg(steps: int) -> Any:
        return experiment_from_dict(
            {
                "data": {"source": "manifest", "root": str(data), "batch_size": 8},
                "model": {"family": "toy"},
                "task": {"threshold": 0.5},
                "train": {
                    "output_dir": str(run),
                    "max_steps": steps,
                    "eval_every": 4,
                    "lr": 0.05,
                    "warmup_steps": 0,
                    "select_metric": "loss",
                    "select_mode": "min",
                    "progress": False,
                    "loggers": ["jsonl"],
                    "num_threads": 1,
                },
            }
        )

    first = train(cfg(8))
    assert first["steps"] == 8 and "accuracy" in first["final_val_metrics"]
    resumed = train(cfg(40), resume="auto")  # validates, saves, resumes from step 8
    assert resumed["steps_this_run"] == 32 and resumed["final_val_metrics"]["accuracy"] == 1.0
    meta = json.loads((run / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["toy_prevalence"] == 0.5 and meta["config"]["task"] == {"name": "toy_brightness", "threshold": 0.5}

    result = evaluate(run, split="test", progress=False)
    assert result["accuracy"] == 1.0 and result["n_examples"] == 8 and result["baseline"]["accuracy"] == 0.5
    assert (Path(result["out_dir"]) / "predictions.jsonl").read_text().count("\n") == 8

    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(run), str(data / "img"), "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 48 and all(r["bright"] == (int(r["id"]) % 2 == 1) for r in rows)

    with TestClient(create_app(load_trained(run))) as client:
        png = (data / "img" / "1.png").read_bytes()
        answer = client.post("/v1/brightness", files=[("images", ("1.png", png, "image/png"))]).json()
        assert answer["bright"] is True and 0.5 <= answer["probability"] <= 1.0
        assert "/v1/brightness" in client.get("/openapi.json").json()["paths"]
