"""nycflights13 under DP with one flight as the unit: the flights are the entity (no children, no key), planes,
airlines, airports and weather public lookups copied whole; the two-column key into weather (origin, hour) matched
to weather's keys after sampling, so referential integrity is 1.0; a canary flight leaves no trace in the release;
several-column keys that cannot be matched are refused with a sentence that says what to do."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pickle
import re
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from cli_support import run_cli
from privsynth.data.schema import Column, Kind, Schema
from privsynth.errors import ParameterError
from privsynth.pipeline.related import synthesize_related
from privsynth.provenance.card import card_schema
from privsynth.relational import RelatedData, RelatedMetadata, TableMeta, load_related
from privsynth.relational.datasets import RELATED_DATASETS, reviewed_metadata
from privsynth.relational.dp import PersonSynthesizer, _match_keys
from privsynth.relational.evaluate import evaluate_related
from privsynth.relational.metadata import Relationship

LOOKUPS = ("planes", "airlines", "airports", "weather")
SMALL = ("dep_time", "arr_time", "sched_arr_time", "air_time", "minute", "year", "month")  # left out: fast fits
FAST = {"iters": 100}


@functools.cache
def _nycflights13() -> RelatedData:
    return load_related("nycflights13")


def _slice(days: int = 1) -> RelatedData:
    """January 1 (to ``days``) of flights and the weather of those days; the lookups whole; the bundled reviewed
    schema with a few columns left out to keep the fit short."""
    tables = dict(_nycflights13().tables)
    flights, weather = tables["flights"], tables["weather"]
    tables["flights"] = flights[(flights.month == 1) & (flights.day <= days)].reset_index(drop=True)
    tables["weather"] = weather[(weather.month == 1) & (weather.day <= days + 1)].reset_index(drop=True)
    metadata = reviewed_metadata("nycflights13")
    schema = metadata.tables["flights"].schema
    assert schema is not None
    columns = [
        dataclasses.replace(c, synthesize=False, reason="left out of this test") if c.name in SMALL else c
        for c in schema
    ]
    tables_meta = {
        **metadata.tables,
        "flights": dataclasses.replace(metadata.tables["flights"], schema=Schema(columns)),
    }
    return RelatedData(tables, dataclasses.replace(metadata, tables=tables_meta))


def _integrity(out: dict[str, pd.DataFrame], metadata: RelatedMetadata) -> dict[str, float]:
    return {rel: m["integrity"] for rel, m in evaluate_related(out, out, metadata).items()}


@pytest.fixture(scope="module")
def flights() -> RelatedData:
    return _slice()


def test_nycflights13_declares_its_lookups_unit_and_reviewed_flights_schema() -> None:
    info = RELATED_DATASETS["nycflights13"]
    assert info.public == LOOKUPS and info.unit == "flight"
    metadata = reviewed_metadata("nycflights13")
    schema = metadata.tables["flights"].schema
    assert schema is not None and metadata.tables["weather"].schema is None  # lookups: public, copied
    assert schema["origin"].public and schema["origin"].categories == ["EWR", "JFK", "LGA"]
    assert schema["time_hour"].kind is Kind.DATETIME and schema["time_hour"].public
    real = _nycflights13().tables["flights"]
    assert list(schema.names) == list(real.columns)  # every column declared, none read from the rows
    for column in schema:
        if column.bounds is not None and column.kind is not Kind.DATETIME:
            low, high = column.bounds
            assert real[column.name].min() >= low and real[column.name].max() <= high, column.name
    pbc, schemas = load_related("pbc"), reviewed_metadata("pbc")
    for name, frame in pbc.tables.items():  # pbc: the documented categories and clinical ranges hold every value
        schema = schemas.tables[name].schema
        assert schema is not None and list(schema.names) == list(frame.columns)
        for column in schema:
            if column.categories is not None:
                assert set(frame[column.name].dropna()) <= set(column.categories), (name, column.name)
            if column.bounds is not None:
                assert column.bounds[0] <= frame[column.name].min() <= frame[column.name].max() <= column.bounds[1]


def test_flights_under_dp_have_integrity_with_every_lookup_and_one_flight_as_the_unit(
    flights: RelatedData, tmp_path: Path
) -> None:
    model = PersonSynthesizer("mst", lookups=LOOKUPS, unit="flight", params=FAST)
    model.fit(flights, epsilon=1.0, ledger=tmp_path / "l.db", dataset="flights")
    out = model.sample(rows=400, seed=0)
    released = [c for c in flights.tables["flights"].columns if c not in SMALL]  # the left-out ones are not
    assert len(out["flights"]) == 400 and list(out["flights"].columns) == released
    for name in LOOKUPS:
        pd.testing.assert_frame_equal(out[name], flights.tables[name], check_column_type=False, check_dtype=False)
    assert set(_integrity(out, flights.metadata).values()) == {1.0}
    weather = set(zip(flights.tables["weather"]["origin"], flights.tables["weather"]["time_hour"], strict=True))
    assert set(zip(out["flights"]["origin"], out["flights"]["time_hour"], strict=True)) <= weather
    assert set(out["flights"]["origin"]) <= {"EWR", "JFK", "LGA"}  # the declared public origins
    record = model.record_
    assert record.unit == "flight" and record.contribution_bound == 1 and model.bounds_ == {}
    assert all("per flight (at most 1 row each)" in s["mechanism"] for s in record.spends)
    assert sum(s["rho"] for s in record.spends) == pytest.approx(record.rho, rel=1e-9)  # no share kept for k
    assert any("not protected" in note for note in record.assumptions)
    assert model.plans_["flights"].describe()["matched_to_lookup_keys"] == [
        "flights.(origin, time_hour) -> weather.(origin, time_hour)"
    ]


def test_generate_a_flights_folder_under_dp_writes_tables_flight_level_cards_and_metadata(tmp_path: Path) -> None:
    data = _slice()
    folder = tmp_path / "nyc"
    folder.mkdir()
    for name, frame in data.tables.items():
        frame.to_parquet(folder / f"{name}.parquet")
    metadata = dataclasses.replace(
        data.metadata,
        tables={n: dataclasses.replace(t, source=f"{n}.parquet") for n, t in data.metadata.tables.items()},
    )
    metadata.save(folder / "related.yaml")
    out = tmp_path / "dp"
    keep = [arg for name in LOOKUPS for arg in ("--keep", name)]
    result = run_cli(
        "generate", str(folder), "--metadata", str(folder / "related.yaml"), "--method", "mst", "--epsilon", "1",
        *keep, "--param", "unit=flight", "--param", "iters=100", "--rows", "300", "--seed", "0",
        "--ledger", str(tmp_path / "l.db"), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(1, 1e-06)-DP with one flight as the unit, every spend recorded" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}{ext}" for n in ["flights", *LOOKUPS] for ext in (".csv", ".card.json", ".card.html")] + ["related.yaml"]
    )
    tables = {n: pd.read_csv(out / f"{n}.csv", keep_default_na=False, na_values=[""]) for n in ["flights", *LOOKUPS]}
    assert len(tables["flights"]) == 300
    assert set(_integrity(tables, RelatedMetadata.load(out / "related.yaml")).values()) == {1.0}
    card = json.loads((out / "flights.card.json").read_text())
    jsonschema.validate(card, card_schema())
    privacy = card["privacy"]
    assert privacy["unit"] == "flight" and privacy["contribution_bound"] == 1 and privacy["epsilon"] == 1
    assert card["generator"]["related"]["role"] == "entity" and "timings_seconds" not in card["generator"]
    assert any(n.startswith("flight-level DP: the privacy unit is one flight") for n in card["notes"])
    assert any(
        "weather are public reference tables (lookups), copied whole and not protected" in n for n in card["notes"]
    )
    for name in LOOKUPS:
        lookup = json.loads((out / f"{name}.card.json").read_text())
        assert lookup["privacy"]["differentially_private"] is False and lookup["generator"]["method"] == "copy"


def test_a_bundled_set_under_dp_takes_its_reviewed_schema_lookups_and_unit() -> None:
    from privsynth.cli.related import _bundled_dp

    data, keep, params = _bundled_dp("nycflights13", _nycflights13(), None, [], {"iters": 5})
    assert keep == list(LOOKUPS) and params == {"unit": "flight", "iters": 5}
    assert data.metadata.tables["flights"].schema is not None
    _, keep, params = _bundled_dp("nycflights13", data, Path("mine.yaml"), ["airlines"], {"unit": "trip"})
    assert keep == ["airlines"] and params == {"unit": "trip"}  # the user's choices win
    data, keep, params = _bundled_dp("pbc", load_related("pbc"), None, [], {"bins": 16})
    assert keep == [] and params["unit"] == "person" and params["previous"] == ["stage"]
    assert params["bins"] == 16 and params["context"] == ["status", "age", "bili", "albumin", "protime", "edema"]
    assert data.metadata.tables["pbcseq"].schema is not None
    _, _, params = _bundled_dp("pbc", load_related("pbc"), Path("mine.yaml"), [], {})
    assert params == {"unit": "person"}  # the measured options go with the bundled schema only


CANARY, VALUE = "zqxcanary", 8675309


def test_a_flight_level_release_holds_nothing_of_a_canary_flight(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One more flight by a plane no other flight used (its tail number, a category whose domain is learned under
    DP here: the planes lookup left out) and an arrival delay no other flight had (its bounds learned under DP):
    the tables, cards, metadata, pickled model and log hold neither, nor the exact number of flights."""
    caplog.set_level(logging.DEBUG, logger="privsynth")
    data = _slice()
    tables = {n: f.copy() for n, f in data.tables.items() if n != "planes"}
    canary = tables["flights"].iloc[[0]].assign(tailnum=CANARY, arr_delay=float(VALUE))
    tables["flights"] = pd.concat([tables["flights"], canary], ignore_index=True)
    schema = data.metadata.tables["flights"].schema
    assert schema is not None
    private = Schema(
        [
            dataclasses.replace(c, categories=None, bounds=None, public=False) if c.name == "arr_delay" else c
            for c in schema
        ]
    )
    metadata = RelatedMetadata(
        {
            n: dataclasses.replace(t, schema=private) if n == "flights" else t
            for n, t in data.metadata.tables.items()
            if n != "planes"
        },
        [r for r in data.metadata.relationships if r.parent != "planes"],
    )
    release = synthesize_related(
        RelatedData(tables, metadata),
        "mst",
        rows=300,
        epsilon=0.5,
        params={"unit": "flight", **FAST},
        keep=("airlines", "airports", "weather"),
        ledger=tmp_path / "l.db",
        dataset="flights-canary",
        seed=0,
    )
    written = release.write(tmp_path / "out")
    count = len(tables["flights"])
    for file in written:
        text = file.read_bytes().decode("latin-1")
        assert CANARY not in text and str(VALUE) not in text, file.name
        if file.suffix != ".csv":  # synthetic values may equal a count by chance
            assert not re.search(rf"(?<![\d.]){count}(?![\d.])", text), file.name
    model = pickle.dumps(release.model).decode("latin-1")
    assert CANARY not in model and str(VALUE) not in model
    assert CANARY not in caplog.text and str(VALUE) not in caplog.text
    # The logged SQL numbers the public categories (1,458 airports): those indices are not counts of rows.
    logged = "\n".join(r.getMessage() for r in caplog.records if "CASE WHEN" not in r.getMessage())
    assert not re.search(rf"(?<![\d.]){count}(?![\d.])", logged)
    assert json.loads((tmp_path / "out" / "flights.card.json").read_text())["privacy"]["unit"] == "flight"


