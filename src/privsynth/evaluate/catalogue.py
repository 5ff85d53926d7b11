"""The metric catalogue: one entry per metric of the report, and the one helper that renders numbers.

Each entry says what the metric is called, which way is good, how its value is written (digits, percent), the
thresholds the report's verdicts read it against, and where it is shown: the report's key numbers
(:data:`SUMMARY`), the data card of a table or of a text release (:data:`CARD`, :data:`TEXT_CARD`), the bench
leaderboard and CSV (:data:`LEADERBOARD`), the bench terminal table (:data:`BENCH_CLI`) and the demo's summary
(:data:`DEMO`). Report, card, leaderboard and CLI read labels and formats from here, so one metric reads the same
everywhere; :func:`format_metric` is how a metric value is written, :func:`format_number` (from
:mod:`privsynth.render`, the one number formatter) any other number.

This module imports nothing from privsynth but :mod:`privsynth.render`: the card renderer and the bench use it
without the evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from privsynth.render import DIGITS as DIGITS
from privsynth.render import format_number as format_number  # the one number formatter, re-exported
from privsynth.render import is_number

Better = Literal["higher", "lower", "half"]
"""Which way is good: ``higher``, ``lower``, or ``half`` (0.5 is ideal: a coin flip for the attacker)."""
Level = Literal["good", "fair", "poor", "none"]
"""A verdict's level; ``none`` when the metric could not be read (no holdout, no target)."""

SUMMARY = "summary"
CARD = "card"
TEXT_CARD = "text card"
LEADERBOARD = "leaderboard"
BENCH_CLI = "bench cli"
DEMO = "demo"
PLACES = (SUMMARY, CARD, TEXT_CARD, LEADERBOARD, BENCH_CLI, DEMO)

READING: dict[Better, str] = {"higher": "higher is better", "lower": "lower is better", "half": "0.5 is ideal"}


@dataclass(frozen=True)
class Thresholds:
    """Where a number turns from good to fair and from fair to poor, and what number is read.

    With ``higher`` the number is good at or above ``good`` and fair at or above ``fair``; otherwise good at or
    below ``good`` and fair at or below ``fair``. Above (below) both it is poor. The verdicts are a reading aid
    for a person, not a pass mark.
    """

    good: float
    fair: float
    reads: str
    higher: bool = False

    def level(self, number: float) -> Level:
        if self.higher:
            return "good" if number >= self.good else "fair" if number >= self.fair else "poor"
        return "good" if number <= self.good else "fair" if number <= self.fair else "poor"


@dataclass(frozen=True)
class MetricInfo:
    """One metric as every output names and writes it.

    ``aside`` is the short label the metric takes when listed beneath the metric it is the noise floor of
    (``real holdout`` under the Frechet distance); ``reference`` the key of that noise floor.
    """

    key: str
    label: str
    better: Better
    places: frozenset[str] = frozenset()
    digits: int = DIGITS
    percent: bool = False
    thresholds: Thresholds | None = None
    reference: str | None = None
    aside: str = ""

    @property
    def reading(self) -> str:
        return READING[self.better]

    def format(self, value: Any) -> str:
        """``value`` written as this metric is written everywhere (``-`` when missing)."""
        if self.percent and is_number(value) and math.isfinite(float(value)):
            share = 100 * float(value)
            small = share != 0 and abs(share) < 10.0**-self.digits
            return f"{share:.2g}%" if small else f"{share:.{self.digits}f}%"
        return format_number(value, self.digits)


def format_metric(key: str, value: Any) -> str:
    """``value`` of the metric ``key`` as the report, card, leaderboard and CLI all write it."""
    info = CATALOGUE.get(key)
    return info.format(value) if info is not None else format_number(value)


def shown_in(place: str) -> tuple[str, ...]:
    """The keys shown in ``place`` (one of :data:`PLACES`), in catalogue order."""
    if place not in PLACES:
        raise ValueError(f"unknown place '{place}'; the places are {', '.join(PLACES)}")
    return tuple(info.key for info in CATALOGUE.values() if place in info.places)


