"""Render a :class:`~privsynth.evaluate.report.Report` as one self-contained HTML file.

The page opens with a summary that fits one screen: a plain verdict, one panel each for fidelity, utility and
privacy with a level (good, fair, poor) read from fixed thresholds on their headline numbers, the
differential-privacy budget, and the statement that the privacy metrics are empirical checks, not guarantees.
The levels are a reading aid for a person, not a pass mark: the thresholds are below, with the numbers they
came from. Tables and plots per section follow, then every metric with its definition.

Plots are drawn with matplotlib's Agg canvas (no display, no global pyplot state) and embedded as base64 PNG,
the page's style is inline: the file opens offline and can be mailed as it is. The layout lives in the jinja2
template ``templates/report.html.j2``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from privsynth.evaluate.metric import Metric
from privsynth.evaluate.report import NOT_GUARANTEES, READING, REAL_DATA_WARNING, SECTIONS, SUMMARY, Report
from privsynth.evaluate.report import format_number as _format

REAL_COLOUR = "#4c72b0"
SYNTHETIC_COLOUR = "#dd8452"
HOLDOUT_COLOUR = "#55a868"
_DPI = 100
_TITLE, _LABEL, _TICK = 10, 9, 8  # font sizes (points) at which plots stay legible at their natural size

Level = Literal["good", "fair", "poor", "none"]
_ORDER: dict[Level, int] = {"none": 0, "good": 1, "fair": 2, "poor": 3}

# Fidelity level from the detection AUC (0.5: a classifier cannot tell synthetic rows from real ones). Two real
# nassCDS samples score 0.50; the copula fitted on 3,000 nassCDS rows scores 0.84.
DETECTION_GOOD, DETECTION_FAIR = 0.6, 0.8
# Utility level from the share of the real-data model's gain over chance (AUC 0.5, R^2 0) that the model trained
# on synthetic rows keeps.
UTILITY_GOOD, UTILITY_FAIR = 0.9, 0.7
# Privacy checks read the lower end of each 95% interval and need it past a margin: intervals that miss the ideal
# value happen on fresh data too. A second real nassCDS sample of 3,000 rows scored as synthetic gave membership
# AUC 0.521 (0.510 to 0.539), singling-out risk 0.196 (0.058 to 0.334) and inference risk 0.199 (0.008 to 0.390);
# a copy of the training rows gives 1, 0.985 and 0.991. DCR train share and membership AUC (0.5 for fresh data)
# with a lower bound above these are fair / poor ...
HALF_FAIR, HALF_POOR = 0.55, 0.65
# ... attack risks (0 for fresh data) likewise ...
RISK_FAIR, RISK_POOR = 0.1, 0.3
# ... and exact copies whose interval lies above that of fresh real rows are fair, by more than this share poor.
COPY_MARGIN = 0.01
# Canary exposures whose p-value (no memorisation: exposure exponential with rate ln 2) is below these.
CANARY_FAIR, CANARY_POOR = 0.05, 0.001

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("privsynth.evaluate", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["number"] = lambda v: "-" if v is None else _format(v)


@dataclass(frozen=True)
class Check:
    """One privacy check as the page shows it: the synthetic value, what fresh real data shows, and a level."""

    label: str
    value: str
    reference: str
    level: Level
    reason: str = ""


@dataclass(frozen=True)
class Panel:
    """One area of the summary: a level, a one-sentence verdict, the numbers behind it and, for privacy,
    the checks that raised the level."""

    title: str
    level: Level
    verdict: str
    numbers: list[tuple[str, str, str]]  # (label, value with interval, definition)
    reasons: list[str] = field(default_factory=list)
    badge: str = ""  # the word on the level badge; the level itself when empty

    @property
    def label(self) -> str:
        return self.badge or ("n/a" if self.level == "none" else self.level)


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
    checks = privacy_checks(report)
    panels = summary_panels(report, checks)
    context: dict[str, Any] = {
        "meta": report.meta,
        "disclaimer": report.disclaimer(),
        "not_guarantees": NOT_GUARANTEES,
        "real_data_warning": REAL_DATA_WARNING,
        "budget": _budget_text(report),
        "headline": headline(panels),
        "panels": panels,
        "sections": sections,
        "reading": READING,
        "colours": {"real": REAL_COLOUR, "synthetic": SYNTHETIC_COLOUR, "holdout": HOLDOUT_COLOUR},
        "arrows": {"higher": "\u2191", "lower": "\u2193", "half": "\u00bd"},
        "t": {
            "detection_good": DETECTION_GOOD,
            "detection_fair": DETECTION_FAIR,
            "utility_good": UTILITY_GOOD,
            "utility_fair": UTILITY_FAIR,
            "half_fair": HALF_FAIR,
            "half_poor": HALF_POOR,
            "risk_fair": RISK_FAIR,
            "risk_poor": RISK_POOR,
            "copy_margin": COPY_MARGIN,
        },
        "summary": [
            (section.capitalize(), [(label, report.metrics[key]) for key, label in keys if key in report.metrics])
            for section, keys in SUMMARY.items()
        ],
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
        "checks": checks,
        "dcr_image": _dcr_plot(privacy["dcr_histogram"]) if privacy.get("dcr_histogram") else None,
        "attack_image": _attack_plot(report) if privacy.get("attacks") else None,
        "text": _text_context(report) if report.kind == "text" else None,
    }
    return _environment.get_template("report.html.j2").render(**context)


# ---- the one-screen summary -------------------------------------------------------------------------------------


def summary_panels(report: Report, checks: Sequence[Check]) -> list[Panel]:
    """Fidelity, utility, privacy and differential-privacy panels, in that order."""
    return [_fidelity_panel(report), _utility_panel(report), _privacy_panel(report, checks), _budget_panel(report)]


def headline(panels: Sequence[Panel]) -> tuple[Level, str]:
    """The plain verdict over the panels: privacy first, then how close the data is to the real data."""
    fidelity, utility, privacy = panels[0], panels[1], panels[2]
    if privacy.level == "poor":
        return "poor", f"Do not release as it is: {privacy.reasons[0]}."
    if privacy.level == "fair":
        return "fair", f"Review before release: {privacy.reasons[0]}."
    quality = max((fidelity.level, utility.level), key=lambda level: _ORDER[level])
    if privacy.level == "none":
        return "fair", (
            "Privacy was checked for exact copies only: evaluate again with a holdout (real rows the generator "
            "never saw) before release."
        )
    if quality == "good":
        return "good", "Close to the real data, and no privacy check found signs of memorisation."
    if quality == "fair":
        return "fair", (
            "No privacy check found signs of memorisation; the synthetic data departs from the real data in places "
            "(see Fidelity and Utility)."
        )
    return "poor", (
        "No privacy check found signs of memorisation, but the synthetic data is far from the real data "
        "(see Fidelity and Utility)."
    )


def _fidelity_panel(report: Report) -> Panel:
    keys = ("fidelity.column_score", "fidelity.tvd_2way", "fidelity.kernel_distance", "fidelity.detection_auc")
    numbers = _numbers(report, keys)
    rows = "texts" if report.kind == "text" else "rows"
    detection = _value(report, "fidelity.detection_auc")
    if detection is None:
        return Panel("Fidelity", "none", "No detection score: too few rows to train the classifier.", numbers)
    if detection < 1 - DETECTION_GOOD:
        # Below chance: the classifier learnt that rows seen in both sets are real, so synthetic rows repeat real
        # ones. The distributions match; whether that is a leak is the privacy panel's question.
        level: Level = "good"
        verdict = (
            f"Matches the real {rows}, many of them exactly: a classifier scores AUC {_format(detection)}, far below "
            f"chance, because synthetic {rows} repeat real ones."
        )
    elif detection <= DETECTION_GOOD:
        level = "good"
        verdict = f"Hard to tell from real {rows}: a classifier reaches AUC {_format(detection)} (0.5 is chance)."
    elif detection <= DETECTION_FAIR:
        level = "fair"
        verdict = f"A classifier picks up differences from the real {rows} (AUC {_format(detection)}; 0.5 is chance)."
    else:
        level = "poor"
        verdict = f"A classifier tells synthetic {rows} from real ones easily (AUC {_format(detection)})."
    return Panel("Fidelity", level, verdict, numbers)


def _utility_panel(report: Report) -> Panel:
    numbers = _numbers(report, ("utility.tstr", "utility.trtr", "utility.importance_agreement"))
    tstr, trtr = _value(report, "utility.tstr"), _value(report, "utility.trtr")
    if tstr is None or trtr is None:
        note = report.metrics["utility.tstr"].note if "utility.tstr" in report.metrics else ""
        return Panel("Utility", "none", f"Not measured: {note or 'no target column was given'}.", numbers)
    measure = report.details.get("utility", {}).get("measure", "AUC")
    chance = 0.5 if measure == "AUC" else 0.0
    if trtr - chance <= 0.02:
        verdict = f"Real data does not predict the target either ({measure} {_format(trtr)})."
        return Panel("Utility", "none", verdict, numbers)
    kept = (tstr - chance) / (trtr - chance)
    level: Level = "good" if kept >= UTILITY_GOOD else "fair" if kept >= UTILITY_FAIR else "poor"
    verdict = (
        f"A model trained on synthetic {'texts' if report.kind == 'text' else 'rows'} keeps {max(kept, 0.0):.0%} of "
        "the real model's gain over chance "
        f"({measure} {_format(tstr)} against {_format(trtr)} on the holdout)."
    )
    return Panel("Utility", level, verdict, numbers)


def _privacy_panel(report: Report, checks: Sequence[Check]) -> Panel:
    keys = (
        "privacy.exact_copy_rate",
        "privacy.substring_copy_rate",
        "privacy.near_copy_rate",
        "privacy.dcr_train_share",
        "privacy.mia_auc",
        "privacy.canary_exposure_max",
    )
    numbers = _numbers(report, keys)
    risks = [(key, m) for key in _ATTACK_KEYS if (m := report.metrics.get(key)) is not None and m.value is not None]
    if risks:
        key, worst = max(risks, key=lambda item: item[1].value or 0.0)
        numbers.append((f"highest attack risk ({_ATTACK_KEYS[key]})", _with_interval(worst), worst.definition))
    flagged = [c for c in checks if c.level in ("fair", "poor")]
    reasons = [c.reason for c in sorted(flagged, key=lambda c: -_ORDER[c.level])]
    level: Level = max((c.level for c in checks), key=lambda lv: _ORDER[lv], default="none")
    if _value(report, "privacy.dcr_train_share") is None:
        return Panel(
            "Privacy (empirical)",
            level if level in ("fair", "poor") else "none",
            "Only exact copies were checked: the attacks need a holdout (real rows the generator never saw).",
            numbers,
            reasons,
        )
    verdict = {
        "good": "No sign of memorisation: every check is within what fresh real data shows.",
        "fair": "Some checks sit above what fresh real data shows.",
        "poor": "Signs that training records were copied or can be recovered from the synthetic rows.",
        "none": "",
    }[level]
    return Panel("Privacy (empirical)", level, verdict, numbers, reasons)


def _budget_panel(report: Report) -> Panel:
    budget = report.privacy_budget
    if budget:
        return Panel(
            "Differential privacy",
            "good",
            f"Declared budget {_budget_text(report)}: if the generator kept to it, it bounds what any attack can "
            "learn about one person (this report shows the budget, it does not verify it).",
            [(name, _format(value), "declared privacy budget of the release") for name, value in budget.items()],
            badge="declared",
        )
    return Panel(
        "Differential privacy",
        "none",
        "No budget declared: this release has no formal privacy guarantee, only the empirical checks.",
        [],
        badge="none",
    )


def _budget_text(report: Report) -> str:
    budget = report.privacy_budget
    if not budget:
        return ""
    symbols = {"epsilon": "\u03b5", "delta": "\u03b4", "rho": "\u03c1"}
    return ", ".join(f"{symbols.get(name, name)} = {_format(value)}" for name, value in budget.items())


_ATTACK_KEYS = {
    "privacy.singling_out_risk": "singling out",
    "privacy.linkability_risk": "linkability",
    "privacy.inference_risk": "inference",
}


def privacy_checks(report: Report) -> list[Check]:
    """Each privacy metric against what fresh real data shows, with a level and, when flagged, the reason."""
    checks: list[Check] = []
    text = report.kind == "text"
    copy_checks = [
        (
            "privacy.exact_copy_rate",
            "exact copies of private texts" if text else "exact copies of training rows",
            "are exact copies of private texts" if text else "are exact copies of training rows",
        ),
        (
            "privacy.substring_copy_rate",
            f"texts sharing {report.meta.get('copy_words', '')} words in a row with a private text",
            f"share a run of {report.meta.get('copy_words', '')} words with a private text",
        ),
        (
            "privacy.near_copy_rate",
            f"near copies (cosine \u2265 {float(report.meta.get('near_copy_threshold', 0.95)):g})",
            "are near copies of a private text",
        ),
    ]
    unit, fresh_unit = ("synthetic texts", "holdout texts") if text else ("synthetic rows", "holdout rows")
    for key, label, what in copy_checks:
        copies = report.metrics.get(key)
        if copies is None or copies.value is None:
            continue
        baseline = report.metrics.get(f"{key}_baseline")
        fresh = baseline.value if baseline is not None and baseline.value is not None else 0.0
        fresh_high = baseline.interval[1] if baseline is not None and baseline.interval else fresh
        excess = (copies.interval[0] if copies.interval else copies.value) - fresh_high
        level: Level = "poor" if excess > COPY_MARGIN else "fair" if excess > 0 else "good"
        checks.append(
            Check(
                label,
                f"{copies.value:.1%}",
                f"{fresh:.1%} of {fresh_unit}" if baseline is not None and baseline.value is not None else "0%",
                level,
                f"{copies.value:.1%} of {unit} {what} (fresh real {'texts' if text else 'rows'}: {fresh:.1%})",
            )
        )
    for key, label in (("privacy.dcr_train_share", "DCR train share"), ("privacy.mia_auc", "membership attack AUC")):
        m = report.metrics.get(key)
        if m is None or m.value is None:
            continue
        low = m.interval[0] if m.interval else m.value
        level = "poor" if low > HALF_POOR else "fair" if low > HALF_FAIR else "good"
        checks.append(Check(label, _with_interval(m), "0.5", level, f"{label} is {_with_interval(m)}, above 0.5"))
    nndr, nndr_fresh = report.metrics.get("privacy.nndr_mean"), report.metrics.get("privacy.nndr_baseline")
    if nndr is not None and nndr.value is not None:
        fresh_text = _format(nndr_fresh.value) if nndr_fresh is not None and nndr_fresh.value is not None else "-"
        checks.append(Check("nearest / second-nearest distance", _format(nndr.value), fresh_text, "none"))
    for key, label in _ATTACK_KEYS.items():
        m = report.metrics.get(key)
        if m is None or m.value is None:
            continue
        low = m.interval[0] if m.interval else m.value
        level = "poor" if low > RISK_POOR else "fair" if low > RISK_FAIR else "good"
        checks.append(Check(f"{label} risk", _with_interval(m), "0", level, f"{label} risk is {_with_interval(m)}"))
    canary = report.details.get("privacy", {}).get("canary")
    if canary:
        p_value = min(canary["p_max"], canary["p_mean"])
        level = "poor" if p_value < CANARY_POOR else "fair" if p_value < CANARY_FAIR else "good"
        largest = max(canary["exposures"])
        checks.append(
            Check(
                f"canary exposure ({len(canary['exposures'])} canaries)",
                f"largest {largest:.1f} bits, mean {_format(sum(canary['exposures']) / len(canary['exposures']))}",
                "mean about 1.44 bits",
                level,
                f"canary exposure up to {largest:.1f} bits (p = {p_value:.2g} if nothing was memorised)",
            )
        )
    return checks


def _value(report: Report, key: str) -> float | None:
    m = report.metrics.get(key)
    return None if m is None else m.value


def _with_interval(m: Metric) -> str:
    if m.value is None:
        return "-"
    if m.interval is None:
        return _format(m.value)
    return f"{_format(m.value)} ({_format(m.interval[0])} to {_format(m.interval[1])})"


def _numbers(report: Report, keys: Sequence[str]) -> list[tuple[str, str, str]]:
    labels = {key: label for entries in SUMMARY.values() for key, label in entries}
    return [
        (labels.get(key, key), _with_interval(m), m.definition)
        for key in keys
        if (m := report.metrics.get(key)) is not None and m.value is not None
    ]


# ---- plots ------------------------------------------------------------------------------------------------------


def _png(figure: Figure) -> str:
    """The figure as a data URI, at a resolution where its fonts read at the image's natural size."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
    errors = np.array(
        [[(m.value or 0) - m.interval[0], m.interval[1] - (m.value or 0)] if m.interval else [0, 0] for _, m in shown]
    ).T
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
    errors = np.array(
        [[(m.value or 0) - m.interval[0], m.interval[1] - (m.value or 0)] if m.interval else [0, 0] for _, m in shown]
    ).T
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

