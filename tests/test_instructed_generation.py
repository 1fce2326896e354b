"""The instructed-generation task (BiomedGPT): mixed sub-task batches, the constrained loss and decoding, evaluation,
and the recipes run through the runner at tiny size."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from medvl.data.sources import load_studies
from medvl.models.unified.loss import label_smoothed_nll
from medvl.models.unified.model import UnifiedModel
from medvl.tasks.instructed_generation import InstructedGenerationOptions, InstructedGenerationTask
from medvl.tasks.instructions import SUBTASKS, answer_sequences
from medvl.train.config import TrainConfig

from .unified_fixtures import tiny_task, tiny_unified, unified_parts


@pytest.fixture(scope="module")
def parts(synth_root: Path):
    return unified_parts(synth_root)


def _task(assets, **options) -> InstructedGenerationTask:
    return tiny_task(assets, **options)


def _batch(task, studies, tasks, n=3):
    ds = task.dataset(studies)
    items = [i for i, e in enumerate(ds.order) if ds.examples[e].task in tasks]
    picked = [i for t in tasks for i in [i for i in items if ds.examples[ds.order[i]].task == t][:n]]
    return task.collate([ds[i] for i in picked])


def test_evaluation_order_takes_the_subtasks_in_turn(parts):
    """The 12 report studies come before the 12 questions: validation's first N examples (train.eval_max_studies)
    must still hold every sub-task, else a mixture's VQA is never validated."""
    studies, assets = parts
    ds = _task(assets, tasks=["caption", "vqa", "classification"]).dataset(studies)
    tasks = [ds.examples[k].task for k in ds.order]
    assert tasks[:3] == ["caption", "vqa", "classification"] and sorted(ds.order) == list(range(len(ds.examples)))
    assert [s.id for s in ds.studies[:2]] == [f"{studies[0].id}#caption", studies[12].id]


def test_mixed_batch_loss_is_the_mean_of_per_subtask_losses(parts):
    studies, assets = parts
    task = _task(assets)
    mixed = _batch(task, studies, ("caption", "vqa"))
    assert sorted(set(mixed.tasks)) == ["caption", "vqa"]
    out = task(mixed)
    caption = task(_batch(task, studies, ("caption",)))["loss"]
    vqa = task(_batch(task, studies, ("vqa",)))["loss"]
    assert out["loss"].item() == pytest.approx((caption.item() + vqa.item()) / 2, rel=1e-5)
    assert out["loss_caption"].item() == pytest.approx(caption.item(), rel=1e-5)
    # and a one-sub-task batch is the plain per-token label-smoothed loss (vqa: under the answer trie)
    batch = _batch(task, studies, ("vqa",))
    logits = task._logits(batch)
    direct = label_smoothed_nll(
        logits,
        batch.target_ids.masked_fill(~batch.target_mask, -100),
        epsilon=0.1,
        allowed_mask=task.allowed_mask(batch, logits.shape[-1]),
    )
    assert vqa.item() == pytest.approx((direct.loss / direct.n_tokens).item(), rel=1e-5)


def test_training_mask_allows_only_candidate_continuations(parts):
    studies, assets = parts
    task = _task(assets)
    batch = _batch(task, studies, ("vqa", "caption"))
    mask = task.allowed_mask(batch, len(assets["tokenizer"]))
    seqs = answer_sequences(assets["tokenizer"], assets["answers"])
    for k, t in enumerate(batch.tasks):
        if t == "caption":
            assert mask[k].all()
            continue
        first = {s[0] for s in seqs}
        assert set(torch.nonzero(mask[k, 0]).flatten().tolist()) == first
    assert task.allowed_mask(batch, 300) is not None
    assert _task(assets, constrain=False).allowed_mask(batch, 300) is None


@pytest.mark.parametrize("beams", [1, 3])
def test_constrained_decoding_stays_in_the_candidate_set(parts, beams):
    studies, assets = parts
    task = _task(assets)
    task.generation = dataclasses.replace(task.generation, num_beams=beams, max_new_tokens=8)
    batch = _batch(task, studies, ("vqa", "classification"), n=6)
    rows = task.outputs(batch)
    for r in rows:
        allowed = assets["answers"] if r["task"] == "vqa" else assets["class_names"]
        assert r["generated"] in allowed, r
    # unconstrained, the same random model writes other things
    free = _task(assets, constrain=False)
    free.generation = task.generation
    outside = [r for r in free.outputs(batch) if r["task"] == "vqa" and r["generated"] not in assets["answers"]]
    assert outside


