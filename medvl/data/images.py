"""Decoding image files to grayscale arrays, and resizing: one path for training, evaluation, prediction and serving.

Contract:
- `load_image(path)` / `decode_image(data)` -> `DecodedImage`: uint8 [H, W] pixels (0 = black), the view name when
  the file says (DICOM View Position), and the format. PNG, JPEG, BMP and TIFF go through Pillow (8-bit as is; 16-bit
  and float images are min-max scaled to 0..255; EXIF orientation applied; color converted to luminance); DICOM goes
  through `medvl.data.dicom` (rescale, VOI LUT / window, MONOCHROME1 inversion). The format is read from the bytes,
  not trusted from the file name.
- `load_grayscale(path)` -> the pixels only (what training has always used).
- `max_pixels` refuses an image with more pixels before it is decoded (a decompression-bomb guard); by default
  `DEFAULT_MAX_PIXELS` (40 million, or $MEDVL_MAX_PIXELS), for training, prepare, predict and the demo alike.
- `read_prepared(store, rows)`: a prepared data set's views from its memory-mapped images.npy (`medvl data prepare`).
Every failure a user can fix raises `ImageLoadError` naming the file and the cause.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)
_SNIFF_BYTES = 132
DEFAULT_MAX_PIXELS = int(os.environ.get("MEDVL_MAX_PIXELS", "40000000"))
"""Most pixels (all frames) an image may have unless the caller says otherwise: a 40-megapixel radiograph is larger
than any detector makes; a header claiming more is a damaged or hostile file, refused before it is decoded."""
_STORES: dict[str, np.ndarray] = {}


class ImageLoadError(ValueError):
    """An image file is missing or cannot be decoded."""


class ImageTooLargeError(ImageLoadError):
    """An image with more pixels than the caller's `max_pixels` (refused before decoding)."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray
    """uint8 [H, W], display orientation, 0 = black."""
    view: str | None
    """View name from the file (DICOM View Position such as PA, AP, LATERAL), None when it does not say."""
    format: str
    """"png", "jpeg", "dicom", "bmp", "tiff"..."""
    color: np.ndarray | None = None
    """uint8 [H, W, 3] when the file is a colour image (what an RGB model takes), else None."""

    def channels(self, n: int) -> np.ndarray:
        """The pixels with `n` channels: [H, W] for 1, [H, W, n] otherwise (colour kept when the file has it)."""
        if n == 3 and self.color is not None:
            return self.color
        return to_channels(self.pixels, n, "image")


def sniff_format(head: bytes) -> str | None:
    """The image format of a file from its first bytes (at least 132 for DICOM), or None when unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def is_image_file(path: Path) -> bool:
    """An image by its suffix, or a DICOM file without one (scanners often write none)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(_SNIFF_BYTES)) == "dicom"
    except OSError:
        return False


_COLOR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def _pil_pixels(img: Image.Image, name: str, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"image {name} has {w} x {h} pixels, more than the limit of {max_pixels}")
    img.load()
    img = ImageOps.exif_transpose(img)  # phone/scanner JPEGs store rotation in EXIF; show them upright
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return np.round(scaled).astype(np.uint8), None
    if img.mode in _COLOR_MODES:
        return np.asarray(img.convert("L"), dtype=np.uint8).copy(), np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8).copy(), None


def _decode_pil(source: Path | bytes, name: str, max_pixels: int | None, fmt: str) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning fires at 89M pixels; our limit (max_pixels) is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                pixels, color = _pil_pixels(img, name, max_pixels)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image {name} is too large to decode safely: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(f"cannot decode image {name}: {e}") from e
    return DecodedImage(pixels, None, fmt, color)


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes held in memory (PNG, JPEG, BMP, TIFF or DICOM); nothing is written to disk.

    Args:
        data: the whole file.
        name: how errors name it.
        max_pixels: refuse images with more pixels than this, before decoding; None = no limit.

    Raises:
        ImageLoadError: unknown format, too many pixels, truncated or corrupt data.
    """
    fmt = sniff_format(data[:_SNIFF_BYTES])
    if fmt == "dicom":
        from medvl.data.dicom import read_dicom

        return read_dicom(data, max_pixels=max_pixels, name=name)
    if fmt is None:
        raise ImageLoadError(f"cannot decode image {name}: not a PNG, JPEG, BMP, TIFF or DICOM file")
    return _decode_pil(data, name, max_pixels, fmt)


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an image file (PNG, JPEG, BMP, TIFF or DICOM, told apart by content); see the module docstring.

    Raises:
        ImageLoadError: missing file, unknown format, too many pixels, truncated or corrupt data.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"image file is empty (0 bytes): {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as e:
        raise ImageLoadError(f"cannot read image {path}: {e}") from e
    fmt = sniff_format(head)
    if fmt == "dicom" or (fmt is None and path.suffix.lower() in DICOM_SUFFIXES):
        from medvl.data.dicom import read_dicom

        return read_dicom(path, max_pixels=max_pixels)
    return _decode_pil(path, str(path), max_pixels, fmt or path.suffix.lower().lstrip("."))


def load_grayscale(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 [H, W] array (see `load_image`); the loader training uses."""
    return load_image(path).pixels


