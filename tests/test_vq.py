"""The vq family (VQ image tokenizer) and the vq_tokenizer task: the quantizer (nearest code, straight-through
gradient, commitment loss, EMA codebook, dead-code restart), a taming-transformers checkpoint loaded through the one
key mapping (and another architecture refused), and a tiny run through the runner with its evaluation."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch

from medvl.models.families import MODEL_FAMILIES
from medvl.models.vq.checkpoint import load_vq_tokenizer, read_state_dict, taming_state_dict
from medvl.models.vq.config import VQConfig, config_from_taming_yaml
from medvl.models.vq.model import VQModel
from medvl.models.vq.quantizer import VectorQuantizer

# taming's layout at a test size: two levels, two residual blocks each, attention at the 8 px level, 32 groups.
TAMING_LIKE = {
    "image_size": 16,
    "in_chans": 3,
    "ch": 32,
    "ch_mult": (1, 2),
    "num_res_blocks": 2,
    "attn_resolutions": (8,),
    "z_channels": 32,
    "embed_dim": 8,
    "n_embed": 16,
    "norm_groups": 32,
    "ema_decay": 0.0,
}


def _quantizer(**kw: float) -> VectorQuantizer:
    torch.manual_seed(0)
    q = VectorQuantizer(n_embed=5, embed_dim=3, **kw)
    q.embedding.weight.data = torch.randn(5, 3)
    return q


# ---------------------------------------------------------------------------------------------------- quantizer
def test_quantizer_picks_the_nearest_code_and_passes_the_gradient_straight_through() -> None:
    q = _quantizer(ema_decay=0.0).eval()
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = q(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(flat, q.embedding.weight.detach()).argmin(1)
    assert torch.equal(out.codes.flatten(), nearest)
    expected = q.embedding.weight.detach()[nearest].view(2, 4, 4, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.z_q, expected)
    weights = torch.randn_like(out.z_q)
    (out.z_q * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)  # d z_q / d z = identity


def test_commitment_and_codebook_losses_against_a_direct_computation() -> None:
    z = torch.randn(2, 3, 4, 4)
    for ema in (0.0, 0.99):
        q = _quantizer(beta=0.25, ema_decay=ema).eval()
        out = q(z)
        chosen = q.embedding.weight.detach()[out.codes].permute(0, 3, 1, 2)
        commitment = 0.25 * ((z - chosen) ** 2).mean()
        torch.testing.assert_close(out.commitment, commitment)
        codebook = 0.0 if ema else ((z - chosen) ** 2).mean()  # same value, gradient to the codebook only
        torch.testing.assert_close(out.loss, commitment + codebook)
    q = _quantizer(ema_decay=0.0)
    q(z).loss.backward()
    assert q.embedding.weight.grad is not None and q.embedding.weight.grad.abs().sum() > 0


def test_ema_moves_codes_to_their_vectors_and_dead_codes_restart() -> None:
    q = _quantizer(ema_decay=0.5, dead_code_threshold=0.0).train()
    z = torch.randn(1, 3, 8, 8)
    codes = q(z).codes.flatten()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    used = codes.unique()
    for _ in range(30):  # the same batch again and again: each used code converges to its vectors' mean
        q.cluster_size.zero_().add_(torch.bincount(codes, minlength=5).float())
        q.embed_sum.zero_().index_add_(0, codes, flat)
        q._ema_update(flat, codes)
    for k in used.tolist():
        torch.testing.assert_close(q.embedding.weight[k], flat[codes == k].mean(0), atol=1e-3, rtol=1e-3)
    # a code nobody uses falls below the threshold and is restarted at one of the batch's vectors
    restart = _quantizer(ema_decay=0.9, dead_code_threshold=0.5).train()
    far = torch.full((1, 3, 2, 2), 100.0) + torch.randn(1, 3, 2, 2)
    restart.embedding.weight.data[0] = 100.0  # code 0 takes every vector; the other four die
    restart(far)
    assert (restart.cluster_size >= 0.5).all()
    vectors = far.permute(0, 2, 3, 1).reshape(-1, 3)
    for k in range(1, 5):
        assert (restart.embedding.weight[k] - vectors).abs().sum(1).min() < 1e-5


# ------------------------------------------------------------------------------------------------------- model
def test_model_shapes_codes_and_decode_codes() -> None:
    torch.manual_seed(0)
    model = VQModel(VQConfig(image_size=16)).eval()
    images = torch.rand(2, 1, 16, 16)
    recon, q = model(images)
    assert recon.shape == images.shape and q.codes.shape == (2, 4, 4) and q.codes.max() < 256
    torch.testing.assert_close(model.decode_codes(model.codes(images)), recon)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 1, 18, 18))
    with pytest.raises(ValueError, match="norm_groups=8 must divide"):
        VQConfig(ch=12)


# -------------------------------------------------------------------------------------- taming checkpoints
def _taming_checkpoint(tmp_path: Path, prefix: str = "") -> tuple[Path, VQModel]:
    """A taming-style Lightning checkpoint of a random VQModel: its keys (optionally under a wrapper prefix), a
    discriminator's loss.* weights, and the trainer's other entries."""
    torch.manual_seed(1)
    source = VQModel(VQConfig(**TAMING_LIKE))
    state = {f"{prefix}{k}": v for k, v in source.state_dict().items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(4, 3, 3, 3)
    state["loss.logvar"] = torch.zeros(())
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1200}, path)
    return path, source


def test_a_taming_checkpoint_loads_fully_and_its_loss_weights_are_counted(tmp_path: Path) -> None:
    for prefix in ("", "first_stage_model."):
        path, source = _taming_checkpoint(tmp_path, prefix)
        target = VQModel(VQConfig(**TAMING_LIKE))
        mapped, report = taming_state_dict(read_state_dict(path), target)
        assert report.loaded == len(source.state_dict()) and report.ignored_loss == 3 and not report.unexpected
        target.load_state_dict(mapped)
        images = torch.rand(2, 3, 16, 16)
        assert torch.equal(target.eval().codes(images), source.eval().codes(images))
    # the same through the loader, the config from a taming yaml
    yaml_path = tmp_path / "model.yaml"
    yaml_path.write_text(
        "model:\n  target: taming.models.vqgan.VQModel\n  params:\n    embed_dim: 8\n    n_embed: 16\n"
        "    ddconfig: {double_z: false, z_channels: 32, resolution: 16, in_channels: 3, out_ch: 3, ch: 32,\n"
        "      ch_mult: [1, 2], num_res_blocks: 2, attn_resolutions: [8], dropout: 0.0}\n"
        "    lossconfig: {target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator}\n"
    )
    assert config_from_taming_yaml(yaml_path) == VQConfig(**TAMING_LIKE)
    model, line = load_vq_tokenizer(path, str(yaml_path))
    assert "3 loss.*" in line and not model.training and not any(p.requires_grad for p in model.parameters())


def test_a_checkpoint_of_another_architecture_fails_loudly(tmp_path: Path) -> None:
    path, _ = _taming_checkpoint(tmp_path)
    other = {**TAMING_LIKE, "num_res_blocks": 1}  # the file has a second block per level this one lacks
    with pytest.raises(ValueError, match=r"tokenizer weights this architecture lacks.*block\.1"):
        taming_state_dict(read_state_dict(path), VQModel(VQConfig(**other)))
    wider = {**TAMING_LIKE, "n_embed": 32}
    with pytest.raises(ValueError, match=r"another shape.*quantize.embedding.weight"):
        taming_state_dict(read_state_dict(path), VQModel(VQConfig(**wider)))
    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.randn(8, 3, 7, 7), "fc.weight": torch.randn(2, 8)}, resnet)
    with pytest.raises(ValueError, match="none of its 2 keys is a VQ tokenizer weight"):
        load_vq_tokenizer(resnet, "", {"size": "tiny"})
    with pytest.raises(ValueError, match="without a configuration"):
        load_vq_tokenizer(path)


def test_a_pickle_with_objects_is_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=1e-4)}, path)  # as old Lightning saved them
    with pytest.raises(ValueError, match="cannot be read as tensors only"):
        read_state_dict(path)


# ------------------------------------------------------------------------------------------------- the runner
def test_tiny_tokenizer_trains_and_evaluates_against_the_image_mean(tiny_vq_tokenizer: Path) -> None:
    import json

    from medvl.evaluate.run import ScoringOptions, evaluate

    summary = json.loads((tiny_vq_tokenizer / "train_summary.json").read_text())
    final = summary["final_val_metrics"]
    assert {"recon_mse", "baseline_mse", "code_usage", "perplexity"} <= set(final)
    assert 0 < final["code_usage"] <= 1 and 1 <= final["perplexity"] <= 256
    result = evaluate(tiny_vq_tokenizer, split="test", progress=False, options=ScoringOptions(bootstrap=0, html=False))
    assert result["code_grid"] == [8, 8] and result["n_embed"] == 256  # 32 px images, 4 px per code
    assert result["baseline"]["recon_mse"] > 0 and result["cell_mean_mse"] >= 0
    model, _ = load_vq_tokenizer(tiny_vq_tokenizer)
    assert isinstance(model, VQModel) and MODEL_FAMILIES.get("vq").task == "vq_tokenizer"


def test_train_crop_is_checked_and_used() -> None:
    from medvl.config.experiment import experiment_from_dict
    from medvl.tasks.vq_tokenizer import ImageBatch, VQTokenizerTask

    model_fields = {"family": "vq", "size": "tiny", "image_size": 32}
    cfg = experiment_from_dict({"model": model_fields, "task": {"train_crop": 16}})
    model = VQModel(cfg.model).train()
    task = VQTokenizerTask(model, None, cfg)
    out = task(ImageBatch(["a", "b"], torch.rand(2, 1, 32, 32)))
    assert out["loss"].requires_grad and out["recon_loss"] > 0
    cfg.task = dataclasses.replace(cfg.task, train_crop=18)
    with pytest.raises(ValueError, match="task.train_crop=18"):
        VQTokenizerTask(model, None, cfg)


def test_a_gumbel_vq_checkpoint_encodes_by_the_argmax_of_its_projection(tmp_path: Path) -> None:
    config = VQConfig(**{**TAMING_LIKE, "quantizer": "gumbel", "embed_dim": 32})  # GumbelVQ: embed_dim = z_channels
    torch.manual_seed(2)
    source = VQModel(config)
    state = {k: v for k, v in source.state_dict().items()}
    assert {"quantize.proj.weight", "quantize.embed.weight"} <= set(state)
    path = tmp_path / "gumbel.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model, _ = load_vq_tokenizer(path, "", {"size": "taming_f16", **dataclasses.asdict(config)})
    images = torch.rand(2, 3, 16, 16)
    scores = source.quantize.proj(source.quant_conv(source.encoder(images * 2 - 1)))
    assert torch.equal(model.codes(images), scores.argmax(1))
    with pytest.raises(RuntimeError, match="only encodes here"):
        model.train().encode(images)


def test_predict_gives_the_code_grid(tiny_vq_tokenizer: Path) -> None:
    from medvl.infer.predictor import load_trained

    loaded = load_trained(tiny_vq_tokenizer, device="cpu")
    images = torch.rand(2, 1, 32, 32)
    from medvl.tasks.vq_tokenizer import ImageBatch

    records = loaded.task.predict(ImageBatch(["a", "b"], images))
    codes = loaded.model.codes(images)
    assert [r["codes"] for r in records] == codes.tolist()
    assert records[0]["text"].splitlines()[1].split()[2] == f"<code_{int(codes[0, 1, 2])}>"
