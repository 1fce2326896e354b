"""What a request to the REST API may send, and how it is read (`medvl.serve.app` serves the endpoint).

Contract: `_request_body(takes_question, requires_question)` is the OpenAPI description of the request body;
`_read_body(request, limits)` reads the body into memory, refusing one over `limits.max_request_bytes` (413);
`_multipart_views(body, headers, limits)` and `_json_views(body)` take a multipart or JSON body apart into an
`Upload` (its views as (name, file bytes, view name) and its question) or raise `ApiError` (400 with a code naming
the malformed, missing, unknown or over-long field; 413 for a file part over `limits.max_upload_bytes`, refused while
it is parsed, before any of it is spooled); `_prepare(rid, views, limits, ...)` decodes the views into the
`PreparedStudy` the model takes (413/415/422 from `medvl.serve.limits.decode_view`, 422 for images the model cannot
take). Every field is bounded, unknown fields are refused, and messages never echo what the client sent beyond a
field name.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from medvl.data.images import DecodedImage
from medvl.infer.predictor import MAX_QUESTION_CHARS, PreparedStudy, prepare_study
from medvl.serve.limits import ApiError, Limits, decode_view

# -------------------------------------------------------------------------------------------------- request body
_IMAGES_ITEM = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "format": "byte", "description": "the image file (PNG, JPEG or DICOM), base64"},
        "view": {
            "type": "string",
            "maxLength": 64,
            "description": "PA, AP, LATERAL...: overrides the DICOM View Position",
        },
    },
    "additionalProperties": False,
}
QUESTION_FIELD = "the 'question' field"
"""Where a request's question goes, as the refusals name it."""


def _request_body(takes_question: bool, requires_question: bool) -> dict[str, Any]:
    """The OpenAPI request body: images (and views), plus a question for models that answer questions."""
    multipart: dict[str, Any] = {
        "images": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "one file per view",
        },
        "views": {"type": "array", "items": {"type": "string"}, "description": "view names, in the order of images"},
    }
    as_json: dict[str, Any] = {"images": {"type": "array", "minItems": 1, "items": _IMAGES_ITEM}}
    required = ["images", *(["question"] if requires_question else [])]
    if takes_question:
        question = {
            "type": "string",
            "maxLength": MAX_QUESTION_CHARS,
            "description": "a question about the images (VQA)"
            + ("" if requires_question else "; without it the model runs its default sub-task"),
        }
        multipart["question"] = question
        as_json["question"] = question
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": required, "properties": multipart}},
            "application/json": {
                "schema": {"type": "object", "required": required, "additionalProperties": False, "properties": as_json}
            },
        },
    }


