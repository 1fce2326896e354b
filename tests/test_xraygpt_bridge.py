"""The xraygpt family's bridges (BLIP-2 Q-Former, LLaVA-style MLP or linear over every patch token) at tiny size:
shapes, a training step that reaches every part, and checkpoints written before `model.bridge` existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medvl.config.experiment import load_experiment
from medvl.config.loader import ConfigError
from medvl.infer.predictor import load_trained
from medvl.models.families import MODEL_FAMILIES
from medvl.models.xraygpt import BRIDGES
from medvl.tasks.instructed_report import InstructedReportTask
from medvl.train.loop import Trainer

from .conftest import tiny_overrides
from .test_xraygpt import XRAYGPT, _batch, _model, tokenizer  # noqa: F401 - the fixture is used by name

# The tiny preset: 32 px images in 8 px patches (a 4x4 grid) per view, 2 views, 4 queries, a 64-wide LLM.
TOKENS = {"qformer": 4, "mlp": 2 * 16, "linear": 2 * 16}


@pytest.mark.parametrize("bridge", BRIDGES)
def test_bridge_shapes_and_one_training_step(tokenizer, bridge: str) -> None:  # noqa: F811
    model = _model(
        tokenizer, bridge=bridge, freeze_vision=False, freeze_llm=False, template={"prompts": ["Describe the image."]}
    )
    batch = _batch(tokenizer)
    image = model.encode_images(batch.images, batch.view_ids, batch.view_mask)
    assert image.shape == (2, TOKENS[bridge], 64) and model.n_image_tokens == TOKENS[bridge]
    assert (model.qformer is not None) == (bridge == "qformer")
    task = InstructedReportTask(model, tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    before = task(batch)["loss"]
    before.backward()
    for part in ("encoder.", "proj.", "llm.", *(("qformer.", "query_tokens") if bridge == "qformer" else ())):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads), part
    optimizer.step()
    assert float(task(batch)["loss"].detach()) < float(before.detach())


def test_the_mlp_bridge_is_two_layers_per_token(tokenizer) -> None:  # noqa: F811
    model = _model(tokenizer, bridge="mlp")
    batch = _batch(tokenizer)
    feats, _ = model.vision_tokens(batch.images, batch.view_ids, batch.view_mask)
    first, act, second = model.proj
    assert isinstance(act, torch.nn.GELU)
    torch.testing.assert_close(
        model.encode_images(batch.images, batch.view_ids, batch.view_mask), second(act(first(feats)))
    )


def test_an_unknown_bridge_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="model.bridge must be one of qformer, mlp, linear"):
        MODEL_FAMILIES.get("xraygpt").make_config("tiny", {"bridge": "perceiver"})


@pytest.mark.parametrize(
    ("old", "bridge"),
    [
        ({"qformer": True, "projection": "mlp"}, "qformer"),
        ({"qformer": False, "projection": "mlp"}, "mlp"),
        ({"qformer": False}, "linear"),
    ],
)
def test_configs_from_before_the_bridge_field_read_as_a_bridge(old: dict, bridge: str) -> None:
    config = MODEL_FAMILIES.get("xraygpt").make_config("tiny", old)
    assert config.bridge == bridge and config.projection == old.get("projection", "linear")


def test_a_checkpoint_from_before_the_bridge_field_loads_identically(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_experiment(
        "xraygpt_tiny_synthetic",
        tiny_overrides(synth_root, tmp_path, *XRAYGPT, "model.bridge=mlp", "train.max_steps=2", "train.eval_every=0"),
    )
    trainer = Trainer(cfg)
    trainer.fit()
    meta_path = tmp_path / "checkpoints" / "last" / "meta.json"
    meta = json.loads(meta_path.read_text())
    model = meta["config"]["model"]
    assert model.pop("bridge") == "mlp"
    model.update(qformer=False, projection="mlp")  # how this run's config read before `bridge`
    meta_path.write_text(json.dumps(meta))
    loaded = load_trained(tmp_path / "checkpoints" / "last")
    assert loaded.config.model.bridge == "mlp"
    batch = _batch(trainer.task.tokenizer)
    trainer.model.eval()
    args = (batch.images, batch.view_ids, batch.view_mask)
    torch.testing.assert_close(loaded.model.encode_images(*args), trainer.model.encode_images(*args), rtol=0, atol=0)


def test_merge_size_concatenates_each_block_of_neighbouring_patches(tokenizer) -> None:  # noqa: F811
    model = _model(tokenizer, bridge="linear", merge_size=2)
    batch = _batch(tokenizer)
    feats, _ = model.vision_tokens(batch.images, batch.view_ids, batch.view_mask)  # [2, 2 views x 4 x 4, 32]
    merged = model.merge_tokens(feats)
    assert merged.shape == (2, 2 * 4, 4 * 32) and model.n_image_tokens == 8
    grid = feats.view(2, 2, 4, 4, 32)  # [study, view, row, col, D]
    # Second view, block (row 1, col 0) of the 2x2 blocks: patches (2, 0), (2, 1), (3, 0), (3, 1) side by side.
    block = torch.cat([grid[:, 1, 2, 0], grid[:, 1, 2, 1], grid[:, 1, 3, 0], grid[:, 1, 3, 1]], dim=-1)
    torch.testing.assert_close(merged[:, 4 + 2], block, rtol=0, atol=0)
    image = model.encode_images(batch.images, batch.view_ids, batch.view_mask)
    torch.testing.assert_close(image, model.proj(merged))
    task = InstructedReportTask(model, tokenizer)
    assert int(task._sequences([("a", "b")], None, False)["image_mask"].sum()) == 8


def test_a_merge_size_that_does_not_divide_the_grid_is_refused(tokenizer) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="merge_size=3 does not divide the encoder's 4x4 patch grid"):
        _model(tokenizer, bridge="mlp", merge_size=3)
    assert _model(tokenizer, bridge="qformer", merge_size=3).n_image_tokens == 4  # the Q-Former ignores it


@pytest.mark.parametrize("bridge", ["qformer", "mlp"])
def test_hf_parts_use_eager_attention_on_cpu_with_the_same_logits(tokenizer, bridge: str) -> None:  # noqa: F811
    """On a CPU the LLM (and Q-Former) switch from SDPA to HF's eager attention, which is faster there in bf16 and
    computes the same function: the logits match SDPA's."""
    model = _model(tokenizer, bridge=bridge, template={"prompts": ["Describe the image."]}).eval()
    task = InstructedReportTask(model, tokenizer)
    parts = [model.llm, *([model.qformer] if bridge == "qformer" else [])]
    assert all(p.config._attn_implementation == "sdpa" for p in parts)  # as built
    batch = _batch(tokenizer)
    with torch.no_grad():
        eager = task(batch)["loss"]
        assert all(p.config._attn_implementation == "eager" for p in parts)
        model._use_attention_for = lambda device: None  # keep SDPA for the comparison
        for p in parts:
            p.set_attn_implementation("sdpa")
        sdpa = task(batch)["loss"]
    assert model._built_attention == {"llm": "sdpa", **({"qformer": "sdpa"} if bridge == "qformer" else {})}
    torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-6)
