"""The REST API: valid requests, a 4xx answer with a clear message for each bad input, dynamic batching, a bounded
load test on loopback with flat memory, and a schemathesis run against the OpenAPI spec with no 5xx."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medvl.infer.predictor import LoadedModel, load_trained, predict_reports
from medvl.serve.app import ServeSettings, create_app
from medvl.serve.batcher import DynamicBatcher, QueueFullError
from medvl.serve.limits import Limits
from medvl.serve.server import running_server

from .dicom_files import write_dicom, xray_pattern

KEY = "s3cret-test-key"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def loaded(trained_checkpoint: Path) -> LoadedModel:
    return load_trained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def views(synth_root: Path) -> list[Path]:
    study = synth_root / "images" / json.loads((synth_root / "annotation.json").read_text())["test"][1]["id"]
    return [study / "0.png", study / "1.png"]


@pytest.fixture
def client(loaded: LoadedModel) -> Iterator[TestClient]:
    limits = Limits(max_upload_bytes=64 * 1024, max_pixels=300 * 300, max_views=3)
    with TestClient(create_app(loaded, settings=ServeSettings(limits=limits, api_key=KEY))) as c:
        yield c


def png_bytes(side: int = 64, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_multipart_and_json_requests_give_the_cli_report(
    client: TestClient, loaded: LoadedModel, views: list[Path], tmp_path: Path
) -> None:
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in views]
    res = client.post("/v1/reports", files=files, data={"views": ["PA", "LATERAL"]}, headers=AUTH)
    assert res.status_code == 200, res.text
    body = res.json()
    expected = predict_reports(loaded, [views], loaded.config.generation)[0]
    assert body["report"] == expected and body["views"] == ["PA", "LATERAL"]
    assert isinstance(body["findings"], dict) and body["batch_size"] >= 1
    assert set(body["timing"]) == {"decode_ms", "queue_ms", "generate_ms", "total_ms"}
    assert res.headers["X-Request-ID"] == body["id"] and body["ignored_views"] == 0

    dcm = write_dicom(tmp_path / "x.dcm", xray_pattern(), syntax="jpeg2000", photometric="MONOCHROME1", view="AP")
    payload = {"images": [{"data": base64.b64encode(dcm.read_bytes()).decode()}]}
    res = client.post("/v1/reports", json=payload, headers=AUTH)
    assert res.status_code == 200, res.text
    assert res.json()["views"] == ["AP"]
    assert res.json()["report"] == predict_reports(loaded, [[dcm]], loaded.config.generation)[0]


def test_views_beyond_the_models_max_views_are_counted_in_the_answer(
    client: TestClient, loaded: LoadedModel, views: list[Path]
) -> None:
    assert loaded.config.model.max_views == 2  # the server's limit (3) lets one more view through
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in views]
    files.append(("images", ("extra.png", png_bytes(), "image/png")))
    res = client.post("/v1/reports", files=files, headers=AUTH)
    assert res.status_code == 200, res.text
    assert res.json()["ignored_views"] == 1 and len(res.json()["views"]) == 2


def test_model_and_health(client: TestClient, loaded: LoadedModel) -> None:
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["family"] == "captioner" and info["size"] == "tiny" and info["supports_chat"] is False
    assert info["image_size"] == loaded.config.model.image_size and info["limits"]["max_views"] == 3
    assert info["batching"]["max_batch_size"] == 8 and info["parameters"] > 0
    assert info["generation"]["num_beams"] == loaded.config.generation.num_beams
    assert "/" not in info["checkpoint"]  # the name, not the server's file system path
    assert client.get("/health").json() == {"status": "ok"}  # no key needed
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/reports"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"


def _truncated_png() -> bytes:
    return png_bytes()[:60]


BAD_REQUESTS = [
    # (name, request kwargs, status, error code, message fragment)
    (
        "wrong type",
        {"files": [("images", ("a.gif", b"GIF89a" + bytes(100), "image/gif"))]},
        415,
        "unsupported_type",
        "images[0] is not an accepted image type: send PNG, JPEG, DICOM",
    ),
    (
        "truncated image",
        {"files": [("images", ("a.png", _truncated_png(), "image/png"))]},
        422,
        "undecodable_image",
        "cannot decode image images[0]",
    ),
    (
        "oversized file",
        {"files": [("images", ("a.png", png_bytes(1) + bytes(70 * 1024), "image/png"))]},
        413,
        "file_too_large",
        "more than the limit of 65536",
    ),
    (
        "too many pixels",
        {"files": [("images", ("a.png", png_bytes(400), "image/png"))]},
        413,
        "too_many_pixels",
        "400 x 400 pixels, more than the limit of 90000",
    ),
    (
        "missing field",
        {"files": [("image", ("a.png", png_bytes(), "image/png"))]},
        400,
        "missing_field",
        "multipart field 'images' is missing",
    ),
    ("missing json field", {"json": {"image": "abc"}}, 400, "missing_field", "JSON field 'images' is missing"),
    ("bad base64", {"json": {"images": [{"data": "not base64!"}]}}, 400, "invalid_base64", "not valid base64"),
    (
        "not json",
        {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
        "not valid JSON",
    ),
    (
        "wrong content type",
        {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
        "send multipart/form-data",
    ),
    (
        "too many images",
        {"files": [("images", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)]},
        400,
        "too_many_images",
        "4 images, more than the limit of 3",
    ),
    (
        "request too large",
        {"content": bytes(400 * 1024), "headers": {"Content-Type": "application/json"}},
        413,
        "request_too_large",
        "more than the limit",
    ),
    (
        "wrong api key",
        {"headers": {"X-API-Key": "guess"}, "json": {"images": []}},
        401,
        "wrong_api_key",
        "does not hold this server's API key",
    ),
    (
        "missing api key",
        {"headers": {"X-API-Key": None}, "json": {"images": []}},
        401,
        "missing_api_key",
        "send it in the X-API-Key header",
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "status", "code", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_4xx_and_a_clear_message(
    client: TestClient, name: str, kwargs: dict, status: int, code: str, message: str
) -> None:
    kwargs = dict(kwargs)
    headers = {k: v for k, v in {**AUTH, **kwargs.pop("headers", {})}.items() if v is not None}
    res = client.request("POST", "/v1/reports", headers=headers, **kwargs)
    assert res.status_code == status, res.text
    error = res.json()["error"]
    assert error["code"] == code and message in error["message"], error
    assert "\n" not in error["message"]
    if status == 401:
        assert client.get("/v1/model", headers={"X-API-Key": "guess"}).status_code == 401


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_reports(
    loaded: LoadedModel, views: list[Path]
) -> None:
    settings = ServeSettings(max_batch_size=8, max_wait_ms=200)  # a long wait so that the 6 requests meet
    bodies = [png_bytes(64, v) for v in (20, 60, 100, 140, 180, 220)]
    with TestClient(create_app(loaded, settings=settings)) as c, ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda b: c.post("/v1/reports", files=[("images", ("a.png", b, "image/png"))]).json(), bodies)
        )
        stats = c.get("/v1/model").json()["batching"]
    assert max(a["batch_size"] for a in answers) > 1 and stats["mean_batch_size"] > 1
    alone = [predict_reports(loaded, [[p]], loaded.config.generation)[0] for p in _as_files(bodies)]
    assert [a["report"] for a in answers] == alone  # batching never mixes up or changes reports


def _as_files(bodies: list[bytes]) -> list[Path]:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="medvl-serve-test-"))
    out = []
    for i, b in enumerate(bodies):
        (folder / f"{i}.png").write_bytes(b)
        out.append(folder / f"{i}.png")
    return out


def test_batcher_bound_and_failures() -> None:
    gate, entered = threading.Event(), threading.Event()

    def slow(items: list[int]) -> list[int]:
        entered.set()
        gate.wait(5)
        if -1 in items:
            raise RuntimeError("boom")
        return [i * 2 for i in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(slow, max_batch_size=2, max_wait_ms=0, max_queue=2)
    batcher.start()
    try:
        first = batcher.submit(1)  # taken by the worker, blocked on the gate
        assert entered.wait(5)  # the worker is inside the model call: its batch is closed, the queue is empty
        queued = [batcher.submit(2), batcher.submit(-1)]
        with pytest.raises(QueueFullError):
            batcher.submit(3)
        gate.set()
        assert first.result(5)[0] == 2
        with pytest.raises(RuntimeError, match="boom"):
            queued[1].result(5)
        assert isinstance(queued[0].exception(5), RuntimeError)  # same batch as the failing item
    finally:
        batcher.stop()


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def test_load_200_requests_8_concurrent_no_error_flat_memory(loaded: LoadedModel, views: list[Path]) -> None:
    files_bytes = [p.read_bytes() for p in views]

    def one(client: httpx.Client) -> int:
        res = client.post(
            "/v1/reports", files=[("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(files_bytes)]
        )
        return res.status_code

    with (
        running_server(create_app(loaded, settings=ServeSettings(max_batch_size=8))) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        assert all(s == 200 for s in pool.map(lambda _: one(client), range(40)))  # warm-up
        before = _rss_mb()
        statuses = list(pool.map(lambda _: one(client), range(200)))
        after = _rss_mb()
        stats = client.get("/v1/model").json()["batching"]
    assert statuses.count(200) == 200, {s: statuses.count(s) for s in set(statuses)}
    assert after - before < 40, f"RSS grew by {after - before:.1f} MB over 200 requests"
    assert stats["items"] == 240 and stats["waiting"] == 0


def test_schemathesis_finds_no_server_error(loaded: LoadedModel) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    limits = Limits(max_upload_bytes=256 * 1024, max_pixels=512 * 512)
    with running_server(create_app(loaded, settings=ServeSettings(limits=limits))) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        seen: list[int] = []

        @settings(
            max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=schema.as_strategy())
        def check(case: schemathesis.Case) -> None:
            res = case.call(base_url=url, timeout=30)
            seen.append(res.status_code)
            assert res.status_code < 500, f"{case.method} {case.path} -> {res.status_code}: {res.text[:200]}"

        check()
    assert len(seen) >= 20 and any(400 <= s < 500 for s in seen)


def test_uploads_stay_in_memory_and_the_log_holds_only_id_and_timing(
    loaded: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import tempfile

    import starlette.formparsers

    rolled: list[bool] = []

    class Watched(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def rollover(self) -> None:  # called when a spooled file moves to disk
            rolled.append(True)
            super().rollover()

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Watched)
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    assert len(buf.getvalue()) > 1024 * 1024  # above Starlette's default 1 MB spool threshold
    caplog.set_level(logging.INFO, logger="medvl.serve")
    with TestClient(create_app(loaded)) as c:
        res = c.post("/v1/reports", files=[("images", ("patient_name.png", buf.getvalue(), "image/png"))])
    assert res.status_code == 200 and not rolled
    lines = [r.getMessage() for r in caplog.records if r.name == "medvl.serve"]
    assert lines == [f"request {res.json()['id']} status 200 in {lines[0].split(' in ')[1]}"]
    assert "patient_name" not in caplog.text and "testclient" not in caplog.text


def test_medvl_serve_command_starts_answers_and_stops(
    trained_checkpoint: Path, views: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    from medvl.cli import main

    assert main(["serve", str(trained_checkpoint), "--api-key-env", "MEDVL_TEST_UNSET_KEY"]) == 2
    assert "MEDVL_TEST_UNSET_KEY: that environment variable is empty or unset" in capsys.readouterr().err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MEDVL_TEST_KEY": KEY, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medvl",
            "serve",
            str(trained_checkpoint),
            "--port",
            str(port),
            "--api-key-env",
            "MEDVL_TEST_KEY",
            "--max-views",
            "2",
            "--device",
            "cpu",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "medvl serve did not start"
            time.sleep(0.2)
        files = [("images", (p.name, p.read_bytes(), "image/png")) for p in views]
        assert httpx.post(f"{url}/v1/reports", files=files, timeout=30).status_code == 401
        res = httpx.post(f"{url}/v1/reports", files=files, headers=AUTH, timeout=30)
        assert res.status_code == 200 and res.json()["report"] is not None
        assert httpx.get(f"{url}/v1/model", headers=AUTH).json()["limits"]["max_views"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode in (0, 130), output
    assert f"request {res.json()['id']} status 200" in output and views[0].name not in output
