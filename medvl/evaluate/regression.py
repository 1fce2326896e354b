"""Metrics of a point regressor (a tracker): the distance between the predicted and the true point, in target units
(pixels) and in km, mean and median with bootstrap 95% intervals, next to baselines; its report.html and text table.

Contract: `regression_metrics(pred, target, km_per_unit, names, bootstrap, seed)` -> a JSON-ready dict with
`n_examples`, `error_px_mean`, `error_px_median`, `error_km_mean`, `error_km_median` (each with `_ci_low` /
`_ci_high` when `bootstrap` > 0), `per_coordinate` {name: {"mae", "bias", "rmse"}} and `headline` ("error_px_median").
The error of an example is the Euclidean distance over its k coordinates (k = 2: the distance between two points).
Intervals are percentile intervals over seeded resamples of examples (drawn by `medvl.evaluate.classification_core`):
each resample is a count per example, so the mean is a weighted mean and the median the weighted median computed
from the sorted errors for all resamples at once (equal to `np.median` of the resample, tested).

`write_regression_report(path, result, rows, title)` writes one offline HTML page (the CSS of
`medvl.evaluate.html_report`): the table of the model next to each baseline of `result["baselines"]`, an error
histogram, and the worst predictions. `format_regression_tables(result)` gives the table as text.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.evaluate.classification_core import CI_LEVEL, _resample_weights
from medvl.evaluate.html_report import CSS, esc, format_value, is_number, page_footer, png_data_uri

ERROR_KEYS = ("error_px_mean", "error_px_median", "error_km_mean", "error_km_median")


def point_errors(pred: Any, target: Any) -> np.ndarray:
    """[N] Euclidean distances between predicted and true points ([N, k] each)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"pred and target must both be [N, k] arrays of the same shape; got {p.shape} and {t.shape}")
    return np.sqrt(((p - t) ** 2).sum(axis=1))