def _two_tables(
    key_kinds: tuple[Kind, Kind], synthesize_second: bool = True
) -> tuple[dict[str, pd.DataFrame], RelatedMetadata]:
    trips = pd.DataFrame({"origin": ["A", "B", "A"], "hour": [1, 2, 3], "minutes": [10.0, 20.0, 30.0]})
    readings = pd.DataFrame({"origin": ["A", "A", "B"], "hour": [1, 3, 2], "temp": [1.0, 2.0, 3.0]})
    dtypes = {Kind.CATEGORICAL: "object", Kind.INTEGER: "int64", Kind.FLOAT: "float64"}
    first = Column(
        "origin",
        key_kinds[0],
        dtypes[key_kinds[0]],
        bounds=(0, 10) if key_kinds[0] is Kind.INTEGER else None,
        public=True,
    )
    second = Column(
        "hour", key_kinds[1], dtypes[key_kinds[1]], bounds=(0, 24), public=True, synthesize=synthesize_second
    )
    schema = Schema([first, second, Column("minutes", Kind.FLOAT, "float64", bounds=(0.0, 60.0), public=True)])
    metadata = RelatedMetadata(
        {"trips": TableMeta("trips", (), schema=schema), "readings": TableMeta("readings", ("origin", "hour"))},
        [Relationship("readings", "trips", ("origin", "hour"), ("origin", "hour"))],
    )
    return {"trips": trips, "readings": readings}, metadata


