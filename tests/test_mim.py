"""Masked image modelling in the instructed-generation task: the input's central region zeroed, targets in the
code range, the code-range constraint in training and generation, and the tokenizer -> MIM chain through the runner."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.data.config import DataConfig
from medvl.data.sources import load_studies
from medvl.data.tokenizer import train_bpe_tokenizer
from medvl.models.vq.checkpoint import load_vq_tokenizer
from medvl.tasks.instructed_generation import InstructedGenerationOptions, InstructedGenerationTask
from medvl.tasks.mim import ImageCoder, MIMOptions, central_box, mask_center, text_codes

from .conftest import tiny_overrides
from .unified_fixtures import tiny_task


@pytest.fixture(scope="module")
def parts(synth_root: Path, tiny_vq_tokenizer: Path):
    studies = load_studies(DataConfig(source="iu_xray", root=str(synth_root)))["train"][:8]
    tok = train_bpe_tokenizer([s.report for s in studies] + [" what is the image in the middle part?"], 300, 1)
    vq, _ = load_vq_tokenizer(tiny_vq_tokenizer)
    coder = ImageCoder(vq, len(tok))
    return studies, {"tokenizer": tok, "answers": [], "class_names": [], "coder": coder, "n_codes": coder.n_codes}


def _task(assets, tokenizer_path: Path, **options) -> InstructedGenerationTask:
    return tiny_task(assets, tasks=["caption", "mim"], mim=MIMOptions(tokenizer=str(tokenizer_path)), **options)


def _mim_batch(task, studies):
    """(dataset, its mim items' indices, their batch)."""
    ds = task.dataset(studies)
    picked = [i for i, k in enumerate(ds.order) if ds.examples[k].task == "mim"]
    return ds, picked, task.collate([ds[i] for i in picked])


def test_the_central_region_is_zeroed_and_nothing_else() -> None:
    assert central_box(32) == (8, 24) and central_box(256) == (64, 192)  # OFA: the 128 px centre of 256 px
    image = np.random.default_rng(0).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    masked = mask_center(image)
    inside = np.zeros((32, 32), dtype=bool)
    inside[8:24, 8:24] = True
    assert (masked[inside] == 0).all() and np.array_equal(masked[~inside], image[~inside])
    assert (image != 0).all()  # the input was untouched


def test_mim_examples_have_the_masked_image_and_code_targets(parts, tiny_vq_tokenizer: Path) -> None:
    studies, assets = parts
    task = _task(assets, tiny_vq_tokenizer)
    ds, picked, batch = _mim_batch(task, studies)
    offset, k = len(assets["tokenizer"]), assets["n_codes"]
    assert len(batch) == len(studies) and set(batch.tasks) == {"mim"}
    eos = assets["tokenizer"].eos_token_id
    for row in range(len(batch)):
        ids = batch.target_ids[row][batch.target_mask[row]].tolist()
        assert len(ids) == 4 * 4 + 1 and ids[-1] == eos  # 16 px centre of 32 px, 4 px per code
        assert all(offset <= i < offset + k for i in ids[:-1])
        assert (batch.images[row, :, 8:24, 8:24] == 0).all() and batch.images[row].sum() > 0
        # the targets are the tokenizer's codes of the unmasked image's centre
        image = ds.views(ds.source[ds.examples[ds.order[picked[row]]].study])[0]
        full = torch.from_numpy(image[8:24, 8:24].copy()).float().div(255)[None, None]
        codes = assets["coder"].vq.codes(full).flatten() + offset
        assert ids[:-1] == codes.tolist()
        assert text_codes(batch.targets[row]) == [i - offset for i in ids[:-1]]


def test_training_allows_only_codes_then_eos(parts, tiny_vq_tokenizer: Path) -> None:
    studies, assets = parts
    task = _task(assets, tiny_vq_tokenizer)
    ds = task.dataset(studies)
    picked = [i for i, k in enumerate(ds.order) if ds.examples[k].task == "mim"][:2]
    picked += [i for i, k in enumerate(ds.order) if ds.examples[k].task == "caption"][:2]
    batch = task.collate([ds[i] for i in picked])
    vocab, offset, k = task.model.config.vocab_size, len(assets["tokenizer"]), assets["n_codes"]
    for constrain in (True, False):  # the code range holds whether or not answers are constrained
        task.options.constrain = constrain
        mask = task.allowed_mask(batch, vocab)
        for row, t in enumerate(batch.tasks):
            if t == "caption":
                assert mask[row].all()
                continue
            assert set(mask[row, 0].nonzero().flatten().tolist()) == set(range(offset, offset + k))
            assert mask[row, 16].nonzero().flatten().tolist() == [assets["tokenizer"].eos_token_id]
    out = task(batch)
    assert {"loss_mim", "loss_caption"} <= set(out) and math.isfinite(out["loss"].item())


@pytest.mark.parametrize("beams", [1, 2])
def test_generation_emits_only_a_full_grid_of_codes(parts, tiny_vq_tokenizer: Path, beams: int) -> None:
    studies, assets = parts
    task = _task(assets, tiny_vq_tokenizer)
    task.generation = dataclasses.replace(task.generation, num_beams=beams, no_repeat_ngram_size=3)
    _, _, batch = _mim_batch(task, studies[:3])
    rows = task.outputs(batch)
    k = assets["n_codes"]
    for r in rows:
        codes = text_codes(r["generated"])
        assert len(codes) == 16 and all(0 <= c < k for c in codes)
        assert r["generated"] == " ".join(f"<code_{c}>" for c in codes)
        assert 0 < r["nll"] < 2 * math.log(k)
    metrics = task.validation_metrics(rows)
    assert metrics["mim_uniform_nll"] == pytest.approx(math.log(k))
    assert 0 <= metrics["mim_code_accuracy"] <= 1 and 0 <= metrics["mim_unigram_nll"] <= math.log(k)


def test_mim_needs_a_tokenizer_and_a_centre_of_whole_codes(parts, tiny_vq_tokenizer: Path) -> None:
    with pytest.raises(ValueError, match="task.mim.tokenizer is empty"):
        InstructedGenerationOptions(tasks=["mim"])
    _, assets = parts
    with pytest.raises(ValueError, match="not a multiple of the tokenizer's 4 px per code"):
        assets["coder"].grid(36)  # an 18 px centre
    assert assets["coder"].grid(64) == (8, 8)


def test_tokenizer_then_mim_recipe_chain_trains_and_evaluates(
    synth_root: Path, tiny_vq_tokenizer: Path, tmp_path: Path
) -> None:
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import train

    synth = "{n: 40, seed: 3, image_size: 64, lateral: true}"
    run = tmp_path / "mim"
    overrides = tiny_overrides(
        synth_root,
        run,
        "model.d_model=32",
        "model.ffn_dim=64",
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        "train.max_steps=3",
        "train.eval_every=3",
        "train.eval_max_studies=6",
        f"task.mim.tokenizer={tiny_vq_tokenizer}",
        f"data.mixture=[{{source: synthetic, root: {synth_root}, synth: {synth}}}, "
        f"{{source: cxr_vqa_synthetic, root: {synth_root}, synth: {synth}}}]",
    )[2:]  # the recipe's mixture, on the session's set
    summary = train(load_experiment("biomedgpt_mim_tiny_synthetic", overrides))
    final = summary["final_val_metrics"]
    assert summary["steps"] == 3 and {"mim_nll", "mim_code_accuracy", "mim_uniform_nll"} <= set(final)
    options = ScoringOptions(bootstrap=0, html=False, meteor=False)
    result = evaluate(run, split="test", max_studies=3, progress=False, options=options)
    assert "mim" in result["subtasks"] and result["mim"]["n_codes"] == 256
    assert result["mim"]["mim_uniform_nll"] == pytest.approx(math.log(256))
