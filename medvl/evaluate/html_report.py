"""A single self-contained HTML page for one evaluation: headline metrics, per-finding scores and a gallery of the
worst and best studies.

Contract: `write_html_report(path, metrics, rows, label_names=...)` writes one UTF-8 HTML file and returns its path.
The page opens offline: the CSS sits in a <style> tag, the chart and the thumbnails are embedded as
`data:image/png;base64,...`, and no src, href or @import points outside the file. Every piece of text that comes
from `metrics` or `rows` is HTML-escaped, so a report holding `<script>` or a URL is shown as text.

Inputs:

- `metrics`: the flat metrics.json dict. Headline keys (`bleu_1`..`bleu_4`, `meteor`, `rouge_l`, `cider`, and
  `{ce_14,ce_5,gt}_{micro,macro,example}_{precision,recall,f1}`) sit at the top level, each optionally with
  `<key>_ci_low` / `<key>_ci_high` (bootstrap 95% CI). A metric that could not be computed is `None` and
  `metrics["unavailable"][key]` says why; it is shown as "unavailable: <reason>", never as 0. Optional:
  `baseline` (same flat keys, no CIs; adds baseline and delta columns), `per_finding`
  ({name: {"precision", "recall", "f1", "support", "predicted"}}), `n_studies`, `split`, `labeler`, `checkpoint`
  and `versions` ({package: version}). Missing optional keys drop their part of the page.
- `rows`: one dict per study with `id`, `reference`, `generated`, `reference_labels` and `generated_labels`
  ({name: 0/1}), `image_paths` (missing or unreadable files get a grey "no image" placeholder) and `example_f1`
  (the per-study clinical F1 the gallery is sorted by).

The gallery shows the `gallery_size` studies with the lowest `example_f1` (ties by id), then the `gallery_size`
highest among the rest, so a small split does not show the same study twice.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

NLG_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
_AVERAGES = ("micro", "macro", "example")
_PRF = ("precision", "recall", "f1")
# (prefix, section title) of the clinical-efficacy groups; their known keys come first, then any other key with
# the prefix, so a metric added later still shows up.
CLINICAL_GROUPS = (
    ("ce_14_", "Clinical efficacy, 14 findings (labels of the generated vs the reference reports)"),
    ("ce_5_", "Clinical efficacy, 5 findings (labels of the generated vs the reference reports)"),
    ("gt_", "Clinical efficacy against the ground-truth labels"),
    ("chexbert_14_", "Clinical efficacy, 14 findings, CheXbert labels"),
    ("chexbert_5_", "Clinical efficacy, 5 findings, CheXbert labels"),
)
_CI_SUFFIXES = ("_ci_low", "_ci_high")

AVERAGES_NOTE = (
    "Micro: precision, recall and F1 pooled over all study-finding pairs (frequent findings weigh more). "
    "Macro: the unweighted mean of the per-finding scores (every finding weighs the same). "
    "Example-based: precision, recall and F1 of each study's finding set, averaged over studies. "
    "95% CI: bootstrap interval over studies. Delta: model minus baseline."
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
.summary { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th.group { background: #f0f0f0; text-align: left; }
td.unavailable { color: #a33; font-style: italic; }
td.pos { color: #2e7d32; } td.neg { color: #c62828; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.chart { max-width: 100%; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.7em; }
.card h3 { margin: 0 0 0.3em 0; font-size: 1em; word-break: break-all; }
.thumbs { display: flex; flex-wrap: wrap; gap: 0.3em; }
.thumb { display: block; }
.no-image { background: #ccc; color: #555; display: flex; align-items: center; justify-content: center;
            font-size: 0.85em; }
.report { white-space: pre-wrap; font-size: 0.9em; margin: 0.2em 0 0.5em 0; }
.label { font-weight: bold; font-size: 0.85em; }
.chip { display: inline-block; border-radius: 1em; padding: 0.05em 0.6em; margin: 0.1em; font-size: 0.8em;
        border: 1px solid; }
.chip.agreed { background: #e8f5e9; color: #1b5e20; border-color: #2e7d32; }
.chip.missed { background: #fff3e0; color: #e65100; border-color: #ef6c00; }
.chip.hallucinated { background: #ffebee; color: #b71c1c; border-color: #c62828; }
footer { margin-top: 2em; color: #666; font-size: 0.85em; }
footer table td, footer table th { padding: 0.1em 0.6em; }
"""


