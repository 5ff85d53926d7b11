"""Spark sources: the same counts as every other engine, computed by Spark on a local[2] session.

Skipped, with the reason, where pyspark or Java is missing. One Spark session (a JVM) serves the whole file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_sources import QUERIES, _nass

from privsynth.data.binning import Categories, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import frame_source
from privsynth.data.workload import counts_many
from privsynth.errors import SourceError

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'privsynth[spark]'")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java 17+ (Debian: openjdk-17-jre-headless)", allow_module_level=True)

from privsynth.data.spark import SparkSource, spark_session, spark_source  # noqa: E402 (after the skips)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "nassCDS": _nass(),
        "covid_testing": load_dataset("covid_testing", "all"),
        "nafld1": load_dataset("nafld1", "all"),
    }


@pytest.fixture(scope="module")
def parquet(frames: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("spark-parquet")
    out = {}
    for name, frame in frames.items():
        out[name] = folder / f"{name}.parquet"
        frame.to_parquet(out[name])
    return out


def test_spark_counts_equal_duckdb_counts_on_every_test_query(
    spark: Any, frames: dict[str, pd.DataFrame], parquet: dict[str, Path]
) -> None:
    """Category lists with other and null cells, numeric and datetime bins, a column name with quotes and a dot,
    and a category with a quote and a percent sign: Spark's table is DuckDB's, cell for cell."""
    for name, queries in QUERIES.items():
        source = spark_source(parquet[name])
        reference = frame_source(frames[name])
        for columns, binnings in queries:
            expected = reference.counts(columns, binnings, outside="drop")
            got = source.counts(columns, binnings, outside="drop")
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} {columns}")


def test_spark_types_come_from_the_parquet_schema(spark: Any, parquet: dict[str, Path]) -> None:
    source = spark_source(parquet["nassCDS"])
    types = source.storage_types()
    assert source.declares_types is True
    assert types["dvcat"] == "string"
    assert types["ageOFocc"] == "integer"
    assert types["weight"] == "float"
    assert types["accdate"] == "datetime"
    assert source.num_rows() == 26_217


def test_a_csv_read_by_spark_says_its_types_are_guessed(
    spark: Any, frames: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    path = tmp_path / "nafld1.csv"
    frames["nafld1"].to_csv(path, index=False)
    source = spark_source(path)
    assert source.declares_types is False
    assert source.storage_types()["age"] == "integer"
    assert source.num_rows() == len(frames["nafld1"])


def test_catalog_table_query_and_data_frame_sources(
    spark: Any, frames: dict[str, pd.DataFrame], parquet: dict[str, Path]
) -> None:
    frame = spark.read.parquet(str(parquet["nafld1"]))
    frame.createOrReplaceTempView("nafld1_test")
    binnings = [uniform_bins(18, 98, 8), Categories((0, 1))]
    expected = frame_source(frames["nafld1"]).counts(["age", "male"], binnings)
    for source in (
        spark_source("spark:nafld1_test"),
        spark_source(frame, name="nafld1 frame"),
    ):
        assert isinstance(source, SparkSource)
        np.testing.assert_array_equal(source.counts(["age", "male"], binnings), expected)
    older = spark_source(query="SELECT * FROM nafld1_test WHERE age >= 60")
    adults = frames["nafld1"][frames["nafld1"]["age"] >= 60]
    np.testing.assert_array_equal(
        older.counts(["age", "male"], binnings), frame_source(adults).counts(["age", "male"], binnings)
    )


def test_a_workload_is_one_spark_query(spark: Any, frames: dict[str, pd.DataFrame], parquet: dict[str, Path]) -> None:
    """Twelve marginals of covid_testing from one GROUPING SETS scan, each equal to its own GROUP BY."""
    binnings = {
        "result": Categories(("negative", "positive", "invalid")),
        "payor_group": Categories(("commercial", "government", "self pay"), other=True, null=True),
        "age": uniform_bins(0, 18, 6),
        "ct_result": uniform_bins(15, 45, 3, null=True),
        "gender": Categories(("female", "male")),
    }
    names = list(binnings)
    marginals = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] + [("gender", "result", "age")]
    source = spark_source(parquet["covid_testing"])
    before = source.queries
    tables = counts_many(source, marginals, binnings, outside="drop")
    assert source.queries - before == 1
    reference = frame_source(frames["covid_testing"])
    for marginal, table in zip(marginals, tables, strict=True):
        expected = reference.counts(list(marginal), [binnings[c] for c in marginal], outside="drop")
        np.testing.assert_array_equal(table, expected, err_msg=str(marginal))


def test_head_and_chunks_read_rows_from_spark(spark: Any, parquet: dict[str, Path]) -> None:
    source = spark_source(parquet["nafld1"])
    head = source.head(25, columns=["age", "male"])
    assert list(head.columns) == ["age", "male"]
    assert len(head) == 25
    sizes = [len(chunk) for chunk in source.iter_chunks(["age"], chunk_rows=1_000)]
    assert sum(sizes) == source.num_rows()
    assert all(size == 1_000 for size in sizes[:-1])


def test_a_sample_is_drawn_inside_spark(spark: Any, parquet: dict[str, Path]) -> None:
    source = spark_source(parquet["nassCDS"])
    sample = source.sample(2_000, seed=1)
    assert 1_500 <= len(sample) <= 2_000
    assert list(sample.columns) == source.columns


def test_spark_errors_name_what_is_missing(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        spark_source(tmp_path / "absent.parquet")
    with pytest.raises(SourceError, match="no table 'absent_table'"):
        spark_source("spark:absent_table")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(SourceError, match="file type"):
        spark_source(tmp_path / "data.xlsx")


def test_load_source_opens_spark_sources(spark: Any, parquet: dict[str, Path]) -> None:
    """`engine="spark"` for a path, `spark:TABLE` and a pyspark DataFrame all reach Spark through load_source."""
    from privsynth.data.sources import load_source
    from privsynth.errors import ParameterError

    frame = spark.read.parquet(str(parquet["nafld1"]))
    frame.createOrReplaceTempView("nafld1_load")
    opened = [
        load_source(parquet["nafld1"], engine="spark"),
        load_source("spark:nafld1_load"),
        load_source(frame),
        load_source("ignored", engine="spark", table="nafld1_load"),
        load_source(None, engine="spark", query="SELECT * FROM nafld1_load"),
    ]
    assert all(isinstance(source, SparkSource) for source in opened)
    assert len({source.num_rows() for source in opened}) == 1
    with pytest.raises(ParameterError, match="engine must be"):
        load_source(parquet["nafld1"], engine="polars")
    with pytest.raises(ParameterError, match="only applies with engine='spark'"):
        load_source(parquet["nafld1"], spark_master="local[1]")


@pytest.mark.slow  # an MST fit's queries one by one in Spark: 1-10 minutes on two cores
def test_generate_with_the_spark_engine_releases_a_dp_table(
    spark: Any, frames: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """`privsynth generate PATH --engine spark --method mst`: Spark counts, the card names the dataset and spends."""
    import json

    from cli_support import run_cli

    path = tmp_path / "liver.parquet"
    frames["nafld1"][["age", "male", "bmi", "status"]].to_parquet(path)
    out = tmp_path / "synthetic.csv"
    done = run_cli(
        "generate", str(path), "--engine", "spark", "--method", "mst", "--epsilon", "1", "--rows", "300",
        "--ledger", str(tmp_path / "ledger.sqlite"), "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    synthetic = pd.read_csv(out)
    assert len(synthetic) == 300
    assert list(synthetic.columns) == ["age", "male", "bmi", "status"]
    card = json.loads(out.with_name("synthetic.card.json").read_text())
    assert card["source"]["name"] == "liver"
    assert card["privacy"]["epsilon"] == 1.0
    assert "fingerprint_sha256" not in card["source"]


def test_spark_draws_a_poisson_sample(spark: Any) -> None:
    """Spark's ``sample(withReplacement=False)``: each row kept independently with the rate, seeded from the
    operating system (the sampling DP-SGD's accountant assumes; see ``test_poisson_sample.py``)."""
    from test_poisson_sample import check_poisson

    frame = load_dataset("nassCDS", "all")
    frame = frame.assign(row=np.arange(len(frame)))
    source = SparkSource(spark.createDataFrame(frame), "nassCDS", location="frame:test")
    check_poisson(source, frame)


def test_runs_of_equal_cells_are_computed_in_spark_as_compared(spark: Any) -> None:
    """The arithmetic cells of runs of equal-width bins (doubles and integers) agree with ``encode`` in Spark, at
    every edge and the floats either side of it."""
    from test_binning import adversarial_values, piecewise_edges

    bins = piecewise_edges()
    values = adversarial_values(bins, np.random.default_rng(2))
    frame = pd.DataFrame({"x": values, "n": np.resize(np.arange(-10, 80), len(values))})
    source = SparkSource(spark.createDataFrame(frame), "edges", location="frame:test")
    for column in ("x", "n"):
        codes = bins.encode(frame[column])
        np.testing.assert_array_equal(np.bincount(codes, minlength=bins.size), source.counts([column], [bins]))