def label(key: str) -> str:
    """The metric's label, or its key when the catalogue does not know it."""
    info = CATALOGUE.get(key)
    return info.label if info is not None else key


# ---- thresholds -------------------------------------------------------------------------------------------------

# Detection AUC (0.5: a classifier cannot tell synthetic rows from real ones). Two real nassCDS samples score 0.50;
# the copula fitted on 3,000 nassCDS rows scores 0.84.
DETECTION = Thresholds(0.6, 0.8, "the detection AUC")
# The share of the real-data model's gain over chance (AUC 0.5, R^2 0) that the model trained on synthetic rows keeps.
UTILITY = Thresholds(0.9, 0.7, "the share of the real model's gain over chance kept", higher=True)
# Privacy checks read the lower end of each 95% interval and need it past a margin: intervals that miss the ideal
# value happen on fresh data too. A second real nassCDS sample of 3,000 rows scored as synthetic gave membership
# AUC 0.521 (0.510 to 0.539), singling-out risk 0.196 (0.058 to 0.334) and inference risk 0.199 (0.008 to 0.390);
# a copy of the training rows gives 1, 0.985 and 0.991. DCR train share and membership AUC (0.5 for fresh data):
HALF = Thresholds(0.55, 0.65, "the lower end of the 95% interval")
# attack risks (0 for fresh data):
RISK = Thresholds(0.1, 0.3, "the lower end of the 95% interval")
# copies: how far the lower end of the rate's interval lies above the upper end of fresh real rows' interval:
COPIES = Thresholds(0.0, 0.01, "the excess over fresh real data (lower end over its upper end)")
# canaries: the p-value of the exposures if nothing was memorised (exposure exponential with rate ln 2):
CANARY = Thresholds(0.05, 0.001, "the p-value of the exposures if nothing was memorised", higher=True)

# ---- the entries ------------------------------------------------------------------------------------------------

_S, _C, _T, _L, _B, _D = SUMMARY, CARD, TEXT_CARD, LEADERBOARD, BENCH_CLI, DEMO