def to_channels(pixels: np.ndarray, channels: int, name: str = "image") -> np.ndarray:
    """uint8 [H, W] (channels=1) or [H, W, C] from a decoded image with any channels.

    Grayscale is repeated to 3 channels; RGB(A) becomes luminance (ITU-R 601-2, as Pillow's "L") for one channel;
    an N-channel array must already have the N channels asked for.

    Raises:
        ImageLoadError: channel counts that cannot be converted (e.g. a 5-band array for an RGB model).
    """
    have = 1 if pixels.ndim == 2 else pixels.shape[2]
    if have == channels:
        return pixels if pixels.ndim == 2 or channels > 1 else pixels[..., 0]
    if have == 1 and channels == 3:
        return np.repeat(pixels.reshape(*pixels.shape[:2], 1), 3, axis=2)
    if have in (3, 4) and channels == 1:
        return np.asarray(Image.fromarray(pixels[..., :3]).convert("L"), dtype=np.uint8)
    if have == 4 and channels == 3:
        return np.ascontiguousarray(pixels[..., :3])
    raise ImageLoadError(
        f"{name} has {have} channel(s) but the model takes {channels} (model.in_chans); convert the "
        f"data or set model.in_chans={have}"
    )


def _read_array(path: Path) -> np.ndarray:
    """A .npy frame: uint8 [H, W] or [H, W, C] (multispectral); other dtypes are min-max scaled to 0..255."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImageLoadError(f"cannot read array image {path}: {e}") from e
    if arr.ndim not in (2, 3):
        raise ImageLoadError(f"array image {path} has shape {arr.shape}; expected [H, W] or [H, W, C]")
    if arr.dtype != np.uint8:
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.round((np.nan_to_num(arr, nan=lo) - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros(arr.shape)
        arr = arr.astype(np.uint8)
    return arr


def load_pixels(path: str | Path, channels: int = 1) -> np.ndarray:
    """An image file decoded to the channels a model takes: uint8 [H, W] (channels=1) or [H, W, C].

    PNG/JPEG/BMP/TIFF keep their colour when `channels` is 3; DICOM and grayscale files are repeated; `.npy` arrays
    carry N-channel frames (e.g. multispectral satellite images). See `to_channels`.

    Raises:
        ImageLoadError: as `load_image`, or channels that cannot be converted.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise ImageLoadError(f"image file not found: {path}")
        return to_channels(_read_array(path), channels, str(path))
    img = load_image(path)
    return img.pixels if channels == 1 else img.channels(channels)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 [H, W] or [H, W, C] image to [size, size] (area averaging when shrinking, bilinear when
    growing), channels kept."""
    if img.shape[:2] == (size, size):
        return img
    method = Image.Resampling.BOX if min(img.shape[:2]) >= size else Image.Resampling.BILINEAR
    if img.ndim == 3 and img.shape[2] not in (3, 4):  # N bands: Pillow has no such mode, resize each
        return np.stack([resize_square(img[..., c], size) for c in range(img.shape[2])], axis=-1)
    return np.asarray(Image.fromarray(img).resize((size, size), method), dtype=np.uint8)


def decode_task(task: tuple[int, str, int]) -> tuple[int, np.ndarray | None, list[int], str]:
    """(row, path, size) -> (row, resized image or None, original [H, W], error message): a worker of
    `medvl data prepare`, kept here so that its processes import only numpy and PIL."""
    row, path, size = task
    try:
        img = load_grayscale(path)
    except ImageLoadError as e:
        return row, None, [], str(e)
    return row, resize_square(img, size), list(img.shape), ""


def read_prepared(store: str | Path, rows: tuple[int, ...]) -> np.ndarray:
    """Views [V, S, S] uint8 from a prepared data set's images.npy, memory-mapped once per process."""
    key = str(store)
    arr = _STORES.get(key)
    if arr is None:
        try:
            arr = _STORES[key] = np.load(key, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ImageLoadError(f"cannot open the prepared image array {key}: {e}") from e
    return np.array(arr[list(rows)])
