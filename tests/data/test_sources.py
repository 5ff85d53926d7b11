"""Sources: one ``counts`` answer for every place the same rows can live, checked against numpy on the frame."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from privsynth.data.binning import Binning, Categories, NumericBins, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import Source, SQLSource, frame_source, load_source
from privsynth.errors import DataError, ParameterError, SourceError

# nassCDS gets three test-only changes so every engine meets awkward input: a column name with a dot, a space
# and both quotes; a category value with a quote and a percent sign (DBAPI placeholders use '%'); and an
# accident date (datetime) derived from the accident year.
ODD = 'occupant\'s. "role"'
BAGGED = "air'bag 100%"
TABLES = ("nassCDS", "covid_testing", "nafld1")
KINDS = ("frame", "csv", "parquet", "duckdb", "sqlite-table", "sqlite-query", "postgres")

Query = tuple[list[str], list[Binning]]


def _nass() -> pd.DataFrame:
    df = load_dataset("nassCDS", "all")
    days = pd.to_timedelta((np.arange(len(df)) * 37) % 365, unit="D")
    return df.rename(columns={"occRole": ODD}).assign(
        airbag=df["airbag"].replace({"airbag": BAGGED}),
        accdate=pd.to_datetime(df["yearacc"].astype(str) + "-01-01") + days,
    )


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "nassCDS": _nass(),
        "covid_testing": load_dataset("covid_testing", "all"),
        "nafld1": load_dataset("nafld1", "all"),
    }


DATE_EDGES = tuple(pd.Timestamp(t) for t in ("1998-01-01", "1999-06-01 12:00", "2000-03-15", "2001-12-31"))
QUERIES: dict[str, list[Query]] = {
    "nassCDS": [
        (["dvcat"], [Categories(("1-9km/h", "10-24", "25-39", "40-54", "55+"))]),
        # missing values in a null cell
        (["injSeverity", "sex"], [Categories((0, 1, 2, 3, 4, 5, 6), null=True), Categories(("f", "m"))]),
        # an 'other' cell
        (["abcat", "dead"], [Categories(("deploy",), other=True), Categories(("alive", "dead"))]),
        # ages 16-97 and weights up to 57,871 clipped into the end cells; one missing vehicle year
        (
            ["ageOFocc", "weight", "yearVeh"],
            [uniform_bins(20, 70, 5), NumericBins((0.0, 50.5, 100.25, 1000.0)), uniform_bins(1970, 2000, 3, True)],
        ),
        # datetime bins (clipped at both ends), an awkward column name and a value with a quote and a '%'
        (
            ["accdate", ODD, "airbag"],
            [NumericBins(DATE_EDGES), Categories(("driver", "pass")), Categories((BAGGED, "none"))],
        ),
    ],
    "covid_testing": [
        (
            ["result", "payor_group"],
            [
                Categories(("negative", "positive", "invalid")),
                Categories(("commercial", "government", "self pay"), other=True, null=True),
            ],
        ),
        (["age", "ct_result"], [uniform_bins(0, 18, 6), uniform_bins(15, 45, 3, null=True)]),
        (
            ["clinic_name", "gender", "drive_thru_ind"],
            [
                Categories(("clinical lab", "emergency dept", "s  care ntwk"), other=True),
                Categories(("female", "male")),
                Categories((0, 1)),
            ],
        ),
    ],
    "nafld1": [
        (["bmi", "male"], [uniform_bins(15, 50, 7, null=True), Categories((0, 1))]),
        (
            ["age", "status", "futime", "height"],
            [uniform_bins(18, 98, 8), Categories((0, 1)), uniform_bins(0, 7300, 4), uniform_bins(130, 210, 4, True)],
        ),
    ],
}


def _cells(values: pd.Series, binning: Binning) -> np.ndarray:
    """Cell index of each value, computed independently of binning.py (-1: fits no cell)."""
    missing = values.isna().to_numpy()
    if isinstance(binning, Categories):
        codes = np.full(len(values), -1, dtype=np.int64)
        for i, category in enumerate(binning.values):
            codes[(values == category).to_numpy(dtype=bool, na_value=False)] = i
        if binning.other:
            codes[(codes == -1) & ~missing] = len(binning.values)
    else:
        if pd.api.types.is_datetime64_any_dtype(values):
            numbers = values.to_numpy("datetime64[ns]").astype(np.int64).astype(float)
            inner = np.array([pd.Timestamp(e).value for e in binning.edges[1:-1]], dtype=float)
        else:
            numbers = values.to_numpy(dtype=float, na_value=np.nan)
            inner = np.array(binning.edges[1:-1], dtype=float)
        codes = np.digitize(np.nan_to_num(numbers), inner).astype(np.int64)
    codes[missing] = binning.size - 1 if binning.null else -1
    return codes


def _expected(df: pd.DataFrame, columns: list[str], binnings: list[Binning]) -> np.ndarray:
    codes = np.column_stack([_cells(df[c], b) for c, b in zip(columns, binnings, strict=True)])
    assert (codes >= 0).all(), "a test query leaves values outside every cell"
    out = np.zeros(tuple(b.size for b in binnings), dtype=np.int64)
    np.add.at(out, tuple(codes.T), 1)
    return out


def _to_sql(url: str, frames: dict[str, pd.DataFrame]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as con:
        for name, df in frames.items():
            df.to_sql(name, con, index=False)
    engine.dispose()


def _stored(
    kind: str, frames: dict[str, pd.DataFrame], folder: Path, request: pytest.FixtureRequest
) -> dict[str, Source]:
    """The bundled frames stored as ``kind``, one source per dataset."""
    if kind == "frame":
        return {name: frame_source(df, name) for name, df in frames.items()}
    if kind in ("csv", "parquet"):
        sources = {}
        for name, df in frames.items():
            path = folder / f"{name}.{kind}"
            df.to_csv(path, index=False) if kind == "csv" else df.to_parquet(path, index=False)
            sources[name] = load_source(path)
        return sources
    if kind == "duckdb":
        path = folder / "tables.duckdb"
        with duckdb.connect(str(path)) as con:
            for name, df in frames.items():
                con.register("frame", df)
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
                con.unregister("frame")
        return {name: load_source(path, table=name) for name in frames}
    if kind == "postgres":
        url = str(request.getfixturevalue("postgres_tables"))
        return {name: load_source(url, table=name) for name in frames}
    url = f"sqlite:///{folder / 'tables.sqlite'}"
    _to_sql(url, frames)
    if kind == "sqlite-query":
        return {name: load_source(url, query=f'SELECT * FROM "{name}"') for name in frames}
    return {name: load_source(url, table=name) for name in frames}


@pytest.fixture(scope="module")
def postgres_tables(postgres_url: str, frames: dict[str, pd.DataFrame]) -> str:
    """The PostgreSQL test server with the bundled frames loaded as tables of the same names."""
    _to_sql(postgres_url, frames)
    return postgres_url


@pytest.fixture(scope="module", params=KINDS)
def stored(
    request: pytest.FixtureRequest, frames: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Source]:
    return _stored(request.param, frames, tmp_path_factory.mktemp(request.param), request)


@pytest.mark.parametrize(
    ("table", "query"), [(t, q) for t in TABLES for q in range(len(QUERIES[t]))], ids=lambda v: str(v)
)
def test_counts_match_numpy_on_every_kind_of_source(
    stored: dict[str, Source], frames: dict[str, pd.DataFrame], table: str, query: int
) -> None:
    columns, binnings = QUERIES[table][query]
    got = stored[table].counts(columns, binnings)
    want = _expected(frames[table], columns, binnings)
    assert got.dtype == np.int64
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.sum() == len(frames[table])


def test_counts_accept_binnings_by_column_name(stored: dict[str, Source], frames: dict[str, pd.DataFrame]) -> None:
    binnings = {"sex": Categories(("f", "m")), "dead": Categories(("alive", "dead"))}
    got = stored["nassCDS"].counts(["dead", "sex"], binnings)
    np.testing.assert_array_equal(got, pd.crosstab(frames["nassCDS"]["dead"], frames["nassCDS"]["sex"]).to_numpy())


def test_test_queries_reach_every_special_cell(frames: dict[str, pd.DataFrame]) -> None:
    """The queries above are only a test of nulls, 'other' and clipping if the data has such values."""
    nass = frames["nassCDS"]
    assert nass["injSeverity"].isna().sum() == 153
    assert (~nass["abcat"].isin(["deploy"])).sum() > 0
    assert nass["ageOFocc"].min() < 20 and nass["ageOFocc"].max() > 70
    assert nass["weight"].max() > 1000
    assert nass["accdate"].min() < DATE_EDGES[0] and nass["accdate"].max() > DATE_EDGES[-1]
    # rows on 1999-06-01 (midnight) sit before the 12:00 edge: a date compared as a date would move them
    assert (nass["accdate"] == pd.Timestamp("1999-06-01")).sum() > 0
    assert frames["covid_testing"]["payor_group"].isna().sum() == 7087
    assert frames["nafld1"]["bmi"].isna().sum() == 4961


def test_num_rows_is_exact(stored: dict[str, Source], frames: dict[str, pd.DataFrame]) -> None:
    assert {name: source.num_rows() for name, source in stored.items()} == {n: len(f) for n, f in frames.items()}


def test_columns_keep_table_order_and_names(stored: dict[str, Source], frames: dict[str, pd.DataFrame]) -> None:
    assert {name: source.columns for name, source in stored.items()} == {n: list(f.columns) for n, f in frames.items()}


def test_iter_chunks_gives_full_chunks_then_the_rest(stored: dict[str, Source]) -> None:
    chunks = list(stored["nassCDS"].iter_chunks(["dvcat", ODD], chunk_rows=5000))
    assert [len(c) for c in chunks] == [5000] * 5 + [1217]
    assert all(list(c.columns) == ["dvcat", ODD] for c in chunks)
    assert list(pd.concat(chunks)["dvcat"].value_counts()) == [12848, 8214, 2977, 1492, 686]


def test_head_returns_exactly_the_first_rows(stored: dict[str, Source], frames: dict[str, pd.DataFrame]) -> None:
    source, columns = stored["covid_testing"], ["subject_id", "clinic_name", "pan_day"]
    rows_of = frames["covid_testing"][columns].astype(str)
    for rows in (0, 1, 7, 2049, 15_524):
        head = source.head(rows, columns)
        assert len(head) == rows
        assert list(head.columns) == columns
        if isinstance(source, SQLSource):
            # a database table has no row order: its "first" rows are some rows of the table
            assert head.astype(str).merge(rows_of.drop_duplicates(), how="inner").shape == head.shape
        else:
            np.testing.assert_array_equal(head.to_numpy(dtype=str), rows_of.head(rows).to_numpy())
    assert len(source.head(100_000)) == 15_524
    assert list(source.head(3).columns) == list(frames["covid_testing"].columns)


def test_to_pandas_returns_every_row(stored: dict[str, Source], frames: dict[str, pd.DataFrame]) -> None:
    got = stored["nafld1"].to_pandas(["age", "bmi"]).sort_values(["age", "bmi"], ignore_index=True)
    want = frames["nafld1"][["age", "bmi"]].sort_values(["age", "bmi"], ignore_index=True)
    np.testing.assert_allclose(got.to_numpy(dtype=float), want.to_numpy(dtype=float))


def test_counts_while_reading_chunks(stored: dict[str, Source]) -> None:
    source, sex = stored["nassCDS"], [Categories(("f", "m"))]
    seen = 0
    for chunk in source.iter_chunks(["sex"], chunk_rows=10_000):
        assert source.counts(["sex"], sex).tolist() == [12248, 13969]
        seen += len(chunk)
    assert seen == 26_217


def test_chunks_are_exact_across_many_row_groups(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    """DuckDB's own batches follow row groups and threads; chunks must not."""
    path = tmp_path / "groups.parquet"
    frames["nassCDS"].drop(columns=["accdate"]).to_parquet(path, row_group_size=777)
    sizes = [len(c) for c in load_source(path).iter_chunks(["weight"], chunk_rows=3001)]
    assert sizes == [3001] * 8 + [2209]
    assert len(load_source(path).head(3001 * 2 + 5)) == 6007