# ------------------------------------------------------------------------------------------------- request parsing
def _in_memory_parser(limit: int) -> type[MultiPartParser]:
    """Starlette spools file parts over spool_max_size to a temporary file. This parser counts each file part's bytes
    as they are parsed and refuses one over the upload limit before any of it is written, so a spool never grows past
    `limit` and never reaches disk."""

    def on_part_data(self: MultiPartParser, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is not None:
            sizes = self.__dict__.setdefault("_medvl_sizes", {})
            sizes[id(part)] = sizes.get(id(part), 0) + (end - start)
            if sizes[id(part)] > limit:
                raise ApiError(
                    413,
                    "file_too_large",
                    f"a file part is more than the limit of {limit} bytes: send a smaller (compressed) image",
                )
        MultiPartParser.on_part_data(self, data, start, end)

    return type(
        "InMemoryMultiPartParser", (MultiPartParser,), {"spool_max_size": limit + 1, "on_part_data": on_part_data}
    )


MAX_VIEW_CHARS = 64
"""Longest view name accepted (PA, LATERAL, "postero-anterior"...); longer ones are refused, never echoed back."""


def _view_name(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{where} must be a string such as PA or LATERAL")
    if len(value) > MAX_VIEW_CHARS:
        raise ApiError(
            400,
            "invalid_field",
            f"{where} is {len(value)} characters, more than the limit of "
            f"{MAX_VIEW_CHARS}: send a view name such as PA or LATERAL",
        )
    return value.strip() or None


def _question(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{where} must be a string: the question about the images")
    if len(value) > MAX_QUESTION_CHARS:
        raise ApiError(
            400,
            "invalid_field",
            f"{where} is {len(value)} characters, more than the limit of {MAX_QUESTION_CHARS}: ask a shorter question",
        )
    return value.strip()


@dataclasses.dataclass
class Upload:
    """What one request sends: its views as (name, file bytes, view name) and its question ('' = none)."""

    views: list[tuple[str, bytes, str | None]]
    question: str = ""


async def _read_body(request: Request, limits: Limits) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_request_bytes:
        raise ApiError(
            413,
            "request_too_large",
            f"the request is {declared} bytes, more than the limit of "
            f"{limits.max_request_bytes}: send fewer or smaller images",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_request_bytes:
            raise ApiError(
                413,
                "request_too_large",
                f"the request is more than {limits.max_request_bytes} bytes: send fewer or smaller images",
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_views(body: bytes, headers: Headers, limits: Limits) -> Upload:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    # Generous part counts: too many images gets its own clear answer below; the request size bounds the rest.
    parser = _in_memory_parser(limits.max_upload_bytes)(
        headers,
        stream(),
        max_files=4 * limits.max_views + 4,
        max_fields=4 * limits.max_views + 8,
        max_part_size=64 * 1024,
    )
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(
            400, "malformed_multipart", f"the multipart body cannot be read ({e}): send one 'images' file part per view"
        ) from None
    except (ValueError, UnicodeError, KeyError, IndexError) as e:  # a header the parser could not take apart
        raise ApiError(
            400,
            "malformed_multipart",
            f"the multipart body cannot be read ({type(e).__name__}): send one 'images' file part per view",
        ) from None
    try:
        parts = form.getlist("images")
        if any(not isinstance(f, UploadFile) for f in parts):
            raise ApiError(400, "invalid_field", "field 'images' must be file parts (filename=...), not text")
        files = [f for f in parts if isinstance(f, UploadFile)]
        if not files:
            raise ApiError(400, "missing_field", "multipart field 'images' is missing: send one file part per view")
        unknown = sorted({k for k in form.keys() if k not in ("images", "views", "question")})
        if unknown:
            raise ApiError(
                400,
                "unknown_field",
                f"unknown multipart field {unknown[0][:MAX_VIEW_CHARS]!r}: send only "
                "'images' (files), 'views' and 'question' (text)",
            )
        questions = form.getlist("question")
        if len(questions) > 1:
            raise ApiError(400, "invalid_field", f"{len(questions)} 'question' parts: ask one question per request")
        if questions and not isinstance(questions[0], str):
            raise ApiError(400, "invalid_field", "field 'question' must be a text part, not a file")
        question = _question(questions[0], "field 'question'") if questions else ""
        views = [
            _view_name(v if isinstance(v, str) else None, f"views[{i}]") for i, v in enumerate(form.getlist("views"))
        ]
        out = []
        for i, f in enumerate(files):
            data = await f.read()
            out.append((f"images[{i}]", data, views[i] if i < len(views) else None))
        return Upload(out, question)
    finally:
        await form.close()


MAX_JSON_CONTAINERS = 1024
"""A request holds 2 + one object per image of JSON objects and arrays; a body with more is refused before parsing
(this also bounds how deep it can nest, so parsing never recurses far)."""


def _refuse_big_number(text: str) -> int:
    if len(text.lstrip("-")) > 18:
        raise ValueError(f"a number with {len(text)} digits")
    return int(text)


def _json_views(body: bytes) -> Upload:
    if body.count(b"[") + body.count(b"{") > MAX_JSON_CONTAINERS:
        raise ApiError(
            400,
            "invalid_json",
            f"the JSON holds more than {MAX_JSON_CONTAINERS} objects and arrays: "
            'send {"images": [{"data": BASE64, "view": "PA"}]}',
        )
    try:
        payload = json.loads(body, parse_int=_refuse_big_number)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON ({e.msg if hasattr(e, 'msg') else e})"
        ) from None
    except (ValueError, RecursionError) as e:  # numbers beyond int's digit limit, nesting the scan missed
        raise ApiError(400, "invalid_json", f"the body is not acceptable JSON ({str(e)[:80]})") from None
    if not isinstance(payload, dict) or "images" not in payload:
        raise ApiError(
            400, "missing_field", 'JSON field \'images\' is missing: send {"images": [{"data": BASE64, "view": "PA"}]}'
        )
    unknown = sorted(k for k in payload if k not in ("images", "question"))
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown JSON field {unknown[0][:MAX_VIEW_CHARS]!r}: send only "
            '{"images": [{"data": BASE64, "view": "PA"}]} (and "question" for a model that answers questions)',
        )
    question = _question(payload["question"], "JSON field 'question'") if "question" in payload else ""
    images = payload["images"]
    if not isinstance(images, list) or not images:
        raise ApiError(400, "invalid_field", "JSON field 'images' must be a non-empty list of {\"data\": BASE64}")
    out = []
    for i, item in enumerate(images):
        if isinstance(item, str):
            item = {"data": item}
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise ApiError(400, "missing_field", f"images[{i}] needs a 'data' string (the file, base64)")
        extra = sorted(k for k in item if k not in ("data", "view"))
        if extra:
            raise ApiError(
                400,
                "unknown_field",
                f"unknown field images[{i}].{extra[0][:MAX_VIEW_CHARS]}: send only 'data' and 'view'",
            )
        view = _view_name(item.get("view"), f"images[{i}].view")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_base64", f"images[{i}].data is not valid base64") from None
        out.append((f"images[{i}]", data, view or None))
    return Upload(out, question)


# ------------------------------------------------------------------------------------------------------ decoding
def _prepare(
    rid: str,
    views: list[tuple[str, bytes, str | None]],
    limits: Limits,
    image_size: int,
    max_views: int,
    channels: int = 1,
) -> PreparedStudy:
    images: list[DecodedImage] = [decode_view(data, name, limits) for name, data, _ in views]
    try:
        return prepare_study(rid, images, image_size, max_views, [view for _, _, view in views], channels)
    except Exception as e:  # noqa: BLE001 - a decoded image the model cannot take is still the upload's problem
        raise ApiError(
            422,
            "undecodable_image",
            f"the images cannot be prepared for the model "
            f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})",
        ) from e
