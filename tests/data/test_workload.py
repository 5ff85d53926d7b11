"""Many marginals in one scan (GROUPING SETS): each table equals its own GROUP BY, on DuckDB and PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.binning import Binning, Categories, NumericBins, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.data.workload import counts_many, value_counts_many
from privsynth.errors import DataError, ParameterError
from privsynth.privacy import Accountant, Budget
from privsynth.privacy.mechanisms import seeded_noise
from privsynth.synth.domain import ColumnDomain, learn_domains

DAYS = tuple(pd.Timestamp(t) for t in ("2020-04-01", "2020-06-01", "2020-09-01", "2021-01-01"))


@pytest.fixture(scope="module")
def covid() -> pd.DataFrame:
    df = load_dataset("covid_testing", "all")
    return df.assign(day=pd.Timestamp("2020-04-01") + pd.to_timedelta(df["pan_day"], unit="D"))


BINNINGS: dict[str, Binning] = {
    "result": Categories(("negative", "positive", "invalid")),
    "payor_group": Categories(("commercial", "government", "self pay"), other=True, null=True),
    "clinic_name": Categories(("clinical lab", "emergency dept"), other=True),
    "age": uniform_bins(0, 18, 6),
    "ct_result": uniform_bins(15, 45, 3, null=True),
    "gender": Categories(("female", "male")),
    "day": NumericBins(DAYS),
}
MARGINALS = [*itertools.combinations(BINNINGS, 2), ("gender", "result", "age"), ("age", "gender", "result")]


def _check(source: Source, reference: Source) -> None:
    tables = counts_many(source, MARGINALS, BINNINGS, outside="drop", batch=8)
    for marginal, table in zip(MARGINALS, tables, strict=True):
        expected = reference.counts(list(marginal), [BINNINGS[c] for c in marginal], outside="drop")
        np.testing.assert_array_equal(table, expected, err_msg=str(marginal))


def test_grouping_sets_equal_one_group_by_each_on_duckdb(covid: pd.DataFrame) -> None:
    """23 marginals (pairs, a triple and the same triple in another order) in three batches of at most eight."""
    _check(frame_source(covid), frame_source(covid))


def test_joint_counts_first_give_the_same_tables(covid: pd.DataFrame) -> None:
    """``workload_joint_first`` (Spark's default): the batch's joint counts, then the grouping sets over them."""
    source = frame_source(covid)
    source.workload_joint_first = True
    _check(source, frame_source(covid))


def test_grouping_sets_equal_one_group_by_each_on_postgres(postgres_url: str, covid: pd.DataFrame) -> None:
    engine = sa.create_engine(postgres_url)
    covid.to_sql("covid_workload", engine, index=False, if_exists="replace")
    engine.dispose()
    _check(load_source(postgres_url, table="covid_workload"), frame_source(covid))


def test_a_value_outside_every_cell_is_named_unless_dropped(covid: pd.DataFrame) -> None:
    source = frame_source(covid)
    narrow = {**BINNINGS, "result": Categories(("negative",))}
    with pytest.raises(DataError, match="value\\(s\\) of column 'result'"):
        counts_many(source, [("result", "gender"), ("result", "age")], narrow)
    tables = counts_many(source, [("result", "gender"), ("result", "age")], narrow, outside="drop")
    negative = int((covid["result"] == "negative").sum())
    assert [int(t.sum()) for t in tables] == [negative, negative]


def test_bad_workloads_are_refused(covid: pd.DataFrame) -> None:
    source = frame_source(covid)
    with pytest.raises(ParameterError, match="no binning for column 'sex'"):
        counts_many(source, [("sex", "age")], BINNINGS)
    with pytest.raises(ParameterError, match="names a column twice"):
        counts_many(source, [("age", "age")], BINNINGS)
    with pytest.raises(ParameterError, match="batch"):
        counts_many(source, [("age",)], BINNINGS, batch=0)


# ---- the DP preprocessing in a few scans -------------------------------------------------------------------------


@pytest.mark.parametrize("joint_first", [False, True])
def test_value_counts_of_many_columns_equal_one_group_by_each(covid: pd.DataFrame, joint_first: bool) -> None:
    """Raw-value histograms (DP key discovery's input) of 8 columns in two scans of 4, missing values as None;
    the same with the joint counts first (Spark's way)."""
    source, reference = frame_source(covid), frame_source(covid)
    source.workload_joint_first = joint_first
    columns = ["result", "payor_group", "clinic_name", "age", "ct_result", "gender", "day", "patient_class"]
    found = value_counts_many(source, columns, batch=4)
    assert source.queries == 2
    for column in columns:
        assert _sorted(found[column]) == _sorted(reference.value_counts(column)), column
    assert sum(n for _, n in found["payor_group"]) == len(covid)
    assert (None, int(covid["payor_group"].isna().sum())) in found["payor_group"]


def _sorted(pairs: list[tuple[object, int]]) -> list[tuple[str, int]]:
    return sorted((repr(value), n) for value, n in pairs)


def _learned(source: Source, df: pd.DataFrame, seed: int) -> dict[str, ColumnDomain]:
    schema = Schema.infer(df).synthesized()
    budget = Budget.from_epsilon_delta(10.0, 1e-6, approx_delta=1e-7)
    with seeded_noise(seed):
        return learn_domains(source, schema, Accountant(budget), rho=0.05)


def _same(one: ColumnDomain, two: ColumnDomain) -> bool:
    within = (one.within is None and two.within is None) or (
        one.within is not None
        and two.within is not None
        and all(np.array_equal(a, b) for a, b in zip(one.within, two.within, strict=True))
    )
    grid = (one.grid is None and two.grid is None) or (
        one.grid is not None
        and two.grid is not None
        and one.grid.unit == two.grid.unit
        and np.array_equal(one.grid.shares, two.grid.shares)
    )
    plain = dataclasses.replace(one, within=None, grid=None) == dataclasses.replace(two, within=None, grid=None)
    return within and grid and plain


def _check_preprocessing_scans(df: pd.DataFrame, open_source: Callable[[], Source]) -> None:
    per_column, batched = open_source(), open_source()
    per_column.workload_batch = 1  # one query per column and stage: how the preprocessing read counts before
    one, many = _learned(per_column, df, seed=0), _learned(batched, df, seed=0)
    assert list(one) == list(many)
    assert all(_same(one[c], many[c]) for c in one), [c for c in one if not _same(one[c], many[c])]
    # One query per column and stage (nassCDS: 25, covid_testing: 25-27) against five: key discovery in one scan,
    # then the numeric columns' stages: bounds, bins, spikes (or the bins again), the float columns' recorded grid.
    assert batched.queries == 5 < len(one) + 8 <= per_column.queries, (per_column.queries, batched.queries)


@pytest.mark.parametrize("name", ["nassCDS", "covid_testing"])
def test_dp_preprocessing_reads_all_columns_in_five_scans_on_duckdb(name: str) -> None:
    """The same seeded noise gives the same domains whether counts come one column at a time or in one scan per
    stage: the batching changes how counts are fetched, not the mechanisms or their rho."""
    df = load_dataset(name, "train")
    _check_preprocessing_scans(df, lambda: frame_source(df))


@pytest.mark.parametrize("name", ["nassCDS", "covid_testing"])
def test_dp_preprocessing_reads_all_columns_in_five_scans_on_postgres(postgres_url: str, name: str) -> None:
    df = load_dataset(name, "train")
    engine = sa.create_engine(postgres_url)
    df.to_sql(f"scans_{name.lower()}", engine, index=False, if_exists="replace")
    engine.dispose()
    _check_preprocessing_scans(df, lambda: load_source(postgres_url, table=f"scans_{name.lower()}"))
