"""Decoding image files to grayscale arrays, and resizing: one path for training, evaluation and prediction.

PNG/JPEG/BMP/TIFF are decoded with PIL, DICOM (.dcm/.dicom) with pydicom (modality and VOI LUTs applied, MONOCHROME1
inverted), and a prepared data set's views are read from its memory-mapped images.npy (`read_prepared`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
_STORES: dict[str, np.ndarray] = {}


class ImageLoadError(ValueError):
    """An image file is missing or cannot be decoded."""


def load_grayscale(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 [H, W] array; 16-bit images are min-max scaled to 0..255."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"image file is empty (0 bytes): {path}")
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _load_dicom(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return _to_uint8(np.asarray(img, dtype=np.float64))
            return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"cannot decode image {path}: {e}") from e


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 [H, W] image to [size, size] (area averaging when shrinking, bilinear when growing)."""
    if img.shape == (size, size):
        return img
    method = Image.Resampling.BOX if min(img.shape) >= size else Image.Resampling.BILINEAR
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


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to uint8 0..255 (a constant image becomes zeros)."""
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return np.round(scaled).astype(np.uint8)


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom  # only DICOM users need it
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as e:
        raise ImageLoadError(f"cannot read DICOM file {path}: {e}") from e
    if "PixelData" not in ds:
        raise ImageLoadError(f"DICOM file has no pixel data (no PixelData element, e.g. a structured report): {path}")
    try:
        arr = ds.pixel_array
        if arr.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
            arr = arr[0]  # a multi-frame file: its first frame
        elif arr.ndim == 3:
            arr = arr.mean(axis=-1)
        arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for undecodable pixel data
        raise ImageLoadError(f"cannot decode the pixels of DICOM file {path}: {e}") from e
    img = _to_uint8(arr)
    # MONOCHROME1 stores bright as low values; radiographs are shown (and learned) as MONOCHROME2.
    return 255 - img if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" else img


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
