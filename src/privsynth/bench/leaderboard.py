"""The bench leaderboard: results averaged over seeds, ranked per dataset, as a table and one offline HTML page.

Plots are drawn with matplotlib's Agg canvas and embedded as base64 PNG, as the evaluation report does, so the
page opens offline. The privacy-utility plot puts epsilon on the x axis and TSTR and 3-way TVD on the y axes,
one line per DP method; non-DP methods and the real-data reference appear as horizontal lines (no budget).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from privsynth.bench.results import KEY_METRICS, REFERENCE_METHOD
from privsynth.evaluate.catalogue import CATALOGUE, format_metric
from privsynth.render import environment

_TIMES = ("fit_seconds", "sample_seconds", "evaluate_seconds", "cpu_seconds", "seconds")

_environment = environment("privsynth.bench", metric=format_metric)


def leaderboard_table(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, method, epsilon): means over successful seeds, ranked per dataset by TSTR.

    Ties in TSTR (and rows without one) are ordered by 3-way TVD; runs with peer options are rows of their own.
    The reference row is listed last with rank ``ref``; cells whose every run failed are listed with rank ``-``
    and their last error.
    """
    groups: dict[tuple[str, str, float | None], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["dataset"], method_label(row), row.get("epsilon")), []).append(row)
    table: list[dict[str, Any]] = []
    for (dataset, method, epsilon), rows in groups.items():
        ok = [r for r in rows if r.get("status") == "ok"]
        entry: dict[str, Any] = {
            "dataset": dataset,
            "method": method,
            "epsilon": "-" if epsilon is None else f"{epsilon:g}",
            "epsilon_value": epsilon,
            "source": rows[0].get("source", ""),
            "runs": f"{len(ok)}/{len(rows)}",
            "error": None if ok else rows[-1].get("error"),
        }
        for key in KEY_METRICS:
            entry[key] = _mean([r.get("metrics", {}).get(key) for r in ok])
        for key in _TIMES[:-1]:
            entry[key] = _mean([r.get(key) for r in ok])
        entry["seconds"] = _mean([r.get("total_seconds") for r in ok])
        table.append(entry)
    ranked: list[dict[str, Any]] = []
    for dataset in dict.fromkeys(e["dataset"] for e in table):
        entries = [e for e in table if e["dataset"] == dataset]
        scored = [e for e in entries if e["method"] != REFERENCE_METHOD and e["error"] is None]
        scored.sort(key=lambda e: (-_or(e["utility.tstr"], -math.inf), _or(e["fidelity.tvd_3way"], math.inf)))
        for rank, entry in enumerate(scored, start=1):
            entry["rank"] = str(rank)
        failed = [e for e in entries if e["method"] != REFERENCE_METHOD and e["error"] is not None]
        for entry in failed:
            entry["rank"] = "-"
        reference = [e for e in entries if e["method"] == REFERENCE_METHOD]
        for entry in reference:
            entry["rank"] = "ref"
        ranked.extend([*scored, *failed, *reference])
    return ranked


