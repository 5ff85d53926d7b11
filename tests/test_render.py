"""The one JSON sanitiser and the one Jinja environment every output is written with."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from pathlib import Path

import jinja2
import numpy as np
import pytest

from privsynth.evaluate.catalogue import format_metric
from privsynth.render import environment, format_number, plain


def test_plain_turns_numpy_nan_dates_and_paths_into_json() -> None:
    value = {
        1: np.float64(0.25),
        "array": np.array([1, 2]),
        "tuple": (np.int64(3), math.nan, math.inf),
        "set": {np.bool_(True)},
        "when": datetime(2026, 12, 5, 3, 0),
        "day": date(2026, 12, 5),
        "path": Path("out/synth.csv"),
        "none": None,
    }
    out = plain(value)
    assert out == {
        "1": 0.25,
        "array": [1, 2],
        "tuple": [3, None, None],
        "set": [True],
        "when": "2026-12-05T03:00:00",
        "day": "2026-12-05",
        "path": "out/synth.csv",
        "none": None,
    }
    assert type(out["1"]) is float and type(out["array"][0]) is int
    json.dumps(out, allow_nan=False)  # valid strict JSON


def test_every_page_environment_escapes_fails_on_undefined_and_formats_numbers() -> None:
    env = environment("privsynth.evaluate", metric=format_metric)
    page = env.from_string("{{ name }} {{ 12345.0 | number }} {{ 0.123456 | number }} {{ 0.5 | metric(key) }}")
    assert env.loader is not None and "report.html.j2" in env.loader.list_templates()
    with pytest.raises(jinja2.UndefinedError):
        page.render(key="privacy.exact_copy_rate")
    text = page.render(name="<b>", key="privacy.exact_copy_rate")
    assert text == "&lt;b&gt; 12,345 0.123 50.0%"
    assert env.filters["number"] is format_number


def test_the_page_environment_escapes_what_a_template_file_prints() -> None:
    env = environment("privsynth.service", trim=False)
    assert env.trim_blocks is False and env.lstrip_blocks is False
    assert environment("privsynth.bench").trim_blocks is True
    autoescape = env.autoescape
    assert callable(autoescape) and autoescape("page.html.j2") and autoescape("report.html")
