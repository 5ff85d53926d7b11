"""Writing results without ever overwriting what a user gave."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from privsynth.errors import OutputExistsError, ParameterError

TABLE_SUFFIXES = (".csv", ".parquet")


def check_output(path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """The output path, after refusing an existing file (unless ``overwrite``) and any of the ``inputs``."""
    path = Path(path).expanduser()
    for given in inputs:
        if Path(given).expanduser().exists() and path.resolve() == Path(given).expanduser().resolve():
            raise OutputExistsError(f"'{path}' is also an input; write the output somewhere else")
    if path.is_dir():
        raise OutputExistsError(f"'{path}' is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"'{path}' exists already; pass --overwrite (overwrite=True) to replace it")
    if not path.parent.exists():
        raise ParameterError(f"folder '{path.parent}' does not exist; create it first")
    return path


def write_table(df: pd.DataFrame, path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """Write ``df`` as CSV or Parquet, chosen by the file's suffix."""
    path = check_output(path, overwrite, inputs)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ParameterError(f"output '{path}' must end in .csv or .parquet")
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path
