"""Questions over the REST API: a unified model trained for VQA answers the `question` of a request (multipart or
JSON) as `medvl predict --question` does; a model that takes none refuses one, and a VQA-only model refuses a request
without one, each with a 400 naming the problem and the way out, before any image is decoded."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medvl.infer.predictor import LoadedModel, load_study, load_trained, predict_prepared
from medvl.serve.app import ServeSettings, create_app

from .unified_fixtures import tiny_unified, unified_parts

QUESTION = "is there a pleural effusion?"


@pytest.fixture(scope="module")
def assets(synth_root: Path) -> dict[str, Any]:
    return unified_parts(synth_root)[1]


@pytest.fixture(scope="module")
def image(synth_root: Path) -> Path:
    study = json.loads((synth_root / "annotation.json").read_text())["test"][0]["id"]
    return synth_root / "images" / study / "0.png"


@pytest.fixture(scope="module")
def vqa_and_caption(assets: dict[str, Any]) -> LoadedModel:
    return tiny_unified(assets, tasks=["caption", "vqa"])


@pytest.fixture(scope="module")
def vqa_only(assets: dict[str, Any]) -> LoadedModel:
    return tiny_unified(assets, tasks=["vqa"])


@pytest.fixture
def client(vqa_and_caption: LoadedModel) -> Iterator[TestClient]:
    with TestClient(create_app(vqa_and_caption)) as c:
        yield c


def _expected(loaded: LoadedModel, image: Path, question: str = "") -> dict[str, Any]:
    """What `medvl predict CKPT IMAGE --question QUESTION` computes for the image."""
    study = dataclasses.replace(load_study(loaded, "s", [image]), question=question)
    return predict_prepared(loaded, [study], 1)[0]


def _multipart(image: Path, **fields: Any) -> dict[str, Any]:
    return {"files": [("images", (image.name, image.read_bytes(), "image/png"))], "data": fields}


def test_a_question_is_answered_as_predict_answers_it(
    client: TestClient, vqa_and_caption: LoadedModel, image: Path
) -> None:
    expected = _expected(vqa_and_caption, image, QUESTION)
    assert expected["task"] == "vqa" and expected["text"] in vqa_and_caption.task.answers  # constrained answer
    res = client.post("/v1/generations", **_multipart(image, question=QUESTION))
    assert res.status_code == 200, res.text
    assert (res.json()["task"], res.json()["text"]) == ("vqa", expected["text"])
    payload = {"images": [{"data": base64.b64encode(image.read_bytes()).decode()}], "question": f"  {QUESTION} "}
    res = client.post("/v1/generations", json=payload)
    assert res.status_code == 200, res.text
    assert (res.json()["task"], res.json()["text"]) == ("vqa", expected["text"])
    # without a question the model runs its default sub-task, as predict does
    res = client.post("/v1/generations", **_multipart(image))
    assert res.status_code == 200, res.text
    caption = _expected(vqa_and_caption, image)
    assert caption["task"] == "caption" and res.json()["text"] == caption["text"] and res.json()["task"] == "caption"


def test_batched_requests_keep_their_own_questions(vqa_and_caption: LoadedModel, image: Path) -> None:
    questions = [QUESTION, "", "is the heart enlarged?", ""]
    expected = [_expected(vqa_and_caption, image, q) for q in questions]
    settings = ServeSettings(max_batch_size=4, max_wait_ms=200)
    with TestClient(create_app(vqa_and_caption, settings=settings)) as c, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda q: c.post("/v1/generations", **_multipart(image, question=q)).json(), questions))
    assert [(a["task"], a["text"]) for a in answers] == [(e["task"], e["text"]) for e in expected]
    assert max(a["batch_size"] for a in answers) > 1  # some shared a forward pass


def test_model_info_and_schema_say_whether_a_question_is_taken(
    client: TestClient, vqa_only: LoadedModel, trained_checkpoint: Path
) -> None:
    info = client.get("/v1/model").json()
    assert (info["takes_question"], info["requires_question"], info["subtasks"]) == (True, False, ["caption", "vqa"])
    body = client.get("/openapi.json").json()["paths"]["/v1/generations"]["post"]["requestBody"]["content"]
    for kind in ("multipart/form-data", "application/json"):
        assert "question" in body[kind]["schema"]["properties"] and body[kind]["schema"]["required"] == ["images"]
    with TestClient(create_app(vqa_only)) as c:
        info = c.get("/v1/model").json()
        assert (info["takes_question"], info["requires_question"], info["subtasks"]) == (True, True, ["vqa"])
        body = c.get("/openapi.json").json()["paths"]["/v1/generations"]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"]["required"] == ["images", "question"]
    with TestClient(create_app(load_trained(trained_checkpoint, device="cpu"))) as c:
        info = c.get("/v1/model").json()
        assert (info["takes_question"], info["requires_question"], info["subtasks"]) == (False, False, [])
        body = c.get("/openapi.json").json()["paths"]["/v1/reports"]["post"]["requestBody"]["content"]
        assert "question" not in body["application/json"]["schema"]["properties"]


def test_a_vqa_only_model_needs_a_question(vqa_only: LoadedModel, image: Path) -> None:
    with TestClient(create_app(vqa_only)) as c:
        res = c.post("/v1/generations", **_multipart(image))
        assert res.status_code == 400
        error = res.json()["error"]
        assert error["code"] == "question_required"
        assert error["message"] == (
            "this checkpoint was trained for task.tasks=[vqa] only: ask a question about the image (the 'question' "
            "field)"
        )
        res = c.post("/v1/generations", **_multipart(image, question=QUESTION))
        assert res.status_code == 200 and res.json()["text"] == _expected(vqa_only, image, QUESTION)["text"]


def test_a_question_to_a_model_that_takes_none_is_refused(
    assets: dict[str, Any], trained_checkpoint: Path, image: Path
) -> None:
    captioner = load_trained(trained_checkpoint, device="cpu")
    # a file that is no image: the question is refused first, before any decoding
    junk = {"files": [("images", ("a.gif", b"GIF89a" + bytes(100), "image/gif"))], "data": {"question": QUESTION}}
    with TestClient(create_app(captioner)) as c:
        for kwargs in (junk, _multipart(image, question=QUESTION)):
            res = c.post("/v1/reports", **kwargs)
            assert res.status_code == 400 and res.json()["error"] == {
                "code": "question_not_accepted",
                "message": "this report generation checkpoint does not answer questions (the unified family's "
                "instructed_generation task does): leave out the question (the 'question' field)",
            }
        assert c.post("/v1/reports", **_multipart(image, question="  ")).status_code == 200  # blank: no question
    with TestClient(create_app(tiny_unified(assets, tasks=["caption"]))) as c:
        res = c.post("/v1/generations", **_multipart(image, question=QUESTION))
        assert res.status_code == 400 and res.json()["error"]["code"] == "question_not_accepted"
        assert "trained for task.tasks=[caption], not vqa; leave out the question" in res.json()["error"]["message"]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"data": {"question": "x" * 1001}}, "field 'question' is 1001 characters, more than the limit of 1000"),
        ({"data": {"question": ["a?", "b?"]}}, "2 'question' parts: ask one question per request"),
        ({"files": [("question", ("q.txt", b"why?", "text/plain"))]}, "field 'question' must be a text part"),
        ({"json": {"question": 3}}, "JSON field 'question' must be a string"),
    ],
)
def test_malformed_questions_get_a_400(client: TestClient, kwargs: dict[str, Any], message: str) -> None:
    if "json" in kwargs:
        kwargs = {"json": {"images": [{"data": base64.b64encode(_png()).decode()}], **kwargs["json"]}}
    else:
        kwargs = {**kwargs, "files": [("images", ("a.png", _png(), "image/png")), *kwargs.get("files", [])]}
    res = client.post("/v1/generations", **kwargs)
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid_field"
    assert message in res.json()["error"]["message"]
