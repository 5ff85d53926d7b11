"""Errors privsynth raises on purpose.

Every message is a sentence a user can act on: it names the column, value, file or argument at fault and says
what to do. The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``.
"""

from __future__ import annotations


class PrivsynthError(Exception):
    """Base class of every error privsynth raises deliberately."""

    exit_code = 1


class ParameterError(PrivsynthError, ValueError):
    """An argument is out of range or inconsistent (epsilon <= 0, unknown method, rows < 1, ...)."""

    exit_code = 2


class DataError(PrivsynthError, ValueError):
    """The data cannot be used as given (empty file, missing path, mixed types, values outside a domain)."""


class SchemaError(PrivsynthError, ValueError):
    """A schema is malformed or does not match the data it is applied to."""


class SourceError(PrivsynthError):
    """A data source cannot be reached or queried (a SQL URL that does not connect, a missing table)."""


class OutputExistsError(PrivsynthError):
    """An output path exists already; privsynth never overwrites what a user gave without ``overwrite``."""


class BudgetExceeded(PrivsynthError):
    """A privacy spend would pass the dataset's cap; nothing was released."""

    exit_code = 3
