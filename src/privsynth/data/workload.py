"""Many contingency tables in one scan: ``GROUPING SETS``.

MST and AIM need the counts of many marginals of the same binned columns (AIM: every marginal of its workload).
One ``GROUP BY`` per marginal reads the table once per marginal; on a warehouse table that is the whole cost. Here
every column is binned once in a subquery, and one ``GROUP BY GROUPING SETS ((a, b), (b, c), ...)`` returns the
cells of all the marginals together, each row tagged by ``GROUPING(column)`` flags that say which marginal it
belongs to. DuckDB, PostgreSQL and Spark all run it in one pass over the rows; the sets go in batches of
:attr:`Source.workload_batch` so no engine's limit on grouping sets (PostgreSQL: 4,096) or on the rows Spark's
``Expand`` makes per input row is reached.

Each table equals what :meth:`Source.counts` gives for the same columns and binnings (the tests check it).
:func:`value_counts_many` does the same for :meth:`Source.value_counts` (DP key discovery's histograms of raw
values): one grouping set per column, so a fit's preprocessing reads every categorical column in one scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from privsynth.data.binning import OUTSIDE, Binning
from privsynth.data.source_base import Source, unplaced_error
from privsynth.errors import DataError, ParameterError


def counts_many(
    source: Source,
    marginals: Sequence[Sequence[str]],
    binnings: Mapping[str, Binning],
    *,
    outside: str = "error",
    batch: int | None = None,
) -> list[np.ndarray]:
    """The contingency table of each marginal in ``marginals`` (as :meth:`Source.counts` would give it), from
    ``ceil(len / batch)`` queries instead of one per marginal.

    ``binnings`` gives each column's binning (one per column across the marginals, as in a synthesizer's domain).
    ``outside`` is as for :meth:`Source.counts`: ``"drop"`` leaves out, per marginal, the rows with a value that
    fits no cell of that marginal's columns. ``batch`` marginals go in one query (default: the engine's
    ``workload_batch``).
    """
    if outside not in ("error", "drop"):
        raise ParameterError(f"outside must be 'error' or 'drop', not {outside!r}")
    batch = _checked_batch(source, batch)
    wanted = [tuple(m) for m in marginals]
    for marginal in wanted:
        if not marginal:
            raise ParameterError("a marginal needs at least one column")
        if len(set(marginal)) != len(marginal):
            raise ParameterError(f"marginal {list(marginal)} names a column twice")
        absent = [c for c in marginal if c not in binnings]
        if absent:
            raise ParameterError(f"counts has no binning for column '{absent[0]}'")
    source._check_columns(sorted({c for m in wanted for c in m}))
    # One query per distinct column set; a marginal in another order is a transpose of it.
    distinct: dict[frozenset[str], tuple[str, ...]] = {}
    for marginal in wanted:
        distinct.setdefault(frozenset(marginal), marginal)
    sets = list(distinct.values())
    tables: dict[frozenset[str], np.ndarray] = {}
    for start in range(0, len(sets), batch):
        tables.update(_one_scan(source, sets[start : start + batch], binnings, outside))
    out = []
    for marginal in wanted:
        home = distinct[frozenset(marginal)]
        table = tables[frozenset(marginal)]
        out.append(table if home == marginal else np.transpose(table, [home.index(c) for c in marginal]))
    return out


def value_counts_many(
    source: Source, columns: Sequence[str], *, batch: int | None = None
) -> dict[str, list[tuple[Any, int]]]:
    """:meth:`Source.value_counts` of each of ``columns`` (rows per distinct raw value, missing values as None),
    from ``ceil(len / batch)`` queries of ``GROUPING SETS ((a), (b), ...)`` instead of one per column.

    The counts are private like those of :meth:`Source.value_counts`: only a DP mechanism may read them.
    """
    batch = _checked_batch(source, batch)
    names = list(dict.fromkeys(columns))
    source._check_columns(names)
    out: dict[str, list[tuple[Any, int]]] = {}
    for start in range(0, len(names), batch):
        part = names[start : start + batch]
        if len(part) == 1:
            out[part[0]] = source.value_counts(part[0])
            continue
        relation = source._relation()
        label = {c: f"c{i}" for i, c in enumerate(part)}
        inner = sa.select(*(relation.c[c].label(label[c]) for c in part)).select_from(relation).subquery("raw")
        inner, count = _joint_first(source, inner)
        cells = [inner.c[label[c]] for c in part]
        flags = [sa.func.grouping(cell).label(f"g{i}") for i, cell in enumerate(cells)]
        grouping_sets = sa.func.grouping_sets(*(sa.tuple_(cell) for cell in cells))
        query = sa.select(*cells, *flags, count.label("n")).select_from(inner).group_by(grouping_sets)
        found: dict[str, list[tuple[Any, int]]] = {c: [] for c in part}
        k = len(part)
        for row in source._run_counts(query):
            grouped = [i for i, v in enumerate(row[k : 2 * k]) if not int(v)]
            if len(grouped) != 1:
                raise DataError(f"{source.name} returned a grouping set that was not asked for ({row[k : 2 * k]})")
            i = grouped[0]
            found[part[i]].append((row[i], int(row[-1])))
        out.update(found)
    return {c: out[c] for c in names}


def _checked_batch(source: Source, batch: int | None) -> int:
    batch = source.workload_batch if batch is None else batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ParameterError(f"batch must be a positive integer, not {batch!r}")
    return batch


def _joint_first(source: Source, inner: sa.Subquery) -> tuple[sa.Subquery, Any]:
    """The relation a batch's grouping sets read and the count they take: ``inner`` and ``count(*)``, or, where
    the engine copies every row once per grouping set (:attr:`Source.workload_joint_first`: Spark), the joint
    counts of ``inner``'s columns (one GROUP BY over the rows) and the sum of those counts, so that the copies
    are of the joint's cells, at most as many as the rows and usually far fewer."""
    if not source.workload_joint_first:
        return inner, sa.func.count()
    joint = sa.select(*inner.c, sa.func.count().label("n")).select_from(inner).group_by(*inner.c).subquery("joint")
    return joint, sa.func.sum(joint.c["n"])


