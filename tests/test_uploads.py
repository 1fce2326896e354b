"""Hostile uploads (issue 16, items 8-11): every decoding failure is a 4xx JSON answer with one line, never a 500;
a deflate bomb and a 182-megapixel DICOM are refused from their headers with little memory; an over-limit upload
never reaches disk; field lengths are bounded and unknown fields refused; and a fuzz run of 5,000+ mutated DICOM
(native and deflated), PNG and JPEG uploads gets no 5xx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import re
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medvl.infer.predictor import LoadedModel, load_trained
from medvl.serve.app import ServeSettings, create_app
from medvl.serve.limits import Limits
from medvl.serve.server import running_server

from .conftest import REPO
from .dicom_files import deflated_dicom, write_dicom, xray_pattern

LIMITS = Limits(max_upload_bytes=256 * 1024, max_pixels=512 * 512, max_views=3)


@pytest.fixture(scope="module")
def loaded(trained_checkpoint: Path) -> LoadedModel:
    return load_trained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def client(loaded: LoadedModel) -> Iterator[TestClient]:
    with TestClient(create_app(loaded, settings=ServeSettings(limits=LIMITS))) as c:
        yield c


def _png(side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray_pattern(side, side, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray_pattern(side, side, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _dicom(tmp: Path, **kw: object) -> bytes:
    return write_dicom(tmp / "x.dcm", xray_pattern(), **kw).read_bytes()  # type: ignore[arg-type]


def _redeflate(data: bytes, edit) -> bytes:  # noqa: ANN001
    """A deflated DICOM whose inflated data set went through `edit` (bytes -> bytes)."""
    at = data.index(b"DICM") + 4
    meta_len = int.from_bytes(data[at + 8 : at + 12], "little")  # (0002,0000) group length, UL
    start = at + 12 + meta_len
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return data[:start] + compressor.compress(edit(zlib.decompress(data[start:], -zlib.MAX_WBITS))) + compressor.flush()


def _odd_length(body: bytes) -> bytes:
    tag = b"\x08\x00\x60\x00CS\x02\x00"  # Modality, CS, length 2
    assert tag in body
    return body.replace(tag, b"\x08\x00\x60\x00CS\x03\x00", 1)


def _post(client: TestClient, data: bytes, name: str = "x.dcm") -> httpx.Response:
    return client.post("/v1/reports", files=[("images", (name, data, "application/octet-stream"))])


def _assert_4xx(res: httpx.Response, status: int, fragment: str = "") -> dict:
    assert res.status_code == status, res.text[:300]
    assert res.headers["content-type"].startswith("application/json")
    error = res.json()["error"]
    assert "\n" not in error["message"] and len(error["message"]) < 600 and fragment in error["message"], error
    return error


# ----------------------------------------------------------------------------------------------------- item 8
def test_json_envelopes_that_used_to_crash_get_a_400(client: TestClient) -> None:
    image = base64.b64encode(_png()).decode()
    big_number = b'{"images": [{"data": "' + image.encode() + b'"}], "n": ' + b"9" * 5000 + b"}"
    _assert_4xx(
        client.post("/v1/reports", content=big_number, headers={"Content-Type": "application/json"}),
        400,
        "not acceptable JSON",
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    _assert_4xx(
        client.post("/v1/reports", content=deep, headers={"Content-Type": "application/json"}),
        400,
        "objects and arrays",
    )
    deep_object = b'{"images": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001
    _assert_4xx(client.post("/v1/reports", content=deep_object, headers={"Content-Type": "application/json"}), 400)


def test_damaged_dicom_uploads_get_a_422(client: TestClient, tmp_path: Path) -> None:
    good = deflated_dicom(48, 64, fill=9)
    assert _post(client, good).status_code == 200  # the intact deflated file is served
    cases = {
        "deflated, truncated": good[:-40],
        "deflated, cut short": good[: good.index(b"DICM") + 200],
        "deflated, odd element length": _redeflate(good, _odd_length),
        "deflated, garbage stream": good[:-60] + bytes(range(60)),
    }
    raw = _dicom(tmp_path, window=(2000.0, 3000.0))
    for tag in (b"\x28\x00\x10\x00US", b"\x28\x00\x50\x10DS"):  # Rows, Window Center: pydicom raised NotImplemented
        at = raw.index(tag) + 4
        cases[f"unknown value representation in {tag[:4].hex()}"] = raw[:at] + b"ZZ" + raw[at + 2 :]
    for data in cases.values():
        _assert_4xx(_post(client, data), 422, "images[0]")
    odd = raw.replace(b"\x08\x00\x60\x00CS\x02\x00", b"\x08\x00\x60\x00CS\x03\x00")  # may still decode
    assert _post(client, odd).status_code in (200, 422)


# ----------------------------------------------------------------------------------------------------- item 9
def test_a_deflate_bomb_and_a_182_megapixel_dicom_are_refused_from_their_headers(
    loaded: LoadedModel, tmp_path: Path
) -> None:
    bomb = deflated_dicom(512, 512, pixel_bytes=1 << 30)  # ~1 MB that inflates to 1 GiB
    assert len(bomb) < 1_100_000
    huge = deflated_dicom(13490, 13490)  # 182 million pixels in ~350 KB
    assert len(huge) < 400_000
    with TestClient(create_app(loaded)) as client:  # the default limits of medvl serve
        t0 = time.perf_counter()
        _assert_4xx(_post(client, bomb), 422, "inflates to more than")
        _assert_4xx(_post(client, huge), 413, "13490 x 13490 pixels, more than the limit")
        assert time.perf_counter() - t0 < 5

    # predict and the demo (load_study) and training (load_grayscale) refuse it from the header too, by default
    from medvl.data.images import ImageLoadError, ImageTooLargeError, load_grayscale
    from medvl.infer.predictor import load_study

    path = tmp_path / "huge.dcm"
    path.write_bytes(huge)
    with pytest.raises(ImageTooLargeError, match="13490 x 13490 pixels, more than the limit of 40000000"):
        load_study(loaded, "s", [path])
    with pytest.raises(ImageTooLargeError, match="more than the limit of 40000000"):
        load_grayscale(path)
    path.write_bytes(bomb)
    with pytest.raises(ImageLoadError, match="inflates to more than"):
        load_grayscale(path)


def _peak_rss_mb(script: str, trained: Path, data: Path, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "upload_memory.py"), script, str(trained), str(data), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["bomb", "huge"])
def test_peak_memory_for_hostile_dicoms_stays_under_300_mb_above_idle(
    trained_checkpoint: Path, tmp_path: Path, case: str
) -> None:
    path = tmp_path / f"{case}.dcm"
    path.write_bytes(deflated_dicom(512, 512, pixel_bytes=1 << 30) if case == "bomb" else deflated_dicom(13490, 13490))
    for mode in ("serve", "predict"):
        result = _peak_rss_mb(mode, trained_checkpoint, path)
        assert result["status"] in (413, 422, 2), result
        assert result["peak_above_idle_mb"] < 300, result


# ---------------------------------------------------------------------------------------------------- item 10
def test_an_upload_over_the_limit_never_reaches_disk(loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import starlette.formparsers

    rolled: list[int] = []
    written: list[int] = []

    class Watched(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, s):  # noqa: ANN001, ANN202
            written.append(len(s))
            return super().write(s)

        def rollover(self) -> None:
            rolled.append(1)
            super().rollover()

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Watched)
    limits = Limits(max_upload_bytes=2 * 1024 * 1024, max_views=4)
    noise = np.random.default_rng(1).integers(0, 256, (3000, 3000), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG", compress_level=0)
    upload = buf.getvalue()
    assert len(upload) > 4 * limits.max_upload_bytes  # well over the limit, and below the request limit
    assert len(upload) < limits.max_request_bytes
    with TestClient(create_app(loaded, settings=ServeSettings(limits=limits))) as c:
        res = c.post("/v1/reports", files=[("images", ("big.png", upload, "image/png"))])
    _assert_4xx(res, 413, f"more than the limit of {limits.max_upload_bytes}")
    assert not rolled and sum(written) == 0  # refused while parsing, before a byte was spooled


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body(loaded: LoadedModel) -> None:
    limits = Limits(max_upload_bytes=64 * 1024, max_views=2)
    with running_server(create_app(loaded, settings=ServeSettings(limits=limits))) as url:
        host, port = re.match(r"http://([^:]+):(\d+)", url).groups()
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000000\r\n\r\n"
            )  # and no body: an answer must not wait for it
            answer = ""
            while "}}" not in answer:  # the JSON error body may come in a second packet
                chunk = s.recv(65536).decode()
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith("HTTP/1.1 413") and "request_too_large" in answer


# ---------------------------------------------------------------------------------------------------- item 11
def test_long_fields_and_unknown_fields_are_refused_and_never_echoed(loaded: LoadedModel) -> None:
    with TestClient(create_app(loaded)) as client:  # the default limits: a 10 MB request is within them
        _check_fields(client)


def _check_fields(client: TestClient) -> None:
    image = base64.b64encode(_png()).decode()
    res = client.post("/v1/reports", json={"images": [{"data": image, "view": "P" * 10_000_000}]})
    error = _assert_4xx(res, 400, "images[0].view is 10000000 characters, more than the limit of 64")
    assert len(res.content) < 1000 and error["code"] == "invalid_field"
    res = client.post("/v1/reports", json={"images": [{"data": image}], "k" * 5_000_000: 1})
    _assert_4xx(res, 400, "unknown JSON field")
    assert len(res.content) < 1000
    _assert_4xx(
        client.post("/v1/reports", json={"images": [{"data": image, "extra": 1}]}), 400, "unknown field images[0].extra"
    )
    res = client.post("/v1/reports", files=[("images", ("a.png", _png(), "image/png"))], data={"views": "L" * 100_000})
    assert res.status_code == 400 and len(res.content) < 1000
    res = client.post("/v1/reports", files=[("images", ("a.png", _png(), "image/png"))], data={"other": "x"})
    _assert_4xx(res, 400, "unknown multipart field 'other'")
    ok = client.post("/v1/reports", json={"images": [{"data": image, "view": "PA"}]})
    assert ok.status_code == 200 and ok.json()["views"] == ["PA"]


# ------------------------------------------------------------------------------------------------------- fuzz
def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del b[rng.randrange(1, len(b)) :]
    elif kind == 2:  # insert random bytes
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 3:  # zero a range
        at = rng.randrange(len(b))
        b[at : at + rng.randint(1, 256)] = bytes(min(256, len(b) - at))
    elif kind == 4:  # duplicate a chunk
        at = rng.randrange(len(b))
        b[at:at] = b[at : at + rng.randint(1, 512)]
    elif kind == 5:  # set a 16/32-bit little-endian field (lengths, sizes, rows/columns) to an extreme
        at = rng.randrange(max(1, len(b) - 4))
        b[at : at + 4] = rng.choice(
            [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\xff\x7f\x00\x00"]
        )
    else:  # flip one bit in the header region
        at = rng.randrange(min(len(b), 400))
        b[at] ^= 1 << rng.randrange(8)
    return bytes(b)


def test_fuzz_5000_mutated_uploads_get_no_5xx(loaded: LoadedModel, tmp_path: Path) -> None:
    seeds = {
        "png": _png(),
        "jpeg": _jpeg(),
        "dicom": _dicom(tmp_path),
        "dicom-deflate": deflated_dicom(48, 64, fill=3),
        "dicom-rle": _dicom(tmp_path, syntax="rle"),
        "dicom-window": _dicom(tmp_path, window=(2000.0, 3000.0)),
    }
    rng = random.Random(16)
    bodies = [(name, _mutate(data, rng)) for _ in range(850) for name, data in seeds.items()]
    assert len(bodies) >= 5000
    app = create_app(loaded, settings=ServeSettings(limits=LIMITS, max_batch_size=16))

    async def run() -> list[tuple[str, int, str]]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client,
        ):
            gate = asyncio.Semaphore(32)

            async def one(name: str, data: bytes) -> tuple[str, int, str]:
                async with gate:
                    res = await client.post("/v1/reports", files=[("images", ("f", data, "application/octet-stream"))])
                    message = "" if res.status_code == 200 else res.json()["error"]["message"]
                    return name, res.status_code, message

            return await asyncio.gather(*(one(n, d) for n, d in bodies))

    t0 = time.perf_counter()
    results = asyncio.run(run())
    seconds = time.perf_counter() - t0
    server_errors = [r for r in results if r[1] >= 500]
    assert not server_errors, server_errors[:5]
    statuses = {s for _, s, _ in results}
    assert statuses <= {200, 400, 413, 415, 422} and 422 in statuses and 200 in statuses
    assert all("\n" not in message and len(message) < 600 for _, _, message in results)
    print(
        f"fuzz: {len(bodies)} uploads in {seconds:.1f}s: "
        + ", ".join(f"{s}: {sum(1 for r in results if r[1] == s)}" for s in sorted(statuses))
    )
    assert seconds < 120, f"{len(bodies)} uploads took {seconds:.0f}s"