def esc(value: Any) -> str:
    """HTML-escape anything, quotes included (the same helper serves text and attribute values)."""
    return html.escape(str(value), quote=True)


def is_number(value: Any) -> bool:
    """A real number that is not a bool (a metric value, as opposed to None or a label)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def format_value(value: Any, digits: int = 4) -> str:
    """A metric for a table cell: `digits` decimals, "nan", "–" for None, anything else escaped."""
    if is_number(value):
        value = float(value)
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return "–" if value is None else esc(value)  # escaped: the result goes straight into the page


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a data: URI, so the page embeds its pictures and loads nothing from outside."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _metric_keys(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The (section title, keys) groups of the metric table, keeping only keys the dict holds or explains."""
    unavailable = metrics.get("unavailable") or {}

    def present(key: str) -> bool:
        return key in unavailable or (key in metrics and (metrics[key] is None or is_number(metrics[key])))

    groups = [("Language (NLG)", [k for k in NLG_KEYS if present(k)])]
    for prefix, title in CLINICAL_GROUPS:
        known = [f"{prefix}{avg}_{m}" for avg in _AVERAGES for m in _PRF]
        extra = sorted(
            k
            for k in {*metrics, *unavailable}
            if k.startswith(prefix) and k not in known and not k.endswith(_CI_SUFFIXES)
        )
        groups.append((title, [k for k in known + extra if present(k)]))
    return [(title, keys) for title, keys in groups if keys]


def _value_cell(source: dict[str, Any], key: str, reasons: dict[str, Any]) -> str:
    """One value cell: the number, or why it is missing (never a 0 that was not measured)."""
    value = source.get(key)
    if is_number(value):
        return f"<td>{format_value(value)}</td>"
    reason = reasons.get(key)
    if reason is not None:
        return f'<td class="unavailable">unavailable: {esc(reason)}</td>'
    if key in source:  # None without a reason
        return '<td class="unavailable">unavailable</td>'
    return "<td>–</td>"


def _metric_table(metrics: dict[str, Any]) -> str:
    baseline = metrics.get("baseline")
    has_base = isinstance(baseline, dict)
    reasons = metrics.get("unavailable") or {}
    head = ["metric", "model", "95% CI"] + (["baseline", "delta"] if has_base else [])
    lines = [
        '<table class="metrics">',
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for title, keys in _metric_keys(metrics):
        lines.append(f'<tr><th class="group" colspan="{len(head)}">{esc(title)}</th></tr>')
        for key in keys:
            low, high = metrics.get(key + "_ci_low"), metrics.get(key + "_ci_high")
            ci = f"[{format_value(low)}, {format_value(high)}]" if is_number(low) and is_number(high) else ""
            cells = [f"<td>{esc(key)}</td>", _value_cell(metrics, key, reasons), f"<td>{ci}</td>"]
            if has_base:
                # A metric the model could not get (no Java, say) fails the same way for the baseline.
                cells.append(_value_cell(baseline, key, {**reasons, **(baseline.get("unavailable") or {})}))
                model, base = metrics.get(key), baseline.get(key)
                if is_number(model) and is_number(base):
                    delta = float(model) - float(base)
                    cls = "pos" if delta > 0 else "neg" if delta < 0 else ""
                    cells.append(f'<td class="{cls}">{delta:+.4f}</td>')
                else:
                    cells.append("<td>–</td>")
            lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>", f'<p class="note">{esc(AVERAGES_NOTE)}</p>']
    return "\n".join(lines)


def _per_finding_chart(per_finding: dict[str, Any], names: Sequence[str]) -> bytes | None:
    """Grouped horizontal P/R/F1 bars per finding as PNG bytes, or None when there is nothing to plot."""
    names = [n for n in names if isinstance(per_finding.get(n), dict)]
    if not names:
        return None
    # A bare Figure on the Agg canvas: no pyplot state, no GUI backend, nothing left open afterwards.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 1.0 + 0.45 * len(names)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    height = 0.27
    styles = {"precision": ("precision", "#1f77b4"), "recall": ("recall", "#ff7f0e"), "f1": ("F1", "#2ca02c")}
    for i, key in enumerate(_PRF):
        values = [float(per_finding[n].get(key)) if is_number(per_finding[n].get(key)) else 0.0 for n in names]
        label, color = styles[key]
        ax.barh(y + (i - 1) * height, values, height=height, label=label, color=color)
    ax.set_yticks(y, labels=names)
    ax.invert_yaxis()  # first finding at the top, as in the table
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False, fontsize="small")  # off the bars
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return buffer.getvalue()


