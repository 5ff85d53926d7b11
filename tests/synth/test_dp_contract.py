"""The DP contract (privsynth.synth.dp): one budget resolver, declared structure only, names for budgets."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import privsynth as ps
from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Kind, Schema
from privsynth.data.sources import load_source
from privsynth.errors import ParameterError
from privsynth.privacy import Accountant, Budget, Ledger
from privsynth.synth.dp import (
    DEFAULT_DELTA,
    KINDS_SHARE,
    FitRecord,
    dataset_name,
    detect_kinds,
    dp_schema,
    resolve_budget,
)
from privsynth.synth.marginal import MST


def test_resolve_budget_defaults_delta_and_sets_aside_discovery_delta() -> None:
    nass = load_dataset("nassCDS")
    budget = resolve_budget("mst", 1.0, None, Schema.infer(nass))
    assert budget.delta == DEFAULT_DELTA and budget.approx_delta == pytest.approx(0.1 * DEFAULT_DELTA)
    assert budget.rho == pytest.approx(0.02413, abs=1e-5)  # epsilon 1 at delta 0.9e-6 (published 0.02436 at 1e-6)
    assert resolve_budget("pe", 1.0, None).rho == pytest.approx(0.02436, abs=1e-5)  # no schema: no discovery
    with pytest.raises(ParameterError, match="needs a privacy budget"):
        resolve_budget("mst", None, None)
    with pytest.raises(ParameterError, match="too large"):
        resolve_budget("mst", 1.0, 1e-3)


def test_dp_schema_keeps_declared_structure_and_only_public_domains() -> None:
    nass = load_dataset("nassCDS")
    inferred = Schema.infer(nass)
    declared, notes = dp_schema(load_source(nass), inferred)
    assert [c.kind for c in declared] == [c.kind for c in inferred]
    assert all(c.categories is None and c.bounds is None for c in declared if not c.public)
    assert "declared schema" in notes[0]
    storage, notes = dp_schema(load_source(nass), None)
    assert all(c.nullable for c in storage) and "no reviewed schema" in notes[0]
    assert storage["weight"].kind is Kind.FLOAT and storage["dead"].kind is Kind.CATEGORICAL


def test_dataset_names_come_from_the_user_or_the_source() -> None:
    assert dataset_name("nassCDS", load_source(load_dataset("nassCDS"))) == "nassCDS"
    assert dataset_name(None, load_source(load_dataset("nassCDS"))) == "data-frame"
    with pytest.raises(ParameterError, match="non-empty name"):
        dataset_name("  ", load_source(load_dataset("nassCDS")))


def test_a_csv_without_a_schema_gets_its_column_kinds_under_dp(tmp_path: Path) -> None:
    """The kinds DuckDB would guess from the values are never used: a value that does not parse (here 'oops' in
    an integer column, after the rows DuckDB samples) neither fails the fit nor changes the column's kind."""
    train = load_dataset("nassCDS")
    row = train.iloc[[0]].copy()
    row["ageOFocc"] = "oops"
    path = tmp_path / "crashes.csv"
    pd.concat([train, row], ignore_index=True).to_csv(path, index=False)
    source = load_source(path)
    assert not source.declares_types
    accountant = Accountant(Budget.from_rho(0.01, 1e-6))
    kinds = detect_kinds(source, ["ageOFocc", "weight", "dvcat", "yearacc"], accountant, 0.01)  # type: ignore[arg-type]
    assert kinds == {"ageOFocc": "integer", "weight": "float", "dvcat": "string", "yearacc": "integer"}
    (charge,) = accountant.charges
    assert charge.rho == 0.01 and f"l2_sensitivity={math.sqrt(16):g}" in charge.mechanism
    ledger = Ledger(tmp_path / "ledger.sqlite")
    model = MST().fit(path, epsilon=1.0, ledger=ledger)
    assert model.dataset_ == "crashes"
    assert model.record_.spends[0]["purpose"].startswith("column kinds")
    assert model.record_.spends[0]["rho"] == pytest.approx(KINDS_SHARE * model.record_.rho)
    assert model.record_.rho_spent <= model.record_.rho
    assert {c.name: c.kind for c in model.schema_}["ageOFocc"] is Kind.INTEGER
    assert "came without a schema" in " ".join(model.record_.assumptions)
    synthetic = model.sample(200, seed=0)
    assert pd.api.types.is_numeric_dtype(synthetic["ageOFocc"]) and pd.api.types.is_float_dtype(synthetic["weight"])


def test_fit_records_what_a_card_may_show() -> None:
    nass = load_dataset("nassCDS")[["dead", "sex", "airbag"]]
    schema = Schema([c.__class__(**{**vars(c), "public": True}) for c in Schema.infer(nass)])
    release = ps.synthesize(nass, "mst", rows=100, schema=schema, epsilon=1.0, ledger=False, dataset="crashes")
    record = release.fit
    assert isinstance(record, FitRecord) and record.dataset == "crashes" and record.unit == "row"
    assert record.epsilon == 1.0 and record.delta == DEFAULT_DELTA
    assert set(record.released) == {"rows_estimate"}  # a noisy count, released through the Gaussian mechanism
    assert record.to_dict()["parameters"] == release.model.get_params()
