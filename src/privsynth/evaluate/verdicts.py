"""The report's verdicts: a level (good, fair, poor) per area and per privacy check, and one plain headline.

Fidelity is read from the detection AUC, utility from the share of the real model's gain over chance that the
model trained on synthetic rows keeps, privacy from each empirical check against what fresh real data shows; the
thresholds are the catalogue's (:mod:`privsynth.evaluate.catalogue`). The levels are a reading aid for a person,
not a pass mark. They are computed here, with the report, so the JSON, the card and the service hold the same
verdict the HTML page shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from privsynth.evaluate.catalogue import (
    CANARY,
    COPIES,
    DETECTION,
    HALF,
    RISK,
    UTILITY,
    Level,
    format_metric,
    format_number,
)
from privsynth.evaluate.catalogue import label as metric_label
from privsynth.evaluate.metric import Metric

ORDER: dict[Level, int] = {"none": 0, "good": 1, "fair": 2, "poor": 3}


class Evaluated(Protocol):
    """What a verdict reads: a report's metrics, details and meta (:class:`~privsynth.evaluate.report.Report`)."""

    @property
    def metrics(self) -> Mapping[str, Metric]: ...
    @property
    def details(self) -> Mapping[str, Any]: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...
    @property
    def kind(self) -> str: ...
    @property
    def privacy_budget(self) -> dict[str, float] | None: ...


@dataclass(frozen=True)
class Check:
    """One privacy check: the synthetic value, what fresh real data shows, and a level."""

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


@dataclass(frozen=True)
class Verdict:
    """The whole reading of a report: the headline level and sentence, the four panels, the privacy checks."""

    level: Level
    headline: str
    panels: list[Panel]
    checks: list[Check]

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "headline": self.headline,
            "panels": [{**asdict(p), "numbers": [list(n) for n in p.numbers]} for p in self.panels],
            "checks": [asdict(c) for c in self.checks],
        }


def assess(report: Evaluated) -> Verdict:
    """Every verdict of ``report``."""
    checks = privacy_checks(report)
    panels = summary_panels(report, checks)
    level, sentence = headline(panels)
    return Verdict(level, sentence, panels, checks)


def summary_panels(report: Evaluated, checks: Sequence[Check]) -> list[Panel]:
    """Fidelity, utility, privacy and differential-privacy panels, in that order."""
    return [_fidelity_panel(report), _utility_panel(report), _privacy_panel(report, checks), _budget_panel(report)]


def headline(panels: Sequence[Panel]) -> tuple[Level, str]:
    """The plain verdict over the panels: privacy first, then how close the data is to the real data."""
    fidelity, utility, privacy = panels[0], panels[1], panels[2]
    if privacy.level == "poor":
        return "poor", f"Do not release as it is: {privacy.reasons[0]}."
    if privacy.level == "fair":
        return "fair", f"Review before release: {privacy.reasons[0]}."
    quality = max((fidelity.level, utility.level), key=lambda level: ORDER[level])
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


def _fidelity_panel(report: Evaluated) -> Panel:
    keys = ("fidelity.column_score", "fidelity.tvd_2way", "fidelity.kernel_distance", "fidelity.detection_auc")
    numbers = _numbers(report, keys)
    rows = "texts" if report.kind == "text" else "rows"
    detection = _value(report, "fidelity.detection_auc")
    if detection is None:
        return Panel("Fidelity", "none", "No detection score: too few rows to train the classifier.", numbers)
    auc = format_metric("fidelity.detection_auc", detection)
    if detection < 1 - DETECTION.good:
        # Below chance: the classifier learnt that rows seen in both sets are real, so synthetic rows repeat real
        # ones. The distributions match; whether that is a leak is the privacy panel's question.
        level: Level = "good"
        verdict = (
            f"Matches the real {rows}, many of them exactly: a classifier scores AUC {auc}, far below "
            f"chance, because synthetic {rows} repeat real ones."
        )
    elif (level := DETECTION.level(detection)) == "good":
        verdict = f"Hard to tell from real {rows}: a classifier reaches AUC {auc} (0.5 is chance)."
    elif level == "fair":
        verdict = f"A classifier picks up differences from the real {rows} (AUC {auc}; 0.5 is chance)."
    else:
        verdict = f"A classifier tells synthetic {rows} from real ones easily (AUC {auc})."
    return Panel("Fidelity", level, verdict, numbers)


def _utility_panel(report: Evaluated) -> Panel:
    numbers = _numbers(report, ("utility.tstr", "utility.trtr", "utility.importance_agreement"))
    tstr, trtr = _value(report, "utility.tstr"), _value(report, "utility.trtr")
    if tstr is None or trtr is None:
        note = report.metrics["utility.tstr"].note if "utility.tstr" in report.metrics else ""
        return Panel("Utility", "none", f"Not measured: {note or 'no target column was given'}.", numbers)
    measure = report.details.get("utility", {}).get("measure", "AUC")
    chance = 0.5 if measure == "AUC" else 0.0
    if trtr - chance <= 0.02:
        verdict = f"Real data does not predict the target either ({measure} {format_metric('utility.trtr', trtr)})."
        return Panel("Utility", "none", verdict, numbers)
    kept = (tstr - chance) / (trtr - chance)
    level = UTILITY.level(kept)
    verdict = (
        f"A model trained on synthetic {'texts' if report.kind == 'text' else 'rows'} keeps {max(kept, 0.0):.0%} of "
        "the real model's gain over chance "
        f"({measure} {format_metric('utility.tstr', tstr)} against {format_metric('utility.trtr', trtr)} "
        "on the holdout)."
    )
    return Panel("Utility", level, verdict, numbers)


