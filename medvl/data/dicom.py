"""DICOM pixel decoding: one radiograph file (or its bytes) -> the uint8 grayscale image a viewer would show.

Contract: `read_dicom(source, max_pixels=None)` returns a `DecodedImage` (medvl.data.images) whose pixels are uint8
[H, W] in display orientation (row 0 at the top, as stored), 0 = black, 255 = white, computed as a DICOM viewer does:

1. pixel data decoded by pydicom, in any transfer syntax it has a decoder for (native little/big endian, deflate,
   RLE; JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000 through pylibjpeg or python-gdcm); only the first
   frame of a multi-frame image is used; color images are converted to luminance;
2. the modality transform (Rescale Slope/Intercept, or a Modality LUT);
3. the VOI transform: a VOI LUT when the file has one (its output scaled from 0 .. 2^n - 1, n the bits of its LUT
   Descriptor, PS3.3 C.11.2.1.1: a LUT over part of that range keeps its lower contrast), else the first Window
   Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID), else the image's own min..max range.
   Empty window elements mean no window; an invalid width (< 1 for LINEAR, <= 0 otherwise) is ignored and said once
   (a log warning);
4. MONOCHROME1 (white = low values) is inverted, so every image reaches the model as MONOCHROME2;
5. `view` is the View Position (PA, AP, LATERAL, LL...) or the View Code Sequence's meaning, when present.

Problems a user can fix raise `ImageLoadError` with one line naming the file and the cause: not DICOM, no pixel data,
more than `max_pixels` pixels (checked from the header before anything is decoded), a compressed transfer syntax
without an installed decoder (names the packages to install), truncated or corrupt pixel data; any other exception
pydicom or zlib raises on a damaged file becomes one too. A deflated data set (1.2.840.10008.1.2.1.99) is inflated
in steps: up to its pixel data element, whose header is checked against `max_pixels`, then only as far as that
header's image size, so a deflate bomb is refused without inflating it. From a file, the pixel data is read only
after the size check (`defer_size`).
Training reaches it through `medvl.data.images.load_grayscale`; a DICOM *folder* data source should call `read_dicom`
(and `view_from_header`) too, so that training and inference see the same pixels.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.images import DecodedImage, ImageLoadError, ImageTooLargeError

DICOM_MAGIC_OFFSET = 128  # a DICOM Part 10 file: 128-byte preamble, then "DICM"


def is_dicom_header(head: bytes) -> bool:
    """Whether the first bytes of a file are a DICOM Part 10 preamble."""
    return len(head) >= DICOM_MAGIC_OFFSET + 4 and head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


DEFLATED = "1.2.840.10008.1.2.1.99"
HEADER_BUDGET = 8 * 1024 * 1024
"""Most bytes a deflated data set may inflate to before its pixel data element starts."""
TRAILER_BUDGET = 1024 * 1024
"""Most bytes a deflated data set may hold after the pixel data its header describes."""
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little endian


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


def _pixel_bytes(ds: Any) -> tuple[int, int]:
    """(pixels in all frames, bytes of native pixel data) the header describes."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    n = rows * cols * frames
    return n, (n * samples * bits + 7) // 8


def _inflate_bounded(compressed: bytes, name: str, max_pixels: int | None) -> Any:
    """The data set of a deflated file, inflated in steps: first up to its pixel data element, whose header is checked
    against `max_pixels`, then only as far as the pixel data that header describes (plus a small trailer). A stream
    that would inflate further is refused, so a deflate bomb never takes more memory than its own header claims."""
    import zlib

    from pydicom.filereader import read_dataset

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out, searched, header = bytearray(), 0, None
    pending = compressed
    while header is None:
        if len(out) > HEADER_BUDGET:
            raise ImageLoadError(
                f"cannot decode DICOM {name}: no pixel data within the first {HEADER_BUDGET} inflated bytes"
            )
        piece = inflater.decompress(pending, 256 * 1024)
        pending = inflater.unconsumed_tail
        out += piece
        while True:
            at = out.find(_PIXEL_DATA_TAG, max(searched, 0))
            if at < 0:
                searched = max(len(out) - 3, 0)
                break
            searched = at + 1
            try:
                ds = read_dataset(io.BytesIO(bytes(out[:at])), is_implicit_VR=False, is_little_endian=True)
                _pixel_bytes(ds)
            except Exception:  # noqa: BLE001 - the tag's bytes inside another value: keep looking
                continue
            header = (at, ds)
            break
        if header is None and not piece and not pending:
            raise ImageLoadError(f"cannot decode DICOM {name}: no pixel data in the (inflated) data set")
    at, ds = header
    _check_size(ds, name, max_pixels, header_only=True)
    limit = at + 12 + _pixel_bytes(ds)[1] + TRAILER_BUDGET
    while pending and len(out) <= limit:
        out += inflater.decompress(pending, limit + 1 - len(out))
        pending = inflater.unconsumed_tail
    if len(out) <= limit:
        out += inflater.flush()
    if len(out) > limit:
        raise ImageLoadError(
            f"cannot decode DICOM {name}: the deflated data inflates to more than the {limit} bytes "
            "its header describes (a decompression bomb?)"
        )
    return bytes(out)


