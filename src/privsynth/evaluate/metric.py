"""A metric as the report holds it: a value with its one-line definition and, where cheap, an interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower", "half"]
"""Which way is good: ``higher``, ``lower``, or ``half`` (0.5 is ideal: a coin flip for the attacker)."""


@dataclass(frozen=True)
class Metric:
    """One number of the report, keyed ``section.name`` (``fidelity.tvd_2way``).

    ``value`` is None when the metric could not be computed (no holdout, no target, a single class); ``note``
    then says why, or carries a detail that depends on the data (the worst column, rows used).
    """

    key: str
    value: float | None
    definition: str
    better: Better
    interval: tuple[float, float] | None = None
    note: str = ""

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "interval": list(self.interval) if self.interval is not None else None,
            "definition": self.definition,
            "better": self.better,
            "note": self.note,
        }


def metric(
    key: str,
    value: float | None,
    definition: str,
    better: Better,
    interval: tuple[float, float] | None = None,
    note: str = "",
) -> Metric:
    """A :class:`Metric` with NaN turned into None (with its interval) and numpy scalars into floats."""
    number = None if value is None or not math.isfinite(float(value)) else float(value)
    return Metric(key, number, definition, better, interval if number is not None else None, note)


@dataclass
class Section:
    """What one part of the evaluation produced: its metrics and the tables and plot data behind them."""

    metrics: list[Metric]
    details: dict[str, Any] = field(default_factory=dict)
