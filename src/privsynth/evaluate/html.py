"""Render a :class:`~privsynth.evaluate.report.Report` as one self-contained HTML file.

The page opens with a summary that fits one screen: the report's verdict (:mod:`privsynth.evaluate.verdicts`: a
plain headline, one panel each for fidelity, utility and privacy with a level read from the catalogue's
thresholds), the differential-privacy budget, and the statement that the privacy metrics are empirical checks,
not guarantees. This module only renders them. Tables and plots per section follow, then every metric with its
definition. :func:`write_report` writes the page and the report's JSON.

Plots are drawn with matplotlib's Agg canvas (no display, no global pyplot state) and embedded as base64 PNG,
the page's style is inline: the file opens offline and can be mailed as it is. The layout lives in the jinja2
template ``templates/report.html.j2``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from privsynth.errors import OutputExistsError, ParameterError
from privsynth.evaluate.catalogue import CATALOGUE, COPIES, DETECTION, HALF, READING, RISK, UTILITY, format_metric
from privsynth.evaluate.metric import Metric
from privsynth.evaluate.report import NOT_GUARANTEES, REAL_DATA_WARNING, SECTIONS, Report, summary_rows
from privsynth.evaluate.verdicts import budget_text
from privsynth.render import environment
from privsynth.render import format_number as _format

REAL_COLOUR = "#4c72b0"
SYNTHETIC_COLOUR = "#dd8452"
HOLDOUT_COLOUR = "#55a868"
_DPI = 100
_TITLE, _LABEL, _TICK = 10, 9, 8  # font sizes (points) at which plots stay legible at their natural size

_environment = environment("privsynth.evaluate", metric=format_metric)


def write_report(report: Report, path_html: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the page at ``path_html`` and ``report.to_json()`` beside it (same name, ``.json``)."""
    path_html = Path(path_html)
    if path_html.suffix.lower() not in (".html", ".htm"):
        raise ParameterError(f"the report path must end in .html, not '{path_html}'")
    path_json = path_html.with_suffix(".json")
    for path in (path_html, path_json):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"'{path}' exists; choose another path or pass overwrite=True")
    if not path_html.parent.is_dir():
        raise ParameterError(f"the folder '{path_html.parent}' does not exist; create it first")
    path_html.write_text(render(report), encoding="utf-8")
    path_json.write_text(report.to_json() + "\n", encoding="utf-8")
    return path_html, path_json


def render(report: Report) -> str:
    """The full page: summary, per-section tables and plots, and every metric with its definition."""
    details = report.details
    fidelity = details.get("fidelity", {})
    utility = details.get("utility", {})
    equity = details.get("equity", {})
    privacy = details.get("privacy", {})
    columns = fidelity.get("columns", [])
    associations = fidelity.get("associations")
    sections = {name: [m for m in report.metrics.values() if m.section == name] for name in SECTIONS}
    verdict = report.verdict
    context: dict[str, Any] = {
        "meta": report.meta,
        "disclaimer": report.disclaimer(),
        "not_guarantees": NOT_GUARANTEES,
        "real_data_warning": REAL_DATA_WARNING,
        "budget": budget_text(report),
        "headline": (verdict.level, verdict.headline),
        "panels": verdict.panels,
        "sections": sections,
        "reading": READING,
        "colours": {"real": REAL_COLOUR, "synthetic": SYNTHETIC_COLOUR, "holdout": HOLDOUT_COLOUR},
        "arrows": {"higher": "\u2191", "lower": "\u2193", "half": "\u00bd"},
        "t": {
            "detection_good": DETECTION.good,
            "detection_fair": DETECTION.fair,
            "utility_good": UTILITY.good,
            "utility_fair": UTILITY.fair,
            "half_fair": HALF.good,
            "half_poor": HALF.fair,
            "risk_fair": RISK.good,
            "risk_poor": RISK.fair,
            "copy_margin": COPIES.fair,
        },
        "summary": summary_rows(report),
        "columns": [{**c, "image": _column_plot(c)} for c in columns],
        "diversity_columns": details.get("diversity", {}).get("columns", []),
        "associations_image": _association_plot(associations)
        if associations and len(associations["names"]) > 1
        else None,
        "utility": utility,
        "utility_image": _utility_plot(report, utility),
        "equity": equity,
        "equity_image": _equity_plot(equity) if equity.get("groups") else None,
        "privacy": privacy,
        "checks": verdict.checks,
        "dcr_image": _dcr_plot(privacy["dcr_histogram"]) if privacy.get("dcr_histogram") else None,
        "attack_image": _attack_plot(report) if privacy.get("attacks") else None,
        "text": _text_context(report) if report.kind == "text" else None,
    }
    return _environment.get_template("report.html.j2").render(**context)


