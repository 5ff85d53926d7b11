"""The contract every differentially private method fits under (tabular and text).

One place resolves a DP budget (the default and largest delta, the part of delta set aside for DP key
discovery), opens the ledger and the accountant for a fit, and describes what a fit may publish. The CLI, the
service and the benchmarks ask this module instead of re-deriving any of it.

What a DP release may carry (the release boundary): the synthetic rows, values released through a mechanism,
values the user declared public, and parameters the user chose. :class:`FitRecord` holds exactly that for one
fit, and a release's data card is built from it, never from attributes read off the model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from privsynth.data.schema import Kind, Schema
from privsynth.data.sources import DuckDBSource, Source
from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant, Charge, fit_accountant, open_ledger
from privsynth.privacy.budget import Budget, check_positive, gaussian_sigma
from privsynth.privacy.ledger import Ledger

__all__ = [
    "DEFAULT_DELTA",
    "MAX_DELTA",
    "FitRecord",
    "LedgerArg",
    "dataset_name",
    "detect_kinds",
    "dp_schema",
    "ledger_for",
    "open_fit",
    "resolve_budget",
    "storage_of",
]

logger = logging.getLogger(__name__)

DEFAULT_DELTA: Final = 1e-6
MAX_DELTA: Final = 1e-5
"""Largest delta accepted. Delta must be well below 1/n, but n is private and is not read: 1e-5 keeps
delta < 1/n for tables of up to 100,000 rows; a larger table needs a smaller delta (a warning says so when the
noisy row count shows it)."""

LedgerArg = Ledger | str | os.PathLike[str] | Literal[False] | None
"""Where a DP fit records its spends: a :class:`Ledger`, a SQLAlchemy URL or SQLite path, ``None`` for the
default ledger (``$PRIVSYNTH_LEDGER`` or ``~/.privsynth/ledger.sqlite``), or ``False`` for none (experiments on
public data only: nothing is recorded across fits)."""


def resolve_budget(method: str, epsilon: float | None, delta: float | None, schema: Schema | None = None) -> Budget:
    """The budget of one DP fit of ``method`` at the user's ``epsilon`` and ``delta`` (default
    :data:`DEFAULT_DELTA`, at most :data:`MAX_DELTA`).

    With a ``schema`` that has categorical columns without public categories, part of delta is set aside for
    DP key discovery (:func:`privsynth.synth.domain.discovery_delta`); text methods pass no schema.
    """
    if epsilon is None:
        raise ParameterError(
            f"'{method}' is differentially private and needs a privacy budget: pass epsilon (for example "
            "epsilon=1.0; smaller is more private)"
        )
    epsilon = check_positive("epsilon", epsilon)
    delta = DEFAULT_DELTA if delta is None else check_positive("delta", delta)
    if delta > MAX_DELTA:
        raise ParameterError(
            f"delta={delta:g} is too large: delta must be well below 1/n, and the row count n is private, so "
            f"privsynth accepts at most delta={MAX_DELTA:g} (below 1/n up to 100,000 rows); use delta=1e-6, or "
            "smaller for larger tables"
        )
    approx = 0.0
    if schema is not None:
        from privsynth.synth.domain import discovery_delta

        approx = discovery_delta(schema, delta)
    return Budget.from_epsilon_delta(epsilon, delta, approx_delta=approx)


NO_SCHEMA_NOTE: Final = (
    "no reviewed schema was given: column kinds and types come from the source's storage types (those of a CSV "
    "file or a data frame, guessed from values, are chosen under DP instead, see below), personal data and "
    "identifiers are recognised by column name only, every column has a missing-value cell whose count is noised "
    "like the others, and every domain is learned under DP. Review the structure with `privsynth schema infer DATA "
    "-o schema.yaml`, edit it, and pass --schema schema.yaml"
)
DECLARED_NOTE: Final = (
    "structure from the declared schema; domains not marked public were learned under DP; values that fit no cell "
    "(a missing value in a column declared not nullable, a category outside a public list) are left out of the "
    "noisy counts, and no error reports them"
)


def dp_schema(source: Source, schema: Schema | None) -> tuple[Schema, tuple[str, ...]]:
    """The structure a DP fit may use, and what it assumed, in sentences for the card and the log.

    Only declared structure is used: the ``schema`` given (a reviewed file, a bundled dataset's schema), without
    its domains unless they are marked public, else :meth:`Schema.from_storage` of the source's storage types
    (every column then nullable: data-independent). Value-based detection (``Schema.infer``) is the custodian's
    review tool and never decides a DP fit.
    """
    if schema is None:
        return Schema.from_storage(source.storage_types()), (NO_SCHEMA_NOTE,)
    declared = [
        dataclasses.replace(
            column,
            categories=column.categories if column.public else None,
            bounds=column.bounds if column.public else None,
        )
        for column in schema
    ]
    return Schema(declared, target=schema.target), (DECLARED_NOTE,)


KINDS_SHARE: Final = 0.02
"""Share of a DP fit's rho spent choosing the column kinds of a CSV file or data frame given without a schema."""

KINDS_NOTE: Final = (
    "the data (a CSV file or a data frame) came without a schema: each column's kind (integer, float, datetime or "
    f"categorical) was chosen under DP from noisy counts of its values that parse as numbers, whole numbers and dates "
    f"({KINDS_SHARE:.0%} of rho); values that do not parse as the chosen kind count as missing"
)


def storage_of(schema: Schema) -> dict[str, str]:
    """The storage type each column of a declared schema is read as (a category list of numbers or booleans
    keeps its type, so that public categories match)."""
    out: dict[str, str] = {}
    for column in schema:
        if column.kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME):
            out[column.name] = column.kind.value
        elif column.dtype.lower().startswith(("int", "uint")):
            out[column.name] = "integer"
        elif column.dtype.lower().startswith("float"):
            out[column.name] = "float"
        elif column.dtype.lower().startswith("bool"):
            out[column.name] = "boolean"
        else:
            out[column.name] = "string"
    return out