def _entries() -> Iterator[MetricInfo]:
    def m(key: str, label: str, better: Better, *places: str, **kw: Any) -> MetricInfo:
        return MetricInfo(key, label, better, frozenset(places), **kw)

    yield m("fidelity.column_score", "column score", "higher", _S, _C)
    yield m("fidelity.tvd_1way", "1-way TVD", "lower", _S, _C, _L)
    yield m("fidelity.tvd_2way", "2-way TVD", "lower", _S, _C, _L, _D)
    yield m("fidelity.tvd_3way", "3-way TVD", "lower", _S, _C, _L, _B)
    yield m("fidelity.correlation_diff", "association difference", "lower", _S, _C, _L)
    yield m("fidelity.detection_auc", "detection AUC", "half", _S, _C, _T, _L, _B, _D, thresholds=DETECTION)
    fd, kd = "fidelity.frechet_distance", "fidelity.kernel_distance"
    yield m(fd, "Frechet distance", "lower", _S, _T, reference=f"{fd}_holdout")
    yield m(f"{fd}_holdout", "Frechet distance, real holdout", "lower", _S, _T, aside="real holdout")
    yield m(kd, "kernel distance x1000", "lower", _S, reference=f"{kd}_holdout")
    yield m(f"{kd}_holdout", "kernel distance x1000, real holdout", "lower", _S, aside="real holdout")
    for name in ("precision", "recall"):
        key = f"fidelity.embedding_{name}"
        yield m(key, f"embedding {name}", "higher", _S, _T, reference=f"{key}_holdout")
        yield m(f"{key}_holdout", f"embedding {name}, real holdout", "higher", aside="real holdout")
    yield m("fidelity.length_ks", "word-count KS distance", "lower")

    yield m("diversity.category_coverage", "category coverage", "higher", _S, _C, _L)
    yield m("diversity.range_coverage", "range coverage", "higher")
    yield m("diversity.rare_category_recall", "rare-category recall", "higher", _S, _C)
    yield m("diversity.quantile_error", "tail quantile error", "lower", _S, _C)
    yield m("diversity.nn_precision", "k-NN precision", "higher", _S)
    yield m("diversity.nn_recall", "k-NN recall", "higher", _S, _L)
    dup, bigrams = "diversity.near_duplicate_rate", "diversity.distinct_bigrams"
    yield m(dup, "near-duplicate texts", "lower", _S, _T, reference=f"{dup}_holdout")
    yield m(f"{dup}_holdout", "near-duplicate texts, real holdout", "lower", _S, aside="real holdout")
    yield m(bigrams, "distinct bigrams", "higher", _S, reference=f"{bigrams}_holdout")
    yield m(f"{bigrams}_holdout", "distinct bigrams, real holdout", "higher", aside="real holdout")

    yield m("utility.tstr", "TSTR", "higher", _S, _C, _T, _L, _B, _D, thresholds=UTILITY)
    yield m("utility.trtr", "TRTR", "higher", _S, _C, _T, _L, _D)
    yield m("utility.tstr_accuracy", "TSTR accuracy", "higher")
    yield m("utility.trtr_accuracy", "TRTR accuracy", "higher")
    yield m("utility.importance_agreement", "importance agreement", "higher", _S)

    yield m("equity.representation_tvd", "group representation TVD", "lower")
    yield m("equity.tstr_gap", "TSTR worst-group gap", "lower", _S, _C)
    yield m("equity.trtr_gap", "TRTR worst-group gap", "lower", _S)
    yield m("equity.gap_excess", "worst-group gap excess", "lower")
    yield m("equity.tvd_1way_worst", "worst-group 1-way TVD", "lower", _S, reference="equity.tvd_1way_worst_baseline")
    yield m("equity.tvd_1way_worst_baseline", "worst-group 1-way TVD, real holdout", "lower", aside="real holdout")

    for name, label, unit, places in (
        ("exact_copy_rate", "exact copy rate", "rows", (_S, _C, _T, _L)),
        ("substring_copy_rate", "word-run copies", "texts", (_S,)),
        ("near_copy_rate", "near copies", "texts", (_S, _T)),
    ):
        key = f"privacy.{name}"
        yield m(key, label, "lower", *places, digits=1, percent=True, thresholds=COPIES, reference=f"{key}_baseline")
        yield m(
            f"{key}_baseline",
            f"{label}, fresh real {unit}",
            "lower",
            *((_S, _T) if name == "near_copy_rate" else (_S,)),
            digits=1,
            percent=True,
            aside=f"fresh real {unit}",
        )
    yield m("privacy.dcr_train_share", "DCR train share", "half", _S, _C, _L, _D, thresholds=HALF)
    yield m("privacy.nndr_mean", "nearest / second-nearest distance", "higher", reference="privacy.nndr_baseline")
    yield m("privacy.nndr_baseline", "nearest / second-nearest distance, real holdout", "higher", aside="real holdout")
    yield m("privacy.mia_auc", "membership attack AUC", "half", _S, _C, _T, _L, _D, thresholds=HALF)
    yield m("privacy.singling_out_risk", "singling-out risk", "lower", _S, _C, thresholds=RISK)
    yield m("privacy.linkability_risk", "linkability risk", "lower", _S, _C, thresholds=RISK)
    yield m("privacy.inference_risk", "inference risk", "lower", _S, _C, thresholds=RISK)
    yield m("privacy.canary_exposure_max", "largest canary exposure", "lower", _S, _T, digits=1, thresholds=CANARY)
    yield m("privacy.canary_exposure_mean", "mean canary exposure", "lower", digits=1)


CATALOGUE: dict[str, MetricInfo] = {info.key: info for info in _entries()}
