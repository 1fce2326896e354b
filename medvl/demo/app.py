"""`medvl demo`: a Gradio page in the spirit of XrayGPT's demo: upload an X-ray, read its report.

Contract:
- `analyze(loaded, gen, paths)` (no Gradio needed) decodes one study's views (PNG, JPEG or DICOM, through the one image
  loader), generates the report, reads the CheXpert findings, highlights their mentions in the text
  (`medvl.demo.highlight`) and draws a Grad-CAM overlay of the image encoder for that report
  (`medvl.infer.saliency`), the views side by side.
- `create_demo(loaded, gen, examples)` builds the page: views upload, a Generate button, example studies, the overlay,
  the highlighted report, the findings table and the plain text. A question box is shown only when the model answers
  questions (`loaded.takes_question`: a unified-family checkpoint trained for vqa); its question goes with the study
  (`analyze(..., question=)`), and a model trained for VQA only refuses to run without one. A follow-up chat is shown
  only when the model's task
  supports dialogue (`loaded.supports_chat`: the task has `supports_chat = True` and `chat(batch, history, question,
  gen) -> str`, history being the earlier (question, answer) turns); the captioner's report generation does not, so
  its page has no chat.
- `example_studies(loaded)` offers the first test studies of the data set the checkpoint was trained on (the synthetic
  set after the quickstart), so the demo works out of the box.
The page loads no web font or script from outside the machine (system fonts; Gradio analytics off).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.images import ImageLoadError
from medvl.demo.highlight import highlight_findings
from medvl.infer.config import GenerationConfig
from medvl.infer.predictor import (
    MAX_QUESTION_CHARS,
    LoadedModel,
    PreparedStudy,
    batch_studies,
    load_study,
    predict_prepared,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported: no calls home
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"]
DISPLAY_SIZE = 320
COLORS = {"positive": "#e4572e", "uncertain": "#f3a712", "negative": "#29a36a"}
QUESTION_BOX = "the Question box"
"""Where the page's question goes, as the refusals name it."""


@dataclass
class Analysis:
    record: dict[str, Any]
    """The task's prediction record (`task.predict`): report and findings, or class probabilities and labels."""
    report: str
    """The report (report tasks; '' otherwise)."""
    highlighted: list[tuple[str, str | None]]
    findings: dict[str, str]
    """CheXpert findings read from the report (report tasks), or the predicted labels marked "positive"."""
    overlay: np.ndarray | None
    """RGB uint8 [H, W * V, 3], the views side by side with the saliency map, or None when unavailable."""
    views: list[str | None]
    seconds: float
    study: PreparedStudy


def analyze(loaded: LoadedModel, gen: GenerationConfig, paths: Sequence[str | Path], question: str = "") -> Analysis:
    """Report (or the answer to `question`, for models that answer questions), findings, highlights and saliency
    overlay of one study; see the module docstring.

    Raises:
        ImageLoadError: no file, or a file that is not a readable image.
        ValueError: a question the model cannot take, or none where it needs one (`LoadedModel.check_request`).
    """
    from medvl.infer.saliency import gradcam, overlay

    question = question.strip()
    loaded.check_request(question, QUESTION_BOX)
    if not paths:
        raise ImageLoadError("upload at least one X-ray image (PNG, JPEG or DICOM)")
    t0 = time.perf_counter()
    loaded = loaded.with_generation(gen)
    study = dataclasses.replace(load_study(loaded, "demo", [Path(p) for p in paths]), question=question)
    record = predict_prepared(loaded, [study], 1)[0]
    try:
        cams = gradcam(loaded, study, record)
        picture: np.ndarray | None = np.concatenate(
            [overlay(study.pixels[v], cams[v], size=DISPLAY_SIZE) for v in range(len(cams))], axis=1
        )
    except ValueError:  # a family without an encoder grid: no map, the rest still works
        picture = None
    report = str(record.get("report", ""))
    if "findings" in record:
        findings = dict(record["findings"])
    else:
        findings = {name: "positive" for name in record.get("labels", [])}
    highlighted = highlight_findings(report) if report else [(text_of(record), None)]
    return Analysis(record, report, highlighted, findings, picture, study.views, time.perf_counter() - t0, study)


def text_of(record: dict[str, Any]) -> str:
    """A one-line reading of a prediction record for people: the report, or the classes with their probability."""
    if "report" in record:
        return str(record["report"])
    if "text" in record:  # instructed generation: the generated text of its sub-task
        return str(record["text"])
    probs = record.get("probabilities", {})
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    labels = record.get("labels", [])
    head = f"Predicted: {', '.join(labels) if labels else 'none above threshold'}. "
    return head + "; ".join(f"{name} {p:.2f}" for name, p in ranked[:8])