def _privacy_panel(report: Evaluated, checks: Sequence[Check]) -> Panel:
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
    reasons = [c.reason for c in sorted(flagged, key=lambda c: -ORDER[c.level])]
    level: Level = max((c.level for c in checks), key=lambda lv: ORDER[lv], default="none")
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


def _budget_panel(report: Evaluated) -> Panel:
    budget = report.privacy_budget
    if budget:
        return Panel(
            "Differential privacy",
            "good",
            f"Declared budget {budget_text(report)}: if the generator kept to it, it bounds what any attack can "
            "learn about one person (this report shows the budget, it does not verify it).",
            [(name, format_number(value), "declared privacy budget of the release") for name, value in budget.items()],
            badge="declared",
        )
    return Panel(
        "Differential privacy",
        "none",
        "No budget declared: this release has no formal privacy guarantee, only the empirical checks.",
        [],
        badge="none",
    )


def budget_text(report: Evaluated) -> str:
    budget = report.privacy_budget
    if not budget:
        return ""
    symbols = {"epsilon": "\u03b5", "delta": "\u03b4", "rho": "\u03c1"}
    return ", ".join(f"{symbols.get(name, name)} = {format_number(value)}" for name, value in budget.items())


_ATTACK_KEYS = {
    "privacy.singling_out_risk": "singling out",
    "privacy.linkability_risk": "linkability",
    "privacy.inference_risk": "inference",
}


def privacy_checks(report: Evaluated) -> list[Check]:
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
        level = COPIES.level(excess)
        checks.append(
            Check(
                label,
                format_metric(key, copies.value),
                f"{format_metric(key, fresh)} of {fresh_unit}"
                if baseline is not None and baseline.value is not None
                else format_metric(key, 0.0),
                level,
                f"{format_metric(key, copies.value)} of {unit} {what} "
                f"(fresh real {'texts' if text else 'rows'}: {format_metric(key, fresh)})",
            )
        )
    for key, label in (("privacy.dcr_train_share", "DCR train share"), ("privacy.mia_auc", "membership attack AUC")):
        m = report.metrics.get(key)
        if m is None or m.value is None:
            continue
        low = m.interval[0] if m.interval else m.value
        level = HALF.level(low)
        checks.append(Check(label, _with_interval(m), "0.5", level, f"{label} is {_with_interval(m)}, above 0.5"))
    nndr, nndr_fresh = report.metrics.get("privacy.nndr_mean"), report.metrics.get("privacy.nndr_baseline")
    if nndr is not None and nndr.value is not None:
        fresh_text = format_metric(nndr_fresh.key, nndr_fresh.value) if nndr_fresh is not None else "-"
        checks.append(Check(metric_label(nndr.key), format_metric(nndr.key, nndr.value), fresh_text, "none"))
    for key, label in _ATTACK_KEYS.items():
        m = report.metrics.get(key)
        if m is None or m.value is None:
            continue
        low = m.interval[0] if m.interval else m.value
        level = RISK.level(low)
        checks.append(Check(f"{label} risk", _with_interval(m), "0", level, f"{label} risk is {_with_interval(m)}"))
    canary = report.details.get("privacy", {}).get("canary")
    if canary:
        p_value = min(canary["p_max"], canary["p_mean"])
        level = CANARY.level(p_value)
        exposures = canary["exposures"]
        largest = max(exposures)
        checks.append(
            Check(
                f"canary exposure ({len(canary['exposures'])} canaries)",
                f"largest {format_metric('privacy.canary_exposure_max', largest)} bits, "
                f"mean {format_metric('privacy.canary_exposure_mean', sum(exposures) / len(exposures))}",
                "mean about 1.44 bits",
                level,
                f"canary exposure up to {format_metric('privacy.canary_exposure_max', largest)} bits "
                f"(p = {p_value:.2g} if nothing was memorised)",
            )
        )
    return checks


def _value(report: Evaluated, key: str) -> float | None:
    m = report.metrics.get(key)
    return None if m is None else m.value


def _with_interval(m: Metric) -> str:
    if m.value is None:
        return "-"
    if m.interval is None:
        return format_metric(m.key, m.value)
    low, high = (format_metric(m.key, end) for end in m.interval)
    return f"{format_metric(m.key, m.value)} ({low} to {high})"


def _numbers(report: Evaluated, keys: Sequence[str]) -> list[tuple[str, str, str]]:
    return [
        (metric_label(key), _with_interval(m), m.definition)
        for key in keys
        if (m := report.metrics.get(key)) is not None and m.value is not None
    ]
