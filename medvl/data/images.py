"""Decoding image files to grayscale arrays, and resizing: one path for training, evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageLoadError(ValueError):
    """An image file is missing or cannot be decoded."""


def load_grayscale(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 [H, W] array; 16-bit images are min-max scaled to 0..255."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
                return np.round(scaled).astype(np.uint8)
            return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"cannot decode image {path}: {e}") from e


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 [H, W] image to [size, size] (area averaging when shrinking, bilinear when growing)."""
    if img.shape == (size, size):
        return img
    method = Image.Resampling.BOX if min(img.shape) >= size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((size, size), method), dtype=np.uint8)
