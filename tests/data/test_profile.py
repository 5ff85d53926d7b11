"""A schema for a table too large to read: kinds from a uniform sample, domains from aggregates over every row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.datasets import load_dataset
from privsynth.data.profile import infer_source_schema
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, frame_source, load_source


@pytest.fixture(scope="module")
def sorted_nass() -> pd.DataFrame:
    """nassCDS sorted by age (so its first rows are the youngest), with one rare category and one missing age,
    both in the last rows."""
    df = load_dataset("nassCDS", "all").sort_values("ageOFocc", kind="stable").reset_index(drop=True)
    df["dvcat"] = df["dvcat"].astype(object)
    df.loc[len(df) - 3 :, "dvcat"] = "99+"
    df["ageOFocc"] = df["ageOFocc"].astype("Float64")
    df.loc[len(df) - 1, "ageOFocc"] = pd.NA
    return df


def _check_whole_table_domains(source: Source, frame: pd.DataFrame) -> None:
    schema = infer_source_schema(source, rows=2_000)
    age, weight, dvcat = schema["ageOFocc"], schema["weight"], schema["dvcat"]
    assert age.bounds == (int(frame["ageOFocc"].min()), int(frame["ageOFocc"].max()))
    assert age.nullable is True  # the one missing age is in the last row
    assert weight.bounds == pytest.approx((frame["weight"].min(), frame["weight"].max()))
    assert "99+" in (dvcat.categories or [])  # three rows of 26,217: found by the GROUP BY, not the sample
    assert set(dvcat.categories or []) == set(frame["dvcat"].dropna())
    assert dvcat.public is False


def test_a_large_parquet_file_is_profiled_by_sample_and_aggregates(sorted_nass: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "nass.parquet"
    sorted_nass.to_parquet(path)
    source = load_source(path)
    head = Schema.infer(source.head(2_000))
    assert head["ageOFocc"].bounds[1] < 25  # what the first rows would have said
    _check_whole_table_domains(source, sorted_nass)


def test_a_large_postgres_table_is_profiled_in_the_database(postgres_url: str, sorted_nass: pd.DataFrame) -> None:
    engine = sa.create_engine(postgres_url)
    sorted_nass.to_sql("nass_profile", engine, index=False, if_exists="replace")
    engine.dispose()
    _check_whole_table_domains(load_source(postgres_url, table="nass_profile"), sorted_nass)


def test_a_small_table_is_read_whole() -> None:
    frame = load_dataset("nafld1", "all")
    assert infer_source_schema(frame_source(frame), rows=len(frame)) == Schema.infer(frame)
