"""The Gradio demo: findings highlighting, Grad-CAM maps, the chat hook, the question box of models that answer
questions, example studies, and real-browser runs (Debian's headless chromium driven by Selenium: upload an X-ray, a
report appears, a screenshot is kept; ask a unified VQA model a question, its answer appears)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medvl.demo.app import analyze, create_demo, example_studies, launch
from medvl.demo.highlight import highlight_findings
from medvl.infer.predictor import LoadedModel, load_study, load_trained
from medvl.infer.saliency import gradcam

from .dicom_files import write_dicom, xray_pattern
from .unified_fixtures import tiny_unified, unified_parts

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def loaded(trained_checkpoint: Path) -> LoadedModel:
    return load_trained(trained_checkpoint, device="cpu")


def test_findings_are_highlighted_with_their_sentence_label() -> None:
    report = "The heart is enlarged. No pneumothorax. Possible small left pleural effusion."
    segments = highlight_findings(report)
    assert "".join(text for text, _ in segments) == report
    tagged = {text.lower(): tag for text, tag in segments if tag}
    assert tagged["pneumothorax"] == "negative" and tagged["effusion"] == "uncertain"
    assert any(tag == "positive" and "enlarged" in text for text, tag in tagged.items())
    assert highlight_findings("") == []


def test_gradcam_maps_one_view_per_image_in_unit_range(loaded: LoadedModel, tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", xray_pattern(), view="PA")
    study = load_study(loaded, "s", [path, path])
    cams = gradcam(loaded, study, "No acute cardiopulmonary abnormality.")
    size = loaded.config.model.image_size
    assert cams.shape == (2, size, size) and cams.dtype == np.float32
    assert cams.min() >= 0 and np.isclose(cams.max(), 1.0)
    assert all(p.grad is None for p in loaded.model.parameters())  # no gradient left behind


def test_analyze_and_example_studies(loaded: LoadedModel, synth_root: Path) -> None:
    examples = example_studies(loaded)  # the tiny model was trained on synth_root: its test studies are offered
    test_ids = [r["id"] for r in json.loads((synth_root / "annotation.json").read_text())["test"]]
    assert examples and Path(examples[0][0]).parent.name == test_ids[0]
    result = analyze(loaded, loaded.config.generation, examples[0])
    assert result.overlay is not None and result.overlay.shape[1] == 2 * result.overlay.shape[0]
    assert "".join(t for t, _ in result.highlighted) == result.report


class _ChatTask:
    supports_chat = True

    def __init__(self, task: object) -> None:
        self.inner = task

    def __getattr__(self, name: str) -> object:  # everything else of the task contract is the wrapped task's
        return getattr(self.inner, name)

    def generate(self, batch: object, gen: object) -> list[str]:
        return self.inner.generate(batch, gen)  # type: ignore[attr-defined]

    def chat(self, batch: object, history: list, question: str, gen: object) -> str:
        return f"answer to {question} after {len(history)} turns"


def test_chat_is_shown_only_for_families_that_support_dialogue(loaded: LoadedModel) -> None:
    import gradio as gr

    def has_chat(demo: gr.Blocks) -> bool:
        return any(isinstance(block, gr.Chatbot) for block in demo.blocks.values())

    assert loaded.supports_chat is False and not has_chat(create_demo(loaded))
    chatty = dataclasses.replace(loaded, task=_ChatTask(loaded.task))
    assert chatty.supports_chat and has_chat(create_demo(chatty))


def test_chat_turns_reach_the_task_as_question_answer_pairs() -> None:
    from medvl.demo.app import _turns

    messages = [
        {"role": "user", "content": "effusion?"},
        {"role": "assistant", "content": "no"},
        {"role": "user", "content": "heart?"},
        {"role": "assistant", "content": "normal"},
    ]
    assert _turns(messages) == [("effusion?", "no"), ("heart?", "normal")]


@pytest.fixture(scope="module")
def unified_assets(synth_root: Path) -> dict[str, Any]:
    return unified_parts(synth_root)[1]


def _question_box(demo: Any) -> Any:
    import gradio as gr

    boxes = [b for b in demo.blocks.values() if isinstance(b, gr.Textbox) and b.elem_id == "question"]
    assert len(boxes) <= 1
    return boxes[0] if boxes else None


def _button(demo: Any) -> str:
    import gradio as gr

    return next(b.value for b in demo.blocks.values() if isinstance(b, gr.Button) and b.elem_id == "generate")


def test_question_box_is_shown_only_for_models_that_answer_questions(
    loaded: LoadedModel, unified_assets: dict[str, Any]
) -> None:
    assert _question_box(create_demo(loaded)) is None  # the captioner takes no question
    assert _question_box(create_demo(tiny_unified(unified_assets, tasks=["caption"]))) is None
    optional = create_demo(tiny_unified(unified_assets, tasks=["caption", "vqa"]))
    assert _question_box(optional).label == "Question (optional)" and _button(optional) == "Generate"
    required = create_demo(tiny_unified(unified_assets, tasks=["vqa"]))
    assert _question_box(required).label == "Question" and _button(required) == "Answer"


def test_analyze_answers_the_question_or_says_one_is_needed(
    unified_assets: dict[str, Any], synth_root: Path, loaded: LoadedModel
) -> None:
    vqa = tiny_unified(unified_assets, tasks=["vqa"])
    image = next((synth_root / "images").glob("*/0.png"))
    result = analyze(vqa, vqa.config.generation, [image], " is the heart enlarged? ")
    assert result.record["task"] == "vqa" and result.record["text"] in vqa.task.answers
    assert result.study.question == "is the heart enlarged?"
    with pytest.raises(ValueError, match=r"ask a question about the image \(the Question box\)"):
        analyze(vqa, vqa.config.generation, [image])
    with pytest.raises(ValueError, match=r"does not answer questions.*leave out the question \(the Question box\)"):
        analyze(loaded, loaded.config.generation, [image], "is the heart enlarged?")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _served(demo: Any) -> Iterator[str]:
    port = _free_port()
    launch(demo, host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


@pytest.fixture
def demo_url(loaded: LoadedModel) -> Iterator[str]:
    with _served(create_demo(loaded, examples=example_studies(loaded, limit=2))) as url:
        yield url


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver); "
    ".ci/run installs them",
)


@contextmanager
def _chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless chromium, offline, driven by Selenium; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--no-first-run",
        "--disable-extensions",
        "--proxy-server=direct://",
        "--proxy-bypass-list=*",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@needs_chromium
def test_real_browser_uploads_an_xray_and_sees_a_report(
    demo_url: str, tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    upload = write_dicom(tmp_path / "frontal.dcm", xray_pattern(), syntax="rle", photometric="MONOCHROME1")
    with _chromium(monkeypatch) as driver:
        driver.get(demo_url)
        wait = WebDriverWait(driver, 60)
        file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        file_input.send_keys(str(upload))
        wait.until(lambda d: "frontal" in d.find_element(By.ID, "upload").text)  # name and suffix render apart
        driver.find_element(By.ID, "generate").click()
        report = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#report-text textarea").get_attribute("value"))
        assert report.strip()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#saliency img"))
        status = driver.find_element(By.ID, "status").text
        assert "1 view(s)" in status
        assert not driver.find_elements(By.ID, "question")  # the captioner takes no question
        time.sleep(0.3)  # let the overlay image paint before the screenshot
        shot = tmp_path / "demo.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("MEDVL_ARTIFACTS"):
            target = Path(os.environ["MEDVL_ARTIFACTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, target / "demo_browser.png")


@needs_chromium
def test_real_browser_asks_a_unified_model_a_question(
    unified_assets: dict[str, Any], synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    vqa = tiny_unified(unified_assets, tasks=["vqa"])
    image = tmp_path / "frontal_view.png"
    image.write_bytes(next((synth_root / "images").glob("*/0.png")).read_bytes())
    expected = analyze(vqa, vqa.config.generation, [image], "is the heart enlarged?").record["text"]
    with _served(create_demo(vqa)) as url, _chromium(monkeypatch) as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        question = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#question textarea")))
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(image))
        wait.until(lambda d: "frontal_view" in d.find_element(By.ID, "upload").text)
        driver.find_element(By.ID, "generate").click()  # no question yet: the page says one is needed
        wait.until(lambda d: "ask a question about the image" in d.page_source)
        question.send_keys("is the heart enlarged?")
        driver.find_element(By.ID, "generate").click()
        answer = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#report-text textarea").get_attribute("value"))
        assert answer == expected and answer in vqa.task.answers