def test_scoring_every_candidate_gives_classification_probabilities(parts):
    studies, assets = parts
    task = _task(assets, candidate_decoding="score")
    rows = task.outputs(_batch(task, studies, ("classification", "vqa"), n=4))
    for r in rows:
        if r["task"] == "classification":
            assert r["probs"].shape == (len(assets["class_names"]),)
            assert r["probs"].sum() == pytest.approx(1.0, abs=1e-5)
            assert r["generated"] == assets["class_names"][int(r["probs"].argmax())]
        else:
            assert r["generated"] in assets["answers"]


def test_training_epoch_follows_the_weights(parts):
    studies, assets = parts
    task = _task(assets, tasks=["caption", "vqa"], weights={"caption": 1.0, "vqa": 3.0}, epoch_size=40)
    ds = task.dataset(studies, training=True)
    counts = {t: sum(ds.examples[k].task == t for k in ds.order) for t in SUBTASKS}
    assert counts == {"caption": 10, "vqa": 30, "classification": 0, "summarization": 0, "mim": 0}
    assert [s.id for s in ds.studies[:5]] == [s.id for s in task.dataset(studies, training=True).studies[:5]]


def test_text_only_summarization_goes_through_the_same_model(parts):
    from medvl.data.dataset import check_studies
    from medvl.data.study import Study

    studies, assets = parts
    texts = [
        Study(f"s{k}", (), "", "train", (), None, question=s.report, answer=s.report.split(".")[0])
        for k, s in enumerate(studies[:4])
    ]
    assert len(check_studies(texts, False, InstructedGenerationTask.usable, text_only=True)[0]) == 4
    assert not check_studies(texts, False, InstructedGenerationTask.usable)[0]  # image tasks skip them
    task = _task(assets)
    batch = task.collate([task.dataset(texts)[i] for i in range(4)])
    assert batch.tasks == ["summarization"] * 4 and not batch.image_valid.any()
    assert torch.isfinite(task(batch)["loss"])
    assert "the summary of article" in assets["tokenizer"].decode(batch.src_ids[0].tolist())
    assert len(task.outputs(batch)) == 4


