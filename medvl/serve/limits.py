"""What the API accepts, and the one error type it answers with.

Contract: `Limits` holds every bound a request is checked against; `check_image(data, name, limits)` accepts the bytes
of one uploaded view or raises `ApiError` (413 too large, 415 not an allowed type, 400 empty);
`decode_view(data, name, limits)` decodes it in memory or raises `ApiError` (413 too many pixels, 422 truncated or
corrupt: any exception a decoder raises on the bytes becomes a 422 with one line). An `ApiError` becomes the JSON
body `{"error": {"code", "message"}}` with its status; messages are one line that names the problem and the way out,
and never echo what the client sent beyond its field or file name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from medvl.data.images import DecodedImage, ImageLoadError, ImageTooLargeError, decode_image, sniff_format

FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "dicom": "DICOM"}


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 1024 * 1024
    """Largest file per view (a large uncompressed DICOM radiograph is 10-30 MB)."""
    max_pixels: int = 40_000_000
    """Most pixels per view, checked from the header before decoding (a decompression-bomb guard)."""
    max_views: int = 4
    """Most images in one request (one study)."""
    allowed_formats: tuple[str, ...] = ("png", "jpeg", "dicom")
    """Image formats accepted, recognized from the bytes (the client's content type is not trusted)."""
    max_queue: int = 64
    """Requests waiting for the model at most; beyond it the API answers 503 with Retry-After."""
    timeout_s: float = 120.0
    """Longest a request waits for its report before a 504."""

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_views", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve limit {name} must be >= 1, got {getattr(self, name)}")
        unknown = [f for f in self.allowed_formats if f not in FORMAT_NAMES]
        if unknown:
            raise ValueError(f"unknown image formats {unknown}; allowed: {', '.join(FORMAT_NAMES)}")

    @property
    def max_request_bytes(self) -> int:
        """A whole request: every view at its largest, base64-encoded (4/3), plus room for the envelope."""
        return self.max_views * (self.max_upload_bytes * 4 // 3 + 4) + 64 * 1024

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "allowed_formats": list(self.allowed_formats),
            "max_request_bytes": self.max_request_bytes,
        }


class ApiError(Exception):
    """A request the API refuses: HTTP status, a stable machine-readable code, and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def _allowed(limits: Limits) -> str:
    return ", ".join(FORMAT_NAMES[f] for f in limits.allowed_formats)


def check_image(data: bytes, name: str, limits: Limits) -> str:
    """The format of one uploaded view, after checking its size and type; see the module docstring."""
    if not data:
        raise ApiError(400, "empty_file", f"{name} is empty: send the image file's bytes")
    if len(data) > limits.max_upload_bytes:
        raise ApiError(
            413,
            "file_too_large",
            f"{name} is {len(data)} bytes, more than the limit of "
            f"{limits.max_upload_bytes}: send a smaller (compressed) image",
        )
    fmt = sniff_format(data[:132])
    if fmt not in limits.allowed_formats:
        raise ApiError(415, "unsupported_type", f"{name} is not an accepted image type: send {_allowed(limits)}")
    return fmt


def decode_view(data: bytes, name: str, limits: Limits) -> DecodedImage:
    """Check and decode one view in memory; see the module docstring."""
    check_image(data, name, limits)
    try:
        return decode_image(data, name=name, max_pixels=limits.max_pixels)
    except ImageTooLargeError as e:
        raise ApiError(413, "too_many_pixels", f"{e}: send a downscaled image") from e
    except ImageLoadError as e:
        raise ApiError(422, "undecodable_image", f"{_one_line(e)} (is the file complete?)") from e
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises on hostile bytes is the upload's fault: 422
        raise ApiError(
            422, "undecodable_image", f"cannot decode image {name}: {_one_line(e)} (is the file complete?)"
        ) from e


def _one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's message, shortened: never a traceback or the client's bytes at length."""
    text = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."
