"""Binnings: the pandas encoding and the SQL ``CASE`` put every value in the same cell."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from privsynth.data.binning import OUTSIDE, Binning, Categories, NumericBins, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import frame_source, load_source
from privsynth.errors import ParameterError


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS", "all")


def _sql_cells(values: pd.Series, binning: Binning) -> np.ndarray:
    """Cell counts of ``values`` as DuckDB computes them from ``binning.sql``."""
    return frame_source(pd.DataFrame({"v": values})).counts(["v"], [binning])


def _encoded_cells(values: pd.Series, binning: Binning) -> np.ndarray:
    codes = binning.encode(values)
    assert (codes != OUTSIDE).all()
    return np.bincount(codes, minlength=binning.size)


def test_categories_cells_are_listed_then_other_then_null() -> None:
    both = Categories(("f", "m"), other=True, null=True)
    assert (both.size, both.other_index, both.null_index) == (4, 2, 3)
    plain = Categories(("f", "m"))
    assert (plain.size, plain.other_index, plain.null_index) == (2, None, None)
    assert Categories(("f", "m"), null=True).null_index == 2


def test_categories_encode_real_columns_like_numpy(nass: pd.DataFrame) -> None:
    dvcat = Categories(("1-9km/h", "10-24", "25-39"), other=True)
    np.testing.assert_array_equal(_encoded_cells(nass["dvcat"], dvcat), [686, 12848, 8214, 2977 + 1492])
    severity = Categories((0, 1, 2, 3, 4, 5, 6), null=True)
    want = [*(int((nass["injSeverity"] == k).sum()) for k in range(7)), 153]
    np.testing.assert_array_equal(_encoded_cells(nass["injSeverity"], severity), want)


def test_value_outside_a_closed_list_is_outside(nass: pd.DataFrame) -> None:
    codes = Categories(("10-24", "25-39")).encode(nass["dvcat"])
    assert (codes == OUTSIDE).sum() == 686 + 2977 + 1492
    codes = Categories((0, 1, 2, 3, 4, 5, 6)).encode(nass["injSeverity"])
    assert (codes == OUTSIDE).sum() == 153


def test_categories_match_numbers_across_types() -> None:
    values = pd.Series([1.0, 2.0, np.nan, 1.0])
    assert Categories((np.int64(1), 2), null=True).encode(values).tolist() == [0, 1, 2, 0]
    assert Categories((1, 2), other=True).encode(pd.Series([1, 3, 2], dtype="int32")).tolist() == [0, 2, 1]


def test_categories_refuse_repeats_and_missing_values() -> None:
    with pytest.raises(ParameterError, match="repeats a value"):
        Categories((1, 1.0))
    with pytest.raises(ParameterError, match="use null=True"):
        Categories(("a", None))
    with pytest.raises(ParameterError, match="use null=True"):
        Categories((1.0, float("nan")))


def test_binnings_given_lists_are_stored_as_tuples() -> None:
    categories, bins = Categories(["f", "m"]), NumericBins([0, 1, 2])  # type: ignore[arg-type]
    assert categories.values == ("f", "m") and bins.edges == (0, 1, 2)
    assert len({categories, bins}) == 2  # hashable


def test_numeric_bins_are_closed_left_and_clip_at_the_ends() -> None:
    bins = NumericBins((0, 10, 20, 30), null=True)
    values = pd.Series([-5, 0, 9.99, 10, 20, 29, 30, 31, None], dtype="float64")
    assert bins.encode(values).tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 3]
    np.testing.assert_array_equal(_sql_cells(values, bins), [3, 1, 4, 1])
    assert NumericBins((0, 1)).encode(pd.Series([np.nan])).tolist() == [OUTSIDE]


def test_uniform_bins_over_public_bounds(nass: pd.DataFrame) -> None:
    bins = uniform_bins(20, 70, 5)
    assert bins.edges == (20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
    ages = nass["ageOFocc"]
    want = [
        (ages < 30).sum(),
        ((ages >= 30) & (ages < 40)).sum(),
        ((ages >= 40) & (ages < 50)).sum(),
        ((ages >= 50) & (ages < 60)).sum(),
        (ages >= 60).sum(),
    ]
    np.testing.assert_array_equal(_encoded_cells(ages, bins), want)
    np.testing.assert_array_equal(_sql_cells(ages, bins), want)
    assert uniform_bins(1970, 2000, 3, null=True).size == 4


@pytest.mark.parametrize(
    ("low", "high", "bins", "message"),
    [
        (5, 5, 3, "bounds"),
        (6, 5, 3, "bounds"),
        (0, float("nan"), 3, "bounds"),
        (0, float("inf"), 3, "bounds"),
        (0, 1, 0, "positive integer"),
        (0, 1, 2.5, "positive integer"),
    ],
)
def test_uniform_bins_refuse_bad_arguments(low: float, high: float, bins: int, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        uniform_bins(low, high, bins)


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ((1,), "at least two edges"),
        ((0, 2, 1), "increase strictly"),
        ((0, 1, 1), "increase strictly"),
        ((0, float("nan"), 2), "cannot be missing"),
        ((0, datetime.datetime(2020, 1, 1)), "all numbers or all times"),
    ],
)
def test_numeric_bins_refuse_bad_edges(edges: tuple[object, ...], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        NumericBins(edges)


def test_datetime_bins_agree_in_pandas_and_sql() -> None:
    times = pd.Series(
        pd.to_datetime(["1997-03-01", "1999-06-01 11:59", "1999-06-01 12:00", "2003-01-01", None], format="ISO8601")
    )
    for edges in (
        (pd.Timestamp("1998-01-01"), pd.Timestamp("1999-06-01 12:00"), pd.Timestamp("2001-01-01")),
        (np.datetime64("1998-01-01"), np.datetime64("1999-06-01T12:00:00.000000000"), np.datetime64("2001-01-01")),
    ):
        bins = NumericBins(edges, null=True)
        assert bins.encode(times).tolist() == [0, 0, 1, 1, 2]
        np.testing.assert_array_equal(_sql_cells(times, bins), [2, 2, 1])


def test_date_values_and_date_edges() -> None:
    days = pd.Series([datetime.date(1999, 5, 31), datetime.date(1999, 6, 1), None], dtype=object)
    bins = NumericBins((datetime.date(1999, 1, 1), datetime.date(1999, 6, 1), datetime.date(2000, 1, 1)), True)
    assert bins.encode(days).tolist() == [0, 1, 2]
    np.testing.assert_array_equal(_sql_cells(days, bins), [1, 1, 1])


def test_quotes_and_percent_signs_reach_sql_intact() -> None:
    values = pd.Series(["50%", "it's", "%%", "a\\b", None])
    bins = Categories(("50%", "it's", "%%", "a\\b"), null=True)
    assert bins.encode(values).tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(_sql_cells(values, bins), [1, 1, 1, 1, 1])


def test_cells_encoded_in_pandas_add_up_to_the_counts_in_sql(nass: pd.DataFrame) -> None:
    columns = ["dvcat", "injSeverity", "ageOFocc"]
    binnings: list[Binning] = [
        Categories(("10-24", "25-39"), other=True),
        Categories(tuple(range(7)), null=True),
        uniform_bins(16, 97, 9),
    ]
    codes = np.column_stack([b.encode(nass[c]) for c, b in zip(columns, binnings, strict=True)])
    assert codes.shape == (len(nass), 3)
    table = np.zeros((3, 8, 9), dtype=np.int64)
    np.add.at(table, tuple(codes.T), 1)
    np.testing.assert_array_equal(table, frame_source(nass).counts(columns, binnings))


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=6, unique=True).map(sorted),
    values=st.lists(st.one_of(st.floats(-2e6, 2e6, allow_nan=False), st.none()), min_size=1, max_size=40),
)
def test_numeric_bins_agree_in_pandas_and_sql(edges: list[float], values: list[float | None]) -> None:
    bins = NumericBins(tuple(edges), null=True)
    series = pd.Series(values, dtype="float64")
    # values equal to an edge are included: the boundary is where pandas and SQL could disagree
    series = pd.concat([series, pd.Series(edges, dtype="float64")], ignore_index=True)
    np.testing.assert_array_equal(_encoded_cells(series, bins), _sql_cells(series, bins))


def test_dates_held_as_text_are_binned_as_times() -> None:
    frame = pd.DataFrame({"d": ["2020-01-05", "2021-06-01", None, "2019-03-03", "2025-12-31"]})
    edges = (pd.Timestamp("2019-01-01"), pd.Timestamp("2020-06-01"), pd.Timestamp("2022-01-01"))
    counts = frame_source(frame, "t").counts(["d"], [NumericBins(edges, null=True)])
    assert counts.tolist() == [2, 2, 1]  # 2025 is clipped into the last cell; the missing value has its own


def test_many_numeric_bins_render_as_a_shallow_tree() -> None:
    bins = uniform_bins(0.0, 4096.0, 4096)
    frame = pd.DataFrame({"x": np.arange(4096, dtype=float) + 0.5})
    assert (frame_source(frame, "t").counts(["x"], [bins]) == 1).all()
    # one run of equal cells: its cell is computed, not looked up through 4,095 comparisons
    assert str(bins.sql(sa.column("x"))).count("CASE") < 16


def piecewise_edges() -> NumericBins:
    """Edges as the spike search makes them: equal parts (``numpy.linspace``) of a few uneven cells, with
    uneven single cells between, negative and fractional starts, and an integer run."""
    parts = [
        np.linspace(-7.3, -2.1, 2001),
        np.array([-1.0, 0.0]),
        np.linspace(0.1, 45.3, 4001),
        np.array([46.0, 50.0]),
        np.linspace(60.0, 70.0, 11),
        np.linspace(70.0, 70.0 + 1e-3, 2049)[1:],
    ]
    return NumericBins(tuple(np.unique(np.concatenate(parts)).tolist()), null=True)


def adversarial_values(bins: NumericBins, rng: np.random.Generator) -> pd.Series:
    """Every edge, the floats just below and just above each, values spread over and outside the range, and
    missing values: where an arithmetic cell could disagree with a comparison."""
    edges = np.asarray(bins.edges, dtype=float)
    spread = rng.uniform(edges[0] - 5, edges[-1] + 5, 5000)
    values = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), spread])
    return pd.concat([pd.Series(values), pd.Series([None, None], dtype="float64")], ignore_index=True)


def test_runs_of_equal_cells_are_computed_exactly_as_compared() -> None:
    bins = piecewise_edges()
    sql = str(bins.sql(sa.column("x")))
    assert sql.count("CASE") < 120  # the runs' arithmetic, not a tree over 8,000 cells
    values = adversarial_values(bins, np.random.default_rng(0))
    cells = _encoded_cells(values, bins)
    np.testing.assert_array_equal(cells, _sql_cells(values, bins))  # DuckDB
    integers = pd.Series(np.arange(-10, 80), dtype="int64")  # an integer column cast to doubles
    np.testing.assert_array_equal(_encoded_cells(integers, bins), _sql_cells(integers, bins))


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_runs_of_equal_cells_agree_in_sqlalchemy_engines(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'v.sqlite'}" if engine == "sqlite" else request.getfixturevalue("postgres_url")
    bins = piecewise_edges()
    values = adversarial_values(bins, np.random.default_rng(1))
    connection = sa.create_engine(url)
    pd.DataFrame({"x": values}).to_sql("binning_values", connection, index=False, if_exists="replace")
    connection.dispose()
    counts = load_source(url, table="binning_values").counts(["x"], [bins])
    np.testing.assert_array_equal(_encoded_cells(values, bins), counts)
