"""Person-level DP related tables (pbc patients and their pbcseq visits): integrity by construction, at most k
visits per patient, increasing days, one budget whose spends add up to its rho in one ledger under the unit
``person``, clear refusals, and exact per-row conditional sampling of the marginal models."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privsynth.data.schema import Kind, Schema
from privsynth.errors import ParameterError
from privsynth.pipeline.related import synthesize_related
from privsynth.privacy.ledger import Ledger
from privsynth.relational import RelatedData, RelatedMetadata, TableMeta, load_related
from privsynth.relational.dp import PersonSynthesizer
from privsynth.relational.metadata import Relationship
from privsynth.relational.person import bound_contributions
from privsynth.synth.mst import MST

PATIENT = ["id", "time", "status", "sex", "stage", "bili"]
VISIT = ["id", "day", "status", "stage", "bili"]
PUBLIC = {"status": [0, 1, 2], "sex": ["f", "m"], "stage": [1, 2, 3, 4]}  # survival::pbc documentation
BOUNDS = {"day": (0, 5200), "time": (0, 5200), "bili": (0.0, 30.0)}  # days in a ~14-year trial; mg/dl
FAST = {"iters": 100, "numeric_bins": "uniform"}  # public bounds, equal-width bins: no budget on domains


def _schema(frame: pd.DataFrame, modelled: list[str]) -> Schema:
    """The declared structure of a pbc table: its storage types, the documented categories public, the columns
    outside ``modelled`` left out (keeps the fits small)."""
    columns = []
    for column in Schema.from_storage({c: _storage(frame[c]) for c in frame.columns}):
        if column.name in PUBLIC:
            column = dataclasses.replace(column, kind=Kind.CATEGORICAL, categories=PUBLIC[column.name], public=True)
        if column.name in BOUNDS:
            column = dataclasses.replace(column, bounds=BOUNDS[column.name], public=True)
        if column.name not in modelled:
            column = dataclasses.replace(column, synthesize=False, reason="left out of this test")
        columns.append(column)
    return Schema(columns)


def _storage(values: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    return "float" if pd.api.types.is_float_dtype(values) else "string"


@pytest.fixture(scope="module")
def pbc() -> RelatedData:
    tables, metadata = load_related("pbc")
    schemas = {"pbc": _schema(tables["pbc"], PATIENT), "pbcseq": _schema(tables["pbcseq"], VISIT)}
    declared = dataclasses.replace(
        metadata,
        tables={name: dataclasses.replace(t, schema=schemas[name]) for name, t in metadata.tables.items()},
    )
    return RelatedData(tables, declared)


def test_person_level_tables_keep_integrity_the_bound_and_the_order(pbc: RelatedData, tmp_path: Path) -> None:
    model = PersonSynthesizer("mst", max_children=4, params=FAST)
    model.fit(pbc, epsilon=1.0, ledger=tmp_path / "l.db", dataset="pbc")
    out = model.sample(rows=300, seed=1)
    patients, visits = out["pbc"], out["pbcseq"]
    assert list(patients.columns) == [c for c in pbc.tables["pbc"].columns if c in PATIENT]  # left-out ones too
    assert list(visits.columns) == [c for c in pbc.tables["pbcseq"].columns if c in VISIT]
    assert len(patients) == 300 and list(patients["id"]) == list(range(1, 301))
    assert set(visits["id"]) <= set(patients["id"])  # integrity by construction
    per_patient = visits.groupby("id").size()
    assert per_patient.max() <= 4 and len(visits) > 0
    assert (visits.groupby("id")["day"].diff().dropna() > 0).all()
    assert visits["day"].dtype == np.int64
    assert set(patients["sex"].dropna()) <= {"f", "m"} and set(visits["stage"].dropna()) <= {1, 2, 3, 4}
    again = model.sample(rows=300, seed=1)
    pd.testing.assert_frame_equal(again["pbcseq"], visits)  # same seed, same tables
    assert model.plans_["pbcseq"].describe()["role"] == "sequential child"


def test_spends_add_up_to_one_budget_in_one_ledger_with_the_person_as_unit(pbc: RelatedData, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    model = PersonSynthesizer("mst", params=FAST).fit(pbc, epsilon=2.0, delta=1e-6, ledger=ledger, dataset="pbc")
    record, budget = model.record_, model.budget_
    k = model.bounds_["pbcseq"]
    assert 1 <= k <= 64 and record.contribution_bound == k and record.unit == "person"
    assert record.released["pbcseq.contribution_bound"] == k
    assert record.epsilon == 2.0 and record.rho == budget.rho
    exact = sum((Fraction(s["rho"]) for s in record.spends), Fraction(0))  # rhos add (zCDP), exactly
    assert exact <= Fraction(budget.rho) and float(exact) == pytest.approx(budget.rho, rel=1e-12)
    spent = float(exact)
    committed = [e for e in ledger.entries("pbc") if e.status == "committed" and e.reservation_id is not None]
    assert sum(e.rho for e in committed) == pytest.approx(spent, rel=1e-12)
    reservations = [e for e in ledger.entries("pbc") if e.reservation_id is None]
    assert len(reservations) == 3 and all("person" in e.purpose for e in reservations)  # k, patients, visits
    assert sum(e.rho for e in reservations) == pytest.approx(budget.rho, rel=1e-12)
    visits = [s for s in record.spends if s["purpose"].startswith("pbcseq: ") and "marginal" in s["purpose"]]
    patients = [s for s in record.spends if s["purpose"].startswith("pbc: ") and "marginal" in s["purpose"]]
    assert visits and patients
    assert all(f"at most {k} rows each" in s["mechanism"] for s in visits)  # noise calibrated to k visits
    assert all("at most 1 row each" in s["mechanism"] for s in patients)


@pytest.mark.parametrize(("bound", "message"), [(0, ">= 1"), (2.5, "an int"), (65, "at most 64"), (True, "an int")])
def test_a_bad_contribution_bound_is_refused(bound: object, message: str) -> None:
    with pytest.raises(ParameterError, match="max_children") as caught:
        PersonSynthesizer("mst", max_children=bound)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_non_dp_and_unknown_methods_are_refused() -> None:
    with pytest.raises(ParameterError, match="mst, aim, privbayes, not 'copula'"):
        PersonSynthesizer("copula")
    with pytest.raises(ParameterError, match="the person-level fit sets it"):
        PersonSynthesizer("mst", params={"contribution_bound": 3})


def test_an_undeclared_lookup_table_is_refused_and_a_declared_one_is_copied(pbc: RelatedData, tmp_path: Path) -> None:
    arms = pd.DataFrame({"trt": [1, 2], "arm": ["D-penicillamine", "placebo"]})  # the trial's two arms
    tables = {**pbc.tables, "arms": arms}
    metadata = RelatedMetadata(
        {**pbc.metadata.tables, "arms": TableMeta("arms", ("trt",))},
        [*pbc.metadata.relationships, Relationship("arms", "pbc", ("trt",), ("trt",))],
    )
    with pytest.raises(ParameterError, match=r"the entity 'pbc' .* has a synthesized parent 'arms'.*--keep arms"):
        PersonSynthesizer("mst", entity="pbc").fit(tables, metadata, epsilon=1.0, ledger=False)
    with pytest.raises(ParameterError, match=r"table 'pbcseq' is neither the entity 'arms'.*--keep TABLE"):
        PersonSynthesizer("mst").fit(tables, metadata, epsilon=1.0, ledger=False)
    model = PersonSynthesizer("mst", max_children=2, lookups=["arms"], params=FAST)
    out = model.fit(tables, metadata, epsilon=1.0, ledger=False).sample(rows=100, seed=0)
    pd.testing.assert_frame_equal(out["arms"], arms)
    assert set(out["pbc"]["trt"].dropna()) <= {1, 2}  # a lookup key drawn among the lookup's (public) keys
    assert model.plans_["arms"].role == "lookup"


def test_a_csv_table_without_a_reviewed_schema_is_refused(tmp_path: Path) -> None:
    tables, metadata = load_related("pbc")
    tables["pbc"].to_csv(tmp_path / "pbc.csv", index=False)
    tables["pbcseq"].to_parquet(tmp_path / "pbcseq.parquet")
    with pytest.raises(ParameterError, match="table 'pbc' is read without declared column types"):
        PersonSynthesizer("mst").fit(tmp_path, metadata, epsilon=1.0, ledger=False)


def test_marginal_sample_given_keeps_the_given_values_and_draws_the_exact_conditional() -> None:
    patients = load_related("pbc").tables["pbc"]
    frame = patients[["status", "stage", "hepato", "edema"]]
    schema = _schema(frame, list(frame.columns))
    model = MST(iters=100).fit(frame, schema, epsilon=20.0, ledger=False)
    given = pd.DataFrame({"stage": [4] * 3000 + [1] * 3000, "hepato": [1.0] * 3000 + [0.0] * 3000})
    drawn = model.sample_given(given, seed=0)
    assert list(drawn.columns) == ["status", "stage", "hepato", "edema"]
    assert (drawn["stage"].to_numpy() == given["stage"].to_numpy()).all()
    pd.testing.assert_frame_equal(drawn, model.sample_given(given, seed=0))
    for stage, hepato, rows in ((4, 1.0, slice(0, 3000)), (1, 0.0, slice(3000, 6000))):
        reference = model.sample(20000, conditions={"stage": stage}, seed=1)
        reference = reference[reference["hepato"] == hepato]  # the model's own conditional, by rejection
        mine = drawn.iloc[rows]["status"].value_counts(normalize=True)
        theirs = reference["status"].value_counts(normalize=True)
        for value in (0, 1, 2):
            assert mine.get(value, 0.0) == pytest.approx(theirs.get(value, 0.0), abs=0.04)
    with pytest.raises(ParameterError, match="cannot condition on 'age'"):
        model.sample_given(pd.DataFrame({"age": [50.0]}))


CANARY, VALUE = "zqxcanary", 8675309


def _leaks(text: str, counts: list[int]) -> list[str]:
    found = [needle for needle in (CANARY, str(VALUE)) if needle in text]
    for count in counts:
        if re.search(rf"(?<![\d.]){count}(?![\d.])", text) or re.search(rf"(?<![\d.]){count:,}(?![\d.])", text):
            found.append(f"the exact row count {count}")
    return found


def test_a_person_level_related_release_holds_nothing_of_a_canary_patient(
    pbc: RelatedData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One more patient with 4 visits, holding a category no one else has (``sex``) and an extreme value
    (``bili``) in both tables, in columns whose domains are learned under DP: the tables, the cards (JSON and
    HTML), the metadata, the pickled model and the log hold neither, nor the exact row counts of the tables the
    fits saw; the cards say person and k."""
    caplog.set_level(logging.DEBUG, logger="privsynth")
    tables = {name: frame.copy() for name, frame in pbc.tables.items()}
    patient = tables["pbc"].iloc[[0]].assign(id=tables["pbc"]["id"].max() + 1, sex=CANARY, bili=VALUE)
    visits = tables["pbcseq"][tables["pbcseq"]["id"] == 2].head(4)  # patient 2 has 4 visits or more
    visits = visits.assign(id=patient["id"].iloc[0], sex=CANARY, bili=VALUE)
    assert len(visits) == 4
    tables = {"pbc": pd.concat([tables["pbc"], patient]), "pbcseq": pd.concat([tables["pbcseq"], visits])}
    private = {"sex", "bili"}  # domains learned under DP here; sex's reviewed categories are not public
    metadata = dataclasses.replace(
        pbc.metadata,
        tables={
            name: dataclasses.replace(
                t,
                schema=Schema(
                    [
                        dataclasses.replace(
                            c, categories=["f", "m", CANARY] if c.name == "sex" else None, bounds=None, public=False
                        )
                        if c.name in private
                        else c
                        for c in t.schema or []
                    ]
                ),
            )
            for name, t in pbc.metadata.tables.items()
        },
    )
    counts = [len(tables["pbc"]), len(bound_contributions(tables["pbcseq"], "id", 4, "day")), len(tables["pbcseq"])]
    release = synthesize_related(
        RelatedData(tables, metadata),
        "mst",
        rows=300,
        epsilon=0.5,
        params={"max_children": 4, **FAST},
        ledger=tmp_path / "l.db",
        dataset="pbc-canary",
        seed=0,
    )
    written = release.write(tmp_path / "out")
    assert not (tmp_path / "out" / "related_evaluation.json").exists()
    for file in written:  # synthetic values (days, ids) may equal a count by chance: counts are checked elsewhere
        shown = [] if file.suffix == ".csv" else counts
        assert _leaks(file.read_bytes().decode("latin-1"), shown) == [], file.name
    assert _leaks(pickle.dumps(release.model).decode("latin-1"), counts) == []
    assert _leaks(caplog.text, counts) == []
    for name in ("pbc", "pbcseq"):
        privacy = json.loads((tmp_path / "out" / f"{name}.card.json").read_text())["privacy"]
        assert privacy["unit"] == "person" and privacy["contribution_bound"] == 4
    with pytest.raises(ParameterError, match="not evaluated against the real tables"):
        release.evaluate()


@pytest.mark.parametrize("method", ["aim", "privbayes"])
def test_aim_and_privbayes_make_person_level_related_tables_too(method: str, pbc: RelatedData) -> None:
    model = PersonSynthesizer(method, max_children=3, params=FAST).fit(pbc, epsilon=1.0, ledger=False)
    out = model.sample(rows=80, seed=0)
    assert set(out["pbcseq"]["id"]) <= set(out["pbc"]["id"]) and out["pbcseq"].groupby("id").size().max() <= 3
    assert model.record_.method == method and model.record_.contribution_bound == 3
    assert all("per person" in s["mechanism"] for s in model.record_.spends)