def test_category_outside_the_domain_names_the_column(stored: dict[str, Source]) -> None:
    no_fast = Categories(("1-9km/h", "10-24", "25-39", "40-54"))
    with pytest.raises(DataError, match=r"1492 value\(s\) of column 'dvcat' fit none of its cells"):
        stored["nassCDS"].counts(["sex", "dvcat"], [Categories(("f", "m")), no_fast])


def test_missing_value_without_null_cell_is_an_error(stored: dict[str, Source]) -> None:
    with pytest.raises(DataError, match=r"153 value\(s\) of column 'injSeverity'"):
        stored["nassCDS"].counts(["injSeverity"], [Categories((0, 1, 2, 3, 4, 5, 6))])


def test_unknown_column_is_an_error(stored: dict[str, Source]) -> None:
    with pytest.raises(DataError, match=r"has no column\(s\) \['speed'\]"):
        stored["nassCDS"].counts(["speed"], [uniform_bins(0, 1, 2)])
    with pytest.raises(DataError, match=r"has no column\(s\) \['speed'\]"):
        next(stored["nassCDS"].iter_chunks(["speed"]))


def test_query_source_counts_only_the_selected_rows(
    frames: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("query")
    url = f"sqlite:///{folder / 'nass.sqlite'}"
    frames["nassCDS"].to_sql("crashes", sa.create_engine(url), index=False)
    # a colon inside a string literal is text, not a bind parameter, and a trailing ';' is allowed
    sql = "SELECT * FROM crashes WHERE yearacc >= 2000 AND dvcat <> 'x :y' ;"
    source = load_source(url, query=sql)
    recent = frames["nassCDS"][frames["nassCDS"]["yearacc"] >= 2000]
    binnings: list[Binning] = [Categories(("alive", "dead")), uniform_bins(16, 97, 9)]
    got = source.counts(["dead", "ageOFocc"], binnings)
    np.testing.assert_array_equal(got, _expected(recent, ["dead", "ageOFocc"], binnings))
    assert source.num_rows() == len(recent) == 13_299


def test_postgres_query_with_percent_and_colon(postgres_tables: str, frames: dict[str, pd.DataFrame]) -> None:
    sql = """SELECT * FROM "nassCDS" WHERE airbag LIKE 'air%' AND dvcat <> 'a :b' AND yearacc::int >= 2000"""
    source = load_source(postgres_tables, query=sql)
    binnings: list[Binning] = [Categories(("f", "m")), Categories((BAGGED,))]
    got = source.counts(["sex", "airbag"], binnings)
    nass = frames["nassCDS"]
    want = nass[(nass["airbag"] == BAGGED) & (nass["yearacc"] >= 2000)]
    np.testing.assert_array_equal(got, _expected(want, ["sex", "airbag"], binnings))


# --- bad input ----------------------------------------------------------------------------------------------


def test_empty_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_source(path)


def test_header_only_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("dvcat,dead\n\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        load_source(path)


def test_csv_rows_after_blank_lines_are_found(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("dead,sex\n\n\n\nalive,f\ndead,m\n")
    assert load_source(path).counts(["dead"], [Categories(("alive", "dead"))]).tolist() == [1, 1]


def test_wrong_delimiter_says_which_to_use(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "nafld1.csv"
    frames["nafld1"].to_csv(path, index=False)
    with pytest.raises(DataError, match=r"pass --delimiter ','"):
        load_source(path, delimiter=";")


def test_semicolon_csv_is_read_with_its_delimiter(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "nafld1.txt"
    frames["nafld1"].to_csv(path, index=False, sep=";")
    for delimiter in (";", None):
        source = load_source(path, delimiter=delimiter)
        assert source.columns == list(frames["nafld1"].columns)
        np.testing.assert_array_equal(
            source.counts(["male"], [Categories((0, 1))]), frames["nafld1"]["male"].value_counts().sort_index()
        )


def test_csv_value_past_the_sniffed_rows_names_column_and_value(
    frames: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    path = tmp_path / "nass.csv"
    frames["nassCDS"].to_csv(path, index=False)
    line = path.read_text().splitlines()[-1].split(",")
    line[7] = "unknown"  # ageOFocc, an integer in the 26,217 rows before
    with path.open("a") as fh:
        fh.write(",".join(line) + "\n")
    source = load_source(path)
    message = r'converting column "ageOFocc". Could not convert string "unknown".*guessed from its first rows'
    with pytest.raises(DataError, match=message):
        source.counts(["ageOFocc"], [uniform_bins(16, 97, 9)])
    with pytest.raises(DataError, match=message):
        sum(len(chunk) for chunk in source.iter_chunks(["ageOFocc"]))


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'.*nowhere\.csv' does not exist"):
        load_source(tmp_path / "nowhere.csv")


def test_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder"):
        load_source(tmp_path)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crashes.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'"):
        load_source(path)


def test_corrupt_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crashes.parquet"
    path.write_text("dvcat,dead\n10-24,alive\n")
    with pytest.raises(DataError, match="cannot be read"):
        load_source(path)


def test_table_and_query_only_apply_to_databases(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "nafld1.parquet"
    frames["nafld1"].to_parquet(path)
    with pytest.raises(ParameterError, match="table="):
        load_source(path, table="nafld1")
    with pytest.raises(ParameterError, match="query="):
        load_source(frames["nafld1"], query="SELECT 1")


def test_sql_url_needs_a_table_or_a_query(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="exactly one of table"):
        load_source(f"sqlite:///{tmp_path / 'x.sqlite'}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdialect://host/db", "cannot connect to nosuchdialect://host/db: Can't load plugin"),
        ("postgresql://alice:pw@host:port/db", r"cannot connect to 'postgresql://alice:\*\*\*@host:port/db'"),
        ("mysql://alice@localhost/db", "its database driver is not installed"),
        ("sqlite:////no/such/folder/x.sqlite", "cannot connect to sqlite:////no/such/folder/x.sqlite"),
    ],
)
def test_sql_url_that_cannot_connect_is_a_source_error(url: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        load_source(url, table="t")


def test_unreachable_postgres_is_a_source_error() -> None:
    pytest.importorskip("psycopg")
    closed = _closed_port()
    with pytest.raises(
        SourceError, match=rf"cannot connect to postgresql\+psycopg://postgres:\*\*\*@127.0.0.1:{closed}/postgres"
    ):
        load_source(f"postgresql+psycopg://postgres:secret@127.0.0.1:{closed}/postgres", table="crashes")


def test_password_is_not_shown(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as raised:
        load_source("postgresql+psycopg://alice:hunter2@127.0.0.1:1/postgres", table="t")
    assert "hunter2" not in str(raised.value)


def test_missing_sql_table_is_a_source_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crashes.sqlite'}"
    pd.DataFrame({"dead": ["alive"]}).to_sql("crashes", sa.create_engine(url), index=False)
    with pytest.raises(SourceError, match="has no table 'wrecks'"):
        load_source(url, table="wrecks")
    with pytest.raises(SourceError, match=r"the query on .* fails"):
        load_source(url, query="SELECT * FROM wrecks")


def test_missing_postgres_table_is_a_source_error(postgres_url: str) -> None:
    with pytest.raises(SourceError, match="has no table 'wrecks'"):
        load_source(postgres_url, table="wrecks")


def test_duckdb_file_needs_an_existing_table(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "crashes.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE crashes AS SELECT 1 AS dead")
    with pytest.raises(ParameterError, match="say which table"):
        load_source(path)
    with pytest.raises(SourceError, match="table 'wrecks'"):
        load_source(path, table="wrecks")


def test_counts_needs_one_binning_per_column(stored: dict[str, Source]) -> None:
    with pytest.raises(ParameterError, match="one binning per column"):
        stored["nassCDS"].counts(["dead", "sex"], [Categories(("alive", "dead"))])
    with pytest.raises(ParameterError, match="no binning for column 'sex'"):
        stored["nassCDS"].counts(["dead", "sex"], {"dead": Categories(("alive", "dead"))})


# --- fingerprints -------------------------------------------------------------------------------------------


def test_fingerprint_follows_file_content_not_name(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    first = tmp_path / "nafld1.csv"
    frames["nafld1"].to_csv(first, index=False)
    renamed = tmp_path / "copy of nafld1.csv"
    shutil.copy(first, renamed)
    changed = tmp_path / "changed.csv"
    edited = frames["nafld1"].copy()
    edited.loc[0, "age"] += 1
    edited.to_csv(changed, index=False)
    prints = [load_source(p).fingerprint() for p in (first, first, renamed, changed)]
    assert prints[0] == prints[1] == prints[2] != prints[3]
    assert len(prints[0]) == 64


def test_parquet_fingerprint_follows_content(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    frames["nafld1"].to_parquet(tmp_path / "a.parquet")
    frames["nafld1"].to_parquet(tmp_path / "b.parquet")
    frames["nafld1"].iloc[1:].to_parquet(tmp_path / "c.parquet")
    a, b, c = (load_source(tmp_path / f"{x}.parquet").fingerprint() for x in "abc")
    assert a == b != c


def test_frame_fingerprint_follows_content(frames: dict[str, pd.DataFrame]) -> None:
    nafld = frames["nafld1"]
    edited = nafld.copy()
    edited.loc[5, "bmi"] = 30.0
    prints = [frame_source(df).fingerprint() for df in (nafld, nafld.copy(), edited, nafld.rename(columns=str.upper))]
    assert prints[0] == prints[1]
    assert len(set(prints)) == 3


def test_sql_fingerprint_names_the_table_not_the_password(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crashes.sqlite'}"
    for table in ("a", "b"):
        pd.DataFrame({"dead": ["alive"]}).to_sql(table, sa.create_engine(url), index=False)
    a, a2, b = load_source(url, table="a"), load_source(url, table="a"), load_source(url, table="b")
    assert a.fingerprint() == a2.fingerprint() != b.fingerprint()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
