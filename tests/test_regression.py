"""Point regression (cyclone tracking) on the one runner: losses, target normalization, error metrics with their
intervals, and a tiny tracking run that beats the tile-centre baseline; detection scores of binary classification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.config.experiment import experiment_from_dict, load_experiment
from medvl.data.study import Study
from medvl.tasks.regression import RegressionBatch, RegressionTask, target_stats

from .conftest import TINY_OVERRIDES


class Fixed(torch.nn.Module):
    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, images: torch.Tensor, view_ids: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        return self.out


def _task(out: torch.Tensor, loss: str, normalize: bool = True, delta: float = 1.0) -> RegressionTask:
    cfg = experiment_from_dict(
        {
            "model": {"family": "classifier", "size": "tiny", "num_outputs": 2},
            "task": {"name": "regression", "loss": loss, "normalize": normalize, "huber_delta": delta},
        }
    )
    assets = {"target_names": ["x", "y"], "mean": [30.0, 10.0], "std": [4.0, 2.0], "normalize": normalize}
    return RegressionTask(Fixed(out), assets, cfg)


def _batch(targets: torch.Tensor) -> RegressionBatch:
    b = len(targets)
    return RegressionBatch(
        [str(i) for i in range(b)],
        torch.zeros(b, 1, 1, 4, 4),
        torch.zeros(b, 1, dtype=torch.long),
        torch.ones(b, 1, dtype=torch.bool),
        targets,
    )


@pytest.mark.parametrize("loss", ["mse", "huber", "l1"])
def test_the_losses_match_a_direct_computation_on_normalized_targets(loss: str) -> None:
    raw = torch.tensor([[0.5, -1.0], [2.0, 3.0], [0.0, 0.1]])
    targets = torch.tensor([[34.0, 10.0], [22.0, 14.0], [30.0, 9.0]])
    y = (targets - torch.tensor([30.0, 10.0])) / torch.tensor([4.0, 2.0])  # [[1, 0], [-2, 2], [0, -0.5]]
    d = (raw - y).abs()
    direct = {
        "mse": (d**2).mean(),
        "l1": d.mean(),
        "huber": torch.where(d <= 0.8, 0.5 * d**2, 0.8 * (d - 0.5 * 0.8)).mean(),
    }[loss]
    out = _task(raw, loss, delta=0.8)(_batch(targets))
    assert float(out["loss"]) == pytest.approx(float(direct), rel=1e-6) and int(out["weight"]) == 3
    plain = _task(raw, loss, normalize=False, delta=0.8)(_batch(targets))  # no normalization: raw target units
    d = (raw - targets).abs()
    direct = {
        "mse": (d**2).mean(),
        "l1": d.mean(),
        "huber": torch.where(d <= 0.8, 0.5 * d**2, 0.8 * (d - 0.5 * 0.8)).mean(),
    }[loss]
    assert float(plain["loss"]) == pytest.approx(float(direct), rel=1e-6)


def test_target_normalization_round_trips_and_travels_in_the_metadata() -> None:
    train = [
        Study(str(i), (), "", "train", (0,), None, targets=(float(x), float(y)))
        for i, (x, y) in enumerate([(10, 5), (20, 5), (30, 5), (40, 5)])
    ]
    mean, std = target_stats(train, 2)
    assert mean == [25.0, 5.0] and std[0] == pytest.approx(np.std([10, 20, 30, 40])) and std[1] == 1.0  # constant
    cfg = experiment_from_dict({"model": {"family": "classifier", "size": "tiny"}, "task": {"name": "regression"}})
    assets = RegressionTask.build_assets(cfg, train, None)
    assert RegressionTask.model_fields(assets) == {"num_outputs": 2}
    task = RegressionTask(Fixed(torch.zeros(1, 2)), assets, cfg)
    values = torch.tensor([[12.5, -3.0], [40.0, 5.0]])
    torch.testing.assert_close(task.denormalize(task.normalize(values)), values)
    assert task.predictions(_batch(torch.zeros(1, 2))).tolist() == [[25.0, 5.0]]  # raw 0 -> the training mean
    again = RegressionTask(
        Fixed(torch.zeros(1, 2)), RegressionTask.assets_from_metadata(json.loads(json.dumps(task.metadata()))), cfg
    )
    torch.testing.assert_close(again.denormalize(again.normalize(values)), values)
    torch.testing.assert_close(again.mean, task.mean) and torch.testing.assert_close(again.std, task.std)


def test_weighted_medians_equal_the_median_of_each_resample() -> None:
    from medvl.evaluate.classification_core import _resample_weights
    from medvl.evaluate.regression import weighted_medians

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 10):
        values = rng.normal(size=n).round(1)  # ties included
        weights = _resample_weights(n, 50, seed=n)
        expected = [np.median(np.repeat(values, w.astype(int))) for w in weights]
        np.testing.assert_allclose(weighted_medians(values, weights), expected)


def test_regression_metrics_report_pixels_and_km_with_intervals() -> None:
    from medvl.evaluate.regression import regression_metrics

    pred = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [1.0, 1.0]])
    target = np.array([[0.0, 0.0], [0.0, 0.0], [4.0, 8.0], [1.0, 2.0]])  # errors 0, 5, 10, 1
    r = regression_metrics(pred, target, km_per_unit=3.5, bootstrap=200, seed=1)
    assert r["error_px_mean"] == pytest.approx(4.0) and r["error_px_median"] == pytest.approx(3.0)
    assert r["error_km_mean"] == pytest.approx(14.0) and r["error_km_median"] == pytest.approx(10.5)
    assert 0 <= r["error_px_median_ci_low"] <= 3.0 <= r["error_px_median_ci_high"] <= 10
    assert r["error_km_mean_ci_low"] == pytest.approx(3.5 * r["error_px_mean_ci_low"])
    assert r["per_coordinate"]["x"]["bias"] == pytest.approx((0 + 3 + 6 + 0) / 4)


def test_a_tiny_tracking_run_beats_the_tile_centre_baseline(tmp_path: Path) -> None:
    from medvl.data.synth_clips import generate_clips
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.infer.predictor import load_study, load_trained, predict_prepared
    from medvl.train.loop import train

    # Enough clips for a 0.01M-parameter model to learn where the eye is: 240 clips (about 120 with a centre), 2
    # frames of 32 px, random tracks; a few seconds of CPU.
    settings = {"n": 240, "seed": 2, "tile_size": 32, "frames": 2, "minutes": 5, "channels": 3, "tracks": ""}
    data, run = tmp_path / "clips", tmp_path / "run"
    generate_clips(data, workers=1, **settings)
    recipe = tmp_path / "track.yaml"  # the classifier family's head regresses too: a 0.01M-parameter tracker
    recipe.write_text(
        "model: {family: classifier, size: tiny, dropout: 0.0}\n"
        "task: {name: regression, target_names: [x, y], normalize: true, loss: huber,"
        " km_per_pixel: 12.25}\n"
    )
    cfg = load_experiment(
        recipe,
        [
            *TINY_OVERRIDES,
            "data.source=clips_synthetic",
            f"data.root={data}",
            *(f"data.synth_clips.{k}={v}" for k, v in settings.items()),
            "model.max_views=2",
            "model.in_chans=3",
            f"train.output_dir={run}",
            "model.image_size=32",
            "train.max_steps=300",
            "train.eval_every=100",
            "train.lr=3e-3",
            "train.warmup_steps=10",
            "data.batch_size=16",
        ],
    )
    summary = train(cfg)
    assert cfg.task_name == "regression" and cfg.model.num_outputs == 2
    assert "error_median" in summary["final_val_metrics"]
    meta = json.loads((run / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["regression"]["target_names"] == ["x", "y"] and len(meta["regression"]["std"]) == 2

    result = evaluate(run, split="test", progress=False, options=ScoringOptions(bootstrap=100))
    centre = result["baselines"]["tile centre"]
    mean_target = result["baselines"]["mean training target"]
    print(
        f"tiny tracking, test: model median {result['error_px_median']:.2f} px, tile centre "
        f"{centre['error_px_median']:.2f} px, mean target {mean_target['error_px_median']:.2f} px"
    )
    assert result["task"] == "regression" and result["n_examples"] >= 15
    assert result["error_px_median"] < 0.75 * centre["error_px_median"]
    assert result["error_px_median"] < 0.75 * mean_target["error_px_median"]
    km = cfg.task.km_per_pixel
    assert km == 12.25 and result["error_km_median"] == pytest.approx(result["error_px_median"] * km)
    assert (Path(result["out_dir"]) / "report.html").read_text().count("tile centre") >= 1
    rows = [json.loads(line) for line in (Path(result["out_dir"]) / "predictions.jsonl").read_text().splitlines()]
    assert set(rows[0]["predicted"]) == {"x", "y"} and rows[0]["error_km"] == pytest.approx(
        rows[0]["error_px"] * km, abs=1e-3
    )
    loaded = load_trained(run)
    frames = sorted((data / "clips" / "synth_000001").glob("*.png"))
    record = predict_prepared(loaded, [load_study(loaded, "clip", frames)])[0]
    assert set(record["coordinates"]) == {"x", "y"}

    from fastapi.testclient import TestClient

    from medvl.serve.app import create_app

    with TestClient(create_app(loaded)) as client:  # the frames of a clip are the views of one request
        files = [("images", (f.name, f.read_bytes(), "image/png")) for f in frames]
        answer = client.post("/v1/regressions", files=files).json()
        assert answer["coordinates"] == pytest.approx(record["coordinates"], abs=1e-3)


# ------------------------------------------------------------------------------------------- detection scores
def test_detection_scores_on_a_hand_computed_contingency_table() -> None:
    from medvl.evaluate.classification import classification_metrics, detection_scores

    # 10 positives (7 hits, 3 misses), 20 negatives (4 false alarms, 16 correct negatives).
    truth = np.array([1] * 10 + [0] * 20)
    probs = np.array([0.9] * 7 + [0.2] * 3 + [0.8] * 4 + [0.1] * 16)
    r = classification_metrics(probs[:, None], truth[:, None], ["cyclone"], multi_label=True, bootstrap=200)
    assert r["contingency"] == {"hits": 7, "misses": 3, "false_alarms": 4, "correct_negatives": 16}
    assert r["pod"] == pytest.approx(7 / 10) and r["far"] == pytest.approx(4 / 11)
    assert r["csi"] == pytest.approx(7 / 14)
    hss = 2 * (7 * 16 - 3 * 4) / ((7 + 3) * (3 + 16) + (7 + 4) * (4 + 16))
    assert r["hss"] == pytest.approx(hss) and r["hss"] == pytest.approx(0.4878, abs=1e-4)
    assert r["f1"] == pytest.approx(2 * 7 / (2 * 7 + 4 + 3))
    assert r["balanced_accuracy"] == pytest.approx((0.7 + 0.8) / 2)
    for key in ("pod", "far", "csi", "hss"):
        assert r[f"{key}_ci_low"] <= r[key] <= r[f"{key}_ci_high"]
    assert float(detection_scores(5, 0, 0, 5)["hss"]) == 1.0  # perfect
    assert np.isnan(detection_scores(0, 0, 3, 7)["far"])  # nothing called positive
    multi = classification_metrics(
        np.full((4, 2), 0.5), np.array([[1, 0], [0, 1], [1, 1], [0, 0]]), ["a", "b"], multi_label=True, bootstrap=0
    )
    assert "pod" not in multi  # binary only
