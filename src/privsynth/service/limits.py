"""What an analyst's job may ask for: the parameters each method accepts from an analyst, their bounds, and the
limits on rows, seeds, conditions, jobs in flight and the share of a dataset's budget.

The analyst is the service's adversary: a job's parameters decide how long a worker runs and how much memory it
takes (``iters=10**9`` kept the only worker busy for days), and a condition on a column checks values against
its domain. So an analyst may set only the parameters listed here, inside their bounds, and condition only on
columns whose domain the custodian declared public. Custodians and admins are trusted with their own data and
are held only by the job's wall-clock and memory limits (see :mod:`privsynth.service.jobs`).

Every refusal is a :class:`~privsynth.errors.ParameterError` that names the parameter or column and the bound,
never a value of the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.synth.domain import NUMERIC_BINS

__all__ = [
    "ANALYST_MAX_ROWS",
    "ANALYST_PARAMS",
    "DEFAULT_ANALYST_SHARE",
    "MAX_ACTIVE_JOBS",
    "MAX_SEED",
    "Bound",
    "check_analyst_conditions",
    "check_analyst_params",
    "check_public_conditions",
    "default_share",
]

ANALYST_MAX_ROWS: Final = 1_000_000
"""Rows an analyst's job may ask for (custodians: the service's ``MAX_ROWS``)."""

MAX_SEED: Final = 2**63 - 1
"""Seeds are 0 to 2**63 - 1: what the job table stores and every sampler accepts."""

DEFAULT_ANALYST_SHARE: Final = 0.25
"""The share of a dataset's cap (in rho, how spends compose) an analyst's jobs may use together when the
custodian granted access without saying; custodians and admins may use the whole cap."""

MAX_ACTIVE_JOBS: Final = {"analyst": 2, "custodian": 10, "admin": 10}
"""Jobs one user may have queued or running at once, by the user's role on the service."""

MAX_WORKLOAD: Final = 64
"""Marginals an analyst's AIM workload may list (each of one to three columns)."""


@dataclass(frozen=True)
class Bound:
    """One parameter an analyst may set: its type (``int``, ``float``, ``bool``, ``choice``, ``column``,
    ``workload``) and its bounds (inclusive; ``low_open`` when the lower bound itself is excluded)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "column":
            return "a column name"
        if self.kind == "workload":
            return f"a list of at most {MAX_WORKLOAD} lists of 1 to 3 column names"
        kind = "a whole number" if self.kind == "int" else "a number"
        low = f"above {self.low:g}" if self.low_open else f"from {self.low:g}"
        return f"{kind} {low} to {self.high:g}"


_MARGINAL: Final = {
    "bins": Bound("int", 2, 64),
    "iters": Bound("int", 1, 3000),
    "preprocessing_share": Bound("float", 0, 0.5, low_open=True),
    "numeric_bins": Bound("choice", choices=tuple(NUMERIC_BINS)),
}
ANALYST_PARAMS: Final[Mapping[str, Mapping[str, Bound]]] = {
    "mst": _MARGINAL,
    "aim": {
        **_MARGINAL,
        "rounds": Bound("int", 1, 200),
        "max_minutes": Bound("float", 0, 30, low_open=True),
        "max_model_size": Bound("float", 0, 80, low_open=True),
        "workload": Bound("workload"),
        "target": Bound("column"),
        "target_weight": Bound("float", 0, 100, low_open=True),
        "compress": Bound("bool"),
    },
    "privbayes": {
        **_MARGINAL,
        "degree": Bound("int", 1, 4),
        "theta": Bound("float", 0, 20, low_open=True),
        "selection_share": Bound("float", 0, 0.9, low_open=True),
        "max_candidates": Bound("int", 1, 2000),
    },
    "dp-deep": {
        "bins": Bound("int", 2, 64),
        "hidden": Bound("int", 8, 256),
        "depth": Bound("int", 1, 4),
        "epochs": Bound("int", 1, 50),
        "batch_size": Bound("int", 16, 4096),
        "learning_rate": Bound("float", 0, 1, low_open=True),
        "max_grad_norm": Bound("float", 0, 10, low_open=True),
        "preprocessing": Bound("float", 0, 0.5, low_open=True),
    },
}
"""Per DP method, the parameters an analyst may set and their bounds; anything else is refused."""


def default_share(role: str) -> float:
    """The share of the cap a grant in ``role`` carries when the custodian gave none."""
    return DEFAULT_ANALYST_SHARE if role == "analyst" else 1.0


def check_analyst_params(method: str, params: Mapping[str, Any], schema: Schema) -> None:
    """Refuse a parameter an analyst may not set for ``method``, or a value outside its bounds."""
    allowed = ANALYST_PARAMS.get(method, {})
    for name, value in params.items():
        bound = allowed.get(name)
        if bound is None:
            listed = ", ".join(sorted(allowed)) or "none"
            raise ParameterError(
                f"analysts cannot set the parameter {name!r} of {method}; the parameters an analyst may set are: "
                f"{listed}"
            )
        if not _within(bound, value, schema):
            raise ParameterError(f"parameter {name!r} of {method} must be {bound.describe()}, not {value!r}")


def _within(bound: Bound, value: Any, schema: Schema) -> bool:
    if bound.kind == "bool":
        return isinstance(value, bool)
    if bound.kind == "choice":
        return value in bound.choices
    if bound.kind == "column":
        return isinstance(value, str) and value in schema
    if bound.kind == "workload":
        return (
            isinstance(value, list)
            and 0 < len(value) <= MAX_WORKLOAD
            and all(
                isinstance(clique, list)
                and 1 <= len(clique) <= 3
                and all(isinstance(c, str) and c in schema for c in clique)
                for clique in value
            )
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if bound.kind == "int" and not isinstance(value, int):
        return False
    number = float(value)
    assert bound.low is not None and bound.high is not None
    above = number > bound.low if bound.low_open else number >= bound.low
    return math.isfinite(number) and above and number <= bound.high


def check_analyst_conditions(conditions: Mapping[str, Any], schema: Schema) -> None:
    """Refuse a condition on a column whose domain is not public: checking a value against a private domain
    (its categories, its bounds) answers whether the value occurs in the data. The message names the column,
    never a value of its domain."""
    for column in conditions:
        if column in schema and not schema[column].public:
            raise ParameterError(
                f"conditions on {column!r} are not allowed: its domain is private (learned from the data), so "
                "a condition on it would tell which values occur; ask the dataset's custodian to declare its "
                "domain public, or drop the condition"
            )


def check_public_conditions(conditions: Mapping[str, Any], schema: Schema) -> None:
    """Refuse, before any budget is reserved, a condition outside a public domain (which anyone may be told):
    a value that is not one of a public column's categories, or outside its public bounds."""
    for name, value in conditions.items():
        if name not in schema or not schema[name].public:
            continue
        column = schema[name]
        if column.categories is not None and str(value) not in {str(c) for c in column.categories}:
            shown = ", ".join(str(c) for c in column.categories[:20])
            raise ParameterError(f"condition {name}={value!r} is not one of the column's public categories ({shown})")
        if column.bounds is not None and isinstance(value, int | float) and not isinstance(value, bool):
            low, high = column.bounds
            if not float(low) <= float(value) <= float(high):
                raise ParameterError(
                    f"condition {name}={value!r} is outside the column's public bounds {low} to {high}"
                )