def test_several_column_keys_that_cannot_be_matched_are_refused_with_what_to_do() -> None:
    tables, metadata = _two_tables((Kind.INTEGER, Kind.INTEGER))
    tables["trips"]["origin"] = [1, 2, 1]
    tables["readings"]["origin"] = [1, 1, 2]
    model = PersonSynthesizer("mst", lookups=["readings"], unit="trip")
    with pytest.raises(
        ParameterError, match=r"has 2 number or date columns \(origin, hour\).*declare the others categorical"
    ):
        model.fit(tables, metadata, epsilon=1.0, ledger=False)
    tables, metadata = _two_tables((Kind.CATEGORICAL, Kind.INTEGER), synthesize_second=False)
    with pytest.raises(ParameterError, match="needs its column 'hour' synthesized"):
        model.fit(tables, metadata, epsilon=1.0, ledger=False)
    pbc, pbc_meta = load_related("pbc")
    keyless = RelatedMetadata({**pbc_meta.tables, "pbc": TableMeta("pbc", ())}, pbc_meta.relationships)
    with pytest.raises(ParameterError, match="the entity table 'pbc' has child tables, so it needs a one-column"):
        PersonSynthesizer("mst").fit(pbc, keyless, epsilon=1.0, ledger=False)


def test_a_several_column_key_is_matched_exactly_on_categories_and_by_nearness_on_the_number() -> None:
    tables, metadata = _two_tables((Kind.CATEGORICAL, Kind.INTEGER))
    schema = metadata.tables["trips"].schema
    assert schema is not None
    drawn = pd.DataFrame(
        {"origin": ["A", "A", "B", "C"], "hour": [1.4, 2.6, 9.0, 2.9], "minutes": [1.0, 2.0, 3.0, 4.0]}
    )
    rel = metadata.relationships[0]
    matched = _match_keys(drawn, rel, tables["readings"], schema)
    assert list(matched["origin"]) == ["A", "A", "B", "A"]  # C names no reading: the nearest of any origin
    assert list(matched["hour"]) == [1, 3, 2, 3]
    assert list(matched["minutes"]) == [1.0, 2.0, 3.0, 4.0]
    stamps = pd.DataFrame({"origin": ["EWR", "EWR"], "time_hour": ["2013-01-01T06:00:00Z", "2013-01-01T09:00:00Z"]})
    flights = pd.DataFrame({"origin": ["EWR"], "time_hour": ["2013-01-01T08:10:00"]})
    when = Schema([Column("origin", Kind.CATEGORICAL), Column("time_hour", Kind.DATETIME)])
    out = _match_keys(
        flights, Relationship("weather", "flights", ("origin", "time_hour"), ("origin", "time_hour")), stamps, when
    )
    assert out["time_hour"].tolist() == ["2013-01-01T09:00:00Z"] and np.all(out["origin"] == "EWR")


@pytest.mark.slow
def test_generate_nycflights13_under_dp_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "nyc"
    result = run_cli(
        "generate",
        "nycflights13",
        "--method",
        "mst",
        "--epsilon",
        "1",
        "--ledger",
        str(tmp_path / "l.db"),
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "lookups: planes, airlines, airports, weather" in result.stdout
    tables = {
        n: pd.read_csv(out / f"{n}.csv", keep_default_na=False, na_values=[""])
        for n in RELATED_DATASETS["nycflights13"].tables
    }
    assert set(_integrity(tables, RelatedMetadata.load(out / "related.yaml")).values()) == {1.0}
    assert json.loads((out / "flights.card.json").read_text())["privacy"]["unit"] == "flight"
