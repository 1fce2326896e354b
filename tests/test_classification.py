"""Image classification on the one runner: labels, uncertainty policies, training, evaluation, prediction, serving,
and wrong pairings refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.config.experiment import load_experiment
from medvl.data.sources import DataSourceError
from medvl.data.study import Study
from medvl.tasks.classification import study_targets
from medvl.train.run_folder import RunFolderError

from .conftest import SHARED_DATA, TINY_OVERRIDES

SYNTH = ["data.source=synthetic", "data.synth.n=40", "data.synth.seed=3", "data.synth.image_size=64"]


def _classify_overrides(synth_root: Path, run: Path, *extra: str) -> list[str]:
    return [*TINY_OVERRIDES, f"data.root={synth_root}", *SYNTH, f"train.output_dir={run}", *extra]


def test_uncertainty_policies_and_missing_labels() -> None:
    study = Study("s", (), "", "train", (0,), {"A": 1, "B": 0, "C": -1})
    names = ["A", "B", "C", "D"]  # D is not stated: missing
    assert study_targets(study, names, "ignore").tolist() == [1, 0, -1, -1]
    assert study_targets(study, names, "ones").tolist() == [1, 0, 1, -1]
    assert study_targets(study, names, "zeros").tolist() == [1, 0, 0, -1]


def test_every_from_scratch_encoder_builds_a_classifier() -> None:
    from medvl.models.classifier import ClassifierConfig, ImageClassifier

    for encoder in ("conv", "vit"):
        model = ImageClassifier(
            ClassifierConfig(
                image_size=32,
                encoder=encoder,
                patch_size=8,
                vit_dim=32,
                vit_depth=1,
                vit_heads=2,
                conv_channels=(8, 16),
                conv_blocks=(1, 1),
                num_outputs=3,
                max_views=2,
            )
        )
        out = model(
            torch.rand(2, 2, 1, 32, 32), torch.tensor([[0, 1], [0, 0]]), torch.tensor([[True, True], [True, False]])
        )
        assert out.shape == (2, 3), encoder


def test_classes_without_training_positives_are_left_out_and_multi_class_needs_one_positive() -> None:
    from medvl.config.experiment import experiment_from_dict
    from medvl.tasks.classification import ClassificationTask

    train = [
        Study(f"s{i}", (), "", "train", (0,), {"A": int(i % 2 == 0), "B": int(i % 2 == 1), "C": 0}) for i in range(6)
    ]
    cfg = experiment_from_dict({"model": {"family": "classifier"}})
    assert ClassificationTask.build_assets(cfg, train, None)["class_names"] == ["A", "B"]
    several = [*train, Study("both", (), "", "train", (0,), {"A": 1, "B": 1, "C": 0})]
    multi_class = experiment_from_dict({"model": {"family": "classifier"}, "task": {"multi_label": False}})
    assert ClassificationTask.build_assets(multi_class, train, None)["class_names"] == ["A", "B"]
    with pytest.raises(ValueError, match="one positive class per study.*e.g. both"):
        ClassificationTask.build_assets(multi_class, several, None)


def test_training_jitter_is_seeded_and_keeps_shapes() -> None:
    from medvl.tasks.classification import jitter_views

    views = np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8, (2, 32, 1))  # two 32x32 horizontal ramps
    a = jitter_views(views, np.random.default_rng(1))
    b = jitter_views(views, np.random.default_rng(1))
    c = jitter_views(views, np.random.default_rng(2))
    assert a.shape == views.shape and a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, views)


def test_masked_bce_ignores_unknown_entries_and_weights_positives() -> None:
    from medvl.config.experiment import experiment_from_dict
    from medvl.tasks.classification import ClassificationBatch, ClassificationTask

    class Fixed(torch.nn.Module):
        def forward(self, images: torch.Tensor, view_ids: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[2.0, -1.0], [0.5, 3.0]])

    cfg = experiment_from_dict({"model": {"family": "classifier", "size": "tiny", "num_outputs": 2}})
    task = ClassificationTask(Fixed(), {"class_names": ["A", "B"], "pos_weight": [3.0, 1.0]}, cfg)
    targets = torch.tensor([[1, -1], [0, 1]])
    batch = ClassificationBatch(
        ["a", "b"],
        torch.zeros(2, 1, 1, 4, 4),
        torch.zeros(2, 1, dtype=torch.long),
        torch.ones(2, 1, dtype=torch.bool),
        targets,
    )
    out = task(batch)
    logits = torch.tensor([2.0, 0.5, 3.0])  # the known entries
    y = torch.tensor([1.0, 0.0, 1.0])
    weight = torch.tensor([3.0, 3.0, 1.0])  # pos_weight of each entry's class
    direct = -(weight * y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log(1 - torch.sigmoid(logits)))
    assert int(out["weight"]) == 3 and float(out["loss"]) == pytest.approx(float(direct.mean()), rel=1e-6)


def test_synthetic_findings_train_evaluate_predict_and_serve(synth_root: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.infer.predictor import load_study, load_trained, predict_prepared
    from medvl.serve.app import create_app
    from medvl.train.loop import train

    run = tmp_path / "run"
    cfg = load_experiment(
        "cxr_classify_synthetic",
        _classify_overrides(synth_root, run, "train.max_steps=6", "train.eval_every=3", "model.size=tiny"),
    )
    summary = train(cfg)
    assert cfg.train.select_metric == "auroc_macro" and "auroc_macro" in summary["final_val_metrics"]
    meta = json.loads((run / "checkpoints" / "last" / "meta.json").read_text())
    # the 8 synthetic findings, less any no training study of the tiny set shows (left out, and said so)
    assert 6 <= len(meta["class_names"]) <= 8 and len(meta["thresholds"]) == len(meta["class_names"])

    result = evaluate(run, split="test", progress=False, options=ScoringOptions(bootstrap=20))
    out = Path(result["out_dir"])
    assert result["task"] == "classification" and result["n_examples"] == 4
    assert "auroc_macro" in result and "baseline" in result and (out / "report.html").is_file()
    assert "generation" not in result  # decoding settings belong to text-generating tasks
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and set(rows[0]["probabilities"]) == set(meta["class_names"])

    loaded = load_trained(run)
    study_dir = synth_root / "images" / rows[0]["id"]
    record = predict_prepared(loaded, [load_study(loaded, "x", sorted(study_dir.glob("*.png")))])[0]
    assert set(record) == {"probabilities", "labels"} and all(0 <= p <= 1 for p in record["probabilities"].values())
    with TestClient(create_app(loaded)) as client:
        png = sorted(study_dir.glob("*.png"))[0].read_bytes()
        answer = client.post("/v1/classifications", files=[("images", ("a.png", png, "image/png"))])
        assert answer.status_code == 200 and set(answer.json()["probabilities"]) == set(meta["class_names"])
        spec = client.get("/openapi.json").json()
        assert "/v1/classifications" in spec["paths"] and "/v1/reports" not in spec["paths"]
        wrong = client.post("/v1/reports", files=[("images", ("a.png", png, "image/png"))])
        assert wrong.status_code == 404 and "POST /v1/classifications" in wrong.json()["error"]["message"]
        info = client.get("/v1/model").json()
        assert info["task"] == "classification" and "generation" not in info  # no decoding settings to show

    from medvl.demo.app import analyze, create_demo

    analysis = analyze(loaded, loaded.config.generation, sorted(study_dir.glob("*.png")))
    assert analysis.overlay is not None and analysis.overlay.shape[-1] == 3  # Grad-CAM of the most probable class
    assert set(analysis.findings) == set(analysis.record["labels"]) and analysis.report == ""
    import gradio as gr

    demo = create_demo(loaded)
    assert any(isinstance(b, gr.Button) and b.value == "Classify" for b in demo.blocks.values())


def test_multi_class_image_folder_with_rgb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import train

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        for cls, color in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
            (root / split / cls).mkdir(parents=True)
            for i in range(n // 2):
                pixels = np.clip(np.array(color) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    run = tmp_path / "run"
    cfg = load_experiment(
        "cxr_classify_synthetic",
        [
            *TINY_OVERRIDES,
            "data.source=image_folder",
            f"data.root={root}",
            f"train.output_dir={run}",
            "model.size=tiny",
            "model.in_chans=3",
            "model.max_views=1",
            "task.multi_label=false",
            "task.label_smoothing=0.1",
            "train.max_steps=30",
            "train.eval_every=15",
            "train.lr=3e-3",
        ],
    )
    train(cfg)
    result = evaluate(run, split="test", progress=False, options=ScoringOptions(bootstrap=0, html=False))
    assert result["accuracy"] == 1.0 and result["baseline"]["accuracy"] == 0.5

    # Another data set with other class names: the difference is said, or refused when nothing is in common.
    other = tmp_path / "other"
    for split in ("train", "test"):
        for cls in ("cat", "bird"):
            (other / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(other / split / cls / "0.png")
    evaluate(
        run,
        split="test",
        data_root=str(other),
        out_dir=tmp_path / "e1",
        progress=False,
        options=ScoringOptions(bootstrap=0, html=False),
    )
    err = capsys.readouterr().err
    assert "labels bird are not classes of this model" in err and "classes dog are not labelled" in err
    for split in ("train", "test"):
        (other / split / "cat").rename(other / split / "fox")
    with pytest.raises(ValueError, match="none of the data's label names .bird, fox. is a class of this model"):
        evaluate(
            run,
            split="test",
            data_root=str(other),
            out_dir=tmp_path / "e2",
            progress=False,
            options=ScoringOptions(bootstrap=0, html=False),
        )


@pytest.mark.parametrize(
    ("recipe", "source", "message"),
    [
        ("cxr_classify_synthetic", "iu_xray", "task classification needs labels; source iu_xray provides"),
        ("quickstart", "nih", "task report_generation needs report; source nih provides labels only"),
        ("quickstart", "image_folder", "task report_generation needs report; source image_folder provides labels"),
    ],
)
def test_wrong_pairings_fail_before_any_work(recipe: str, source: str, message: str, tmp_path: Path) -> None:
    from medvl.train.loop import Trainer

    missing = tmp_path / "no_data_here"  # never read: the pairing is refused first
    cfg = load_experiment(recipe, [f"data.source={source}", f"data.root={missing}", f"train.output_dir={tmp_path}"])
    with pytest.raises(DataSourceError, match=message):
        Trainer(cfg)
    assert not missing.exists()


def test_score_refuses_a_classification_checkpoint(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medvl.cli import main
    from medvl.train.loop import train

    run = tmp_path / "run"
    train(
        load_experiment(
            "cxr_classify_synthetic", _classify_overrides(synth_root, run, "train.max_steps=2", "model.size=tiny")
        )
    )
    hyps = tmp_path / "hyps.jsonl"
    hyps.write_text(json.dumps({"id": "1", "report": "Normal."}) + "\n")
    capsys.readouterr()  # what training printed
    assert main(["score", "--refs", str(run), "--hyps", str(hyps)]) == 2
    err = capsys.readouterr().err
    assert "is a checkpoint (family classifier, task classification)" in err and "medvl evaluate" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.real_data
def test_real_nih_images_classify_end_to_end(tmp_path: Path) -> None:
    root = SHARED_DATA / "nih1000"
    if not (root / "Data_Entry_2017_v2020_subset.csv").is_file():
        pytest.skip(f"{root} is absent (real NIH ChestX-ray14 subset)")
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import train

    run = tmp_path / "run"
    cfg = load_experiment(
        "cxr_classify_nih",
        [
            f"data.root={root}",
            f"train.output_dir={run}",
            "train.max_steps=6",
            "train.eval_every=6",
            "train.progress=false",
            "train.num_threads=1",
            "train.loggers=[jsonl]",
        ],
    )
    summary = train(cfg)
    assert summary["skipped_studies"] == 0
    result = evaluate(run, split="test", progress=False, options=ScoringOptions(bootstrap=0, html=False))
    assert result["n_examples"] == 200 and result["per_class"]["Abnormal"]["support_pos"] == 100


def test_data_the_model_cannot_take_is_refused_before_training(synth_root: Path, tmp_path: Path) -> None:
    from medvl.data.dataset import StudyError
    from medvl.train.loop import Trainer

    cfg = load_experiment(
        "cxr_classify_synthetic",
        _classify_overrides(synth_root, tmp_path / "run", "model.size=tiny", "model.in_chans=2"),
    )
    with pytest.raises(StudyError, match="cannot be loaded .*1 channel.*model.in_chans"):
        Trainer(cfg)


def test_group_by_length_is_refused_for_a_task_without_lengths(synth_root: Path, tmp_path: Path) -> None:
    from medvl.train.loop import Trainer

    cfg = load_experiment(
        "cxr_classify_synthetic",
        _classify_overrides(synth_root, tmp_path, "model.size=tiny", "data.group_by_length=true"),
    )
    with pytest.raises(ValueError, match="group_by_length needs a training set that knows its target lengths"):
        Trainer(cfg)


def test_a_classifier_run_resumes(synth_root: Path, tmp_path: Path) -> None:
    """`model.num_outputs` comes from the data (the class names), not the recipe: the resume check must compare it as
    the task derives it from the checkpoint (it refused every classifier run: 'checkpoint 8, now 2')."""
    from medvl.train.loop import train

    run = tmp_path / "run"
    first = train(load_experiment("cxr_classify_synthetic", _classify_overrides(synth_root, run, "train.max_steps=2")))
    assert first["steps"] == 2
    more = _classify_overrides(synth_root, run, "train.max_steps=3")
    summary = train(load_experiment("cxr_classify_synthetic", more), resume="auto")
    assert summary["steps"] == 3 and summary["steps_this_run"] == 1
    # The other settings are still checked: a model that differs is refused, naming the setting.
    with pytest.raises(RunFolderError, match=r"model.image_size"):
        train(load_experiment("cxr_classify_synthetic", [*more, "model.image_size=64"]), resume="auto")