def test_r_drop_and_drop_worst_in_training(parts):
    studies, assets = parts
    task = _task(assets)
    batch = _batch(task, studies, ("caption", "vqa"))
    task.model.train()
    plain = task(batch)["loss"]
    rdrop = _task(assets, r_drop_alpha=1.0)
    rdrop.model.train()  # without dropout both passes agree: the KL is 0 and the loss is the plain one
    assert rdrop(batch)["loss"].item() == pytest.approx(plain.item(), rel=1e-5)
    noisy = _task(assets, r_drop_alpha=1.0)
    noisy.model = UnifiedModel(dataclasses.replace(noisy.model.config, dropout=0.3)).train()
    loss = noisy(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    drop = _task(assets, drop_worst_ratio=0.5, drop_worst_after=1)
    drop.model.train()
    first = drop(batch)["loss"]  # update 0: nothing dropped yet
    assert first.item() == pytest.approx(plain.item(), rel=1e-5)
    assert drop(batch)["loss"].item() < first.item()  # the worst half left out


def test_options_are_checked():
    with pytest.raises(ValueError, match="sub-tasks"):
        InstructedGenerationOptions(tasks=["captions"])
    with pytest.raises(ValueError, match="candidate_decoding"):
        InstructedGenerationOptions(candidate_decoding="greedy")
    with pytest.raises(ValueError, match=r"task.weights must be >= 0.*'vqa': -1"):
        InstructedGenerationOptions(weights={"vqa": -1})
    with pytest.raises(ValueError, match="task.weights must be >= 0 with some trained sub-task above 0"):
        InstructedGenerationOptions(tasks=["vqa"], weights={"vqa": 0})
    assert InstructedGenerationOptions(tasks=["vqa", "caption"], weights={"vqa": 0}).weights == {"vqa": 0}


# ------------------------------------------------------------------------------------ recipes through the runner
UNIFIED_TINY = [
    "model.resnet=resnet18",
    "model.d_model=32",
    "model.n_heads=4",
    "model.ffn_dim=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "train.max_steps=3",
    "train.eval_every=3",
    "train.eval_max_studies=8",
]


SYNTH_SESSION = ["data.synth.n=40", "data.synth.seed=3", "data.synth.image_size=64", "data.synth.lateral=true"]
"""The settings of the session's synthetic set (conftest `synth_root`), which the synthetic sources check."""


def _train_and_evaluate(recipe: str, overrides: list[str], run: Path, max_studies: int = 6) -> dict:
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import train

    summary = train(load_experiment(recipe, overrides))
    assert summary["steps"] == 3
    return evaluate(
        run,
        split="test",
        max_studies=max_studies,
        progress=False,
        options=ScoringOptions(bootstrap=0, html=False, meteor=False),
    )


def test_pretrain_recipe_trains_and_evaluates_every_subtask(synth_root: Path, tmp_path: Path):
    from .conftest import tiny_overrides

    run = tmp_path / "run"
    synth = "{n: 40, seed: 3, image_size: 64, lateral: true}"
    overrides = tiny_overrides(synth_root, run, *UNIFIED_TINY)[2:]  # the recipe's mixture, on the session's set
    overrides.append(
        f"data.mixture=[{{source: synthetic, root: {synth_root}, synth: {synth}}}, "
        f"{{source: cxr_vqa_synthetic, root: {synth_root}, synth: {synth}}}]"
    )
    result = _train_and_evaluate("biomedgpt_pretrain_tiny_synthetic", overrides, run, max_studies=0)
    assert result["subtasks"] == ["caption", "classification", "vqa"]
    assert result["vqa"]["n_closed"] > 0 and result["vqa"]["outside_candidates"] == 0
    assert 0.0 <= result["caption"]["bleu_4"] <= 1.0
    assert 0.0 <= result["caption"]["gt_micro_f1"] <= 1.0  # against the synthetic ground truth, as the captioner
    assert result["classification"]["n_examples"] == result["caption"]["n_studies"] == 4  # the 4 test studies
    assert "auroc_macro" in result["classification"]
    assert (run / "tokenizer" / "tokenizer.json").is_file()


def test_classify_nih_recipe_on_the_real_subset(tmp_path: Path):
    from .conftest import SHARED_DATA

    root = SHARED_DATA / "nih1000"
    if not (root / "Data_Entry_2017_v2020_subset.csv").is_file():
        pytest.skip(f"{root} is absent (real NIH ChestX-ray14 subset)")
    run = tmp_path / "run"
    result = _train_and_evaluate(
        "biomedgpt_classify_nih",
        [
            f"data.root={root}",
            f"train.output_dir={run}",
            "train.progress=false",
            "train.num_threads=1",
            "train.loggers=[jsonl]",
            "data.batch_size=4",
            "tokenizer.vocab_size=300",
            "model.image_size=32",
            *UNIFIED_TINY,
        ],
        run,
    )
    section = result["classification"]
    assert section["n_examples"] == 6 and len(section["per_class"]) == 15


def test_vqa_recipe_reports_closed_open_and_overall(synth_root: Path, tmp_path: Path):
    from .conftest import tiny_overrides

    run = tmp_path / "run"
    overrides = tiny_overrides(synth_root, run, *UNIFIED_TINY, *SYNTH_SESSION)
    overrides[0] = "data.source=cxr_vqa_synthetic"
    result = _train_and_evaluate("biomedgpt_vqa_tiny_synthetic", overrides, run, max_studies=0)
    vqa = result["vqa"]
    assert vqa["n"] == vqa["n_closed"] + vqa["n_open"] and vqa["n_closed"] > 0 and vqa["n_open"] > 0
    for key in ("accuracy", "closed_accuracy", "open_accuracy"):
        assert 0.0 <= vqa[key] <= 1.0
    assert vqa["outside_candidates"] == 0  # beam search under the trie
    assert set(vqa["baselines"]) == {"majority_per_question_type", "majority_overall", "majority_per_question"}
    metrics = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert metrics["vqa"]["closed_accuracy"] == vqa["closed_accuracy"]
    rows = [json.loads(line) for line in (run / "eval_test" / "predictions.jsonl").read_text().splitlines()]
    assert {r["answer_type"] for r in rows} == {"closed", "open"} and all("correct" in r for r in rows)
    # The same VQA model on a report data set: an error that says why nothing could be evaluated.
    from medvl.data.study import DataSourceError
    from medvl.evaluate.run import ScoringOptions, evaluate

    with pytest.raises(DataSourceError, match=r"none of the 4 studies of split 'test' \(synthetic\) holds"):
        evaluate(run, split="test", data_source="synthetic", max_studies=4, progress=False, options=ScoringOptions())

    # the exported folder keeps the answer candidates: the same constrained answers as the checkpoint
    from medvl.export import export_hf
    from medvl.infer.predictor import load_study, load_trained, predict_prepared

    export_hf(run, tmp_path / "export")
    image = Path(rows[0]["images"][0]) if rows[0].get("images") else next(synth_root.rglob("*.png"))
    answers = []
    for where in (run, tmp_path / "export"):
        loaded = load_trained(where, device="cpu")
        study = dataclasses.replace(load_study(loaded, "s", [image]), question="is there a pleural effusion?")
        answers.append((loaded.task.answers, predict_prepared(loaded, [study], 1)[0]["text"]))
    assert answers[0] == answers[1] and answers[0][1] in answers[0][0]


def test_evaluate_refuses_a_negative_max_studies(capsys: pytest.CaptureFixture[str]):
    from medvl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "runs/any", "--max-studies", "-1"])
    assert exit_info.value.code == 2 and "--max-studies: must be 0 or more, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("recipe,folder", [("biomedgpt_vqa_rad", "vqa_rad"), ("biomedgpt_slake", "slake")])