def _dataset(source: str | Path | bytes, name: str, max_pixels: int | None = None) -> Any:
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import ExplicitVRLittleEndian

    # force only for a file named *.dcm: old files without the Part 10 preamble are still DICOM.
    force = isinstance(source, (str, Path)) and Path(source).suffix.lower() in (".dcm", ".dicom")
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as fp:
            preamble = read_preamble(fp, force)
            meta = _read_file_meta_info(fp) if preamble is not None else None
            if meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
                # pydicom would inflate the whole data set at once, before any size is known.
                inflated = _inflate_bounded(fp.read(), name, max_pixels)
                body = read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True)
                meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated bytes are
                return FileDataset(
                    name, body, preamble=preamble, file_meta=meta, is_implicit_VR=False, is_little_endian=True
                )
            fp.seek(0)
            if isinstance(source, bytes):
                return pydicom.dcmread(fp, force=force)
        # From a file, large values (the pixel data) are read when used, after the size check.
        return pydicom.dcmread(str(source), force=force, defer_size="1 MB")
    except ImageLoadError:
        raise
    except InvalidDicomError as e:
        raise ImageLoadError(f"cannot decode DICOM {name}: not a DICOM file ({_first_line(e)})") from e
    except Exception as e:  # noqa: BLE001 - any parser failure on a damaged or hostile header is the file's fault
        raise ImageLoadError(f"cannot decode DICOM {name}: damaged header ({_first_line(e)})") from e


def _check_size(ds: Any, name: str, max_pixels: int | None, header_only: bool = False) -> None:
    if not header_only and "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
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
        raise ImageTooLargeError(
            f"image {name} has {cols} x {rows} pixels{in_frames}, more than the limit of {max_pixels}"
        )


def _pixels(ds: Any, name: str) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as e:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        hint = (
            "install pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg or python-gdcm"
            if "decoder" in str(e).lower() or "plugin" in str(e).lower()
            else "the pixel data may be corrupt"
        )
        raise ImageLoadError(
            f"cannot decode DICOM {name} (transfer syntax {getattr(syntax, 'name', syntax)}): "
            f"{str(e).splitlines()[0]} ({hint})"
        ) from e
    except (ValueError, OSError, EOFError, AttributeError, KeyError, TypeError, IndexError) as e:
        raise ImageLoadError(
            f"cannot decode DICOM {name}: pixel data truncated or corrupt "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from e
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if samples > 1:  # pydicom returns RGB; keep luminance (ITU-R 601, as PIL's "L")
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return arr


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2: values -> [0, 1] through one window."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / max(width, 1e-6) + 0.5, 0.0, 1.0)
    width = max(width, 1.0)  # LINEAR requires width >= 1
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)


def _first(value: Any) -> float | None:
    """The first value of a possibly multi-valued number (several windows may be offered; the first is default), or
    None when the element is empty (pydicom reads an empty Window Center as None or an empty string)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if not len(value):
            return None
        value = value[0]
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    return float(value)


_REPORTED: set[str] = set()


def _say_once(kind: str, message: str) -> None:
    """Log a problem with the files once per process (a data set may hold thousands of files with the same one)."""
    if kind not in _REPORTED:
        _REPORTED.add(kind)
        logging.getLogger("medvl.data").warning(
            "%s (reported once; other files with this problem are handled the same way)", message
        )


def _window(ds: Any, name: str) -> tuple[float, float, str] | None:
    """(center, width, function) of the first window, or None: absent, empty, or invalid (then said once)."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if center is None or width is None:  # empty elements: no window, as pydicom treats them
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    smallest = 1.0 if function not in ("LINEAR_EXACT", "SIGMOID") else 0.0
    if not (np.isfinite(center) and np.isfinite(width)) or width < smallest or (width == 0.0):
        _say_once(
            "window_width",
            f"DICOM {name}: Window Width {width:g} is invalid for {function} (PS3.3 C.11.2.1.2 "
            f"needs {'>= 1' if smallest else '> 0'}); the window is ignored and the image's own range is used",
        )
        return None
    return center, width, function


def _voi(ds: Any, values: np.ndarray, name: str = "upload") -> np.ndarray:
    """Modality values -> [0, 1] through the file's VOI LUT or window, else its own range."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        from pydicom.pixels import apply_voi

        # The LUT is indexed by modality values (after rescale), which it expects as integers.
        out = apply_voi(np.round(values).astype(np.int64), ds, index=0).astype(np.float64)
        item = ds.VOILUTSequence[0]
        # PS3.3 C.11.2.1.1: the LUT's output range is 0 .. 2^n - 1, n the third value of its LUT Descriptor; a LUT
        # whose data spans less than that range maps to less than full contrast, as a viewer shows it.
        bits = int(item.LUTDescriptor[2]) if len(item.LUTDescriptor) > 2 else 0
        if not 1 <= bits <= 16:
            bits = max(8, int(np.asarray(item.LUTData).max()).bit_length())
        return out / float(2**bits - 1)
    window = _window(ds, name)
    if window is not None:
        return _apply_window(values, *window)
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
    ds = _dataset(source, name, max_pixels)
    try:
        _check_size(ds, name, max_pixels)
        from pydicom.pixels import apply_modality_lut

        stored = _pixels(ds, name)
        try:
            color = int(ds.get("SamplesPerPixel", 1) or 1) > 1
            values = stored.astype(np.float64) if color else apply_modality_lut(stored, ds).astype(np.float64)
            scaled = _voi(ds, values, name)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise ImageLoadError(
                f"cannot decode DICOM {name}: invalid rescale or VOI attributes ({_first_line(e)})"
            ) from e
        if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
            scaled = 1.0 - scaled
        pixels = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
        if pixels.ndim != 2 or min(pixels.shape) < 1:
            raise ImageLoadError(
                f"cannot decode DICOM {name}: its pixel data has shape {pixels.shape}, not rows x "
                "columns (damaged Rows/Columns, Samples per Pixel or Number of Frames?)"
            )
        return DecodedImage(pixels, view_from_header(ds), "dicom")
    except ImageLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - a value pydicom cannot convert (unknown VR, bad lengths...): the file's
        raise ImageLoadError(f"cannot decode DICOM {name}: damaged data set ({_first_line(e)})") from e