def detect_kinds(source: DuckDBSource, columns: Sequence[str], accountant: Accountant, rho: float) -> dict[str, str]:
    """Each column's storage type (``integer``, ``float``, ``datetime`` or ``string``) chosen under DP.

    Measures: per column, the counts of non-empty values, of those that do not parse as numbers, of numbers
    that are not whole, and of non-numbers that do not parse as timestamps (:meth:`DuckDBSource.parse_counts`).
    Sensitivity: one record adds at most one to each of the ``4 d`` counts, so the vector's L2 sensitivity is
    ``sqrt(4 d)`` (``k sqrt(4 d)`` for a privacy unit of up to k records). Cost: ``rho`` (one Gaussian
    mechanism). The choice is post-processing of the noisy counts: a
    column is numeric when at most 10% of its non-empty values are not numbers (whole numbers when at most 5% are
    not whole, or no more than noise alone would show), a date when at most 10% are not dates; otherwise
    categorical. Counting failures (zero for a clean column) keeps the decision far from the noise on tables of
    thousands of rows; on small tables, give a schema.
    """
    from privsynth.privacy.mechanisms import gaussian_mechanism

    columns = list(columns)
    counts = source.parse_counts(columns)
    noisy = gaussian_mechanism(
        counts,
        sensitivity=math.sqrt(counts.size),
        rho=rho,
        accountant=accountant,
        purpose=f"column kinds of {len(columns)} columns (values that do not parse as numbers, whole numbers, dates)",
    )
    table: list[list[float]] = np.asarray(noisy, dtype=float).reshape(counts.shape).tolist()
    noise = 3 * gaussian_sigma(rho, accountant.sensitivity(math.sqrt(counts.size)))  # noise alone: 99.9% below
    kinds: dict[str, str] = {}
    for column, (present, not_number, not_whole, not_date) in zip(columns, table, strict=True):
        if present > 0 and not_number <= 0.1 * present:
            # whole numbers unless clearly not: calling whole numbers floats loses their type, not their values
            kinds[column] = "integer" if not_whole <= max(0.05 * present, noise) else "float"
        elif present > 0 and not_date <= 0.1 * present:
            kinds[column] = "datetime"
        else:
            kinds[column] = "string"
    return kinds


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def dataset_name(dataset: str | None, source: Source) -> str:
    """The name a DP fit's budget is kept under: the one declared, else the source's own name (a file's stem,
    a table's name), which the ledger then shows. Renaming or converting a file does not reset its budget when
    the same name is given with ``dataset=`` (``--dataset``)."""
    if dataset is not None:
        if not isinstance(dataset, str) or not dataset.strip():
            raise ParameterError(f"dataset must be a non-empty name, not {dataset!r}")
        return dataset.strip()
    name = source.name
    if "[" in name and name.endswith("]"):  # "URL [table]" or "file.duckdb [table]"
        name = name[name.rindex("[") + 1 : -1]
    elif "://" not in name:
        name = Path(name).name.split(".")[0] or name
    return _UNSAFE_NAME.sub("-", name).strip("-") or "data"