# ---- plots ------------------------------------------------------------------------------------------------------


def _png(figure: Figure) -> str:
    """The figure as a data URI, at a resolution where its fonts read at the image's natural size."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _error_bars(metrics: Sequence[Metric]) -> np.ndarray:
    """Matplotlib's error bars for ``metrics``: distances below and above each value to its interval's ends
    (none without an interval), shape (2, len(metrics))."""
    return np.array(
        [[(m.value or 0) - m.interval[0], m.interval[1] - (m.value or 0)] if m.interval else [0, 0] for m in metrics]
    ).T


def _style(axes: Axes, title: str, ylabel: str = "", xlabel: str = "") -> None:
    axes.set_title(title, fontsize=_TITLE)
    if ylabel:
        axes.set_ylabel(ylabel, fontsize=_LABEL)
    if xlabel:
        axes.set_xlabel(xlabel, fontsize=_LABEL)
    axes.tick_params(labelsize=_TICK)
    axes.spines[["top", "right"]].set_visible(False)


def _column_plot(column: dict[str, Any]) -> str:
    """Real in blue, synthetic in orange: filled and outlined histograms for numbers, paired bars otherwise."""
    plot = column["plot"]
    figure = Figure(figsize=(3.7, 2.7), layout="constrained")
    axes = figure.subplots()
    if plot["type"] == "numeric" and not _discrete(column):
        edges = np.asarray(plot["edges"])
        axes.stairs(plot["real"], edges, fill=True, color=REAL_COLOUR, alpha=0.45, label="real")
        axes.stairs(plot["synthetic"], edges, color=SYNTHETIC_COLOUR, linewidth=1.6, label="synthetic")
    else:
        labels, real, synthetic = _bars(column)
        positions = np.arange(len(labels))
        axes.bar(positions - 0.2, real, 0.4, color=REAL_COLOUR, label="real")
        axes.bar(positions + 0.2, synthetic, 0.4, color=SYNTHETIC_COLOUR, label="synthetic")
        long = sum(len(label) + 2 for label in labels) > 36
        axes.set_xticks(positions, labels, rotation=35 if long else 0, ha="right" if long else "center", fontsize=_TICK)
    xlabel = ""
    if plot["type"] == "numeric" and (plot["missing_real"] or plot["missing_synthetic"]):
        xlabel = f"missing: real {plot['missing_real']:.1%}, synthetic {plot['missing_synthetic']:.1%}"
    # No legend: the colours are explained once above the grid, and a legend would hide bars.
    _style(axes, f"{column['name']}  ({column['statistic']} {_format(column['distance'])})", "share of rows", xlabel)
    return _png(figure)


def _discrete(column: dict[str, Any]) -> bool:
    """An integer column whose histogram bins are narrower than 1: each holds at most one value, so bars read better."""
    plot = column["plot"]
    edges = plot["edges"]
    occupied = sum(1 for r, s in zip(plot["real"], plot["synthetic"], strict=True) if r or s)
    return bool(column["kind"] == "integer" and edges[1] - edges[0] < 1 and occupied <= 12)


def _bars(column: dict[str, Any]) -> tuple[list[str], list[float], list[float]]:
    """Labels and shares per bar: categories as they are, a discrete integer column by its occupied values."""
    plot = column["plot"]
    if plot["type"] != "numeric":
        return [str(label)[:16] for label in plot["labels"]], plot["real"], plot["synthetic"]
    labels, real, synthetic = [], [], []
    for left, r, s in zip(plot["edges"][:-1], plot["real"], plot["synthetic"], strict=True):
        if r or s:
            labels.append(f"{math.ceil(left - 1e-9):g}")
            real.append(r)
            synthetic.append(s)
    return labels, real, synthetic


def _association_plot(associations: dict[str, Any]) -> str:
    names: list[str] = [n[:14] for n in associations["names"]]
    real = np.asarray(associations["real"])
    synthetic = np.asarray(associations["synthetic"])
    difference = np.abs(real - synthetic)
    tick = min(_TICK, max(5, int(220 / len(names))))
    figure = Figure(figsize=(11.5, 3.9), layout="constrained")
    panels = figure.subplots(1, 3)
    for axes, matrix, title, cmap, top in (
        (panels[0], real, "real", "viridis", 1.0),
        (panels[1], synthetic, "synthetic", "viridis", 1.0),
        (panels[2], difference, "|real \u2212 synthetic|", "magma_r", max(0.2, float(difference.max()))),
    ):
        image = axes.imshow(matrix, cmap=cmap, vmin=0, vmax=top)
        axes.set_title(title, fontsize=_TITLE)
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=tick)
        axes.set_yticks(range(len(names)), names, fontsize=tick)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=_TICK)
    return _png(figure)


def _utility_plot(report: Report, utility: dict[str, Any]) -> str | None:
    measure = utility.get("measure", "score")
    scores = [
        (label, report.metrics.get(key))
        for label, key in (
            (f"{measure}\ntrained on\nsynthetic", "utility.tstr"),
            (f"{measure}\ntrained on\nreal", "utility.trtr"),
            ("accuracy\ntrained on\nsynthetic", "utility.tstr_accuracy"),
            ("accuracy\ntrained on\nreal", "utility.trtr_accuracy"),
        )
    ]
    shown = [(label, m) for label, m in scores if m is not None and m.value is not None]
    if not shown:
        return None
    importances = utility.get("importances") or {}
    figure = Figure(figsize=(10 if importances else 4.6, 3.6), layout="constrained")
    ratios = [1, 1.2] if importances else None
    panels = figure.subplots(1, 2 if importances else 1, squeeze=False, width_ratios=ratios)[0]
    axes = panels[0]
    colours = [SYNTHETIC_COLOUR if "synthetic" in label else REAL_COLOUR for label, _ in shown]
    values = [m.value or 0.0 for _, m in shown]
    errors = _error_bars([m for _, m in shown])
    positions = np.arange(len(shown))
    axes.bar(positions, values, color=colours, yerr=errors, capsize=3)
    for x, value in zip(positions, values, strict=True):
        axes.text(x, value / 2, _format(value), ha="center", va="center", fontsize=_LABEL, color="white")
    axes.set_xticks(positions, [label for label, _ in shown], fontsize=_TICK)
    axes.set_ylim(min(0.0, min(values)), 1.05)
    _style(axes, f"holdout {measure} and accuracy of '{report.meta.get('target', '')}'")
    if importances:
        features: list[str] = utility["features"]
        rows = np.arange(len(features))
        imp = panels[1]
        imp.barh(rows - 0.2, importances["trtr"], 0.4, color=REAL_COLOUR, label="trained on real")
        imp.barh(rows + 0.2, importances["tstr"], 0.4, color=SYNTHETIC_COLOUR, label="trained on synthetic")
        imp.set_yticks(rows, [f[:18] for f in features], fontsize=_TICK)
        imp.invert_yaxis()
        imp.axvline(0, color="#999", linewidth=0.8)
        _style(imp, "permutation importance", xlabel=f"drop in holdout {measure} when the feature is shuffled")
        imp.legend(fontsize=_TICK, frameon=False, loc="best")
    return _png(figure)


def _equity_plot(equity: dict[str, Any]) -> str:
    groups: list[dict[str, Any]] = equity["groups"]
    labels = [str(g["group"])[:16] for g in groups]
    positions = np.arange(len(groups))
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = figure.subplots(1, 2)
    for offset, key, colour, label in (
        (-0.2, "trtr", REAL_COLOUR, "trained on real"),
        (0.2, "tstr", SYNTHETIC_COLOUR, "trained on synthetic"),
    ):
        left.bar(positions + offset, _values(groups, key), 0.4, color=colour, label=label)
    _style(left, f"holdout score by {equity.get('column', '')}")
    for offset, key, colour, label in (
        (-0.2, "tvd_1way_holdout", HOLDOUT_COLOUR, "holdout vs real (noise floor)"),
        (0.2, "tvd_1way", SYNTHETIC_COLOUR, "synthetic vs real"),
    ):
        right.bar(positions + offset, _values(groups, key), 0.4, color=colour, label=label)
    _style(right, "1-way TVD within the group (lower is better)")
    for axes in (left, right):
        axes.set_xticks(positions, labels, rotation=30 if len(groups) > 4 else 0, fontsize=_TICK)
        axes.legend(fontsize=_TICK, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return _png(figure)


def _values(groups: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(g.get(key) or 0.0) for g in groups]


def _dcr_plot(histogram: dict[str, Any]) -> str:
    edges = np.asarray(histogram["edges"])
    figure = Figure(figsize=(5.4, 3.4), layout="constrained")
    axes = figure.subplots()
    colours = {
        "synthetic to train": SYNTHETIC_COLOUR,
        "synthetic to holdout": REAL_COLOUR,
        "holdout to train": HOLDOUT_COLOUR,
    }
    for name, shares in histogram["series"].items():
        axes.stairs(shares, edges, color=colours.get(name), linewidth=1.6, label=name)
    _style(
        axes,
        "distance to closest record",
        "share of rows",
        "distance (0 = an identical record)",
    )
    axes.legend(fontsize=_TICK, frameon=False)
    return _png(figure)


def _attack_plot(report: Report) -> str:
    keys = [
        ("singling out", "privacy.singling_out_risk"),
        ("linkability", "privacy.linkability_risk"),
        ("inference\n(worst column)", "privacy.inference_risk"),
    ]
    shown = [(label, report.metrics[key]) for label, key in keys if key in report.metrics]
    figure = Figure(figsize=(5.4, 3.4), layout="constrained")
    axes = figure.subplots()
    values = [m.value or 0.0 for _, m in shown]
    errors = _error_bars([m for _, m in shown])
    rows = np.arange(len(shown))
    axes.barh(rows, values, xerr=errors, color=SYNTHETIC_COLOUR, capsize=4)
    axes.set_yticks(rows, [label for label, _ in shown], fontsize=_LABEL)
    axes.invert_yaxis()
    top = max(0.1, max(v + e for v, e in zip(values, errors[1], strict=True)) * 1.15)
    axes.set_xlim(0, min(top, 1.08))
    for y, value in zip(rows, values, strict=True):
        axes.text(value, y - 0.3, f" {_format(value)}", va="center", fontsize=_TICK)
    risk = "risk: (main \u2212 control) / (1 \u2212 control); 0 is ideal"
    _style(axes, "attack risks with 95% intervals", xlabel=risk)
    return _png(figure)


# ---- text reports -----------------------------------------------------------------------------------------------

# The metrics of the text tables, each beside the real holdout's score (its catalogue reference) where it has one.
_TEXT_ROWS = {
    "fidelity": (
        "fidelity.frechet_distance",
        "fidelity.kernel_distance",
        "fidelity.embedding_precision",
        "fidelity.embedding_recall",
        "fidelity.detection_auc",
        "fidelity.length_ks",
    ),
    "diversity": ("diversity.near_duplicate_rate", "diversity.distinct_bigrams"),
}


def _text_context(report: Report) -> dict[str, Any]:
    """Tables and plots of a text report (see :mod:`privsynth.evaluate.text`)."""
    fidelity = report.details.get("fidelity", {})
    privacy = report.details.get("privacy", {})
    rows: dict[str, list[tuple[str, Metric, Metric | None]]] = {}
    for section, keys in _TEXT_ROWS.items():
        rows[section] = []
        for key in keys:
            if key in report.metrics:
                info = CATALOGUE[key]
                floor = report.metrics.get(info.reference) if info.reference else None
                rows[section].append((info.label, report.metrics[key], floor))
    threshold = float(report.meta.get("near_copy_threshold", 0.95))
    return {
        "rows": rows,
        "projection_image": _projection_plot(fidelity["projection"]) if fidelity.get("projection") else None,
        "length_image": _length_plot(fidelity["lengths"]) if fidelity.get("lengths") else None,
        "similarity_image": _similarity_plot(privacy["similarity_histogram"], threshold)
        if privacy.get("similarity_histogram")
        else None,
        "closest": privacy.get("closest", []),
        "canary": privacy.get("canary"),
        "utility_note": report.metrics["utility.tstr"].note if "utility.tstr" in report.metrics else "",
    }


_TEXT_COLOURS = {"private": REAL_COLOUR, "synthetic": SYNTHETIC_COLOUR, "holdout": HOLDOUT_COLOUR}


def _projection_plot(projection: dict[str, list[list[float]]]) -> str:
    figure = Figure(figsize=(5.2, 4.0), layout="constrained")
    axes = figure.subplots()
    for name in ("private", "holdout", "synthetic"):
        points = np.asarray(projection.get(name, []))
        if len(points):
            axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.5, color=_TEXT_COLOURS[name], label=name)
    _style(axes, "embeddings on the private texts' first two principal axes", "axis 2", "axis 1")
    axes.legend(fontsize=_TICK, frameon=False, markerscale=2.5)
    return _png(figure)


def _length_plot(lengths: dict[str, Any]) -> str:
    edges = np.asarray(lengths["edges"])
    figure = Figure(figsize=(5.2, 4.0), layout="constrained")
    axes = figure.subplots()
    series = lengths["series"]
    axes.stairs(series["private"], edges, fill=True, color=REAL_COLOUR, alpha=0.45, label="private")
    if "holdout" in series:
        axes.stairs(series["holdout"], edges, color=HOLDOUT_COLOUR, linewidth=1.2, label="holdout")
    axes.stairs(series["synthetic"], edges, color=SYNTHETIC_COLOUR, linewidth=1.6, label="synthetic")
    _style(axes, "text length", "share of texts", "words")
    axes.legend(fontsize=_TICK, frameon=False)
    return _png(figure)


def _similarity_plot(histogram: dict[str, Any], threshold: float) -> str:
    edges = np.asarray(histogram["edges"])
    figure = Figure(figsize=(5.4, 3.6), layout="constrained")
    axes = figure.subplots()
    colours = {"synthetic to private": SYNTHETIC_COLOUR, "holdout to private": HOLDOUT_COLOUR}
    for name, shares in histogram["series"].items():
        axes.stairs(shares, edges, color=colours.get(name), linewidth=1.6, label=name)
    axes.axvline(threshold, color="#c62828", linewidth=1, linestyle="--", label=f"near copy (\u2265 {threshold:g})")
    _style(axes, "similarity to the closest private text", "share of texts", "cosine similarity (1 = same meaning)")
    axes.legend(fontsize=_TICK, frameon=False, loc="upper left")
    return _png(figure)
