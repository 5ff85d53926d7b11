"""The evaluation report: every metric with its definition, the verdicts read from them, as JSON and a terminal
summary. Labels and number formats come from the catalogue (:mod:`privsynth.evaluate.catalogue`); the HTML page
and :func:`~privsynth.evaluate.html.write_report` live in :mod:`privsynth.evaluate.html`, which imports this module
(never the other way round)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from privsynth.evaluate.catalogue import CATALOGUE, READING, SUMMARY, format_metric, format_number
from privsynth.evaluate.metric import Metric
from privsynth.evaluate.verdicts import Verdict, assess
from privsynth.render import plain

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

    @property
    def verdict(self) -> Verdict:
        """The levels and headline read from the metrics (:mod:`privsynth.evaluate.verdicts`)."""
        return assess(self)

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
        out["verdict"] = self.verdict.to_dict()
        return plain(out)  # type: ignore[no-any-return]

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
        for section, shown in summary_rows(self):
            lines.append(section)
            for label, m in shown:
                if m.value is None:
                    lines.append(f"  {label:<24} -        {m.note}".rstrip())
                    continue
                ends = [format_metric(m.key, end) for end in m.interval] if m.interval else []
                interval = f"({ends[0]} to {ends[1]})" if ends else ""
                value = format_metric(m.key, m.value)
                lines.append(f"  {label:<24} {value:<8} {interval:<18} {READING[m.better]}".rstrip())
        lines.append(self.disclaimer())
        return "\n".join(lines)


def summary_rows(report: Report) -> list[tuple[str, list[tuple[str, Metric]]]]:
    """The report's key numbers by section, as the terminal summary and the HTML page list them: (section title,
    [(label, metric)]), a noise floor indented beneath its metric; sections without any are left out."""
    rows: list[tuple[str, list[tuple[str, Metric]]]] = []
    for section in SECTIONS:
        shown = [
            (f"  {info.aside}" if info.aside else info.label, report.metrics[key])
            for key, info in CATALOGUE.items()
            if key.startswith(f"{section}.") and SUMMARY in info.places and key in report.metrics
        ]
        if shown:
            rows.append((section.capitalize(), shown))
    return rows
