"""Render a :class:`~privsynth.evaluate.report.Report` as one self-contained HTML file.

Plots are drawn with matplotlib's Agg canvas (no display, no global pyplot state) and embedded as base64 PNG,
the page's style is inline: the file opens offline and can be mailed as it is. The layout lives in the jinja2
template ``templates/report.html.j2``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import jinja2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from privsynth.evaluate.report import READING, REAL_DATA_WARNING, SECTIONS, SUMMARY, Report, format_number

REAL_COLOUR = "#4c72b0"
SYNTHETIC_COLOUR = "#dd8452"
HOLDOUT_COLOUR = "#55a868"

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("privsynth.evaluate", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["number"] = lambda v: "-" if v is None else format_number(v)


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
    context: dict[str, Any] = {
        "meta": report.meta,
        "disclaimer": report.disclaimer(),
        "real_data_warning": REAL_DATA_WARNING,
        "sections": sections,
        "reading": READING,
        "summary": [report.metrics[key] for keys in SUMMARY.values() for key, _ in keys if key in report.metrics],
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
        "dcr_image": _dcr_plot(privacy["dcr_histogram"]) if privacy.get("dcr_histogram") else None,
        "attack_image": _attack_plot(report) if privacy.get("attacks") else None,
    }
    return _environment.get_template("report.html.j2").render(**context)


def _png(figure: Figure) -> str:
    """The figure as a data URI."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _column_plot(column: dict[str, Any]) -> str:
    plot = column["plot"]
    figure = Figure(figsize=(3.6, 2.4))
    axes = figure.subplots()
    if plot["type"] == "numeric":
        edges = np.asarray(plot["edges"])
        widths = np.diff(edges)
        axes.bar(edges[:-1], plot["real"], widths, align="edge", alpha=0.55, color=REAL_COLOUR, label="real")
        axes.bar(
            edges[:-1], plot["synthetic"], widths, align="edge", alpha=0.55, color=SYNTHETIC_COLOUR, label="synthetic"
        )
        if plot["missing_real"] or plot["missing_synthetic"]:
            axes.set_xlabel(
                f"missing: real {plot['missing_real']:.1%}, synthetic {plot['missing_synthetic']:.1%}", fontsize=7
            )
    else:
        positions = np.arange(len(plot["labels"]))
        axes.bar(positions - 0.2, plot["real"], 0.4, color=REAL_COLOUR, label="real")
        axes.bar(positions + 0.2, plot["synthetic"], 0.4, color=SYNTHETIC_COLOUR, label="synthetic")
        axes.set_xticks(positions, [str(label)[:14] for label in plot["labels"]], rotation=60, ha="right", fontsize=6)
    axes.set_title(column["name"], fontsize=9)
    axes.set_ylabel("share of rows", fontsize=7)
    axes.tick_params(labelsize=6)
    axes.legend(fontsize=6, frameon=False)
    return _png(figure)


def _association_plot(associations: dict[str, Any]) -> str:
    names: list[str] = associations["names"]
    real = np.asarray(associations["real"])
    synthetic = np.asarray(associations["synthetic"])
    size = max(3.0, 0.28 * len(names) + 1.5)
    figure = Figure(figsize=(3 * size, size))
    panels = figure.subplots(1, 3)
    for axes, matrix, title, cmap, limits in (
        (panels[0], real, "real", "viridis", (0, 1)),
        (panels[1], synthetic, "synthetic", "viridis", (0, 1)),
        (
            panels[2],
            np.abs(real - synthetic),
            "|real - synthetic|",
            "magma_r",
            (0, max(0.2, float(np.abs(real - synthetic).max()))),
        ),
    ):
        image = axes.imshow(matrix, cmap=cmap, vmin=limits[0], vmax=limits[1])
        axes.set_title(title, fontsize=9)
        axes.set_xticks(range(len(names)), [n[:12] for n in names], rotation=90, fontsize=6)
        axes.set_yticks(range(len(names)), [n[:12] for n in names], fontsize=6)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    return _png(figure)