def example_studies(loaded: LoadedModel, limit: int = 4, folder: str | Path | None = None) -> list[list[str]]:
    """Up to `limit` studies (lists of image paths) to offer: from `folder`, else from the training data set's test
    split when it is on this machine (the synthetic set after the quickstart); [] when there is none."""
    from medvl.infer.inputs import collect_studies

    if folder is not None:
        return [[str(p) for p in s.paths] for s in collect_studies([str(folder)]).studies[:limit]]
    root = Path(loaded.config.data.root)
    annotation = root / "annotation.json"
    if not annotation.is_file():
        return []
    try:
        records = json.loads(annotation.read_text()).get("test", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return []
    out = []
    for record in records[:limit]:
        paths = record.get("image_path") or []
        paths = [paths] if isinstance(paths, str) else paths
        files = [root / "images" / p for p in paths]
        if files and all(f.is_file() for f in files):
            out.append([str(f) for f in files])
    return out


def _turns(messages: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """Gradio's chat messages -> the (question, answer) turns a task's `chat` takes."""
    turns, question = [], None
    for m in messages:
        if m.get("role") == "user":
            question = str(m.get("content", ""))
        elif m.get("role") == "assistant" and question is not None:
            turns.append((question, str(m.get("content", ""))))
            question = None
    return turns


def _theme() -> Any:
    import gradio as gr

    # System fonts: the default theme fetches Google Fonts, which an offline machine cannot reach.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def create_demo(
    loaded: LoadedModel, gen: GenerationConfig | None = None, examples: Sequence[Sequence[str]] | None = None
) -> Any:
    """The Gradio Blocks of the demo; see the module docstring.

    Raises:
        ValueError: a model that can answer no request the page can send (a unified model whose task.predict_task
            names an untrained sub-task, and no vqa).
    """
    try:
        loaded.check_request("")
    except ValueError as err:
        if not loaded.takes_question:
            raise ValueError(f"cannot demo {loaded.checkpoint}: {err}") from None
    import gradio as gr

    gen = dataclasses.replace(gen or loaded.config.generation, batch_size=1)
    cfg = loaded.config

    def run(files: list[str] | None, question: str = "") -> tuple[Any, ...]:
        try:
            result = analyze(loaded, gen, files or [], question or "")
        except (ImageLoadError, ValueError) as e:
            raise gr.Error(str(e)) from None
        views = ", ".join(v or f"view {i + 1}" for i, v in enumerate(result.views))
        status = f"{len(result.views)} view(s) ({views}) in {result.seconds:.2f}s"
        if result.study.ignored_views:
            status += f"; {result.study.ignored_views} more image(s) left out (the model takes {len(result.views)})"
        return (
            result.overlay,
            result.highlighted,
            result.findings,
            result.report or text_of(result.record),
            status,
            result.study,
            [],
        )

    fields = loaded.task.prediction_fields
    writes = "report" in fields  # a report task; "text": instructed generation; else a task that names classes
    purpose = "chest X-ray report generation" if writes else loaded.task.name.replace("_", " ")
    generates = "text" in fields
    if writes or not generates:
        action = "Generate report" if writes else "Classify"
    else:
        action = "Answer" if loaded.requires_question else "Generate"
    with gr.Blocks(title=f"medvl: {purpose}") as demo:
        gr.Markdown(
            f"## medvl: {purpose}\nCheckpoint `{loaded.checkpoint.name}` "
            f"({cfg.model_family}, {cfg.model_size}, {cfg.model.max_views} view(s) at "
            f"{cfg.model.image_size} px). Upload the views of one study (PNG, JPEG or DICOM; frontal first, "
            "or told by the DICOM View Position). Research use only: not a medical device."
        )
        study_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(
                    label="X-ray views of one study",
                    file_count="multiple",
                    file_types=UPLOAD_TYPES,
                    type="filepath",
                    elem_id="upload",
                )
                question_box = None
                if loaded.takes_question:  # only models trained for VQA get a question box
                    question_box = gr.Textbox(
                        label="Question" + ("" if loaded.requires_question else " (optional)"),
                        placeholder="Is there a pleural effusion?",
                        max_length=MAX_QUESTION_CHARS,
                        elem_id="question",
                    )
                button = gr.Button(action, variant="primary", elem_id="generate")
                status = gr.Markdown(elem_id="status")
                if examples:
                    gr.Examples(
                        examples=[[list(e)] for e in examples],
                        inputs=[files],
                        example_labels=[Path(e[0]).parent.name for e in examples],
                        label="Example studies",
                    )
            with gr.Column(scale=2):
                picture = gr.Image(
                    label="Where the model looked (Grad-CAM on the image encoder)",
                    type="numpy",
                    interactive=False,
                    elem_id="saliency",
                )
                highlighted = gr.HighlightedText(
                    label="Report, findings highlighted" if writes else "Prediction",
                    color_map=COLORS,
                    show_legend=True,
                    combine_adjacent=False,
                    elem_id="highlighted",
                )
                findings = gr.JSON(
                    label="Findings (CheXpert labeler)" if writes else "Predicted labels", elem_id="findings"
                )
                text = gr.Textbox(
                    label="Report text" if writes else ("Generated text" if generates else "Class probabilities"),
                    lines=4,
                    interactive=False,
                    elem_id="report-text",
                )
        chat_outputs: list[Any] = []
        if loaded.supports_chat:  # only dialogue families get a chat; the captioner has none
            chatbot = gr.Chatbot(label="Ask about this study", elem_id="chat")
            question = gr.Textbox(label="Question", placeholder="Is there a pleural effusion?")

            def ask(
                message: str, history: list[dict[str, str]], study: PreparedStudy | None
            ) -> tuple[list[dict[str, str]], str]:
                if study is None:
                    raise gr.Error("generate a report first: the chat is about the uploaded study")
                answer = loaded.task.chat(batch_studies(loaded, [study]), _turns(history), message, gen)
                return [*history, {"role": "user", "content": message}, {"role": "assistant", "content": answer}], ""

            question.submit(ask, [question, chatbot, study_state], [chatbot, question])
            chat_outputs = [chatbot]
        outputs = [picture, highlighted, findings, text, status, study_state]
        button.click(
            lambda f, q="": run(f, q)[: len(outputs) + len(chat_outputs)],
            inputs=[files, *([question_box] if question_box is not None else [])],
            outputs=outputs + chat_outputs,
        )
    return demo


def launch(demo: Any, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve the demo on host:port (blocking unless `block` is False; then call `demo.close()` to stop)."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        theme=_theme(),
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
        max_file_size="50mb",
        footer_links=[],
    )
