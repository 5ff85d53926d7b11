"""Poisson samples (each row kept independently with a rate) drawn by the engine: DuckDB and PostgreSQL
(``random() < rate``), or streamed past a generator seeded by the operating system (other databases, here SQLite);
Spark's is in ``test_spark.py``. DP-SGD's accounting assumes exactly this sampling, so the tests check its
distribution: the size of each sample, and each row's count over many samples (mean and variance of a binomial,
which correlated or repeated draws would break)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.datasets import load_dataset
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.errors import ParameterError

RATE = 0.05
DRAWS = 30


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    """nassCDS with each row's position as ``row`` (to follow rows across samples)."""
    frame = load_dataset("nassCDS", "all")
    return frame.assign(row=np.arange(len(frame)))


def check_poisson(source: Source, frame: pd.DataFrame) -> None:
    n = len(frame)
    hits = np.zeros(n, dtype=np.int64)
    sizes = []
    for _ in range(DRAWS):
        sample = source.poisson_sample(RATE, ["row", "dead", "ageOFocc"])
        assert list(sample.columns) == ["row", "dead", "ageOFocc"]
        rows = sample["row"].to_numpy(dtype=np.int64)
        assert len(np.unique(rows)) == len(rows)  # without replacement
        # the kept rows are the table's rows, values and all
        assert (sample["dead"].to_numpy() == frame["dead"].to_numpy()[rows]).all()
        hits[rows] += 1
        sizes.append(len(rows))
    sd = np.sqrt(n * RATE * (1 - RATE))
    assert all(abs(size - n * RATE) < 5 * sd for size in sizes)
    # each row's count over the draws is Binomial(DRAWS, RATE) (the same sample each time would give 0 or DRAWS)
    mean, var = DRAWS * RATE, DRAWS * RATE * (1 - RATE)
    assert abs(hits.mean() - mean) < 5 * np.sqrt(var / n)
    assert abs(hits.var() / var - 1) < 0.08
    assert abs((hits == 0).mean() - (1 - RATE) ** DRAWS) < 0.02


def test_duckdb_draws_a_poisson_sample(nass: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "nass.parquet"
    nass.to_parquet(path)
    check_poisson(load_source(path), nass)


def test_a_database_without_one_streams_the_rows_past_a_generator(nass: pd.DataFrame, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nass.sqlite'}"
    engine = sa.create_engine(url)
    nass.to_sql("nass", engine, index=False)
    engine.dispose()
    check_poisson(load_source(url, table="nass"), nass)


def test_postgres_draws_a_poisson_sample(postgres_url: str, nass: pd.DataFrame) -> None:
    engine = sa.create_engine(postgres_url)
    nass.to_sql("nass_poisson", engine, index=False, if_exists="replace")
    engine.dispose()
    source = load_source(postgres_url, table="nass_poisson")
    before = source.queries
    check_poisson(source, nass)
    assert source.queries == before + DRAWS  # drawn by the server, one query each


def test_poisson_rate_must_be_a_probability(nass: pd.DataFrame) -> None:
    source = frame_source(nass)
    for rate in (0, 1.5, -0.1, True, "0.1"):
        with pytest.raises(ParameterError, match="rate must be a probability"):
            source.poisson_sample(rate)  # type: ignore[arg-type]
    assert len(source.poisson_sample(1.0)) == len(nass)