def _utility_plot(report: Report, utility: dict[str, Any]) -> str | None:
    scores = [
        (label, report.metrics.get(key))
        for label, key in (
            ("TSTR", "utility.tstr"),
            ("TRTR", "utility.trtr"),
            ("TSTR acc.", "utility.tstr_accuracy"),
            ("TRTR acc.", "utility.trtr_accuracy"),
        )
    ]
    shown = [(label, m) for label, m in scores if m is not None and m.value is not None]
    if not shown:
        return None
    importances = utility.get("importances") or {}
    figure = Figure(figsize=(9 if importances else 4.5, 3))
    panels = figure.subplots(1, 2 if importances else 1, squeeze=False)[0]
    axes = panels[0]
    colours = [SYNTHETIC_COLOUR if label.startswith("TSTR") else REAL_COLOUR for label, _ in shown]
    values = [m.value or 0.0 for _, m in shown]
    errors = np.array(
        [[(m.value or 0) - m.interval[0], m.interval[1] - (m.value or 0)] if m.interval else [0, 0] for _, m in shown]
    ).T
    axes.bar([label for label, _ in shown], values, color=colours, yerr=errors, capsize=3)
    axes.set_ylim(min(0.0, min(values)), 1.0)
    axes.set_title(f"holdout {utility.get('measure', '')} and accuracy", fontsize=9)
    axes.tick_params(labelsize=7)
    if importances:
        features: list[str] = utility["features"]
        positions = np.arange(len(features))
        imp = panels[1]
        imp.barh(positions - 0.2, importances["trtr"], 0.4, color=REAL_COLOUR, label="trained on real")
        imp.barh(positions + 0.2, importances["tstr"], 0.4, color=SYNTHETIC_COLOUR, label="trained on synthetic")
        imp.set_yticks(positions, [f[:16] for f in features], fontsize=6)
        imp.invert_yaxis()
        imp.set_title("permutation importance (score drop)", fontsize=9)
        imp.tick_params(labelsize=6)
        imp.legend(fontsize=6, frameon=False)
    return _png(figure)


def _equity_plot(equity: dict[str, Any]) -> str:
    groups: list[dict[str, Any]] = equity["groups"]
    labels = [str(g["group"])[:16] for g in groups]
    positions = np.arange(len(groups))
    figure = Figure(figsize=(9, 3))
    left, right = figure.subplots(1, 2)
    for offset, key, colour, label in ((-0.2, "trtr", REAL_COLOUR, "TRTR"), (0.2, "tstr", SYNTHETIC_COLOUR, "TSTR")):
        left.bar(positions + offset, _values(groups, key), 0.4, color=colour, label=label)
    left.set_title(f"utility by {equity.get('column', '')}", fontsize=9)
    for offset, key, colour, label in (
        (-0.2, "tvd_1way_holdout", HOLDOUT_COLOUR, "real vs holdout (noise floor)"),
        (0.2, "tvd_1way", SYNTHETIC_COLOUR, "real vs synthetic"),
    ):
        right.bar(positions + offset, _values(groups, key), 0.4, color=colour, label=label)
    right.set_title("1-way TVD within group", fontsize=9)
    for axes in (left, right):
        axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=7)
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=6, loc="lower right", framealpha=0.9)
    return _png(figure)


def _values(groups: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(g.get(key) or 0.0) for g in groups]


def _dcr_plot(histogram: dict[str, Any]) -> str:
    edges = np.asarray(histogram["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    figure = Figure(figsize=(5, 3))
    axes = figure.subplots()
    colours = {
        "synthetic to train": SYNTHETIC_COLOUR,
        "synthetic to holdout": REAL_COLOUR,
        "holdout to train": HOLDOUT_COLOUR,
    }
    for name, shares in histogram["series"].items():
        axes.plot(centres, shares, drawstyle="steps-mid", color=colours.get(name), label=name)
    axes.set_xlabel("distance to closest record (common encoding)", fontsize=7)
    axes.set_ylabel("share of rows", fontsize=7)
    axes.set_title("distance to closest record", fontsize=9)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, frameon=False)
    return _png(figure)


def _attack_plot(report: Report) -> str:
    keys = [
        ("singling out", "privacy.singling_out_risk"),
        ("linkability", "privacy.linkability_risk"),
        ("inference (worst column)", "privacy.inference_risk"),
    ]
    shown = [(label, report.metrics[key]) for label, key in keys if key in report.metrics]
    figure = Figure(figsize=(5, 2.4))
    axes = figure.subplots()
    values = [m.value or 0.0 for _, m in shown]
    errors = np.array(
        [[(m.value or 0) - m.interval[0], m.interval[1] - (m.value or 0)] if m.interval else [0, 0] for _, m in shown]
    ).T
    axes.barh([label for label, _ in shown], values, xerr=errors, color=SYNTHETIC_COLOUR, capsize=3)
    axes.set_xlim(0, max(0.1, max(v + e for v, e in zip(values, errors[1], strict=True)) * 1.1))
    axes.set_title("Anonymeter-style risks with 95% intervals", fontsize=9)
    axes.tick_params(labelsize=7)
    return _png(figure)
