"""The report of a classification evaluation: one self-contained HTML page, and plain-text tables for the terminal.

Contract: `write_classification_report(path, result, rows, title, baseline=None)` writes one UTF-8 HTML file from
the dict of `medvl.evaluate.classification.classification_metrics` and returns its path. The page opens offline:
the CSS comes from `medvl.evaluate.html_report` (the report-generation page, so both look alike) in a <style> tag,
the ROC chart and the thumbnails are embedded as `data:image/png;base64,...`, and nothing points outside the file.
All text from `result` and `rows` is HTML-escaped. Sections: the headline table (model, 95% CI, and baseline plus
delta when a baseline result is given), the per-class table (support, AUROC with CI, AP, precision, recall, F1,
threshold), the confusion matrix (multi-class), the ROC curves, what could not be computed and why, and a gallery
of the most confident errors.

`rows` are one dict per example: `{"id", "image_paths", "probabilities": {name: p}, "labels": {name: 1/0/-1},
"predicted": [names]}`. An error is a class whose decision disagrees with its label (-1 labels are ignored); its
confidence is |p - label|, and a row ranks by its most confident error. Images are shown as downscaled, embedded
thumbnails when the file exists, and as their path otherwise.

`format_classification_tables(result, baseline=None)` gives the same headline and per-class tables as text.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medvl.evaluate.classification import BINARY_KEYS, DETECTION_KEYS, MEAN_KEYS
from medvl.evaluate.html_report import CSS, esc, format_value, is_number, page_footer, png_data_uri, thumbnail_html

_EXTRA_CSS = """
tr.headline td { font-weight: bold; }
td.path { font-family: monospace; font-size: 0.8em; text-align: left; word-break: break-all; max-width: 22em; }
table.gallery td { vertical-align: top; }
table.gallery td.text { text-align: left; }
table.confusion td.diag { background: #e8f5e9; }
"""

NOTE = (
    "Macro: the unweighted mean over the classes where the metric is defined. Micro: all labelled "
    "(example, class) entries pooled. 95% CI: percentile bootstrap over examples; resamples where a metric is "
    "undefined are dropped. Delta: model minus baseline."
)


def _metric_keys(result: dict[str, Any]) -> list[str]:
    return [k for k in (*BINARY_KEYS, *DETECTION_KEYS, *MEAN_KEYS) if k in result]


def _ci_text(result: dict[str, Any], key: str, digits: int = 4) -> str:
    low, high = result.get(f"{key}_ci_low"), result.get(f"{key}_ci_high")
    return f"[{low:.{digits}f}, {high:.{digits}f}]" if is_number(low) and is_number(high) else ""


def _baseline(result: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    base = baseline if baseline is not None else result.get("baseline")
    return base if isinstance(base, dict) else None


# --------------------------------------------------------------------------------------------------------- HTML


def _value_cell(value: Any, reason: str | None) -> str:
    if is_number(value):
        return f"<td>{format_value(value)}</td>"
    return f'<td class="unavailable">unavailable{": " + esc(reason) if reason else ""}</td>'


def _metric_table(result: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    reasons = result.get("unavailable") or {}
    head = ["metric", "model", "95% CI"] + (["baseline", "delta"] if baseline else [])
    lines = [
        '<table class="metrics">',
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for key in _metric_keys(result):
        headline = key == result.get("headline")
        label = f"{key} (headline)" if headline else key
        cells = [
            f"<td>{esc(label)}</td>",
            _value_cell(result.get(key), reasons.get(key)),
            f"<td>{_ci_text(result, key)}</td>",
        ]
        if baseline:
            base = baseline.get(key)
            cells.append(_value_cell(base, (baseline.get("unavailable") or {}).get(key)))
            if is_number(result.get(key)) and is_number(base):
                delta = float(result[key]) - float(base)
                css = "pos" if delta > 0 else "neg" if delta < 0 else ""
                cells.append(f'<td class="{css}">{delta:+.4f}</td>')
            else:
                cells.append("<td>–</td>")
        row_css = ' class="headline"' if headline else ""
        lines.append(f"<tr{row_css}>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>", f'<p class="note">{esc(NOTE)}</p>']
    return "\n".join(lines)


def _per_class_table(result: dict[str, Any]) -> str:
    per_class = result.get("per_class") or {}
    thresholds = bool(result.get("multi_label"))
    head = ["class", "positives", "negatives", "AUROC", "95% CI", "AP", "precision", "recall", "F1"]
    head += ["threshold"] if thresholds else []
    lines = [
        '<table class="per-class">',
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for name, pc in per_class.items():
        cells = [
            esc(name),
            esc(pc.get("support_pos", "–")),
            esc(pc.get("support_neg", "–")),
            format_value(pc.get("auroc")),
            _ci_text(pc, "auroc"),
            *(format_value(pc.get(k)) for k in ("ap", "precision", "recall", "f1")),
        ]
        cells += [format_value(pc.get("threshold"), 3)] if thresholds else []
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    if not thresholds:
        lines.append(
            '<p class="note">Multi-class: the decision is the most probable class; precision, recall and F1 '
            "are one-vs-rest.</p>"
        )
    return "\n".join(lines)


def _confusion_table(result: dict[str, Any]) -> str:
    matrix = result.get("confusion_matrix")
    if not matrix:
        return ""
    names = list(result.get("per_class") or range(len(matrix)))
    lines = [
        "<h2>Confusion matrix</h2>",
        '<table class="confusion">',
        "<thead><tr><th>true \\ predicted</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr></thead>",
        "<tbody>",
    ]
    for i, (name, counts) in enumerate(zip(names, matrix, strict=False)):
        cells = "".join(f'<td class="{"diag" if i == j else ""}">{esc(v)}</td>' for j, v in enumerate(counts))
        lines.append(f"<tr><td>{esc(name)}</td>{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def roc_chart(result: dict[str, Any]) -> bytes | None:
    """The ROC curves of every class with a curve, one figure, as PNG bytes (None when no class has one)."""
    curves = result.get("roc_curves") or {}
    if not curves:
        return None
    # A bare Figure on the Agg canvas: no pyplot state, no GUI backend, nothing left open afterwards.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = colormaps["tab10" if len(curves) <= 10 else "tab20"]
    per_class = result.get("per_class") or {}
    for i, (name, curve) in enumerate(curves.items()):
        auroc = (per_class.get(name) or {}).get("auroc")
        label = f"{name} ({auroc:.3f})" if is_number(auroc) else str(name)
        ax.plot(curve["fpr"], curve["tpr"], color=colors(i % colors.N), linewidth=1.4, label=label)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="x-small", title="class (AUROC)", title_fontsize="x-small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return buffer.getvalue()


def confident_errors(rows: Sequence[dict[str, Any]]) -> list[tuple[float, dict[str, Any], list[str]]]:
    """(confidence, row, error descriptions) of every row with an error, the most confident first (ties by id).

    Raises:
        ValueError: on a row without `id`, `probabilities`, `labels` or `predicted`.
    """
    ranked = []
    for row in rows:
        missing = [k for k in ("id", "probabilities", "labels", "predicted") if k not in row]
        if missing:
            raise ValueError(
                f"gallery row {row.get('id')!r} lacks {missing}; rows need id, image_paths, "
                "probabilities, labels and predicted"
            )
        predicted = {str(n) for n in row["predicted"]}
        errors = []
        for name, label in row["labels"].items():
            p = row["probabilities"].get(name)
            if label not in (0, 1) or not is_number(p) or (name in predicted) == (label == 1):
                continue
            confidence = float(p) if label == 0 else 1.0 - float(p)
            kind = "false positive" if label == 0 else "missed"
            errors.append((confidence, f"{name}: {kind}, p = {float(p):.3f}"))
        if errors:
            errors.sort(key=lambda e: -e[0])
            ranked.append((errors[0][0], row, [text for _, text in errors]))
    ranked.sort(key=lambda r: (-r[0], str(r[1]["id"])))
    return ranked


def _images_cell(paths: Sequence[Any], thumbnail_px: int) -> str:
    if not paths:
        return '<td class="path">no image path</td>'
    parts = []
    for path in paths:
        if Path(str(path)).is_file():
            parts.append(thumbnail_html(path, thumbnail_px))
        else:
            parts.append(f"<div>{esc(path)}</div>")
    all_paths = not any(Path(str(p)).is_file() for p in paths)
    return f'<td class="{"path" if all_paths else "text"}"><div class="thumbs">{"".join(parts)}</div></td>'


def _gallery(rows: Sequence[dict[str, Any]], size: int, thumbnail_px: int) -> str:
    ranked = confident_errors(rows)[:size]
    if not ranked:
        return '<p class="note">No errors among the rows given.</p>'
    lines = [
        '<table class="gallery">',
        "<thead><tr><th>id</th><th>images</th><th>labels</th><th>predicted</th>"
        "<th>errors (most confident first)</th><th>confidence</th></tr></thead>",
        "<tbody>",
    ]
    for confidence, row, errors in ranked:
        labels = row["labels"]
        positive = [n for n, v in labels.items() if v == 1]
        ignored = [n for n, v in labels.items() if v == -1]
        label_text = ", ".join(positive) or "no positive label"
        if ignored:
            label_text += f" (ignored: {', '.join(ignored)})"
        cells = [
            f'<td class="text">{esc(row["id"])}</td>',
            _images_cell(row.get("image_paths") or [], thumbnail_px),
            f'<td class="text">{esc(label_text)}</td>',
            f'<td class="text">{esc(", ".join(map(str, row["predicted"])) or "none")}</td>',
            f'<td class="text">{"<br>".join(esc(e) for e in errors)}</td>',
            f"<td>{confidence:.3f}</td>",
        ]
        lines.append(f'<tr data-id="{esc(row["id"])}">' + "".join(cells) + "</tr>")
    lines += [
        "</tbody>",
        "</table>",
        '<p class="note">Confidence of an error: p for a false positive, 1 - p for a missed label.</p>',
    ]
    return "\n".join(lines)


def _unavailable(result: dict[str, Any]) -> str:
    reasons = result.get("unavailable") or {}
    if not reasons:
        return ""
    items = "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in reasons.items())
    return f'<h2>Not computed</h2>\n<ul class="note">{items}</ul>'


def _summary(result: dict[str, Any]) -> str:
    n_classes = len(result.get("per_class") or {})
    kind = "multi-class" if not result.get("multi_label") else "binary" if n_classes == 1 else "multi-label"
    parts = [kind, f"{esc(result.get('n_examples', '?'))} examples", f"{n_classes} classes"]
    if result.get("n_ignored"):
        parts.append(f"{esc(result['n_ignored'])} ignored {'entries' if result.get('multi_label') else 'examples'}")
    boot = result.get("bootstrap") or {}
    if boot.get("resamples"):
        parts.append(f"{esc(boot['resamples'])} bootstrap resamples (seed {esc(boot.get('seed'))})")
    for key in ("split", "checkpoint"):
        if result.get(key) is not None:
            parts.append(f"{key} {esc(result[key])}")
    return " · ".join(parts)


def write_classification_report(
    path: str | Path,
    result: dict[str, Any],
    rows: Sequence[dict[str, Any]] = (),
    title: str = "medvl classification",
    baseline: dict[str, Any] | None = None,
    *,
    gallery_size: int = 12,
    thumbnail_px: int = 128,
) -> Path:
    """Write a classification evaluation as one self-contained, offline HTML page (see the module docstring).

    Args:
        path: the .html file to write; its folder is created if needed.
        result: the dict of `classification_metrics`.
        rows: per-example dicts for the gallery of confident errors (may be empty).
        title: the page title.
        baseline: the `classification_metrics` dict of the baseline (`baseline_probs`) on the same split: adds the
            baseline and delta columns (default: `result["baseline"]` when present).
        gallery_size: how many rows the gallery shows.
        thumbnail_px: the longest side of a thumbnail, in pixels.

    Returns:
        The path written.

    Raises:
        ValueError: on a negative gallery_size, a thumbnail_px below 1, or a row without id, probabilities, labels
            or predicted.
    """
    if gallery_size < 0 or thumbnail_px < 1:
        raise ValueError(f"gallery_size must be >= 0 and thumbnail_px >= 1, got {gallery_size} and {thumbnail_px}")
    png = roc_chart(result)
    chart = (
        f'<img class="chart" alt="ROC curve per class" src="{png_data_uri(png)}">'
        if png is not None
        else '<p class="note">No class has both a positive and a negative example: no ROC curve.</p>'
    )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}{_EXTRA_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="summary">{_summary(result)}</p>',
            "<h2>Metrics</h2>",
            _metric_table(result, _baseline(result, baseline)),
            "<h2>Per class</h2>",
            _per_class_table(result),
            _confusion_table(result),
            "<h2>ROC curves</h2>",
            chart,
            _unavailable(result),
            "<h2>Most confident errors</h2>",
            _gallery(rows, gallery_size, thumbnail_px),
            page_footer(result),
            "</body>",
            "</html>",
            "",
        ]
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------------------- text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _num(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}" if is_number(value) else "n/a"


def format_classification_tables(result: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The headline table (model, 95% CI, baseline and delta) and the per-class table as plain text.

    Args:
        result: the dict of `classification_metrics`.
        baseline: the baseline's dict on the same split (default: `result["baseline"]` when present).

    Returns:
        The tables, newline-separated; undefined values read "n/a" (the reasons follow the tables).
    """
    base = _baseline(result, baseline)
    header = ["metric", "model", "95% CI"] + (["baseline", "delta"] if base else [])
    rows = []
    for key in _metric_keys(result):
        row = [f"{key} *" if key == result.get("headline") else key, _num(result.get(key)), _ci_text(result, key)]
        if base:
            model, other = result.get(key), base.get(key)
            delta = f"{float(model) - float(other):+.4f}" if is_number(model) and is_number(other) else "n/a"
            row += [_num(other), delta]
        rows.append(row)
    lines = _table(header, rows) + ["* headline", ""]
    multi_label = bool(result.get("multi_label"))
    header = ["class", "pos", "neg", "AUROC", "95% CI", "AP", "P", "R", "F1"] + (["thr"] if multi_label else [])
    rows = []
    for name, pc in (result.get("per_class") or {}).items():
        row = [
            name,
            str(pc.get("support_pos", "")),
            str(pc.get("support_neg", "")),
            _num(pc.get("auroc")),
            _ci_text(pc, "auroc"),
            *(_num(pc.get(k)) for k in ("ap", "precision", "recall", "f1")),
        ]
        rows.append(row + ([_num(pc.get("threshold"), 3)] if multi_label else []))
    lines += _table(header, rows)
    reasons = result.get("unavailable") or {}
    if reasons:
        lines += ["", "not computed:"] + [f"  {k}: {v}" for k, v in reasons.items()]
    return "\n".join(lines)


__all__ = ["confident_errors", "format_classification_tables", "roc_chart", "write_classification_report"]
