"""The REST API (FastAPI): one study in, its prediction out, with concurrent requests batched into shared forward
passes. What a prediction holds is the task's (`task.predict`, described by `task.prediction_fields`): a report and
its findings for report tasks, class probabilities and labels for classification.

Endpoints (OpenAPI at /openapi.json, docs at /docs):
- `POST /v1/<task.endpoint>` (`/v1/reports` for report tasks, `/v1/classifications` for classification): one
  study, as `multipart/form-data` (one `images` file part per view, optional `views` text parts such as PA / LATERAL
  in the same order) or as JSON `{"images": [{"data": BASE64, "view": "PA"}, ...]}`. Answers
  `{"id", <the prediction fields>, "views", "ignored_views", "timing": {...}, "batch_size"}`. A model that answers
  questions (a unified-family checkpoint trained for vqa: `/v1/generations`) also takes a `question` (a text part,
  or a JSON string field) and answers it; sent to any other model, a question is refused (400
  `question_not_accepted`), and a model trained for VQA only refuses a request without one (400
  `question_required`), as `medvl predict --question` does.
- `GET /v1/model`: what is loaded (family, size, checkpoint, whether it takes or requires a question and its
  sub-tasks, generation settings of text-generating tasks, limits, batching).
- `GET /health`: liveness, without authentication.
Every refusal is `{"error": {"code", "message"}}` with a 4xx status (see `medvl.serve.limits`); 503 with Retry-After
when the queue is full. With an API key set, `/v1/*` needs the `X-API-Key` header.

Privacy: request bodies are read into memory only (multipart parts are never spooled to disk: a request over its
limit is refused from its Content-Length or while it streams in, and a file part over the upload limit while it is
parsed, before any of it is written to a spool whose size limit is above the upload limit) and dropped after
decoding; the log gets one line per request with its id, status and timing, never the client's address, file names
or content (uvicorn's access log is off). Every field is bounded and unknown fields are refused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from medvl.data.images import DecodedImage
from medvl.infer.config import GenerationConfig
from medvl.infer.predictor import MAX_QUESTION_CHARS, LoadedModel, PreparedStudy, predict_prepared, prepare_study
from medvl.serve.batcher import DynamicBatcher, QueueFullError
from medvl.serve.limits import ApiError, Limits, decode_view

log = logging.getLogger("medvl.serve")
API_KEY_HEADER = "X-API-Key"


# ------------------------------------------------------------------------------------------------ response models
class Timing(BaseModel):
    decode_ms: float = Field(description="decoding and resizing the views")
    queue_ms: float = Field(description="waiting for a batch to start")
    generate_ms: float = Field(description="the shared forward pass of the batch")
    total_ms: float = Field(description="from the request's arrival to the answer")


class PredictionBase(BaseModel):
    id: str = Field(description="request id (also in the X-Request-ID header and the server log)")
    views: list[str | None] = Field(description="view of each image used, frontal first (None: unknown)")
    ignored_views: int = Field(
        0, description="images sent beyond the model's max_views, left out (the model reads the frontal view(s) first)"
    )
    batch_size: int = Field(description="requests that shared the forward pass")
    timing: Timing


def prediction_model(task: Any) -> type[BaseModel]:
    """The response model of `task`: the common fields plus the task's `prediction_fields`."""
    from pydantic import create_model

    fields = {name: (kind, Field(description=text)) for name, (kind, text) in task.prediction_fields.items()}
    return create_model(f"{type(task).__name__.removesuffix('Task')}Out", __base__=PredictionBase, **fields)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class HealthOut(BaseModel):
    status: str


_ERRORS = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "malformed request: missing field, bad base64 or JSON, too many images; a question the model cannot "
        "take, or none where it needs one",
        401: "missing or wrong API key",
        413: "file, request or image pixels over the limits",
        415: "not an accepted image type or request content type",
        422: "image truncated or corrupt",
        503: "queue full: retry after the Retry-After seconds",
        504: "no report within the time limit",
    }.items()
}

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