def test_real_vqa_recipes_run_on_the_shared_data(recipe: str, folder: str, tmp_path: Path):
    from .conftest import SHARED_DATA

    root = SHARED_DATA / folder
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import train

    run = tmp_path / "run"
    train(
        load_experiment(
            recipe,
            [
                f"data.root={root}",
                f"train.output_dir={run}",
                "train.progress=false",
                "train.num_threads=1",
                "train.loggers=[jsonl]",
                "data.batch_size=4",
                "data.max_studies=40",
                "tokenizer.vocab_size=400",
                "model.image_size=32",
                "generation.num_beams=2",
                *UNIFIED_TINY,
            ],
        )
    )
    result = evaluate(run, split="val", max_studies=8, progress=False, options=ScoringOptions(bootstrap=0, html=False))
    assert result["vqa"]["n"] == 8 and result["vqa"]["outside_candidates"] == 0


# ------------------------------------------------------------------------------------ prediction requests
def test_a_request_for_an_untrained_subtask_is_refused_with_the_way_out():
    vqa_only = InstructedGenerationOptions(tasks=["vqa"])
    assert vqa_only.request_task(" is there an effusion? ") == "vqa"
    with pytest.raises(ValueError, match=r"trained for task.tasks=\[vqa\] only.*--question"):
        vqa_only.request_task("")
    captioner = InstructedGenerationOptions(tasks=["caption", "classification"])
    assert captioner.request_task("") == "caption"
    with pytest.raises(ValueError, match="does not answer questions.*leave out the question"):
        captioner.request_task("is there an effusion?")
    assert InstructedGenerationOptions(tasks=["classification"]).request_task("") == "classification"
    with pytest.raises(ValueError, match=r"task.predict_task must name one of them.*'caption'"):
        InstructedGenerationOptions(tasks=["classification"], predict_task="caption").request_task("")


def test_predict_serve_and_demo_refuse_what_the_checkpoint_cannot_answer(parts):
    from types import SimpleNamespace

    from medvl.demo.app import create_demo
    from medvl.serve.app import create_app

    _, assets = parts
    loaded = tiny_unified(assets, tasks=["vqa"])
    assert loaded.takes_question and loaded.requires_question
    loaded.check_request("is the heart enlarged?")
    with pytest.raises(ValueError, match="--question"):
        loaded.check_request("")
    with pytest.raises(ValueError, match=r"ask a question about the image \(the 'question' field\)"):
        loaded.check_request("", "the 'question' field")
    create_app(loaded)  # a VQA-only model is served and demoed: its requests ask a question
    create_demo(loaded)
    mute = tiny_unified(assets, tasks=["classification"], predict_task="caption")  # answers nothing it may be asked
    assert not mute.takes_question and mute.requires_question
    with pytest.raises(ValueError, match=r"cannot serve run: .*task.predict_task must name one of them"):
        create_app(mute)
    with pytest.raises(ValueError, match=r"cannot demo run: .*task.predict_task must name one of them"):
        create_demo(mute)
    captioner = dataclasses.replace(loaded, task=SimpleNamespace(name="report_generation"))
    assert not captioner.takes_question and not captioner.requires_question
    captioner.check_request("")
    with pytest.raises(ValueError, match=r"report generation checkpoint does not answer questions.*\(--question\)"):
        captioner.check_request("is the heart enlarged?")


