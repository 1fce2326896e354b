"""`medvl data stats`: what is in a data set, as text and as one self-contained HTML page.

Contract: `data_stats(root, source)` reads a prepared directory (`medvl data prepare` output; default) or any source
by name and returns counts per split, unusable studies by kind, the report length distribution (words), the
CheXpert-14 label distribution of the reports (`medvl.evaluate.labeler.label_report` with
`medvl.evaluate.chexpert.CHEXPERT`: positive / uncertain / negative / not mentioned per observation), the original
image sizes and views per study. `format_stats` renders it as text; `write_html` as a page whose plots are embedded
PNGs (matplotlib, base64 data URIs): no script, no CDN, nothing fetched when it is opened.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.config import DataConfig
from medvl.data.prepare import problem_kind
from medvl.data.sources import Study, load_studies

_STATES = ("positive", "uncertain", "negative")


def _image_size(study: Study, k: int, sizes: list[list[int]] | None) -> tuple[int, int] | None:
    if sizes is not None:
        return tuple(sizes[k]) if k < len(sizes) and sizes[k] else None  # type: ignore[return-value]
    try:  # reads only the header
        from PIL import Image

        with Image.open(study.image_paths[k]) as img:
            return img.height, img.width
    except (OSError, ValueError):
        return None


def _distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "min": float(a.min()),
        "p5": float(np.percentile(a, 5)),
        "median": float(np.median(a)),
        "mean": round(float(a.mean()), 2),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def data_stats(root: str | Path, source: str = "prepared", data: DataConfig | None = None) -> dict[str, Any]:
    """Statistics of a data set (see the module docstring).

    Args:
        root: the data set's directory.
        source: its source name (default: a prepared directory, whose original image sizes are recorded).
        data: other data settings for a raw source (report rules, manifest...).

    Returns:
        A JSON-serializable dict; `report_words` and `sizes` also hold the raw values the plots use.

    Raises:
        DataSourceError: the directory is not in the layout of `source`.
    """
    from medvl.evaluate.chexpert import CHEXPERT
    from medvl.evaluate.labeler import label_report

    root = Path(root)
    cfg = replace(data or DataConfig(), source=source, root=str(root), max_studies=0)
    studies = [s for v in load_studies(cfg).values() for s in v]
    recorded: dict[str, list[list[int]]] = {}
    problems: list[dict[str, Any]] = []
    if source == "prepared":
        for line in (root / "studies.jsonl").read_text().splitlines():
            r = json.loads(line)
            recorded[r["id"]] = r.get("sizes") or []
        if (root / "problems.jsonl").is_file():
            problems = [json.loads(x) for x in (root / "problems.jsonl").read_text().splitlines() if x.strip()]
    # A prepared set holds only usable studies (some may be image-only, from --no-reports); its problems are on file.
    usable = studies if source == "prepared" else [s for s in studies if not s.problem and s.report.strip()]
    problems += [
        {"id": s.id, "kind": problem_kind(s.problem or "empty report"), "reason": s.problem or "empty report"}
        for s in studies
        if source != "prepared" and (s.problem or not s.report.strip())
    ]
    labels = {name: dict.fromkeys((*_STATES, "not mentioned"), 0) for name in CHEXPERT.names}
    for s in usable:
        for name, state in label_report(s.report, CHEXPERT).items():
            labels[name][state or "not mentioned"] += 1
    words = [len(s.report.split()) for s in usable if s.report.strip()]
    sizes = [
        size
        for s in usable
        for k in range(len(s.image_paths))
        if (size := _image_size(s, k, recorded.get(s.id) if source == "prepared" else None))
    ]
    return {
        "root": str(root),
        "source": source,
        "studies": len(usable),
        "splits": dict(sorted(Counter(s.split for s in usable).items())),
        "problems": len(problems),
        "problem_kinds": dict(Counter(p.get("kind", "other") for p in problems)),
        "views_per_study": {str(k): v for k, v in sorted(Counter(len(s.image_paths) for s in usable).items())},
        "report_words_summary": _distribution(words),
        "labels": labels,
        "image_height": _distribution([h for h, _ in sizes]),
        "image_width": _distribution([w for _, w in sizes]),
        "image_sizes_top": [[f"{h}x{w}", n] for (h, w), n in Counter(sizes).most_common(10)],
        "report_words": words,
        "sizes": [list(x) for x in sizes],
    }


def format_stats(stats: dict[str, Any]) -> str:
    """The statistics as a few readable text tables."""
    w = stats["report_words_summary"]
    kinds = ", ".join(f"{k} {v}" for k, v in stats["problem_kinds"].items())
    lines = [
        f"{stats['studies']} usable studies in {stats['root']} (source {stats['source']}); "
        f"splits: {', '.join(f'{k} {v}' for k, v in stats['splits'].items()) or 'none'}",
        f"unusable: {stats['problems']}" + (f" ({kinds})" if kinds else ""),
        f"views per study: {', '.join(f'{k}: {v}' for k, v in stats['views_per_study'].items())}",
    ]
    if w.get("n"):
        lines.append(
            f"report words: min {w['min']:.0f}, p5 {w['p5']:.0f}, median {w['median']:.0f}, mean {w['mean']}, "
            f"p95 {w['p95']:.0f}, max {w['max']:.0f}"
        )
    h, wd = stats["image_height"], stats["image_width"]
    if h.get("n"):
        lines.append(
            f"image height: median {h['median']:.0f} [{h['min']:.0f}..{h['max']:.0f}]; width: median "
            f"{wd['median']:.0f} [{wd['min']:.0f}..{wd['max']:.0f}]; most common: "
            + ", ".join(f"{s} ({n})" for s, n in stats["image_sizes_top"][:3])
        )
    header = f"{'CheXpert label (labeler)':<28}{'positive':>9}{'uncertain':>10}{'negative':>9}{'not mentioned':>14}"
    lines += ["", header]
    for name, c in stats["labels"].items():
        lines.append(f"{name:<28}{c['positive']:>9}{c['uncertain']:>10}{c['negative']:>9}{c['not mentioned']:>14}")
    return "\n".join(lines)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(stats: dict[str, Any]) -> list[tuple[str, str]]:
    # A bare Figure on the Agg canvas: no pyplot state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = []
    if stats["report_words"]:
        fig = Figure(figsize=(6, 3), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.hist(stats["report_words"], bins=min(40, max(5, len(set(stats["report_words"])))), color="#1f77b4")
        ax.set_xlabel("words per report")
        ax.set_ylabel("studies")
        out.append(("Report length", _png(fig)))
    names = list(stats["labels"])
    fig = Figure(figsize=(7, 0.8 + 0.35 * len(names)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left = np.zeros(len(names))
    for state, color in zip(_STATES, ("#d62728", "#ff7f0e", "#2ca02c"), strict=True):
        values = np.array([stats["labels"][n][state] for n in names], dtype=float)
        ax.barh(names, values, left=left, color=color, label=state)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("studies")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False, fontsize="small")
    out.append(("CheXpert labels of the reports", _png(fig)))
    if stats["sizes"]:
        fig = Figure(figsize=(5, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        sizes = np.asarray(stats["sizes"])
        ax.scatter(sizes[:, 1], sizes[:, 0], s=6, alpha=0.4)
        ax.set_xlabel("width (px)")
        ax.set_ylabel("height (px)")
        out.append(("Original image sizes", _png(fig)))
    return out


def write_html(stats: dict[str, Any], path: str | Path) -> Path:
    """A self-contained page with the text tables and the plots embedded as base64 PNGs."""
    path = Path(path)
    figures = "\n".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{uri}">' for title, uri in _plots(stats)
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>medvl data stats</title><style>'
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f6f6f6;padding:1em}"
        f"</style></head><body><h1>Data set statistics</h1><pre>{html.escape(format_stats(stats))}</pre>"
        f"{figures}</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
