"""A CSV file read by Spark under DP: refused before anything is recorded, with what to do instead.

Spark guesses a CSV file's column types from its values, and only DuckDB can re-read a file through column kinds
chosen under DP; a DP fit of such a source without a schema would take its structure from the data. Skipped, with
the reason, where pyspark or Java is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from privsynth.data.datasets import load_dataset
from privsynth.errors import ParameterError
from privsynth.privacy.ledger import Ledger
from privsynth.synth.marginal import MST

pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'privsynth[spark]'")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java 17+ (Debian: openjdk-17-jre-headless)", allow_module_level=True)

from privsynth.data.spark import spark_session, spark_source


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.mark.slow  # a JVM of its own: 20 s on a quiet machine, 3 min under load 20
def test_a_dp_fit_of_a_csv_read_by_spark_without_a_schema_is_refused_before_the_ledger(
    spark: Any, tmp_path: Path
) -> None:
    path = tmp_path / "nafld1.csv"
    load_dataset("nafld1", "all").head(500).to_csv(path, index=False)
    source = spark_source(path)
    assert source.declares_types is False
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(ParameterError, match=r"schema infer FILE.*Parquet.*--engine duckdb") as refused:
        MST().fit(source, epsilon=1.0, ledger=ledger)
    assert "'nafld1' is read without declared column types" in str(refused.value)
    assert ledger.entries() == [] and ledger.datasets() == []
    assert source.queries == 0  # nothing was read: no count, no kinds