def test_predict_task_may_change_on_resume():
    from medvl.train.run_folder import config_differences

    saved = {"task": {"tasks": ["vqa"], "predict_task": "caption"}}
    assert config_differences(saved, {"task": {"tasks": ["vqa"], "predict_task": ""}}) == []
    assert config_differences(saved, {"task": {"tasks": ["caption"], "predict_task": ""}})


def test_overrides_may_follow_the_flags(capsys):
    from medvl.cli import main

    assert (
        main(["train", "biomedgpt_vqa_tiny_synthetic", "--print-config", "train.max_steps=7", "task.tasks=[vqa]"]) == 0
    )
    assert "max_steps: 7" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "biomedgpt_vqa_tiny_synthetic", "--print-config", "--bogus"])


def test_wrong_subtasks_for_the_data_are_named_before_training(parts):
    studies, assets = parts
    captioner = _task(assets, tasks=["caption"])
    cfg = dataclasses.replace(captioner.cfg, train=TrainConfig(select_metric="vqa_accuracy"))
    with pytest.raises(ValueError, match=r"select_metric=vqa_accuracy.*leaves out.*select_metric=caption_bleu_4"):
        InstructedGenerationTask(captioner.model, assets, cfg)
    labelled = [s for s in studies if s.labels and not s.question][:4]
    labelled = [dataclasses.replace(s, report="") for s in labelled]
    with pytest.raises(ValueError, match=r"serve classification: set task.tasks=\[classification\].*vqa_rad"):
        _task(assets, tasks=["vqa"]).dataset(labelled, training=True)


def test_a_missing_split_names_the_splits_present_and_the_way_out():
    from medvl.data.sources import DataSourceError, require_split

    with pytest.raises(DataSourceError, match=r"no 'test' studies; splits present: train \(1\).*--split NAME"):
        require_split({"train": [object()], "test": []}, "test")


def test_classification_needs_two_classes_the_training_studies_show(parts):
    studies, assets = parts
    cfg = _task(assets, tasks=["classification"]).cfg
    one_class = [dataclasses.replace(s, labels={"Cardiomegaly": 1, "Edema": 0}) for s in studies[:4]]
    no_none = dataclasses.replace(cfg, task=InstructedGenerationOptions(tasks=["classification"]))
    with pytest.raises(ValueError, match=r"at least 2 class names.*\['Cardiomegaly'\] \(4 studies\)"):
        InstructedGenerationTask.build_assets(no_none, one_class, None)
    named = dataclasses.replace(
        no_none, task=InstructedGenerationOptions(tasks=["classification"], class_names=["Edema"])
    )
    with pytest.raises(ValueError, match=r"\['Edema'\] are positive in no training study.*data.max_studies"):
        InstructedGenerationTask.build_assets(named, one_class, None)


def test_max_studies_of_a_mixture_keeps_a_share_of_every_entry(synth_root: Path):
    from medvl.config.experiment import load_experiment

    synth = "{n: 40, seed: 3, image_size: 64, lateral: true}"
    mixture = (
        f"data.mixture=[{{source: synthetic, root: {synth_root}, synth: {synth}}}, "
        f"{{source: cxr_vqa_synthetic, root: {synth_root}, synth: {synth}}}]"
    )
    cfg = load_experiment("biomedgpt_pretrain_tiny_synthetic", ["data.max_studies=10", mixture]).data
    train = load_studies(cfg)["train"]
    prefixes = [s.id.split("/")[0] for s in train]
    assert len(train) == 10 and prefixes.count(prefixes[0]) == 5 and len(set(prefixes)) == 2
    assert prefixes == sorted(prefixes, key=prefixes.index)  # each entry's studies stay together, in order
