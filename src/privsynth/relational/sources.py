"""Open related tables: a folder of CSV/Parquet files (one table per file, named by its stem), a DuckDB file with
several tables, or a SQL database (a SQLAlchemy URL: every table of its default schema), as a mapping of table
name -> privsynth :class:`~privsynth.data.sources.Source`.

Each table is opened by :func:`privsynth.data.sources.load_source`, so counts stay pushed down to DuckDB or the
database as for one table.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import sqlalchemy as sa

from privsynth.data.source_base import first_line
from privsynth.data.sources import CSV_SUFFIXES, DUCKDB_SUFFIXES, PARQUET_SUFFIXES, Source, load_source
from privsynth.data.sql_source import database_tables
from privsynth.errors import DataError, SourceError
from privsynth.relational.infer import infer_metadata
from privsynth.relational.metadata import RelatedMetadata

__all__ = ["infer_related", "is_database_url", "open_related", "related_name", "table_files", "table_names"]


def is_database_url(location: str | Path) -> bool:
    """Whether ``location`` is a SQLAlchemy database URL (``postgresql+psycopg://...``, ``sqlite:///...``)."""
    return isinstance(location, str) and "://" in location


def related_name(location: str | Path) -> str:
    """A short name for the tables at ``location``: a folder's or file's stem, a database's name."""
    if is_database_url(location):
        url = sa.engine.make_url(str(location))
        return Path(url.database).stem if url.database else url.get_backend_name()
    return Path(location).stem


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _stem(path: Path) -> str:
    return path.name[: -len(_suffix(path))] if _suffix(path) else path.name


def table_files(folder: Path) -> dict[str, Path]:
    """The CSV and Parquet files of ``folder`` by table name (the file name without its suffix)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or _suffix(path) not in CSV_SUFFIXES | PARQUET_SUFFIXES:
            continue
        name = _stem(path)
        if name in files:
            raise DataError(
                f"'{folder}' holds two files for table '{name}' ({files[name].name} and {path.name}); keep one"
            )
        files[name] = path
    return files


def table_names(location: str | Path) -> list[str]:
    """The names of the tables in a DuckDB file or a database (listed, not opened), or in a folder."""
    if is_database_url(location):
        names = database_tables(str(location))
        if not names:
            shown = sa.engine.make_url(str(location)).render_as_string(hide_password=True)
            raise DataError(f"database '{shown}' holds no table")
        return names
    path = Path(location).expanduser()
    return list(table_files(path)) if path.is_dir() else _duckdb_tables(path)


def open_related(location: str | Path) -> dict[str, Source]:
    """The tables at ``location``: a folder of CSV/Parquet files, a DuckDB file or a database URL, by table name."""
    if is_database_url(location):
        return {name: load_source(str(location), table=name) for name in table_names(location)}
    path = Path(location).expanduser()
    if not path.exists():
        raise DataError(f"'{path}' does not exist; give a folder of CSV/Parquet files or a DuckDB file")
    if path.is_dir():
        files = table_files(path)
        if not files:
            raise DataError(f"folder '{path}' holds no CSV or Parquet file; put one file per table in it")
        return {name: load_source(file) for name, file in files.items()}
    if _suffix(path) in DUCKDB_SUFFIXES:
        return {name: load_source(path, table=name) for name in _duckdb_tables(path)}
    raise DataError(
        f"'{path}' is neither a folder, a DuckDB file (.duckdb) nor a database URL; related tables need several tables"
    )


def infer_related(location: str | Path, schemas: bool = True) -> RelatedMetadata:
    """Metadata proposed for the tables at ``location`` (:func:`infer_metadata`), each table's ``source`` set to its
    file name (relative to the folder, where the metadata file is meant to sit) or its table in the DuckDB file."""
    metadata = infer_metadata(open_related(location), schemas=schemas)
    path = None if is_database_url(location) else Path(location).expanduser()
    files = table_files(path) if path is not None and path.is_dir() else {}
    for name, table in metadata.tables.items():
        table.source = files[name].name if name in files else name
    return metadata


def _duckdb_tables(path: Path) -> list[str]:
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            names = [str(row[0]) for row in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
    except duckdb.Error as exc:
        raise SourceError(f"DuckDB file '{path}' cannot be read: {first_line(exc)}") from None
    if not names:
        raise DataError(f"DuckDB file '{path}' holds no table")
    return names
