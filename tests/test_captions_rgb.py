"""Images keep their channels, normalization comes with the weights, and captions keep all their references."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.evaluate.ptb import java_missing_reason

from .conftest import TINY_OVERRIDES

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def _write_coco(root: Path, n: int = 36) -> Path:
    """A COCO Karpathy-style set: RGB squares of one colour, five captions each."""
    (root / "images").mkdir(parents=True)
    images = []
    names = list(COLORS)
    for i in range(n):
        color = names[i % 3]
        pixels = np.zeros((24, 24, 3), np.uint8)
        pixels[:] = COLORS[color]
        pixels[6:18, 6:18] = 255 - np.array(COLORS[color], np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        split = "train" if i < 24 else ("val" if i < 30 else "test")
        captions = [
            f"a {color} square.",
            f"the square is {color}.",
            f"{color} background.",
            f"a picture in {color}.",
            f"something {color}.",
        ]
        images.append({"filename": f"{i}.png", "split": split, "imgid": i, "sentences": [{"raw": c} for c in captions]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    return root


def test_colour_reaches_the_encoder_and_every_caption_is_trained_and_scored(tmp_path: Path) -> None:
    from medvl.config.experiment import load_experiment
    from medvl.evaluate.run import ScoringOptions, evaluate
    from medvl.train.loop import Trainer

    root = _write_coco(tmp_path / "coco")
    overrides = [
        *TINY_OVERRIDES,
        "data.source=coco_captions",
        f"data.root={root}",
        "model.in_chans=3",
        "model.max_views=1",
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=6",
        "train.eval_every=6",
        "tokenizer.vocab_size=120",
        "train.select_metric=bleu_4",
    ]
    trainer = Trainer(load_experiment("quickstart", overrides))
    assert len(trainer.train_set) == 24 * 5  # each of the five captions of the 24 training images is a sample
    seen: list[torch.Tensor] = []
    hook = trainer.model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    trainer.fit()
    hook.remove()
    x = seen[0]  # normalized [N, C, H, W] at the encoder's input
    assert x.shape[1] == 3
    mean = trainer.cfg.model.image_mean, trainer.cfg.model.image_std
    corner = x[:, :, 0, 0] * mean[1] + mean[0]  # back to [0, 1]: the background colour of each image
    assert (corner[:, 0] - corner[:, 2]).abs().max() > 0.5  # red and blue differ: colour was not averaged away

    result = evaluate(
        tmp_path / "run",
        split="test",
        progress=False,
        options=ScoringOptions(bootstrap=0, meteor=False, tokenizer="python", html=False),
    )
    assert result["n_studies"] == 6
    rows = [json.loads(line) for line in (Path(result["out_dir"]) / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["references"]) == 5 for r in rows)


@pytest.mark.skipif(java_missing_reason() is not None, reason=f"{java_missing_reason()}")
def test_several_references_score_as_pycocoevalcap() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from medvl.evaluate.nlg import nlg_scores

    refs = [
        ["A red square on white.", "The square is red.", "red box"],
        ["Two dogs play in the park.", "Dogs playing.", "A pair of dogs on the grass."],
        ["No acute cardiopulmonary abnormality.", "The lungs are clear."],
        ["Mild cardiomegaly.", "The heart is mildly enlarged.", "Cardiomegaly, mild."],
    ]
    hyps = ["a red square.", "two dogs on grass.", "the lungs are clear.", "heart is enlarged."]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tok = PTBTokenizer()
        gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
        res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
        expected = {f"bleu_{k + 1}": v for k, v in enumerate(Bleu(4).compute_score(gts, res)[0])}
        expected["meteor"] = Meteor().compute_score(gts, res)[0]
        expected["rouge_l"] = Rouge().compute_score(gts, res)[0]
        expected["cider"] = Cider().compute_score(gts, res)[0]
    ours = nlg_scores(refs, hyps, tokenizer="java").scores
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    single = nlg_scores([r[0] for r in refs], hyps, tokenizer="java", meteor=False).scores
    assert single["bleu_1"] < ours["bleu_1"]  # more references can only match more n-grams here


def test_pretrained_preprocessing_config_sets_per_channel_normalization(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    from medvl.models.captioner import Captioner, CaptionerConfig
    from medvl.models.encoders import normalize_images

    folder = tmp_path / "vit"
    ViTModel(
        ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=8,
            num_channels=3,
        ),
        add_pooling_layer=False,
    ).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.25, 0.125]})
    )
    cfg = CaptionerConfig(
        image_size=32,
        in_chans=3,
        encoder="hf",
        encoder_weights=str(folder),
        d_model=32,
        n_layers=1,
        n_heads=2,
        vocab_size=50,
    )
    assert cfg.channel_mean == (0.1, 0.2, 0.3) and cfg.channel_std == (0.5, 0.25, 0.125)
    x = torch.full((1, 3, 2, 2), 0.5)
    out = normalize_images(x, cfg)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(0.5 - 0.1) / 0.5, (0.5 - 0.2) / 0.25, (0.5 - 0.3) / 0.125]))
    model = Captioner(cfg)
    memory, _ = model.encode(
        torch.rand(2, 1, 3, 32, 32), torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool)
    )
    assert memory.shape[0] == 2
    gray = CaptionerConfig(
        image_size=32,
        in_chans=1,
        encoder="hf",
        encoder_weights=str(folder),
        d_model=32,
        n_layers=1,
        n_heads=2,
        vocab_size=50,
    )
    assert gray.channel_mean == pytest.approx((0.2,)) and gray.channel_std == pytest.approx((0.875 / 3,))
    explicit = CaptionerConfig(image_size=32, in_chans=3, channel_mean=(0.4, 0.4, 0.4), channel_std=(0.2, 0.2, 0.2))
    assert explicit.channel_mean == (0.4, 0.4, 0.4)
    with pytest.raises(ValueError, match="one per channel"):
        CaptionerConfig(in_chans=3, channel_mean=(0.1, 0.2), channel_std=(0.1, 0.2))


def test_colour_and_multiband_files_decode_to_the_channels_asked(tmp_path: Path) -> None:
    from medvl.data.images import ImageLoadError, load_image, load_pixels, resize_square

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_pixels(tmp_path / "rgb.png", 3)[0, 0].tolist() == [200, 0, 0]
    assert load_pixels(tmp_path / "rgb.png", 1).shape == (8, 8)
    assert load_image(tmp_path / "rgb.png").channels(3)[0, 0].tolist() == [200, 0, 0]
    bands = np.arange(8 * 8 * 5, dtype=np.uint8).reshape(8, 8, 5)
    np.save(tmp_path / "frame.npy", bands)
    assert np.array_equal(load_pixels(tmp_path / "frame.npy", 5), bands)
    assert resize_square(bands, 4).shape == (4, 4, 5)
    with pytest.raises(ImageLoadError, match="5 channel.*model.in_chans"):
        load_pixels(tmp_path / "frame.npy", 3)
