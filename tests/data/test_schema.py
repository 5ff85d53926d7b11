import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Column, Kind, Schema
from privsynth.errors import DataError, SchemaError


@pytest.fixture(scope="module")
def covid() -> pd.DataFrame:
    return load_dataset("covid_testing")


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS")


def test_infer_flags_exactly_the_fake_names_and_subject_id_in_covid_testing(covid: pd.DataFrame) -> None:
    schema = Schema.infer(covid)
    flagged = {c.name for c in schema if c.pii or c.kind is Kind.IDENTIFIER}
    assert flagged == {"fake_first_name", "fake_last_name", "subject_id"}
    assert schema["fake_last_name"].pii and "personal name" in (schema["fake_last_name"].reason or "")
    assert schema["subject_id"].kind is Kind.IDENTIFIER
    assert {c.name for c in schema.excluded()} == flagged
    assert schema["test_id"].kind is Kind.CATEGORICAL and schema["clinic_name"].synthesize


def test_infer_marks_every_learned_domain_not_public(nass: pd.DataFrame) -> None:
    schema = Schema.infer(nass)
    assert all(not c.public for c in schema)
    assert schema["dead"].categories == ["alive", "dead"]
    assert schema["ageOFocc"].kind is Kind.INTEGER and schema["ageOFocc"].bounds == (16, 97)
    assert schema["weight"].kind is Kind.FLOAT
    assert schema["injSeverity"].nullable and schema["injSeverity"].kind is Kind.INTEGER
    assert schema["frontal"].kind is Kind.CATEGORICAL and schema["frontal"].categories == [0, 1]


def test_infer_detects_pii_by_value_pattern() -> None:
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(
        {
            "contact": [f"user{i}@example.org" for i in range(n)],
            "tel": [f"+1 (555) {rng.integers(100, 999)}-{rng.integers(1000, 9999)}" for _ in range(n)],
            "nat": [f"{rng.integers(100, 999)}-{rng.integers(10, 99)}-{rng.integers(1000, 9999)}" for _ in range(n)],
            "cc": ["4111 1111 1111 1111", "5500 0000 0000 0004"] * (n // 2),
            "colour": rng.choice(["red", "green"], n),
        }
    )
    schema = Schema.infer(df)
    assert [c.name for c in schema if c.pii] == ["contact", "tel", "nat", "cc"]
    assert "e-mail" in (schema["contact"].reason or "")
    assert "card number" in (schema["cc"].reason or "")
    assert not schema["colour"].pii


def test_infer_flags_near_unique_strings_as_identifiers() -> None:
    df = pd.DataFrame({"code": [f"K{i:05d}X" for i in range(500)], "group": ["a", "b"] * 250})
    schema = Schema.infer(df)
    assert schema["code"].kind is Kind.IDENTIFIER and not schema["code"].synthesize
    assert schema["group"].kind is Kind.CATEGORICAL


def test_infer_recognises_datetimes_and_text() -> None:
    df = pd.DataFrame(
        {
            "when": pd.date_range("2020-01-01", periods=50, freq="D").strftime("%Y-%m-%d"),
            "note": [f"the patient reported mild symptoms on visit number {i} today" for i in range(50)],
        }
    )
    schema = Schema.infer(df)
    assert schema["when"].kind is Kind.DATETIME and schema["when"].bounds == (
        "2020-01-01T00:00:00",
        "2020-02-19T00:00:00",
    )
    assert schema["note"].kind is Kind.TEXT and not schema["note"].synthesize


def test_yaml_round_trip_keeps_every_field(covid: pd.DataFrame, tmp_path: Path) -> None:
    schema = Schema.infer(covid)
    schema.save(tmp_path / "s.yaml")
    assert Schema.load(tmp_path / "s.yaml").to_dict() == schema.to_dict()


def test_validate_names_missing_column(nass: pd.DataFrame) -> None:
    schema = Schema([*Schema.infer(nass).columns, Column("speed", Kind.FLOAT)])
    with pytest.raises(SchemaError, match=r"\['speed'\].*lacks"):
        schema.validate(nass)


def test_validate_names_column_and_bad_value(nass: pd.DataFrame) -> None:
    schema = Schema.infer(nass)
    bad = nass.astype({"ageOFocc": object})
    bad.loc[7, "ageOFocc"] = "old"
    with pytest.raises(SchemaError, match="column 'ageOFocc' is integer in the schema but holds 'old'"):
        schema.validate(bad)


def test_validate_checks_public_domains_only(nass: pd.DataFrame) -> None:
    schema = Schema.infer(nass.iloc[:100])
    schema["yearVeh"].nullable = schema["injSeverity"].nullable = True
    schema.validate(nass)  # private domain learned from 100 rows: other rows may fall outside it
    schema["ageOFocc"].public = True
    schema["ageOFocc"].bounds = (16, 60)
    with pytest.raises(SchemaError, match="outside its public bounds"):
        schema.validate(nass)


def test_all_null_column_is_left_out_with_a_warning() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "empty": [None, None, None]})
    schema = Schema.infer(df)
    assert not schema["empty"].synthesize
    assert any("'empty' has no values" in w for w in schema.warnings)


def test_constant_column_warns() -> None:
    schema = Schema.infer(pd.DataFrame({"a": [1, 2, 3], "k": ["x", "x", "x"]}))
    assert any("'k' has a single value ('x')" in w for w in schema.warnings)


def test_mixed_numbers_and_text_warns_with_an_example() -> None:
    df = pd.DataFrame({"age": ["34", "45", "unknown", "52", "61"]})
    schema = Schema.infer(df)
    assert schema["age"].kind is Kind.CATEGORICAL
    assert any("'age' mixes numbers and text" in w and "'unknown'" in w for w in schema.warnings)


def test_empty_frame_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="header but no rows"):
        Schema.infer(pd.DataFrame({"a": []}))


def test_load_rejects_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("columns:\n  - name: a\n    kind: colour\n")
    with pytest.raises(SchemaError, match="column 'a' has kind 'colour'; use one of"):
        Schema.load(path)


def test_target_round_trips_and_follows_the_columns(nass: pd.DataFrame, tmp_path: Path) -> None:
    inferred = Schema.infer(nass)
    schema = Schema(inferred.columns, target="dead")
    schema.save(tmp_path / "schema.yaml")
    assert Schema.load(tmp_path / "schema.yaml").target == "dead"
    assert "target: dead" in (tmp_path / "schema.yaml").read_text()
    assert "target" not in inferred.to_dict()  # no target, no key: older schema files read the same
    assert schema.select(["dead", "sex"]).target == "dead"
    assert schema.select(["sex"]).target is None
    excluded = [dataclasses.replace(c, synthesize=c.name != "dead") for c in schema.columns]
    assert Schema(excluded, target="dead").synthesized().target is None


def test_target_must_be_a_column(nass: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match="target 'speed' is not one of its columns"):
        Schema(Schema.infer(nass).columns, target="speed")
    raw = Schema.infer(nass).to_dict()
    with pytest.raises(SchemaError, match="target must be a column name, not 3"):
        Schema.from_dict({**raw, "target": 3})
