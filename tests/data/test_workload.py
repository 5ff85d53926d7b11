"""Many marginals in one scan (GROUPING SETS): each table equals its own GROUP BY, on DuckDB and PostgreSQL."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.binning import Binning, Categories, NumericBins, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.data.workload import counts_many
from privsynth.errors import DataError, ParameterError

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