def _per_finding_section(metrics: dict[str, Any], names: Sequence[str]) -> str:
    per_finding = metrics.get("per_finding")
    if not isinstance(per_finding, dict) or not per_finding:
        return '<p class="note">No per-finding scores in the metrics.</p>'
    lines = [
        '<table class="per-finding">',
        "<thead><tr><th>finding</th><th>support</th><th>predicted</th>"
        "<th>precision</th><th>recall</th><th>F1</th></tr></thead>",
        "<tbody>",
    ]
    for name in names:
        pf = per_finding.get(name)
        pf = pf if isinstance(pf, dict) else {}
        counts = [esc(pf.get(k, "–")) for k in ("support", "predicted")]
        scores = [format_value(pf.get(k)) for k in _PRF]
        lines.append(f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{c}</td>" for c in counts + scores) + "</tr>")
    lines += ["</tbody>", "</table>"]
    png = _per_finding_chart(per_finding, names)
    if png is not None:
        lines.append(f'<img class="chart" alt="precision, recall and F1 per finding" src="{png_data_uri(png)}">')
    return "\n".join(lines)


def _to_8bit(image: Any) -> Any:
    """An L or RGB copy of a PIL image; 16-bit and float images are min-max stretched to 0..255 (a plain cast
    would clip, and X-rays stored in 12 of 16 bits would come out nearly black)."""
    from PIL import Image

    if image.mode in ("L", "RGB"):
        return image
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = (array - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(array)
        return Image.fromarray(np.nan_to_num(scaled).clip(0, 255).astype(np.uint8))  # uint8 2-D: L
    if image.mode in ("1", "LA"):
        return image.convert("L")
    return image.convert("RGB")  # P, RGBA, CMYK, YCbCr, ...


def _placeholder(size: int, why: str) -> str:
    """The grey "no image" square, with the reason as its tooltip."""
    return f'<div class="thumb no-image" style="width:{size}px;height:{size}px" title="{esc(why)}">no image</div>'


def thumbnail_html(path: Any, size: int) -> str:
    """An <img> with the embedded thumbnail, or the grey placeholder when the file cannot be read as an image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            thumb = _to_8bit(image).copy()
        thumb.thumbnail((size, size))
        buffer = io.BytesIO()
        thumb.save(buffer, format="PNG")
    except Exception as error:  # noqa: BLE001  any unreadable file (missing, corrupt, odd format) gets a placeholder
        why = "missing file" if isinstance(error, FileNotFoundError) else f"unreadable: {type(error).__name__}"
        return _placeholder(size, f"{path} ({why})")
    return (
        f'<img class="thumb" width="{thumb.width}" height="{thumb.height}" alt="{esc(Path(str(path)).name)}" '
        f'src="{png_data_uri(buffer.getvalue())}">'
    )


def _chips(row: dict[str, Any], names: Sequence[str]) -> str:
    reference = row.get("reference_labels") or {}
    generated = row.get("generated_labels") or {}
    chips = []
    for name in names:
        ref, gen = reference.get(name) == 1, generated.get(name) == 1
        kind = "agreed" if ref and gen else "missed" if ref else "hallucinated" if gen else None
        if kind:
            chips.append(f'<span class="chip {kind}" title="{kind}">{esc(name)}</span>')
    return "".join(chips) if chips else '<span class="note">no finding on either side</span>'


def _card(row: dict[str, Any], names: Sequence[str], thumbnail_px: int) -> str:
    paths = row.get("image_paths") or []
    thumbs = [thumbnail_html(p, thumbnail_px) for p in paths] or [_placeholder(thumbnail_px, "no image path")]
    return "\n".join(
        [
            f'<article class="card" data-id="{esc(row["id"])}">',
            f'<div class="thumbs">{"".join(thumbs)}</div>',
            f'<h3>{esc(row["id"])} <span class="note">example F1 {format_value(row["example_f1"], 3)}</span></h3>',
            '<div class="label">reference</div>',
            f'<p class="report reference">{esc(row.get("reference", ""))}</p>',
            '<div class="label">generated</div>',
            f'<p class="report generated">{esc(row.get("generated", ""))}</p>',
            f'<div class="chips">{_chips(row, names)}</div>',
            "</article>",
        ]
    )


def _gallery(rows: Sequence[dict[str, Any]], names: Sequence[str], size: int, thumbnail_px: int) -> str:
    for row in rows:
        if "id" not in row or not is_number(row.get("example_f1")):
            raise ValueError(
                f"every row needs an 'id' and a numeric 'example_f1'; got keys {sorted(row)} (id {row.get('id')!r})"
            )
    ranked = sorted(rows, key=lambda r: (float(r["example_f1"]), str(r["id"])))
    worst = ranked[:size]
    shown = {id(r) for r in worst}
    best = sorted((r for r in rows if id(r) not in shown), key=lambda r: (-float(r["example_f1"]), str(r["id"])))
    best = best[:size]
    legend = (
        '<p class="note">Findings: <span class="chip agreed">agreed</span> in both reports, '
        '<span class="chip missed">missed</span> in the reference only, '
        '<span class="chip hallucinated">hallucinated</span> in the generated report only.</p>'
    )

    def section(title: str, chosen: Iterable[dict[str, Any]], css: str) -> str:
        cards = [_card(r, names, thumbnail_px) for r in chosen]
        body = "\n".join(cards) if cards else '<p class="note">none</p>'
        return f'<h3>{title}</h3>\n<div class="cards {css}">\n{body}\n</div>'

    return "\n".join(
        [
            legend,
            section(f"Worst {len(worst)} (lowest example F1)", worst, "worst"),
            section(f"Best {len(best)} (highest example F1)", best, "best"),
        ]
    )


def _summary(metrics: dict[str, Any], n_rows: int) -> str:
    parts = []
    if metrics.get("split") is not None:
        parts.append(f"split {esc(metrics['split'])}")
    n = metrics.get("n_studies", n_rows)
    parts.append(f"{esc(n)} {'study' if n == 1 else 'studies'}")
    for key in ("labeler", "checkpoint"):
        if metrics.get(key) is not None:
            parts.append(f"{key} {esc(metrics[key])}")
    return " · ".join(parts)


def page_footer(metrics: dict[str, Any]) -> str:
    """The page's footer: the library versions the metrics were computed with."""
    versions = metrics.get("versions")
    if not isinstance(versions, dict) or not versions:
        return "<footer>Written by medvl.</footer>"
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in versions.items())
    return f'<footer>Written by medvl.<table class="versions"><tbody>{rows}</tbody></table></footer>'


def write_html_report(
    path: str | Path,
    metrics: dict,
    rows: Sequence[dict],
    *,
    label_names: Sequence[str],
    title: str = "medvl evaluation",
    gallery_size: int = 12,
    thumbnail_px: int = 160,
) -> Path:
    """Write the evaluation as one self-contained, offline HTML page (see the module docstring for the inputs).

    Args:
        path: the .html file to write; its folder is created if needed.
        metrics: the flat metrics.json dict.
        rows: one dict per study (id, reference, generated, reference_labels, generated_labels, image_paths,
            example_f1).
        label_names: the finding names, in the order of the per-finding table, chart and chips.
        title: the page title.
        gallery_size: how many of the worst and how many of the best studies the gallery shows.
        thumbnail_px: the longest side of a thumbnail, in pixels.

    Returns:
        The path written.

    Raises:
        ValueError: on a negative gallery_size, a thumbnail_px below 1, or a row without id or numeric example_f1.
    """
    if gallery_size < 0 or thumbnail_px < 1:
        raise ValueError(f"gallery_size must be >= 0 and thumbnail_px >= 1, got {gallery_size} and {thumbnail_px}")
    names = list(label_names)
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="summary">{_summary(metrics, len(rows))}</p>',
            "<h2>Metrics</h2>",
            _metric_table(metrics),
            "<h2>Per finding</h2>",
            _per_finding_section(metrics, names),
            "<h2>Gallery</h2>",
            _gallery(rows, names, gallery_size, thumbnail_px),
            page_footer(metrics),
            "</body>",
            "</html>",
            "",
        ]
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


__all__ = [
    "CSS",
    "esc",
    "format_value",
    "is_number",
    "page_footer",
    "png_data_uri",
    "thumbnail_html",
    "write_html_report",
]
