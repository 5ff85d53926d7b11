"""DP key discovery: which values of a categorical column may be released, by the Gaussian threshold mechanism.

Korolova, Kenthapadi, Mishra and Ntoulas, "Releasing Search Queries and Clicks Privately", WWW 2009; Wilson et
al., "Differentially Private SQL with Bounded User Contribution", PoPETs 2020; Rogers, arXiv:2309.09170 (its
approximate-zCDP analysis).

A value is released only when its noisy count clears a threshold that a value held by one record clears with
probability at most delta. Released values rarer than :data:`MIN_CATEGORY_SHARE` of the released total, or beyond
:data:`MAX_CATEGORIES`, merge into the ``other`` cell, which also holds every value never released. The data are
read only through ``Source.value_counts`` (or one ``GROUPING SETS`` scan for many columns, :func:`key_counts_many`);
the mechanism needs OpenDP (the ``dp`` extra) and is imported only when a column's keys are discovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privsynth.data.binning import Categories, category_key, is_missing
from privsynth.data.schema import Column
from privsynth.data.sources import Source
from privsynth.data.workload import value_counts_many
from privsynth.privacy.accountant import Accountant

__all__ = [
    "MAX_CATEGORIES",
    "MIN_CATEGORY_SHARE",
    "MISSING_KEY",
    "DiscoveredKeys",
    "discover",
    "key_counts",
    "key_counts_many",
    "keys_of",
    "pooled_keys",
    "release_keys",
]

MIN_CATEGORY_SHARE = 0.005
"""Released categories whose noisy count is below this share of the released total merge into ``other``."""

MAX_CATEGORIES = 100
"""At most this many categories keep a cell of their own; the rest merge into ``other``, with a warning."""

MISSING_KEY = "missing"
"""The key of missing values in key discovery; the key of a value is ``"="`` + its repr."""


@dataclass(frozen=True)
class DiscoveredKeys:
    """What key discovery releases for one column: its cells, the values merged into ``other`` with their noisy
    counts (decoding draws the ``other`` cell's values by them), what it cost, and data-quality warnings."""

    binning: Categories
    other_values: tuple[Any, ...]
    other_weights: tuple[float, ...]
    cost: str
    warnings: tuple[str, ...]


def discover(
    source: Source,
    column: Column,
    accountant: Accountant,
    rho: float,
    delta: float,
    min_share: float = MIN_CATEGORY_SHARE,
    max_categories: int = MAX_CATEGORIES,
) -> DiscoveredKeys:
    """Categories released by the Gaussian threshold mechanism; rare ones and the cap's overflow go to ``other``.

    Sensitivity: one record adds one to one key's count (L2 sensitivity 1; the missing cell, when the column is
    nullable, is a key like the others); a privacy unit of up to k records touches up to k keys by up to k each,
    and the mechanism is priced at that (see :func:`~privsynth.privacy.mechanisms.gaussian_threshold_mechanism`).
    Cost: ``rho`` and ``delta``, both spent through ``accountant``.
    """
    table, values = key_counts(source, column)
    released = release_keys(table, column, accountant, rho, delta)
    return keys_of(column, released, values, f"rho={rho:.4g}, delta={delta:.3g}", min_share, max_categories)


def key_counts(source: Source, column: Column) -> tuple[dict[str, int], dict[str, Any]]:
    """The exact count of each key of ``column`` (private: only :func:`release_keys` may read it) and the value
    each key stands for. Missing values are one key when the column is nullable, else not counted."""
    return _keyed(column, source.value_counts(column.name))


def key_counts_many(source: Source, columns: list[Column]) -> dict[str, tuple[dict[str, int], dict[str, Any]]]:
    """:func:`key_counts` of each column, read in one scan (``GROUPING SETS``, in batches of
    ``Source.workload_batch``) instead of one query per column; the same exact counts."""
    found = value_counts_many(source, [column.name for column in columns])
    return {column.name: _keyed(column, found[column.name]) for column in columns}


def _keyed(column: Column, value_counts: list[tuple[Any, int]]) -> tuple[dict[str, int], dict[str, Any]]:
    table: dict[str, int] = {}
    values: dict[str, Any] = {}
    missing = 0
    for value, count in value_counts:
        if is_missing(value):
            missing += count
            continue
        key = "=" + repr(category_key(value))
        table[key] = table.get(key, 0) + count
        values.setdefault(key, value)
    # A DP fit never fails on the data: without a missing cell, missing values are simply not counted.
    if column.nullable:
        table[MISSING_KEY] = missing  # always present: whether the key exists depends on the schema only
    return table, values


def release_keys(
    table: dict[str, int], column: Column, accountant: Accountant, rho: float, delta: float, *, again: bool = False
) -> dict[str, int]:
    """One run of the Gaussian threshold mechanism over the exact key counts ``table``: the released keys with
    their noisy counts. Sensitivity 1 (one record, one key); cost ``rho`` and ``delta``."""
    from privsynth.privacy.mechanisms import gaussian_threshold_mechanism

    what = "DP key discovery, second pass" if again else "DP key discovery"
    return gaussian_threshold_mechanism(
        table, rho=rho, delta=delta, accountant=accountant, purpose=f"domain of '{column.name}': categories ({what})"
    )


def pooled_keys(first: dict[str, int], rho_first: float, second: dict[str, int], rho_second: float) -> dict[str, int]:
    """Two releases of the same key counts as one (post-processing): every key either released, a key released
    twice at the inverse-variance weighted mean of its noisy counts (variance 1 / (2 rho) each)."""
    out = dict(first)
    for key, count in second.items():
        out[key] = (
            round((rho_first * first[key] + rho_second * count) / (rho_first + rho_second)) if key in first else count
        )
    return out


def keys_of(
    column: Column,
    released: dict[str, int],
    values: dict[str, Any],
    spent: str,
    min_share: float = MIN_CATEGORY_SHARE,
    max_categories: int = MAX_CATEGORIES,
) -> DiscoveredKeys:
    """The domain from released keys (post-processing): frequent ones keep a cell, the others go to ``other``."""
    name = column.name
    released = dict(released)
    noisy_missing = released.pop(MISSING_KEY, None)
    ranked = sorted(released.items(), key=lambda item: (-item[1], item[0]))
    total = sum(count for _, count in ranked)
    frequent = [(key, count) for key, count in ranked if count >= min_share * total]
    kept = frequent[:max_categories]
    merged = ranked[len(kept) :]
    warnings: list[str] = []
    if not ranked:
        if noisy_missing is not None and noisy_missing > 0:
            warnings.append(
                f"column '{name}' looks all missing: no value was frequent enough to be released under DP, and "
                f"the noisy count of missing values is about {noisy_missing}; it is kept with a missing cell and "
                "an empty 'other' cell"
            )
        else:
            warnings.append(
                f"column '{name}': no value was frequent enough to be released under DP (threshold in the ledger "
                "row); every row falls in the 'other' cell, which decodes to missing values. Declare its "
                "categories public, or give preprocessing more budget"
            )
    elif len(ranked) == 1:
        warnings.append(f"column '{name}' has a single value after DP key discovery; it is kept as a constant column")
    if len(frequent) > max_categories:
        warnings.append(
            f"column '{name}' has {len(frequent)} released categories above {min_share:.1%} of the rows; only "
            f"the {max_categories} most frequent keep a cell of their own and the other {len(merged)} merge into "
            "'other' (raise max_categories, or group the column)"
        )
    elif merged and (not kept or len(ranked) > max_categories):
        warnings.append(
            f"column '{name}' has {len(ranked)} released categories, {len(merged)} of them rarer than "
            f"{min_share:.1%} of the rows; those share the 'other' cell (decoded by their noisy frequencies), "
            f"{len(kept)} keep a cell of their own. Group the column if its categories matter one by one"
        )
    return DiscoveredKeys(
        Categories(tuple(_sorted([values[key] for key, _ in kept])), other=True, null=column.nullable),
        other_values=tuple(values[key] for key, _ in merged),
        other_weights=tuple(float(count) for _, count in merged),
        cost=(
            f"categories by DP key discovery ({spent}): {len(ranked)} released, "
            f"{len(kept)} kept, {len(merged)} merged into 'other'"
        ),
        warnings=tuple(warnings),
    )


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)
