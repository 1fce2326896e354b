"""The one image loader: PNG/JPEG (8- and 16-bit) and DICOM in several transfer syntaxes, down to the model input.

DICOM files are written with pydicom (explicit and implicit VR little endian, RLE lossless, JPEG 2000 lossless, JPEG
baseline), MONOCHROME1 and MONOCHROME2, with rescale slope/intercept, windows and VOI LUTs; the expected display
pixels are computed here from the DICOM formulas, independently of medvl.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.data.images import ImageLoadError, decode_image, load_grayscale, load_image, resize_square, sniff_format

from .dicom_files import write_dicom, xray_pattern

STORED = xray_pattern()  # uint16, 0..4000, bright square top-left, ramp left -> right


def minmax_u8(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    return np.round((v - v.min()) / (v.max() - v.min()) * 255).astype(np.uint8)


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "rle", "jpeg2000"])
def test_lossless_dicom_syntaxes_give_the_exact_display_pixels(tmp_path: Path, syntax: str) -> None:
    decoded = load_image(write_dicom(tmp_path / "x.dcm", STORED, syntax=syntax, view="PA"))
    assert decoded.format == "dicom" and decoded.view == "PA"
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == STORED.shape  # rows x columns, not transposed
    np.testing.assert_array_equal(decoded.pixels, minmax_u8(STORED))
    assert decoded.pixels[5, 5] == 255 and decoded.pixels[40, 0] == 0  # bright top-left, dark left edge


def test_jpeg_baseline_dicom_is_decoded(tmp_path: Path) -> None:
    expected = minmax_u8(STORED)
    decoded = load_image(write_dicom(tmp_path / "j.dcm", expected, syntax="jpeg-baseline", bits_stored=8))
    assert decoded.pixels.shape == expected.shape
    assert np.abs(decoded.pixels.astype(int) - expected).mean() < 2.0  # lossy, but close everywhere
    assert decoded.pixels[5, 5] > 240 and decoded.pixels[40, 0] < 15


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    m1 = load_image(write_dicom(tmp_path / "m1.dcm", STORED, photometric="MONOCHROME1", view="LATERAL"))
    m2 = load_image(write_dicom(tmp_path / "m2.dcm", STORED, photometric="MONOCHROME2"))
    np.testing.assert_array_equal(m1.pixels, 255 - m2.pixels)
    assert m1.pixels[5, 5] == 0 and m1.view == "LATERAL"


def test_rescale_then_window(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w.dcm", STORED, slope=2.0, intercept=-1000.0, window=(1000.0, 4000.0))
    values = STORED.astype(np.float64) * 2.0 - 1000.0
    c, w = 1000.0, 4000.0  # DICOM LINEAR window
    expected = np.round(np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(load_image(path).pixels, expected)


def test_voi_lut_sequence(tmp_path: Path) -> None:
    lut = np.linspace(0, 65535, 4096).round().astype(int)[::-1]  # an inverting LUT over 12-bit values
    expected = np.round(lut[STORED] / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(load_image(write_dicom(tmp_path / "l.dcm", STORED, voi_lut=lut)).pixels, expected)


def test_multiframe_uses_the_first_frame_and_bytes_decode_like_files(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mf.dcm", STORED, frames=3)
    np.testing.assert_array_equal(load_grayscale(path), minmax_u8(STORED))
    from_bytes = decode_image(path.read_bytes())
    np.testing.assert_array_equal(from_bytes.pixels, minmax_u8(STORED))
    assert sniff_format(path.read_bytes()[:132]) == "dicom"


def test_dicom_without_suffix_and_errors(tmp_path: Path) -> None:
    plain = write_dicom(tmp_path / "IM0001", STORED)
    assert load_image(plain).format == "dicom"
    big = write_dicom(tmp_path / "big.dcm", STORED)
    with pytest.raises(ImageLoadError, match="64 x 48 pixels, more than the limit of 1000"):
        load_image(big, max_pixels=1000)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(big.read_bytes()[:-3000])
    with pytest.raises(ImageLoadError, match="cannot decode DICOM"):
        load_image(cut)
    with pytest.raises(ImageLoadError, match="not a PNG, JPEG"):
        decode_image(b"GIF89a" + bytes(200))


def test_png_and_jpeg_8_and_16_bit(tmp_path: Path) -> None:
    img8 = minmax_u8(STORED)
    Image.fromarray(img8).save(tmp_path / "a.png")
    Image.fromarray(img8).save(tmp_path / "a.jpg", quality=98)
    Image.fromarray(STORED).save(tmp_path / "b16.png")  # 16-bit grayscale PNG
    np.testing.assert_array_equal(load_grayscale(tmp_path / "a.png"), img8)
    assert np.abs(load_grayscale(tmp_path / "a.jpg").astype(int) - img8).mean() < 2.0
    np.testing.assert_array_equal(load_grayscale(tmp_path / "b16.png"), img8)
    rgb = np.stack([img8] * 3, -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_grayscale(tmp_path / "rgb.png"), img8)
    with pytest.raises(ImageLoadError, match="64 x 48 pixels, more than the limit of 100"):
        load_image(tmp_path / "a.png", max_pixels=100)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = minmax_u8(STORED)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    Image.fromarray(np.rot90(img, 1).copy()).save(tmp_path / "r.jpg", quality=98, exif=exif)
    shown = load_grayscale(tmp_path / "r.jpg")
    assert shown.shape == img.shape and np.abs(shown.astype(int) - img).mean() < 2.0


@pytest.mark.parametrize("syntax", ["explicit", "rle", "jpeg2000"])
def test_dicom_pixels_reach_the_model_oriented_and_scaled(
    trained_checkpoint: Path, tmp_path: Path, syntax: str
) -> None:
    """What the image encoder receives, read with a hook, is the display image resized and normalized."""
    from medvl.infer.predictor import load_trained, predict_reports

    loaded = load_trained(trained_checkpoint, device="cpu")
    mc = loaded.config.model
    frontal = write_dicom(tmp_path / "f.dcm", STORED, syntax=syntax, photometric="MONOCHROME1", view="PA")
    lateral = write_dicom(tmp_path / "l.dcm", STORED, syntax=syntax, view="LL")
    seen: list[torch.Tensor] = []
    hook = loaded.model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        predict_reports(loaded, [[lateral, frontal]], loaded.config.generation)  # given lateral first on purpose
    finally:
        hook.remove()
    pixels = seen[0][:, 0] * mc.image_std + mc.image_mean  # undo the model's normalization -> [0, 1]
    expected_m2 = resize_square(minmax_u8(STORED), mc.image_size).astype(np.float32) / 255
    # Frontal first (ordered by the header's view position), inverted from MONOCHROME1; lateral second, as stored.
    np.testing.assert_allclose(pixels[0].numpy(), 1 - expected_m2, atol=1.5 / 255)
    np.testing.assert_allclose(pixels[1].numpy(), expected_m2, atol=1.5 / 255)


# ------------------------------------------------------------------------------- DICOM windows (issue 16, item 12)
def test_empty_window_elements_mean_no_window(tmp_path: Path) -> None:
    import pydicom

    path = write_dicom(tmp_path / "e.dcm", STORED)
    ds = pydicom.dcmread(path)
    ds.add_new(0x00281050, "DS", "")  # Window Center, present but empty
    ds.add_new(0x00281051, "DS", "")  # Window Width
    ds.save_as(path)
    np.testing.assert_array_equal(load_image(path).pixels, minmax_u8(STORED))


def test_a_zero_window_width_is_ignored_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from medvl.data import dicom

    dicom._REPORTED.discard("window_width")
    caplog.set_level(logging.WARNING, logger="medvl.data")
    for k in range(3):
        decoded = load_image(write_dicom(tmp_path / f"z{k}.dcm", STORED, window=(2000.0, 0.0)))
        np.testing.assert_array_equal(decoded.pixels, minmax_u8(STORED))  # the full range, not a binary image
        assert len(np.unique(decoded.pixels)) > 60  # the ramp, not two levels
    warnings = [r.getMessage() for r in caplog.records if r.name == "medvl.data"]
    assert len(warnings) == 1 and "Window Width 0 is invalid" in warnings[0] and "image's own range" in warnings[0]


def test_a_narrow_voi_lut_keeps_its_contrast_ps3_3_c_11_2_1_1(tmp_path: Path) -> None:
    lut = np.linspace(1000, 3000, 4096).round().astype(int)  # 12-bit output, data covering 1000..3000 only
    decoded = load_image(write_dicom(tmp_path / "n.dcm", STORED, voi_lut=lut, lut_bits=12))
    expected = np.round(lut[STORED] / 4095 * 255).astype(np.uint8)  # output range 0 .. 2^12 - 1
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert 60 <= decoded.pixels.min() and decoded.pixels.max() <= 190  # not stretched to 0..255


# ----------------------------------------------------------------------- views without a name (issue 16, item 13)
def test_unknown_views_rank_after_known_frontal_and_before_known_lateral() -> None:
    from medvl.data.images import DecodedImage
    from medvl.data.study import frontal_first
    from medvl.infer.predictor import prepare_study

    def image(value: int, view: str | None) -> DecodedImage:
        return DecodedImage(np.full((8, 8), value, dtype=np.uint8), view, "dicom")

    unknown, pa, lateral = image(10, None), image(20, "PA"), image(30, "LATERAL")
    study = prepare_study("s", [unknown, pa], 8, 2)
    assert study.views == ["PA", None] and study.view_ids == [0, 1] and study.pixels[0, 0, 0] == 20
    study = prepare_study("s", [lateral, unknown], 8, 2)
    assert study.views == [None, "LATERAL"] and study.view_ids == [0, 1]  # not two laterals, nothing relabelled
    single = prepare_study("s", [lateral, unknown], 8, 1)
    assert single.views == [None] and single.pixels[0, 0, 0] == 10  # a single-view model never reads the lateral
    assert single.ignored_views == 1 and study.ignored_views == 0  # the view left out is counted, not silent
    study = prepare_study("s", [lateral, unknown, pa], 8, 3)
    assert study.views == ["PA", None, "LATERAL"] and study.view_ids == [0, 1, 1]
    paths, ids = frontal_first([Path("lat"), Path("unk"), Path("pa")], ["LATERAL", None, "PA"])
    assert [p.name for p in paths] == ["pa", "unk", "lat"] and ids == (0, 1, 1)
    paths, ids = frontal_first([Path("lat"), Path("unk")], ["LL", ""])
    assert [p.name for p in paths] == ["unk", "lat"] and ids == (0, 1)
