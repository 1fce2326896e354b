"""The mae family and the masked_modeling task: masks, loss, pretrain -> fine-tune weight transfer, evaluation with
reconstructions, pretrained key mapping, layer-wise lr decay and the weight-decay schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medvl.config.experiment import experiment_from_dict, load_experiment
from medvl.models.families import MODEL_FAMILIES
from medvl.models.mae import MaskedVideoViT, token_grid
from medvl.tasks.masked_modeling import ClipBatch, MaskedModelingTask, running_cell_mask, tube_mask

from .conftest import tiny_overrides

FIXTURE = ["data.source=synthetic", "data.synth.n=40", "data.synth.seed=3", "data.synth.image_size=64"]


def _model(**fields: object) -> MaskedVideoViT:
    family = MODEL_FAMILIES.get("mae")
    return family.build(family.make_config("tiny", dict(fields)))


def _task(model: MaskedVideoViT, **options: object) -> MaskedModelingTask:
    import dataclasses

    cfg = experiment_from_dict({"model": {"family": "mae", "size": "tiny"}, "task": dict(options)})
    cfg.model = dataclasses.replace(model.config)
    return MaskedModelingTask(model, None, cfg)


def _batch(model: MaskedVideoViT, b: int = 3) -> ClipBatch:
    c = model.config
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, c.num_frames, c.in_chans, c.image_size, c.image_size, generator=g)
    return ClipBatch(
        [f"s{i}" for i in range(b)],
        images,
        torch.zeros(b, c.num_frames, dtype=torch.long),
        torch.ones(b, c.num_frames, dtype=torch.bool),
    )


# --------------------------------------------------------------------------------------------------- the model
def test_images_and_clips_through_the_head_and_the_decoder() -> None:
    image = _model(num_outputs=3)
    assert image.config.tubelet_size == 1 and image.encoder.grid == (4, 4)
    batch = _batch(image)
    assert image(batch.images, batch.view_ids, batch.view_mask).shape == (3, 3)
    clip = _model(num_frames=4, in_chans=3)
    assert clip.config.tubelet_size == 2 and token_grid(clip.config) == (2, 4, 4) and clip.num_tokens == 32
    batch = _batch(clip, 2)
    hidden = tube_mask(clip.token_grid, 0.75, 2)
    pred = clip(batch.images, batch.view_ids, batch.view_mask, hidden, hidden)
    assert pred.shape == (2, 24, 2 * 8 * 8 * 3)  # 12 of 16 positions hidden in each of 2 tubelets
    assert torch.equal(clip.unpatchify(clip.patchify(batch.images)), batch.images)
    with pytest.raises(ValueError, match="call it with encoder_mask and decode"):
        clip(batch.images, batch.view_ids, batch.view_mask)
    with pytest.raises(ValueError, match=r"model.num_frames"):
        clip(batch.images[:, :2], batch.view_ids[:, :2], batch.view_mask[:, :2], hidden, hidden)


def test_config_errors_name_the_field() -> None:
    family = MODEL_FAMILIES.get("mae")
    with pytest.raises(ValueError, match="model.max_views=2 must equal model.num_frames=4"):
        family.make_config("tiny", {"num_frames": 4, "max_views": 2})
    with pytest.raises(ValueError, match="multiple of model.tubelet_size"):
        family.make_config("tiny", {"num_frames": 3})
    giant = family.make_config("giant", {})
    assert (giant.embed_dim, giant.depth, giant.mlp_dim, giant.patch_size, giant.num_frames) == (1408, 40, 6144, 14, 16)


def test_head_poolings_mean_attention_and_flatten() -> None:
    from medvl.models.mae import TokenPool
    from medvl.train.optim import param_groups

    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 16, 64, generator=g)
    norm = torch.nn.LayerNorm(64)
    mean = TokenPool("mean", 64, 2, 16)
    torch.testing.assert_close(mean(norm, tokens), norm(tokens.mean(1)))
    flat = TokenPool("flatten", 64, 2, 16)
    assert flat.out_dim == 16 * 64
    out = flat(norm, tokens)
    torch.testing.assert_close(out.view(2, 16, 64), norm(tokens))  # every token kept, in order
    attention = TokenPool("attention", 64, 2, 16)
    torch.nn.init.zeros_(attention.cls_token)  # a zero query weighs the tokens equally: the mean of their values
    values = torch.nn.functional.linear(
        tokens, *(t.chunk(3)[2] for t in (attention.attn.in_proj_weight, attention.attn.in_proj_bias))
    )
    expected = norm(attention.attn.out_proj(values.mean(1)))
    torch.testing.assert_close(attention(norm, tokens), expected)
    torch.nn.init.normal_(attention.cls_token, std=3.0, generator=g)
    assert (attention(norm, tokens) - expected).abs().max() > 0.1  # a learned query weighs tokens unequally

    model = _model(num_outputs=2, pooling="attention")
    assert model.head.in_features == 64 and model(torch.rand(3, 1, 1, 32, 32)).shape == (3, 2)
    no_decay = {id(p) for grp in param_groups(model, 0.05) if grp["weight_decay"] == 0 for p in grp["params"]}
    assert id(model.pool.cls_token) in no_decay
    flat_model = _model(num_outputs=2, pooling="flatten")
    assert flat_model.head.in_features == 16 * 64 and flat_model(torch.rand(3, 1, 1, 32, 32)).shape == (3, 2)
    # A tracker with mean pooling takes a classifier's encoder and leaves its attention pool out.
    state, dropped = _model(num_outputs=2).init_state(model.state_dict())
    assert any(k.startswith("pool.") for k in dropped) and not any(k.startswith("pool.") for k in state)
    with pytest.raises(ValueError, match="model.pooling must be one of mean, attention, flatten, got 'max'"):
        MODEL_FAMILIES.get("mae").make_config("tiny", {"pooling": "max"})


# ----------------------------------------------------------------------------------------------------- masks
def test_tube_and_running_cell_masks() -> None:
    torch.manual_seed(1)
    hidden = tube_mask((4, 4, 6), 0.9, 5).view(5, 4, 24)
    assert (hidden.sum(-1) == round(0.9 * 24)).all()
    assert (hidden == hidden[:, :1]).all()  # a tube: the same positions in every tubelet
    torch.manual_seed(1)
    assert torch.equal(tube_mask((4, 4, 6), 0.9, 5).view(5, 4, 24), hidden)  # the global RNG decides
    decoded = running_cell_mask((4, 4, 6), 0.5, torch.tensor([0, 1, 2, 3])).view(4, 4, 4, 6)
    assert (decoded.sum((-1, -2)) == 12).all()  # half of every frame
    cells = decoded.view(4, 4, 2, 2, 3, 2).permute(0, 1, 2, 4, 3, 5).reshape(4, 4, 6, 4)
    assert (cells.sum(-1) == 2).all()  # half of every 2x2 cell
    assert not torch.equal(decoded[:, 0], decoded[:, 1])  # the cell runs from one tubelet to the next


def test_loss_is_the_mse_over_hidden_tokens_and_evaluation_masks_are_seeded() -> None:
    model = _model(num_frames=2, in_chans=1)
    task = _task(model, mask_ratio=0.75, decoder_mask_ratio=0.5)
    batch = _batch(model, 4)
    model.train()
    out = task(batch)
    assert 0 < float(out["weight"]) < 4 * 12  # only hidden tokens among the decoded ones count
    out["loss"].backward()
    kernel = model.encoder.videomae.embeddings.patch_embeddings.projection.weight
    assert model.mask_token.grad is not None and kernel.grad is not None
    model.eval()
    torch.nn.init.zeros_(model.decoder.head.weight)
    torch.nn.init.zeros_(model.decoder.head.bias)
    rows = task.validation_outputs(batch)
    for row in rows:  # predicting 0 = predicting each patch's mean: the loss is the baseline's
        assert row["loss"] == pytest.approx(row["baseline"], rel=1e-6) and row["baseline"] > 0.5
    assert float(task(batch)["weight"]) == 4 * 12  # evaluation reconstructs every hidden token
    torch.manual_seed(123)
    again = [r["loss"] for r in task.validation_outputs(batch)]
    assert again == [r["loss"] for r in rows]  # seeded by study id, not by the global RNG


def test_without_patch_normalization_the_baseline_is_the_visible_mean_colour() -> None:
    model = _model(num_frames=2, in_chans=3)
    task = _task(model, mask_ratio=0.75, norm_pix_loss=False)
    batch = _batch(model, 2)
    colour = torch.tensor([0.2, 0.5, 0.9])
    batch.images[0] = colour[None, :, None, None]  # one flat colour: the visible mean predicts it exactly
    model.eval()
    rows = task.validation_outputs(batch)
    assert rows[0]["baseline"] == pytest.approx(0.0, abs=1e-10)
    # Uniform noise on [0, 1], over std 0.25 after normalization: the visible mean misses by var 1/12 / 0.25^2 = 4/3
    assert rows[1]["baseline"] == pytest.approx(4 / 3, rel=0.1)


# ---------------------------------------------------------------------------- runner: train, evaluate, init_from
def test_pretrain_evaluate_then_finetune_from_the_encoder(synth_root: Path, tmp_path: Path) -> None:
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.infer.predictor import load_study, load_trained, predict_prepared
    from medvl.train.checkpoint import load_checkpoint
    from medvl.train.loop import Trainer

    pre = tmp_path / "pre"
    cfg = load_experiment(
        "cxr_mae_pretrain",
        tiny_overrides(
            synth_root,
            pre,
            *FIXTURE,
            "train.max_steps=40",
            "train.eval_every=40",
            "train.lr=3e-3",
            "train.warmup_steps=5",
            "model.embed_dim=64",
            "model.depth=2",
            "model.num_heads=2",
            "model.mlp_dim=128",
            "model.decoder_dim=32",
            "model.decoder_depth=1",
            "model.decoder_heads=2",
            "model.decoder_mlp_dim=64",
        ),
    )
    trainer = Trainer(cfg)
    batch = trainer.task.collate([trainer.train_set[i] for i in range(8)])
    trainer.model.eval()
    with torch.no_grad():
        before = float(trainer.task(batch)["loss"])
    summary = trainer.fit()
    trainer.model.eval()
    with torch.no_grad():
        after = float(trainer.task(batch)["loss"])
    assert cfg.train.select_metric == "loss" and summary["steps"] == 40
    assert after < before - 0.05, (before, after)
    assert {"loss", "baseline_loss", "loss_ratio"} <= set(summary["final_val_metrics"])

    result = evaluate(pre, split="test", progress=False, options=ScoringOptions(bootstrap=20))
    out = Path(result["out_dir"])
    assert result["task"] == "masked_modeling" and result["n_examples"] == 4
    assert result["reconstruction_loss"] < result["baseline"]["reconstruction_loss"]
    lo, hi = result["reconstruction_loss_ci"]
    assert lo <= result["reconstruction_loss"] <= hi
    gain = result["reconstruction_loss"] - result["baseline"]["reconstruction_loss"]
    assert result["difference_to_baseline"] == pytest.approx(gain)
    # Per-patch normalized targets: the baseline is (n - 1) / n for every study, so the paired interval of the
    # difference is the loss's interval moved by it.
    base = result["baseline"]["reconstruction_loss"]
    moved = [v - base for v in result["reconstruction_loss_ci"]]
    assert result["difference_to_baseline_ci"] == pytest.approx(moved, abs=1e-5)  # float32 losses
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    pngs = sorted((out / "reconstructions").glob("*.png"))
    assert len(pngs) == 4 and all((out / r["image"]).is_file() for r in rows)
    from PIL import Image

    assert Image.open(pngs[0]).size == (3 * 32, 32)  # original | masked | reconstruction
    assert "reconstructions/" in (out / "report.html").read_text()
    loaded = load_trained(pre)
    study_dir = synth_root / "images" / rows[0]["id"]
    record = predict_prepared(loaded, [load_study(loaded, "x", sorted(study_dir.glob("*.png"))[:1])])[0]
    assert set(record) == {"reconstruction_loss", "baseline_loss", "mask_ratio"} and record["reconstruction_loss"] > 0
    from fastapi.testclient import TestClient

    from medvl.serve.app import create_app

    with TestClient(create_app(loaded)) as client:
        png = sorted(study_dir.glob("*.png"))[0].read_bytes()
        answer = client.post("/v1/reconstructions", files=[("images", ("a.png", png, "image/png"))])
        assert answer.status_code == 200, answer.text
        assert answer.json()["reconstruction_loss"] == pytest.approx(record["reconstruction_loss"], rel=1e-4)

    fine = tmp_path / "fine"
    cfg = load_experiment(
        "cxr_classify_nih_mae",
        tiny_overrides(
            synth_root,
            fine,
            *FIXTURE,
            "task.labels=[]",
            f"train.init_from={pre}",
            "train.max_steps=1",
            "model.embed_dim=64",
            "model.depth=2",
            "model.num_heads=2",
            "model.mlp_dim=128",
        ),
    )
    trainer = Trainer(cfg)
    saved = load_checkpoint(pre / "checkpoints" / "last", load_train_state=False).model_state
    state = trainer.model.state_dict()
    encoder = [k for k in state if k.startswith("encoder.")]
    assert encoder and all(torch.equal(state[k], saved[k]) for k in encoder)
    assert "head.weight" in state and not any(k.startswith("decoder.") for k in state)
    assert trainer.fit()["steps"] == 1


# ------------------------------------------------------------------------------------------ pretrained weights
def _original_names(model: MaskedVideoViT) -> dict[str, torch.Tensor]:
    """The model's weights under VideoMAE's original (timm-style) names, as its .pth checkpoints hold them."""
    sd, out = model.state_dict(), {}
    out["encoder.patch_embed.proj.weight"] = sd["encoder.videomae.embeddings.patch_embeddings.projection.weight"]
    out["encoder.patch_embed.proj.bias"] = sd["encoder.videomae.embeddings.patch_embeddings.projection.bias"]
    out["encoder.norm.weight"] = sd["encoder.videomae.layernorm.weight"]
    out["encoder.norm.bias"] = sd["encoder.videomae.layernorm.bias"]
    for i in range(model.config.depth):
        hf = f"encoder.videomae.encoder.layer.{i}."
        orig = f"encoder.blocks.{i}."
        out[orig + "attn.qkv.weight"] = torch.cat(
            [sd[hf + f"attention.attention.{n}.weight"] for n in ("query", "key", "value")]
        )
        out[orig + "attn.q_bias"] = sd[hf + "attention.attention.query.bias"]
        out[orig + "attn.v_bias"] = sd[hf + "attention.attention.value.bias"]
        for o, h in (
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("attn.proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ):
            for kind in ("weight", "bias"):
                out[orig + f"{o}.{kind}"] = sd[hf + f"{h}.{kind}"]
    return out


def test_a_videomae_checkpoint_with_encoder_prefixes_loads_fully(tmp_path: Path) -> None:
    from medvl.models.mae_weights import load_pretrained

    source = _model(num_frames=2)
    path = tmp_path / "videomae.pth"
    torch.save({"model": {f"module.{k}": v for k, v in _original_names(source).items()}}, path)
    target = _model(num_frames=2, num_outputs=2)
    report = load_pretrained(target, path)
    assert report.encoder_share == 1.0 and not report.missing and not report.unused and not report.mismatched
    mine, theirs = target.state_dict(), source.state_dict()
    for key in mine:
        if key.startswith("encoder."):
            torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0, msg=key)

    # The same file through the recipe field, and an HF VideoMAE folder.
    family = MODEL_FAMILIES.get("mae")
    built = family.build(family.make_config("tiny", {"num_frames": 2, "pretrained": str(path)}))
    norm = "encoder.videomae.layernorm.weight"
    assert torch.equal(built.state_dict()[norm], theirs[norm])
    from transformers import VideoMAEForPreTraining

    from medvl.models.mae import hf_config

    hf = VideoMAEForPreTraining(hf_config(source.config))
    hf.save_pretrained(tmp_path / "hf")
    pre = _model(num_frames=2)
    report = load_pretrained(pre, tmp_path / "hf")
    assert report.encoder_share == 1.0 and not report.missing and not report.unused, report.summary()
    torch.testing.assert_close(pre.state_dict()["decoder.head.weight"], hf.state_dict()["decoder.head.weight"])


def test_a_timm_vit_loads_and_another_architecture_fails_loudly(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from medvl.models.mae_weights import PretrainedWeightsError, load_pretrained

    vit = timm.models.VisionTransformer(
        img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0
    )
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    model = _model(num_frames=2)  # grayscale clips in tubelets of 2: the RGB 2-D kernel is summed and inflated
    report = load_pretrained(model, tmp_path / "vit.pth")
    assert report.encoder_share > 0.9 and "pos_embed" in report.unused
    q = model.state_dict()["encoder.videomae.encoder.layer.1.attention.attention.query.weight"]
    torch.testing.assert_close(q, vit.state_dict()["blocks.1.attn.qkv.weight"][:64])
    kernel = model.state_dict()["encoder.videomae.embeddings.patch_embeddings.projection.weight"]
    torch.testing.assert_close(kernel.sum(2)[:, 0], vit.state_dict()["patch_embed.proj.weight"].sum(1))

    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 8)).state_dict(), tmp_path / "cnn.pth")
    with pytest.raises(PretrainedWeightsError, match="0% of the encoder's tensors matched"):
        load_pretrained(_model(), tmp_path / "cnn.pth")
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        load_pretrained(_model(), tmp_path / "nope.pth")


# ------------------------------------------------------------------------------ optimizer: layer decay, wd schedule
def test_layer_decay_in_the_optimizer_that_steps_and_the_wd_schedule(synth_root: Path, tmp_path: Path) -> None:
    from medvl.train.loop import Trainer

    decay = 0.5
    cfg = load_experiment(
        "cxr_classify_nih_mae",
        tiny_overrides(
            synth_root,
            tmp_path,
            *FIXTURE,
            "task.labels=[]",
            "train.init_from=",
            "train.max_steps=4",
            f"train.layer_decay={decay}",
            "model.depth=3",
            "train.warmup_steps=2",
            "train.weight_decay=0.05",
            "train.weight_decay_end=0.2",
            "train.eval_every=100",
        ),
    )
    trainer = Trainer(cfg)
    model, depth = trainer.model, 3

    def lr_of(name: str) -> float:
        param = dict(model.named_parameters())[name]
        return next(g["lr"] for g in trainer.optimizer.param_groups if any(p is param for p in g["params"]))

    first = "encoder.videomae.encoder.layer.0.intermediate.dense.weight"
    last = f"encoder.videomae.encoder.layer.{depth - 1}.intermediate.dense.weight"
    embed = "encoder.videomae.embeddings.patch_embeddings.projection.weight"
    trainer.fit()
    assert trainer.state.step == 4
    lr_head = lr_of("head.weight")
    assert lr_head == pytest.approx(trainer.scheduler.get_last_lr()[0]) and lr_head > 0
    assert lr_of(last) == pytest.approx(lr_head * decay)
    assert lr_of(first) == pytest.approx(lr_of(last) * decay ** (depth - 1))
    assert lr_of(embed) == pytest.approx(lr_of(last) * decay**depth)  # the first layer vs the last block
    groups = trainer.optimizer.param_groups
    wd = {g["weight_decay"] for g in groups if g["initial_weight_decay"] > 0}
    assert len(wd) == 1 and 0.05 < wd.pop() <= 0.2  # moving along the cosine towards weight_decay_end
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.fc_norm.weight) in no_decay and id(model.head.bias) in no_decay


def test_schedules_without_warmup_and_mask_token_without_decay() -> None:
    from medvl.train.optim import build_optimizer
    from medvl.train.schedules import build_scheduler, weight_decay_at

    model = _model()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.mask_token) in no_decay
    sched = build_scheduler(opt, "cosine", warmup=0, total=10, min_lr_ratio=0.0, weight_decay_end=0.0)
    ratios = {g["lr"] / g["lr_scale"] for g in opt.param_groups}
    assert len(ratios) == 1 and ratios.pop() == pytest.approx(1e-3)  # warmup 0 starts at the peak, no 0/0
    for _ in range(9):
        opt.step()
        sched.step()
    assert weight_decay_at(0, 10, 0.05, 0.0) == 0.05 and weight_decay_at(9, 10, 0.05, 0.0) == pytest.approx(0.0)
    assert max(g["weight_decay"] for g in opt.param_groups) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="needs a model with layer ids"):
        build_optimizer(torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.05, layer_decay=0.75)


def test_masked_modeling_resumes_exactly_and_explains_a_finetuned_image(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medvl.train.checkpoint import load_checkpoint
    from medvl.train.loop import Trainer, train

    extra = (*FIXTURE, "train.max_steps=6", "train.save_every=1", "train.eval_every=100", "model.depth=1")
    train(load_experiment("cxr_mae_pretrain", tiny_overrides(synth_root, tmp_path / "full", *extra)))
    original = Trainer.save

    class Stop(Exception):
        pass

    def save_then_stop(self: Trainer, name: str, *args: object, **kwargs: object) -> Path:
        path = original(self, name, *args, **kwargs)
        if name == "step_0000003":
            raise Stop
        return path

    monkeypatch.setattr(Trainer, "save", save_then_stop)
    with pytest.raises(Stop):
        train(load_experiment("cxr_mae_pretrain", tiny_overrides(synth_root, tmp_path / "cut", *extra)))
    monkeypatch.setattr(Trainer, "save", original)
    train(load_experiment("cxr_mae_pretrain", tiny_overrides(synth_root, tmp_path / "cut", *extra)), resume="auto")
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last", load_train_state=False).model_state
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last", load_train_state=False).model_state
    for key in a:  # the same masks were drawn after the resume: the global RNG travels in the checkpoint
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)

    from medvl.infer.predictor import load_study, load_trained
    from medvl.infer.saliency import gradcam

    fine = tmp_path / "fine"
    train(
        load_experiment(
            "cxr_classify_nih_mae",
            tiny_overrides(
                synth_root,
                fine,
                *FIXTURE,
                "task.labels=[]",
                f"train.init_from={tmp_path / 'full'}",
                "train.max_steps=1",
                "model.depth=1",
            ),
        )
    )
    loaded = load_trained(fine)
    image = sorted((synth_root / "images").glob("*/*.png"))[0]
    study = load_study(loaded, "x", [image])
    probs = loaded.task.predict(loaded.task.inference_batch([study]))[0]
    cam = gradcam(loaded, study, probs)
    assert cam.shape == (1, 32, 32) and 0.0 <= cam.min() and cam.max() == pytest.approx(1.0)


def test_seed_004_in_miniature_specialize_then_track_on_clips(
    synth_root: Path, clips_root: Path, tmp_path: Path
) -> None:
    """Masked modeling on synthetic satellite clips, then the regression task on the same encoder (init_from)."""
    from medvl.train.checkpoint import load_checkpoint
    from medvl.train.loop import Trainer, train

    from .conftest import CLIPS_SETTINGS, clips_overrides

    clips = [
        *clips_overrides(clips_root),
        f"model.num_frames={CLIPS_SETTINGS['frames']}",
        "train.max_steps=2",
        "model.depth=1",
    ]
    pre = tmp_path / "pre"
    train(load_experiment("medicanes_specialize_tiny_synthetic", tiny_overrides(synth_root, pre, *clips)))
    recipe = tmp_path / "track.yaml"
    recipe.write_text(
        "model: {family: mae, size: tiny, embed_dim: 96, num_heads: 3, mlp_dim: 384}\n"
        "task: {name: regression, target_names: [x, y], normalize: true, loss: huber}\n"
    )
    trainer = Trainer(
        load_experiment(recipe, tiny_overrides(synth_root, tmp_path / "track", *clips, f"train.init_from={pre}"))
    )
    with pytest.raises(ValueError, match="trained with another model size"):
        Trainer(
            load_experiment(
                recipe,
                tiny_overrides(synth_root, tmp_path / "wrong", *clips, "model.embed_dim=48", f"train.init_from={pre}"),
            )
        )
    saved = load_checkpoint(pre / "checkpoints" / "last", load_train_state=False).model_state
    state = trainer.model.state_dict()
    assert trainer.model.config.num_outputs == 2 and trainer.model.config.tubelet_size == 2
    assert all(torch.equal(state[k], saved[k]) for k in state if k.startswith("encoder."))
    assert trainer.fit()["steps"] == 2


def test_the_three_shipped_medicane_stages_run_in_sequence_each_from_the_previous(
    synth_root: Path, clips_root: Path, tmp_path: Path
) -> None:
    """specialize (masked modeling) -> classify (init from stage 1) -> track (init from stage 2), the shipped tiny
    synthetic recipes at test size; each stage starts from exactly the weights the previous one saved."""
    from medvl.train.checkpoint import load_checkpoint
    from medvl.train.loop import Trainer

    from .conftest import CLIPS_SETTINGS, clips_overrides

    clips = [
        *clips_overrides(clips_root),
        f"model.num_frames={CLIPS_SETTINGS['frames']}",
        "train.max_steps=2",
        "model.depth=1",
        "train.eval_every=2",
    ]
    previous = None
    for stage in (
        "medicanes_specialize_tiny_synthetic",
        "medicanes_classify_tiny_synthetic",
        "medicanes_track_tiny_synthetic",
    ):
        run = tmp_path / stage
        init = [f"train.init_from={previous}"] if previous else []
        trainer = Trainer(load_experiment(stage, tiny_overrides(synth_root, run, *clips, *init)))
        if previous is not None:
            saved = load_checkpoint(previous / "checkpoints" / "last", load_train_state=False).model_state
            state = trainer.model.state_dict()
            encoder = [k for k in state if k.startswith("encoder.")]
            assert encoder and all(torch.equal(state[k], saved[k]) for k in encoder), stage
        assert trainer.fit()["steps"] == 2
        previous = run
    assert (
        load_checkpoint(previous / "checkpoints" / "last", load_train_state=False).metadata["config"]["task"]["name"]
        == "regression"
    )
