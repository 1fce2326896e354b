"""The evaluation HTML page: self-contained, escaped, complete tables, gallery order and chips, robust thumbnails."""

from __future__ import annotations

import base64
import io
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.evaluate.html_report import write_html_report

NAMES = ["Atelectasis", "Cardiomegaly", "Edema", "No Finding"]


class _Page(HTMLParser):
    """Collects every tag with its attributes, the <style> text, and per gallery card its classes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self.text: list[str] = []
        self.cards: list[dict] = []  # {"id", "classes": [...], "text": str}, in page order
        self._in_style = False
        self._card_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_style = tag == "style"
        if tag == "article" and "card" in (attributes.get("class") or "").split():
            self.cards.append({"id": attributes.get("data-id"), "classes": [], "text": ""})
            self._card_depth = 1
        elif self._card_depth and tag not in ("img",):
            self._card_depth += 1
        if self._card_depth and attributes.get("class"):
            self.cards[-1]["classes"].append(attributes["class"])

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if self._card_depth:
            self._card_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        self.text.append(data)
        if self._card_depth:
            self.cards[-1]["text"] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _metrics(baseline: bool = True) -> dict:
    metrics = {
        "bleu_1": 0.41234,
        "bleu_1_ci_low": 0.39,
        "bleu_1_ci_high": 0.43,
        "bleu_4": 0.1,
        "meteor": None,
        "rouge_l": 0.28,
        "cider": 0.31,
        "ce_14_micro_precision": 0.5,
        "ce_14_micro_recall": 0.25,
        "ce_14_micro_f1": 0.33333,
        "ce_14_micro_f1_ci_low": 0.3,
        "ce_14_micro_f1_ci_high": 0.36,
        "ce_14_example_f1": 0.6,
        "ce_5_macro_f1": 0.22222,
        "unavailable": {"meteor": "Java not found <needs java & jar>"},
        "n_studies": 3,
        "split": "test",
        "labeler": "rule-based",
        "checkpoint": "runs/x/best.pt",
        "versions": {"medvl": "0.1.0", "torch": "2.5.1"},
        "per_finding": {n: {"precision": 0.5, "recall": 0.75, "f1": 0.6, "support": 4, "predicted": 6} for n in NAMES},
    }
    if baseline:
        metrics["baseline"] = {
            "bleu_1": 0.3,
            "bleu_4": 0.05,
            "meteor": None,
            "rouge_l": 0.2,
            "cider": 0.1,
            "ce_14_micro_f1": 0.2,
            "ce_14_example_f1": 0.7,
        }
    return metrics


def _png(path: Path, array: np.ndarray, mode: str) -> str:
    image = Image.fromarray(array)
    assert image.mode == mode
    image.save(path)
    return str(path)


def _row(
    sid: str,
    f1: float,
    images: list[str],
    ref: dict | None = None,
    gen: dict | None = None,
    reference: str = "Normal heart size.",
    generated: str = "Normal heart.",
) -> dict:
    ref, gen = ref or {}, gen or {}
    return {
        "id": sid,
        "reference": reference,
        "generated": generated,
        "image_paths": images,
        "example_f1": f1,
        "reference_labels": {n: ref.get(n, 0) for n in NAMES},
        "generated_labels": {n: gen.get(n, 0) for n in NAMES},
    }


@pytest.fixture()
def images(tmp_path: Path) -> dict[str, str]:
    gradient = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(os.urandom(256))
    return {
        "gray": _png(tmp_path / "gray.png", (gradient % 256).astype(np.uint8), "L"),
        "rgb": _png(tmp_path / "rgb.png", np.zeros((20, 30, 3), dtype=np.uint8), "RGB"),
        # 12-bit values in a 16-bit file, as X-rays are often stored.
        "sixteen": _png(tmp_path / "sixteen.png", (gradient % 4096).astype(np.uint16), "I;16"),
        "missing": str(tmp_path / "does_not_exist.png"),
        "corrupt": str(corrupt),
    }


def _write(tmp_path: Path, images: dict[str, str], **kwargs) -> tuple[Path, _Page]:
    metrics = kwargs.pop("metrics", None) or _metrics()
    rows = kwargs.pop("rows", None) or [
        _row(
            "worst",
            0.0,
            [images["sixteen"], images["missing"]],
            ref={"Edema": 1, "Cardiomegaly": 1},
            gen={"Cardiomegaly": 1, "Atelectasis": 1},
            reference='Edema <script>alert(1)</script> & "q" – é 肺',
        ),
        _row("middle", 0.5, [images["corrupt"]], reference="see https://example.org/x for details"),
        _row("best", 1.0, [images["gray"], images["rgb"]], ref={"No Finding": 1}, gen={"No Finding": 1}),
    ]
    path = write_html_report(tmp_path / "out" / "report.html", metrics, rows, label_names=NAMES, **kwargs)
    return path, _parse(path)


def test_metric_table_values_ci_unavailable_and_baseline(tmp_path: Path, images: dict[str, str]) -> None:
    path, page = _write(tmp_path, images)
    assert path == tmp_path / "out" / "report.html" and path.is_file()
    text = "".join(page.text)
    for key in (
        "bleu_1",
        "bleu_4",
        "meteor",
        "rouge_l",
        "cider",
        "ce_14_micro_precision",
        "ce_14_micro_f1",
        "ce_14_example_f1",
        "ce_5_macro_f1",
    ):
        assert key in text
    for value in ("0.4123", "0.1000", "0.2800", "0.3100", "0.5000", "0.3333", "0.2222"):
        assert value in text
    assert "[0.3900, 0.4300]" in text and "[0.3000, 0.3600]" in text
    assert text.count("unavailable: Java not found <needs java & jar>") == 2  # model and baseline; unescaped by parser
    assert {"baseline", "delta"} <= set(page.text)  # the two header cells
    assert "+0.1123" in text and "-0.1000" in text  # bleu_1 and ce_14_example_f1 deltas
    assert "micro" in text.lower() and "example-based" in text.lower() and "macro" in text.lower()
    assert "split test" in text and "rule-based" in text and "runs/x/best.pt" in text and "2.5.1" in text
    # Keys that are absent do not get rows.
    assert "bleu_2" not in text and "ce_5_micro_f1" not in text


def test_no_baseline_columns_without_baseline(tmp_path: Path, images: dict[str, str]) -> None:
    _, page = _write(tmp_path, images, metrics=_metrics(baseline=False))
    assert {"metric", "model", "95% CI"} <= set(page.text)
    assert not {"baseline", "delta"} & set(page.text)
    assert "0.4123" in "".join(page.text)


def test_self_contained_and_chart_decodes(tmp_path: Path, images: dict[str, str]) -> None:
    path, page = _write(tmp_path, images)
    assert '<meta charset="utf-8">' in path.read_text(encoding="utf-8")
    for _, attrs in page.tags:
        for name in ("src", "href"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), value
    assert "@import" not in page.style and "http" not in page.style
    charts = [a["src"] for t, a in page.tags if t == "img" and "chart" in (a.get("class") or "")]
    assert len(charts) == 1 and charts[0].startswith("data:image/png;base64,")
    chart = Image.open(io.BytesIO(base64.b64decode(charts[0].split(",", 1)[1])))
    chart.load()
    assert chart.width > 100 and chart.height > 100


def test_gallery_order_size_and_chips(tmp_path: Path, images: dict[str, str]) -> None:
    _, page = _write(tmp_path, images, gallery_size=1)
    ids = [c["id"] for c in page.cards]
    assert ids == ["worst", "best"]  # "middle" ranks second both ways, beyond gallery_size=1
    assert sorted(c for c in page.cards[0]["classes"] if c.startswith("chip ")) == [
        "chip agreed",
        "chip hallucinated",
        "chip missed",
    ]
    assert [c for c in page.cards[1]["classes"] if c.startswith("chip ")] == ["chip agreed"]
    html_text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    card = html_text[html_text.index('data-id="worst"') : html_text.index('data-id="best"')]
    assert '<span class="chip agreed" title="agreed">Cardiomegaly</span>' in card
    assert '<span class="chip missed" title="missed">Edema</span>' in card
    assert '<span class="chip hallucinated" title="hallucinated">Atelectasis</span>' in card
    assert 'class="chip agreed" title="agreed">No Finding</span>' in html_text  # "No Finding" is shown too

    _, page = _write(tmp_path, images, gallery_size=12)
    assert [c["id"] for c in page.cards] == ["worst", "middle", "best"]  # no study shown twice


def test_ties_sort_by_id(tmp_path: Path, images: dict[str, str]) -> None:
    rows = [_row(sid, 0.5, []) for sid in ("c", "a", "b")]
    _, page = _write(tmp_path, images, rows=rows, gallery_size=2)
    assert [c["id"] for c in page.cards] == ["a", "b", "c"]


def test_report_text_escaped_and_unicode_kept(tmp_path: Path, images: dict[str, str]) -> None:
    path, page = _write(tmp_path, images)
    raw = path.read_text(encoding="utf-8")
    assert "<script>" not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert not any(tag == "script" for tag, _ in page.tags)
    assert "– é 肺" in raw
    assert "see https://example.org/x for details" in "".join(page.text)  # a URL as text is fine


def test_thumbnails_and_placeholders(tmp_path: Path, images: dict[str, str]) -> None:
    _, page = _write(tmp_path, images)
    thumbs = [a for t, a in page.tags if t == "img" and "thumb" in (a.get("class") or "").split()]
    assert len(thumbs) == 3  # 16-bit, gray, rgb; the missing and corrupt files become placeholders
    for attrs in thumbs:
        image = Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1])))
        image.load()
        assert image.mode in ("L", "RGB") and max(image.size) <= 160
    sixteen = Image.open(io.BytesIO(base64.b64decode(thumbs[0]["src"].split(",", 1)[1])))
    assert sixteen.getextrema() == (0, 255)  # stretched to the full 8-bit range, not clipped or black
    placeholders = [a for t, a in page.tags if "no-image" in (a.get("class") or "")]
    assert len(placeholders) == 2
    assert "missing file" in placeholders[0]["title"] and "unreadable" in placeholders[1]["title"]

    rows = [_row("noimg", 0.2, [])]
    _, page = _write(tmp_path, images, rows=rows, thumbnail_px=32)
    assert [a for t, a in page.tags if "no-image" in (a.get("class") or "")]


def test_missing_optional_keys(tmp_path: Path, images: dict[str, str]) -> None:
    _, page = _write(tmp_path, images, metrics={"bleu_1": 0.5}, rows=[_row("only", 0.3, [])])
    text = "".join(page.text)
    assert "bleu_1" in text and "0.5000" in text and "No per-finding scores" in text and "1 study" in text
