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
import dataclasses
import hmac
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from medvl.infer.config import GenerationConfig
from medvl.infer.predictor import LoadedModel, PreparedStudy, predict_prepared
from medvl.serve.batcher import DynamicBatcher, QueueFullError
from medvl.serve.limits import ApiError, Limits
from medvl.serve.uploads import QUESTION_FIELD, _json_views, _multipart_views, _prepare, _read_body, _request_body

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
