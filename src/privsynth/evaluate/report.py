"""The evaluation report: every metric with its definition, as JSON, a terminal summary, and one HTML file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privsynth.errors import OutputExistsError, ParameterError
from privsynth.evaluate.metric import Metric

REPORT_VERSION = 1
SECTIONS = ("fidelity", "diversity", "utility", "equity", "privacy")
NOT_GUARANTEES = (
    "These are empirical checks of this sample against particular attacks, not guarantees: passing them does "
    "not prove the data private. Only a differential-privacy budget bounds the risk for every attack."
)
REAL_DATA_WARNING = (
    "This report contains statistics of the real data (histograms, correlations, per-group counts): share it "
    "as you would share the real data, not alongside the synthetic release."
)

# The metrics the terminal summary shows, by section: (key, label).
SUMMARY: dict[str, list[tuple[str, str]]] = {
    "fidelity": [
        ("fidelity.column_score", "column score"),
        ("fidelity.tvd_1way", "1-way TVD"),
        ("fidelity.tvd_2way", "2-way TVD"),
        ("fidelity.tvd_3way", "3-way TVD"),
        ("fidelity.correlation_diff", "association difference"),
        ("fidelity.detection_auc", "detection AUC"),
        ("fidelity.frechet_distance", "Frechet distance"),
        ("fidelity.frechet_distance_holdout", "  real holdout"),
        ("fidelity.kernel_distance", "kernel distance x1000"),
        ("fidelity.kernel_distance_holdout", "  real holdout"),
        ("fidelity.embedding_precision", "embedding precision"),
        ("fidelity.embedding_recall", "embedding recall"),
    ],
    "diversity": [
        ("diversity.category_coverage", "category coverage"),
        ("diversity.rare_category_recall", "rare-category recall"),
        ("diversity.quantile_error", "tail quantile error"),
        ("diversity.nn_precision", "k-NN precision"),
        ("diversity.nn_recall", "k-NN recall"),
        ("diversity.near_duplicate_rate", "near-duplicate texts"),
        ("diversity.near_duplicate_rate_holdout", "  real holdout"),
        ("diversity.distinct_bigrams", "distinct bigrams"),
    ],
    "utility": [
        ("utility.tstr", "TSTR"),
        ("utility.trtr", "TRTR"),
        ("utility.importance_agreement", "importance agreement"),
    ],
    "equity": [
        ("equity.tstr_gap", "TSTR worst-group gap"),
        ("equity.trtr_gap", "TRTR worst-group gap"),
        ("equity.tvd_1way_worst", "worst-group 1-way TVD"),
    ],
    "privacy": [
        ("privacy.exact_copy_rate", "exact copy rate"),
        ("privacy.exact_copy_rate_baseline", "  fresh real rows"),
        ("privacy.substring_copy_rate", "word-run copies"),
        ("privacy.substring_copy_rate_baseline", "  fresh real texts"),
        ("privacy.near_copy_rate", "near copies"),
        ("privacy.near_copy_rate_baseline", "  fresh real texts"),
        ("privacy.dcr_train_share", "DCR train share"),
        ("privacy.mia_auc", "membership attack AUC"),
        ("privacy.singling_out_risk", "singling-out risk"),
        ("privacy.linkability_risk", "linkability risk"),
        ("privacy.inference_risk", "inference risk"),
        ("privacy.canary_exposure_max", "largest canary exposure"),
    ],
}
READING = {"higher": "higher is better", "lower": "lower is better", "half": "0.5 is ideal"}


@dataclass
class Report:
    """Every metric of one evaluation (keyed ``section.name``), the tables behind them, and how it was run.

    ``report["fidelity.tvd_2way"]`` is the number (None when it could not be computed);
    ``report.metrics[key]`` the :class:`Metric` with its definition and interval.
    """

    metrics: dict[str, Metric]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float | None:
        try:
            return self.metrics[key].value
        except KeyError:
            raise KeyError(f"the report has no metric '{key}'; it has: {', '.join(self.metrics)}") from None

    def __contains__(self, key: object) -> bool:
        return key in self.metrics

    def values(self) -> dict[str, float | None]:
        """Every metric's value by dotted key."""
        return {key: m.value for key, m in self.metrics.items()}

    @property
    def kind(self) -> str:
        """``table`` for :func:`~privsynth.evaluate.evaluate`, ``text`` for
        :func:`~privsynth.evaluate.text.evaluate_text`."""
        return str(self.meta.get("kind", "table"))

    @property
    def privacy_budget(self) -> dict[str, float] | None:
        budget = self.meta.get("privacy_budget")
        return dict(budget) if budget else None

    def disclaimer(self) -> str:
        """What the numbers do and do not establish, with the DP budget when one was declared."""
        budget = self.privacy_budget
        if budget:
            spent = ", ".join(f"{k}={format_number(v)}" for k, v in budget.items())
            return f"{NOT_GUARANTEES} Differential-privacy budget of this release: {spent}."
        return f"{NOT_GUARANTEES} No differential-privacy budget was given: this release has no formal guarantee."

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: ``{"fidelity": {"tvd_2way": {"value": ..., ...}}, ..., "report": ...}``."""
        out: dict[str, Any] = {
            "report": {
                "version": REPORT_VERSION,
                "note": self.disclaimer(),
                "real_data_warning": REAL_DATA_WARNING,
                **self.meta,
            }
        }
        for section in SECTIONS:
            out[section] = {m.name: m.to_dict() for m in self.metrics.values() if m.section == section}
        out["details"] = self.details
        return _plain(out)  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    def summary(self) -> str:
        """A short plain-text summary for the terminal (also valid rich markup: no square brackets)."""
        meta = self.meta
        unit = "texts" if meta.get("kind") == "text" else "rows"
        head = [f"real {meta.get('real_rows', 0):,} {unit}", f"synthetic {meta.get('synthetic_rows', 0):,}"]
        if meta.get("holdout_rows"):
            head.append(f"holdout {meta['holdout_rows']:,}")
        if meta.get("kind") != "text":
            head.append(f"{len(meta.get('columns', []))} columns")
        for role in ("target", "sensitive"):
            if meta.get(role):
                head.append(f"{role} {meta[role]}")
        lines = ["privsynth evaluation: " + ", ".join(head)]
        for section, keys in SUMMARY.items():
            shown = [(key, label) for key, label in keys if key in self.metrics]
            if not shown:
                continue
            lines.append(section.capitalize())
            for key, label in shown:
                m = self.metrics[key]
                if m.value is None:
                    lines.append(f"  {label:<24} -        {m.note}".rstrip())
                    continue
                interval = f"({format_number(m.interval[0])} to {format_number(m.interval[1])})" if m.interval else ""
                lines.append(f"  {label:<24} {format_number(m.value):<8} {interval:<18} {READING[m.better]}".rstrip())
        lines.append(self.disclaimer())
        return "\n".join(lines)

    def render_html(self) -> str:
        """The report as one self-contained HTML page (plots embedded as PNG, no external resources)."""
        from privsynth.evaluate.html import render

        return render(self)

    def to_html(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write :meth:`render_html` to ``path`` and return it."""
        return _write(Path(path), self.render_html(), overwrite)


def write_report(report: Report, path_html: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.html`` at ``path_html`` and ``report.json`` beside it (same name, ``.json``)."""
    path_html = Path(path_html)
    if path_html.suffix.lower() not in (".html", ".htm"):
        raise ParameterError(f"the report path must end in .html, not '{path_html}'")
    path_json = path_html.with_suffix(".json")
    for path in (path_html, path_json):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"'{path}' exists; choose another path or pass overwrite=True")
    return report.to_html(path_html, overwrite=True), _write(path_json, report.to_json() + "\n", True)


def _write(path: Path, text: str, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"'{path}' exists; choose another path or pass overwrite=True")
    if not path.parent.is_dir():
        raise ParameterError(f"the folder '{path.parent}' does not exist; create it first")
    path.write_text(text, encoding="utf-8")
    return path


def format_number(value: Any) -> str:
    """A short rendering: 3 significant decimals for rates, plain for integers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:g}"
    return f"{value:.3f}" if abs(value) >= 0.001 else f"{value:.2g}"


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
