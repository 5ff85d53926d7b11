"""What every output shares: the one JSON sanitiser, the one number formatter and the one Jinja environment.

Cards, reports, leaderboards, bench results and the web UI are all written from plain Python values and rendered
through the same templates machinery, so a number reads the same on each of them and a numpy scalar or a NaN never
reaches ``json.dumps`` (which would fail, or write ``NaN``, which is not JSON). The metric catalogue
(:mod:`privsynth.evaluate.catalogue`) builds on :func:`format_number` to write each metric its own way.

This module imports nothing from privsynth, so every package may use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import jinja2
import numpy as np

__all__ = ["DIGITS", "environment", "format_number", "is_number", "plain"]

DIGITS = 3
"""Decimals a number is written with unless its metric says otherwise."""


def plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None, dates to ISO text, tuples and
    sets to lists, paths and anything else unknown to text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def format_number(value: Any, digits: int = DIGITS) -> str:
    """The one rendering of a number: ``digits`` decimals, whole numbers plain (with thousands separators from
    10,000), values too small for ``digits`` decimals with two significant digits, ``-`` for a missing value."""
    if value is None:
        return "-"
    if not is_number(value):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "-"
    if number.is_integer():
        return f"{number:,.0f}" if abs(number) >= 1e4 else f"{number:.0f}"
    if abs(number) >= 10.0**-digits:
        return f"{number:.{digits}f}"
    return f"{number:.2g}"


def is_number(value: Any) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` to Python, not a number to a reader)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def environment(
    package: str,
    *,
    metric: Callable[[str, Any], str] | None = None,
    trim: bool = True,
    filters: dict[str, Callable[..., Any]] | None = None,
) -> jinja2.Environment:
    """A Jinja environment over ``package``'s ``templates`` folder, as every privsynth page is rendered.

    Autoescaping is on for ``.html`` and ``.j2`` templates (names, values and error messages in a page may come
    from a user's data), and an undefined name fails instead of rendering as empty. The ``number`` filter is
    :func:`format_number`; ``metric`` (``{{ value | metric(key) }}``) is the catalogue's metric formatter when
    given (this module sits below the catalogue). ``trim`` drops the newline after a block tag and the
    indentation before one; ``filters`` adds a page's own filters.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=trim,
        lstrip_blocks=trim,
    )
    env.filters["number"] = format_number
    if metric is not None:
        format_metric = metric
        env.filters["metric"] = lambda value, key: format_metric(key, value)
    env.filters.update(filters or {})
    return env