def ledger_for(ledger: LedgerArg) -> Ledger | None:
    """The ledger a DP fit records in: as given, the default one for ``None``, none for ``False``."""
    if ledger is False:
        return None
    if ledger is None:
        return Ledger()
    return open_ledger(ledger)


@contextmanager
def open_fit(
    budget: Budget,
    ledger: LedgerArg,
    dataset: str,
    purpose: str,
    *,
    content: str | None = None,
    contribution_bound: int = 1,
    unit: str = "row",
) -> Iterator[tuple[Accountant, Budget | None]]:
    """The accountant of one DP fit of ``dataset`` (the name its budget is kept under) and the dataset's cap.

    The whole budget is reserved in the ledger first and committed at the end (see
    :func:`privsynth.privacy.accountant.fit_accountant`). ``content`` is an optional content fingerprint of the
    data: the ledger keeps only a keyed hash of it, to warn when the same data comes back under another name.
    ``unit`` and ``contribution_bound`` name the privacy unit (see :class:`~privsynth.privacy.Accountant`).
    """
    with fit_accountant(
        budget,
        ledger_for(ledger),
        dataset,
        purpose=purpose,
        content=content,
        contribution_bound=contribution_bound,
        unit=unit,
    ) as pair:
        yield pair


def _spend(charge: Charge) -> dict[str, Any]:
    """One charge as a card row; the Renyi-order range only where it is limited (DP-SGD)."""
    out: dict[str, Any] = {"mechanism": charge.mechanism, "purpose": charge.purpose, "rho": charge.rho}
    out["delta"] = charge.delta
    if charge.min_order is not None or charge.max_order is not None:
        out["orders"] = [charge.min_order, charge.max_order]
    return out


@dataclass(frozen=True)
class FitRecord:
    """What one fit may publish: a data card's generator and privacy sections are built from this only.

    ``parameters`` are the hyperparameters the user chose; ``spends`` one mapping per mechanism call
    (mechanism, purpose, rho, delta); ``released`` values the fit released through a mechanism that a card may
    show (for example a noisy row count); ``assumptions`` what the fit assumed instead of reading it from the
    data (a schema built from storage types, a missing-value cell in every column), in sentences for the card.
    A non-DP fit has no budget; ``unit`` says whose privacy the budget protects (``row``, or a name such as
    ``person`` given by the user) and ``contribution_bound`` the most rows one unit contributes (k, the user's
    parameter, never read from the data): every mechanism was calibrated to k rows.
    """

    method: str
    differentially_private: bool
    parameters: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None
    spends: tuple[Mapping[str, Any], ...] = ()
    released: Mapping[str, Any] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()
    unit: str = "row"
    contribution_bound: int = 1

    @classmethod
    def of(
        cls,
        method: str,
        parameters: Mapping[str, Any],
        *,
        budget: Budget | None = None,
        accountant: Accountant | None = None,
        dataset: str | None = None,
        released: Mapping[str, Any] | None = None,
        assumptions: tuple[str, ...] = (),
        unit: str = "row",
        contribution_bound: int = 1,
    ) -> FitRecord:
        """The record of a fit: non-DP without a budget, DP with the budget it ran under and its spends."""
        spends: tuple[Mapping[str, Any], ...] = ()
        if accountant is not None:
            spends = tuple(_spend(c) for c in accountant.charges)
        return cls(
            method=method,
            differentially_private=budget is not None,
            parameters=dict(parameters),
            dataset=dataset,
            epsilon=None if budget is None else budget.epsilon,
            delta=None if budget is None else budget.delta,
            rho=None if budget is None else budget.rho,
            spends=spends,
            released=dict(released or {}),
            assumptions=assumptions,
            unit=unit,
            contribution_bound=contribution_bound,
        )

    @property
    def rho_spent(self) -> float:
        return float(sum(float(s.get("rho", 0.0)) for s in self.spends))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "differentially_private": self.differentially_private,
            "parameters": dict(self.parameters),
            "dataset": self.dataset,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "rho_spent": self.rho_spent if self.spends else None,
            "spends": [dict(s) for s in self.spends],
            "released": dict(self.released),
            "assumptions": list(self.assumptions),
            "unit": self.unit,
            "contribution_bound": self.contribution_bound,
        }