def _one_scan(
    source: Source, sets: list[tuple[str, ...]], binnings: Mapping[str, Binning], outside: str
) -> dict[frozenset[str], np.ndarray]:
    if len(sets) == 1:  # one marginal: the plain GROUP BY (no grouping flags to read)
        marginal = sets[0]
        table = source.counts(list(marginal), [binnings[c] for c in marginal], outside=outside)
        return {frozenset(marginal): table}
    columns = sorted({c for s in sets for c in s}, key=lambda c: source.columns.index(c))
    relation = source._relation()
    label = {c: f"c{i}" for i, c in enumerate(columns)}
    binned = sa.select(*(binnings[c].sql(relation.c[c]).label(label[c]) for c in columns)).select_from(relation)
    inner, count = _joint_first(source, binned.subquery("binned"))
    cells = [inner.c[label[c]] for c in columns]
    flags = [sa.func.grouping(cell).label(f"g{i}") for i, cell in enumerate(cells)]
    grouping_sets = sa.func.grouping_sets(*(sa.tuple_(*(inner.c[label[c]] for c in s)) for s in sets))
    query = sa.select(*cells, *flags, count.label("n")).select_from(inner).group_by(grouping_sets)
    shapes = {frozenset(s): tuple(binnings[c].size for c in s) for s in sets}
    out = {key: np.zeros(shape, dtype=np.int64) for key, shape in shapes.items()}
    by_flags = {tuple(c not in s for c in columns): s for s in sets}
    unplaced: dict[tuple[str, ...], dict[str, int]] = {s: dict.fromkeys(s, 0) for s in sets}
    k = len(columns)
    for row in source._run_counts(query):
        grouped = tuple(bool(int(v)) for v in row[k : 2 * k])
        found = by_flags.get(grouped)
        if found is None:
            raise DataError(f"{source.name} returned a grouping set that was not asked for ({grouped})")
        marginal = found
        values = dict(zip(columns, row[:k], strict=True))
        index = tuple(int(values[c]) for c in marginal)
        n = int(row[-1])
        if OUTSIDE in index:
            for column, cell in zip(marginal, index, strict=True):
                if cell == OUTSIDE:
                    unplaced[marginal][column] += n
            continue
        out[frozenset(marginal)][index] += n
    if outside == "error":
        bad = sorted({f"{n} value(s) of column '{c}'" for s in sets for c, n in unplaced[s].items() if n})
        if bad:
            raise unplaced_error(bad)
    return out