# (label, metric key, floor key): each text distance beside what the real holdout scores.
_TEXT_ROWS = {
    "fidelity": [
        ("Frechet distance (embeddings)", "fidelity.frechet_distance", "fidelity.frechet_distance_holdout"),
        ("kernel distance x1000 (embeddings)", "fidelity.kernel_distance", "fidelity.kernel_distance_holdout"),
        ("precision (k-NN manifold)", "fidelity.embedding_precision", "fidelity.embedding_precision_holdout"),
        ("recall (k-NN manifold)", "fidelity.embedding_recall", "fidelity.embedding_recall_holdout"),
        ("detection AUC", "fidelity.detection_auc", ""),
        ("word-count KS distance", "fidelity.length_ks", ""),
    ],
    "diversity": [
        ("near-duplicate texts", "diversity.near_duplicate_rate", "diversity.near_duplicate_rate_holdout"),
        ("distinct word bigrams", "diversity.distinct_bigrams", "diversity.distinct_bigrams_holdout"),
    ],
}


def _text_context(report: Report) -> dict[str, Any]:
    """Tables and plots of a text report (see :mod:`privsynth.evaluate.text`)."""
    fidelity = report.details.get("fidelity", {})
    privacy = report.details.get("privacy", {})
    rows: dict[str, list[tuple[str, Metric, Metric | None]]] = {}
    for section, entries in _TEXT_ROWS.items():
        rows[section] = [
            (label, report.metrics[key], report.metrics.get(floor) if floor else None)
            for label, key, floor in entries
            if key in report.metrics
        ]
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