def weighted_medians(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The median of `values` [n] under each row of integer `weights` [B, n] (each value repeated weight times), as
    `np.median` of that repeated data: the mean of the two middle values when the total count is even."""
    order = np.argsort(values, kind="stable")
    ranked, cum = values[order], np.cumsum(weights[:, order], axis=1)
    total = cum[:, -1]
    low_rank, high_rank = np.floor((total + 1) / 2), np.floor(total / 2) + 1  # 1-based ranks of the middle values
    low = np.argmax(cum >= low_rank[:, None], axis=1)
    high = np.argmax(cum >= high_rank[:, None], axis=1)
    return (ranked[low] + ranked[high]) / 2


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CI_LEVEL) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def regression_metrics(
    pred: Any, target: Any, km_per_unit: float, names: Sequence[str] = ("x", "y"), bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Point-error metrics of one split (see the module docstring).

    Args:
        pred: float [N, k] predictions, in target units (pixels).
        target: float [N, k] true values.
        km_per_unit: kilometres per target unit (3.5 for the seed's full-frame pixels).
        names: the k coordinate names.
        bootstrap: resamples for the 95% intervals (0: none).
        seed: seed of the resampling.
    """
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    errors = point_errors(p, t)
    if not len(errors):
        raise ValueError("no example to score")
    if p.shape[1] != len(names):
        raise ValueError(f"{p.shape[1]} coordinates but {len(names)} names ({list(names)})")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    result: dict[str, Any] = {
        "n_examples": int(len(errors)),
        "km_per_pixel": float(km_per_unit),
        "headline": "error_px_median",
    }
    resampled = {}
    if bootstrap:
        weights = _resample_weights(len(errors), bootstrap, seed)
        resampled = {"mean": weights @ errors / len(errors), "median": weighted_medians(errors, weights)}
    for unit, scale in (("px", 1.0), ("km", float(km_per_unit))):
        for stat, value in (("mean", errors.mean()), ("median", np.median(errors))):
            key = f"error_{unit}_{stat}"
            result[key] = float(value * scale)
            if bootstrap:
                low, high = _interval(resampled[stat] * scale)
                result[f"{key}_ci_low"], result[f"{key}_ci_high"] = low, high
    diff = p - t
    result["per_coordinate"] = {
        n: {
            "mae": float(np.abs(diff[:, c]).mean()),
            "bias": float(diff[:, c].mean()),
            "rmse": float(np.sqrt((diff[:, c] ** 2).mean())),
        }
        for c, n in enumerate(names)
    }
    if bootstrap:
        result["bootstrap"] = {
            "resamples": int(bootstrap),
            "seed": int(seed),
            "method": "percentile",
            "level": CI_LEVEL,
            "unit": "example",
        }
    return result


# ---------------------------------------------------------------------------------------------------- report
def _ci(result: dict[str, Any], key: str) -> str:
    low, high = result.get(f"{key}_ci_low"), result.get(f"{key}_ci_high")
    return f"[{low:.2f}, {high:.2f}]" if is_number(low) and is_number(high) else ""


def _rows(result: dict[str, Any]) -> list[list[str]]:
    baselines = result.get("baselines") or {}
    out = []
    for key in ERROR_KEYS:
        cells = [key, f"{result[key]:.2f}" if is_number(result.get(key)) else "-", _ci(result, key)]
        cells += [f"{b[key]:.2f}" if is_number(b.get(key)) else "-" for b in baselines.values()]
        out.append(cells)
    return out


def _header(result: dict[str, Any]) -> list[str]:
    return ["metric", "model", "95% CI", *(f"baseline: {n}" for n in (result.get("baselines") or {}))]


def error_histogram(errors: Sequence[float], marks: dict[str, float]) -> bytes | None:
    """A histogram of the model's errors with vertical lines at `marks` (name -> value), as PNG bytes."""
    if not len(errors):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(errors, bins=30, color="#4c72b0", alpha=0.85)
    for i, (name, value) in enumerate(marks.items()):
        ax.axvline(value, color=("#c44e52", "#55a868", "#8172b2", "#ccb974")[i % 4], linestyle="--", label=name)
    ax.set_xlabel("error (pixels)")
    ax.set_ylabel("examples")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return buffer.getvalue()


def write_regression_report(
    path: str | Path,
    result: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    title: str = "medvl regression",
    worst: int = 15,
) -> Path:
    """Write a regression evaluation as one self-contained HTML page; `rows` carry id, error_px, predicted, target."""
    table = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _header(result)) + "</tr></thead><tbody>"]
    table += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in _rows(result)]
    table.append("</tbody></table>")
    marks = {"model median": result.get("error_px_median")}
    marks |= {f"{n} median": b.get("error_px_median") for n, b in (result.get("baselines") or {}).items()}
    png = error_histogram([r["error_px"] for r in rows], {k: v for k, v in marks.items() if is_number(v)})
    chart = f'<img class="chart" alt="error histogram" src="{png_data_uri(png)}">' if png else ""
    bad = sorted(rows, key=lambda r: -r["error_px"])[:worst]
    worst_rows = "".join(
        f"<tr><td>{esc(r['id'])}</td><td>{format_value(r['error_px'], 2)}</td><td>{esc(r['predicted'])}</td>"
        f"<td>{esc(r['target'])}</td></tr>"
        for r in bad
    )
    per = result.get("per_coordinate") or {}
    per_rows = "".join(
        f"<tr><td>{esc(n)}</td><td>{format_value(v['mae'], 2)}</td><td>{format_value(v['bias'], 2)}</td>"
        f"<td>{format_value(v['rmse'], 2)}</td></tr>"
        for n, v in per.items()
    )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="summary">{result.get("n_examples")} examples · '
            f"{esc(result.get('km_per_pixel'))} km per pixel · "
            f"split {esc(result.get('split', ''))}</p>",
            "<h2>Point error</h2>",
            *table,
            '<p class="note">Error: the Euclidean distance between the predicted and the true point. '
            "95% CI: percentile "
            "bootstrap over examples. Baselines: the mean training target for every example, and the tile centre.</p>",
            "<h2>Per coordinate</h2>",
            f"<table><thead><tr><th>coordinate</th><th>MAE</th><th>bias</th><th>RMSE</th></tr></thead><tbody>{per_rows}"
            "</tbody></table>",
            "<h2>Error distribution</h2>",
            chart,
            "<h2>Largest errors</h2>",
            f"<table><thead><tr><th>id</th><th>error (px)</th><th>predicted</th><th>target</th></tr></thead><tbody>"
            f"{worst_rows}</tbody></table>",
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


def format_regression_tables(result: dict[str, Any]) -> str:
    """The table of `write_regression_report` as plain text."""
    header, rows = _header(result), _rows(result)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join([f"{result.get('n_examples')} examples, {result.get('km_per_pixel')} km per pixel", *lines])


__all__ = [
    "ERROR_KEYS",
    "format_regression_tables",
    "point_errors",
    "regression_metrics",
    "weighted_medians",
    "write_regression_report",
]