# ------------------------------------------------------------------------------------------------------ the app
@dataclasses.dataclass(frozen=True)
class ServeSettings:
    limits: Limits = dataclasses.field(default_factory=Limits)
    max_batch_size: int = 8
    """Requests that may share one forward pass (1 = no dynamic batching)."""
    max_wait_ms: float = 2.0
    """How long a batch waits for more requests once one is ready."""
    api_key: str | None = None
    """When set, /v1/* requires it in the X-API-Key header."""


def create_app(
    loaded: LoadedModel, gen: GenerationConfig | None = None, settings: ServeSettings | None = None
) -> FastAPI:
    """The FastAPI app serving `loaded`; see the module docstring.

    Args:
        loaded: a model from `medvl.infer.predictor.load_trained`.
        gen: generation settings (default: the checkpoint's); its batch_size is set to `settings.max_batch_size`.
        settings: limits, batching and the optional API key.
    """
    settings = settings or ServeSettings()
    try:  # a model that answers nothing a request can ask (e.g. task.predict_task names an untrained sub-task)
        loaded.check_request("")
    except ValueError as err:
        if not loaded.takes_question:
            raise ValueError(f"cannot serve {loaded.checkpoint}: {err}") from None
    limits = settings.limits
    gen = dataclasses.replace(gen or loaded.config.generation, batch_size=settings.max_batch_size)
    loaded = loaded.with_generation(gen)
    mc = loaded.config.model
    task = loaded.task
    PredictionOut = prediction_model(task)  # noqa: N806 (a class)

    def run_batch(studies: Sequence[PreparedStudy]) -> list[dict[str, Any]]:
        return predict_prepared(loaded, studies, settings.max_batch_size)

    batcher: DynamicBatcher[PreparedStudy, dict[str, Any]] = DynamicBatcher(
        run_batch, settings.max_batch_size, settings.max_wait_ms, limits.max_queue
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    what = ", ".join(task.prediction_fields)
    app = FastAPI(
        title=f"medvl {task.name.replace('_', ' ')} API",
        version="1",
        lifespan=lifespan,
        description=f"{task.name.replace('_', ' ').capitalize()} from a medvl checkpoint. Upload one study "
        f"(one image per view: PNG, JPEG or DICOM)"
        + (
            (", with a question about it (required)" if loaded.requires_question else ", optionally with a question")
            if loaded.takes_question
            else ""
        )
        + f", and get its prediction ({what}).",
    )
    app.state.batcher = batcher

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            raise ApiError(
                401, "missing_api_key", f"this server needs an API key: send it in the {API_KEY_HEADER} header"
            )
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "wrong_api_key", f"the {API_KEY_HEADER} header does not hold this server's API key")

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = str(err.detail)
        if err.status_code == 404:  # e.g. /v1/reports asked of a classification model: name the path it serves
            detail += f": this {task.name.replace('_', ' ')} model answers POST /v1/{task.endpoint} (see /docs)"
        return JSONResponse(
            ApiError(err.status_code, codes.get(err.status_code, "http_error"), detail).body(),
            status_code=err.status_code,
            headers=getattr(err, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"msg": "invalid request"}
        return JSONResponse(ApiError(400, "invalid_request", str(first.get("msg"))).body(), status_code=400)

    @app.get("/health", response_model=HealthOut, tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers (no authentication)."""
        return {"status": "ok"}

    @app.get("/v1/model", tags=["service"], responses={401: _ERRORS[401]})
    async def model_info(request: Request) -> dict[str, Any]:
        """What is loaded: model family and size, checkpoint, whether requests may (or must) ask a question and the
        sub-tasks it was trained for, generation settings (tasks that generate text), limits and batching."""
        authorize(request)
        from medvl import __version__

        return {
            "family": loaded.config.model_family,
            "size": loaded.config.model_size,
            "task": task.name,
            "endpoint": f"/v1/{task.endpoint}",
            "checkpoint": loaded.checkpoint.name,
            "step": loaded.metadata.get("step"),
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "image_size": mc.image_size,
            "max_views": mc.max_views,
            "supports_chat": loaded.supports_chat,
            "takes_question": loaded.takes_question,
            "requires_question": loaded.requires_question,
            "subtasks": list(getattr(task, "subtasks", [])),
            "device": str(loaded.device),
            "medvl_version": __version__,
            **({"generation": dataclasses.asdict(gen)} if hasattr(task, "generation") else {}),
            "limits": limits.to_dict(),
            "batching": {
                "max_batch_size": settings.max_batch_size,
                "max_wait_ms": settings.max_wait_ms,
                **batcher.stats(),
            },
        }

    @app.post(
        f"/v1/{task.endpoint}",
        response_model=PredictionOut,
        tags=[task.endpoint],
        openapi_extra={"requestBody": _request_body(loaded.takes_question, loaded.requires_question)},
        responses={k: v for k, v in _ERRORS.items()},
        summary=f"Predict for one study ({what})",
    )
    async def create_prediction(request: Request) -> JSONResponse:
        """The prediction for one study (one image per view, frontal first or told by `views`; for a model that
        answers questions, the answer to `question`)."""
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex
        status = 500
        try:
            authorize(request)
            body = await _read_body(request, limits)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "multipart/form-data":
                upload = await _multipart_views(body, request.headers, limits)
            elif ctype == "application/json":
                upload = _json_views(body)
            else:
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    "send multipart/form-data (one 'images' file per "
                    'view) or application/json ({"images": [{"data": BASE64}]})',
                )
            del body
            views = upload.views
            try:  # before decoding: a question the model cannot take, or none where it needs one
                loaded.check_request(upload.question, QUESTION_FIELD)
            except ValueError as err:
                raise ApiError(
                    400, "question_not_accepted" if upload.question else "question_required", str(err)
                ) from None
            if len(views) > limits.max_views:
                raise ApiError(
                    400,
                    "too_many_images",
                    f"{len(views)} images, more than the limit of "
                    f"{limits.max_views} per study: send one study per request",
                )
            t_decode = time.perf_counter()
            study = await run_in_threadpool(_prepare, rid, views, limits, mc.image_size, mc.max_views, mc.in_chans)
            study = dataclasses.replace(study, question=upload.question)
            decode_ms = (time.perf_counter() - t_decode) * 1000
            try:
                future = batcher.submit(study)
            except QueueFullError as e:
                raise ApiError(
                    503, "busy", f"the server is busy ({e}): retry in a moment", headers={"Retry-After": "1"}
                ) from None
            try:
                record, info = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
            except TimeoutError:
                future.cancel()
                raise ApiError(504, "timeout", f"no answer within {limits.timeout_s:.0f}s: retry later") from None
            out = PredictionOut(
                id=rid,
                **record,
                views=study.views,
                ignored_views=study.ignored_views,
                batch_size=info.batch_size,
                timing=Timing(
                    decode_ms=round(decode_ms, 2),
                    queue_ms=round(info.queue_ms, 2),
                    generate_ms=round(info.run_ms, 2),
                    total_ms=round((time.perf_counter() - t0) * 1000, 2),
                ),
            )
            status = 200
            return JSONResponse(out.model_dump(), headers={"X-Request-ID": rid})
        except ApiError as err:
            status = err.status
            err.headers.setdefault("X-Request-ID", rid)
            raise
        finally:
            log.info("request %s status %d in %.1f ms", rid, status, (time.perf_counter() - t0) * 1000)

    if settings.api_key:
        _add_api_key_scheme(app)
    return app


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


def _add_api_key_scheme(app: FastAPI) -> None:
    """Declare the X-API-Key header in the OpenAPI spec for the /v1 operations."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["ApiKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
        }
        for path, ops in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"ApiKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
