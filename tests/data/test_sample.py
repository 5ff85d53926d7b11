"""Uniform samples drawn by the engine (DuckDB reservoir, PostgreSQL TABLESAMPLE) or streamed (the reservoir of
Source.sample for other databases): the size asked, reproducible by seed, and unbiased."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.datasets import load_dataset
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.errors import ParameterError


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS", "all")


def _check_uniform(source: Source, frame: pd.DataFrame, rows: int = 4_000) -> None:
    first, again, other = source.sample(rows, seed=3), source.sample(rows, seed=3), source.sample(rows, seed=4)
    assert len(first) == rows
    assert list(first.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    # Unbiased: the sample's share of deaths and mean age are within 4 standard errors of the table's.
    share = (frame["dead"] == "dead").mean()
    assert abs((first["dead"] == "dead").mean() - share) < 4 * np.sqrt(share * (1 - share) / rows)
    ages = frame["ageOFocc"]
    assert abs(first["ageOFocc"].mean() - ages.mean()) < 4 * ages.std() / np.sqrt(rows)
    # More rows than the table holds: all of them.
    assert len(source.sample(len(frame) + 10, seed=0)) == len(frame)


def test_duckdb_reservoir_sample(nass: pd.DataFrame) -> None:
    _check_uniform(frame_source(nass), nass)


def test_streamed_reservoir_sample_on_sqlite(nass: pd.DataFrame, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nass.sqlite'}"
    engine = sa.create_engine(url)
    nass.to_sql("nass", engine, index=False)
    engine.dispose()
    _check_uniform(load_source(url, table="nass"), nass)


def test_postgres_tablesample(postgres_url: str, nass: pd.DataFrame) -> None:
    engine = sa.create_engine(postgres_url)
    nass.to_sql("nass_sample", engine, index=False, if_exists="replace")
    engine.dispose()
    _check_uniform(load_source(postgres_url, table="nass_sample"), nass)


def test_sample_size_must_be_positive(nass: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="positive integer"):
        frame_source(nass).sample(0)
