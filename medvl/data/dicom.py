"""DICOM pixel decoding: one radiograph file (or its bytes) -> the uint8 grayscale image a viewer would show.

Contract: `read_dicom(source, max_pixels=None)` returns a `DecodedImage` (medvl.data.images) whose pixels are uint8
[H, W] in display orientation (row 0 at the top, as stored), 0 = black, 255 = white, computed as a DICOM viewer does:

1. pixel data decoded by pydicom, in any transfer syntax it has a decoder for (native little/big endian, deflate,
   RLE; JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000 through pylibjpeg or python-gdcm); only the first
   frame of a multi-frame image is used; color images are converted to luminance;
2. the modality transform (Rescale Slope/Intercept, or a Modality LUT);
3. the VOI transform: a VOI LUT when the file has one, else the first Window Center/Width with its VOI LUT Function
   (LINEAR, LINEAR_EXACT, SIGMOID), else the image's own min..max range;
4. MONOCHROME1 (white = low values) is inverted, so every image reaches the model as MONOCHROME2;
5. `view` is the View Position (PA, AP, LATERAL, LL...) or the View Code Sequence's meaning, when present.

Problems a user can fix raise `ImageLoadError` with one line naming the file and the cause: not DICOM, no pixel data,
more than `max_pixels` pixels (checked from the header before anything is decoded), a compressed transfer syntax
without an installed decoder (names the packages to install), truncated or corrupt pixel data.
Training reaches it through `medvl.data.images.load_grayscale`; a DICOM *folder* data source should call `read_dicom`
(and `view_from_header`) too, so that training and inference see the same pixels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.images import DecodedImage, ImageLoadError, ImageTooLargeError

DICOM_MAGIC_OFFSET = 128  # a DICOM Part 10 file: 128-byte preamble, then "DICM"


def is_dicom_header(head: bytes) -> bool:
    """Whether the first bytes of a file are a DICOM Part 10 preamble."""
    return len(head) >= DICOM_MAGIC_OFFSET + 4 and head[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _dataset(source: str | Path | bytes, name: str) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        # force only for a file named *.dcm: old files without the Part 10 preamble are still DICOM.
        force = isinstance(source, (str, Path)) and Path(source).suffix.lower() in (".dcm", ".dicom")
        return pydicom.dcmread(fp, force=force)
    except InvalidDicomError as e:
        raise ImageLoadError(f"cannot decode DICOM {name}: not a DICOM file ({e})") from e
    except (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError) as e:
        raise ImageLoadError(f"cannot decode DICOM {name}: damaged header ({e})") from e


def _check_size(ds: Any, name: str, max_pixels: int | None) -> None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageLoadError(f"DICOM {name} has no pixel data (a report or presentation state?): give an image file")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as e:
        raise ImageLoadError(f"cannot decode DICOM {name}: no valid Rows/Columns ({e})") from e
    if rows < 1 or cols < 1:
        raise ImageLoadError(f"cannot decode DICOM {name}: empty image ({rows} x {cols})")
    # Every frame is decoded, so every frame counts towards the limit.
    if max_pixels is not None and rows * cols * frames > max_pixels:
        in_frames = f" in {frames} frames" if frames > 1 else ""
        raise ImageTooLargeError(f"image {name} has {cols} x {rows} pixels{in_frames}, more than the limit of "
                                 f"{max_pixels}")


def _pixels(ds: Any, name: str) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as e:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        hint = ("install pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg or python-gdcm"
                if "decoder" in str(e).lower() or "plugin" in str(e).lower() else "the pixel data may be corrupt")
        raise ImageLoadError(f"cannot decode DICOM {name} (transfer syntax {getattr(syntax, 'name', syntax)}): "
                             f"{str(e).splitlines()[0]} ({hint})") from e
    except (ValueError, OSError, EOFError, AttributeError, KeyError, TypeError, IndexError) as e:
        raise ImageLoadError(f"cannot decode DICOM {name}: pixel data truncated or corrupt "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if samples > 1:  # pydicom returns RGB; keep luminance (ITU-R 601, as PIL's "L")
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return arr


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2: values -> [0, 1] through one window."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / max(width, 1e-6) + 0.5, 0.0, 1.0)
    width = max(width, 1.0)  # LINEAR requires width >= 1
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)


def _first(value: Any) -> float:
    """The first value of a possibly multi-valued number (several windows may be offered; the first is default)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _voi(ds: Any, values: np.ndarray) -> np.ndarray:
    """Modality values -> [0, 1] through the file's VOI LUT or window, else its own range."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        from pydicom.pixels import apply_voi

        # The LUT is indexed by modality values (after rescale), which it expects as integers.
        out = apply_voi(np.round(values).astype(np.int64), ds, index=0).astype(np.float64)
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
        lo, hi = float(lut.min()), float(lut.max())
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def view_from_header(ds: Any) -> str | None:
    """The view position name of a radiograph (PA, AP, LATERAL, LL...), or None when the header does not say."""
    position = str(ds.get("ViewPosition", "") or "").strip()
    if position:
        return position.upper()
    codes = ds.get("ViewCodeSequence")
    if codes:
        meaning = str(codes[0].get("CodeMeaning", "")).lower()
        if "lateral" in meaning:
            return "LATERAL"
        if "postero-anterior" in meaning or "posteroanterior" in meaning:
            return "PA"
        if "antero-posterior" in meaning or "anteroposterior" in meaning:
            return "AP"
    return None


def read_dicom(source: str | Path | bytes, max_pixels: int | None = None, name: str | None = None) -> DecodedImage:
    """Decode a DICOM file (a path, or its bytes) to display pixels; see the module docstring.

    Args:
        source: path of a DICOM file, or the file's bytes (nothing is written to disk).
        max_pixels: refuse images with more pixels (all frames) than this, before decoding; None = no limit.
        name: how errors name the image (default: the path, or "upload").

    Returns:
        `DecodedImage` with uint8 pixels [H, W], the view name from the header (or None) and format "dicom".

    Raises:
        ImageLoadError: not DICOM, no pixels, too many pixels, no decoder for the transfer syntax, corrupt data.
    """
    name = name or (str(source) if not isinstance(source, bytes) else "upload")
    ds = _dataset(source, name)
    _check_size(ds, name, max_pixels)
    from pydicom.pixels import apply_modality_lut

    stored = _pixels(ds, name)
    try:
        color = int(ds.get("SamplesPerPixel", 1) or 1) > 1
        values = stored.astype(np.float64) if color else apply_modality_lut(stored, ds).astype(np.float64)
        scaled = _voi(ds, values)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise ImageLoadError(f"cannot decode DICOM {name}: invalid rescale or VOI attributes ({e})") from e
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    pixels = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return DecodedImage(pixels, view_from_header(ds), "dicom")