def method_label(row: dict[str, Any]) -> str:
    """The method with the options it ran with, ``sdv-ctgan (epochs=30)``, so variants are not averaged together."""
    options = row.get("options") or {}
    if not options:
        return str(row["method"])
    return f"{row['method']} ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})"


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(present)) if present else None


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def write_leaderboard(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write the leaderboard page (tables per dataset, privacy-utility and timing plots) to ``path``."""
    target = Path(path)
    target.write_text(render_leaderboard(results), encoding="utf-8")
    return target


def render_leaderboard(results: Sequence[dict[str, Any]]) -> str:
    table = leaderboard_table(results)
    datasets = list(dict.fromkeys(e["dataset"] for e in table))
    failures = [r for r in results if r.get("status") != "ok"]
    colours = _colours([e["method"] for e in table])  # one colour per method on every dataset's plot
    context = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": len(results),
        "failures": failures,
        "datasets": [
            {
                "name": name,
                "rows": [e for e in table if e["dataset"] == name],
                "tradeoff_image": _tradeoff_plot([e for e in table if e["dataset"] == name], name, colours),
            }
            for name in datasets
        ],
        "metrics": [(key, CATALOGUE[key].label, CATALOGUE[key].reading) for key in KEY_METRICS],
        "timing_image": _timing_plot(table) if table else None,
        "versions": sorted({r.get("privsynth_version", "") for r in results}),
        "peer_versions": sorted(
            {
                f"{r['details']['library']} {r['details']['version']}"
                for r in results
                if r.get("source") == "peer" and r.get("details", {}).get("library")
            }
        ),
    }
    return _environment.get_template("leaderboard.html.j2").render(**context)


def _png(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _tradeoff_plot(entries: Sequence[dict[str, Any]], dataset: str, colours: dict[str, str]) -> str | None:
    """epsilon against TSTR and against 3-way TVD; budget-free methods as dashed horizontal lines."""
    usable = [e for e in entries if e["error"] is None]
    if not usable:
        return None
    figure = Figure(figsize=(10, 3.4))
    panels = figure.subplots(1, 2)
    epsilons = sorted({e["epsilon_value"] for e in usable if e["epsilon_value"] is not None})
    span = (min(epsilons) / 1.5, max(epsilons) * 1.5) if epsilons else (0.5, 2.0)
    for axes, key in zip(panels, ("utility.tstr", "fidelity.tvd_3way"), strict=True):
        for method in dict.fromkeys(e["method"] for e in usable):
            points = sorted(
                (e["epsilon_value"], e[key]) for e in usable if e["method"] == method and e["epsilon_value"] is not None
            )
            points = [(x, y) for x, y in points if y is not None]
            flat = [e[key] for e in usable if e["method"] == method and e["epsilon_value"] is None]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", color=colours[method], label=method)
            elif flat and flat[0] is not None:
                style = ":" if method == REFERENCE_METHOD else "--"
                label = f"{method} (real data)" if method == REFERENCE_METHOD else f"{method} (no DP)"
                axes.hlines(flat[0], *span, colors=colours[method], linestyles=style, label=label)
        axes.set_xscale("log")
        axes.set_xlim(*span)
        axes.xaxis.set_major_locator(FixedLocator(epsilons or [1.0]))
        axes.xaxis.set_major_formatter(FixedFormatter([f"{e:g}" for e in epsilons] or [""]))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xlabel("epsilon (log scale)", fontsize=8)
        axes.set_ylabel(f"{CATALOGUE[key].label} ({CATALOGUE[key].reading})", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    panels[0].set_title(f"{dataset}: utility (train on synthetic, test on real)", fontsize=9)
    panels[1].set_title(f"{dataset}: 3-way marginal distance", fontsize=9)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(5, max(1, len(labels))), fontsize=7, frameon=False)
    figure.subplots_adjust(bottom=0.3)
    return _png(figure)


def _timing_plot(table: Sequence[dict[str, Any]]) -> str | None:
    """Mean fit, sample and evaluate seconds per method and dataset (log scale)."""
    entries = [e for e in table if e["error"] is None and e["method"] != REFERENCE_METHOD]
    if not entries:
        return None
    labels = [
        f"{e['dataset']} {e['method']}" + ("" if e["epsilon"] == "-" else f" eps={e['epsilon']}") for e in entries
    ]
    positions = np.arange(len(entries))
    figure = Figure(figsize=(9, max(2.5, 0.28 * len(entries) + 1)))
    axes = figure.subplots()
    left = np.zeros(len(entries))
    for key, colour in (("fit_seconds", "#4c72b0"), ("sample_seconds", "#dd8452"), ("evaluate_seconds", "#55a868")):
        values = np.array([_or(e[key], 0.0) for e in entries])
        axes.barh(positions, values, left=left, color=colour, label=key.replace("_seconds", ""))
        left += values
    axes.set_yticks(positions, labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("seconds (mean over seeds)", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, frameon=False)
    axes.set_title("wall time per run", fontsize=9)
    return _png(figure)


def _colours(methods: Sequence[str]) -> dict[str, str]:
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"]
    unique = [m for m in dict.fromkeys(methods) if m != REFERENCE_METHOD]
    colours = {method: palette[i % len(palette)] for i, method in enumerate(unique)}
    colours[REFERENCE_METHOD] = "#222222"
    return colours
