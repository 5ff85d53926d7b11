"""The release boundary of dp-deep: nothing a user gets from a DP fit carries a canary record's values, the exact
row count or a hash of the data.

nassCDS train with one canary row appended (an ``occRole`` no other row has, ``ageOFocc = 8675309``) is fitted
at epsilon 1 twice: with a reviewed schema that declares ``occRole``'s categories and ``ageOFocc``'s bounds
public (the canary is then outside the domain: its category must go to a cell of its own and its age be
clipped, without the fit failing or saying so), and with no schema (structure from the storage types, every
domain learned under DP). What a user gets is then searched: sampled rows, the saved model file, the fit's
record (what a card is built from), error messages of conditions and ``rebalance`` on the canary's values,
log lines, warnings and progress events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("opacus")

import torch

import privsynth
from privsynth.data.schema import Schema
from privsynth.data.sources import load_source
from privsynth.errors import ParameterError
from privsynth.progress import ProgressEvent, listen
from privsynth.synth.deep import DPDeepSynthesizer

CATEGORY, AGE = "zqxcanary", 8675309
PARAMS = {"hidden": 16, "epochs": 1, "batch_size": 512}


@dataclasses.dataclass
class Secrets:
    """What must not leave the fit: the canary's values, the exact row counts, hashes of the data."""

    rows: int
    hashes: list[str]

    def numbers(self) -> list[int]:
        return [AGE, self.rows, self.rows - 1]

    def found_in_text(self, text: str) -> list[str]:
        """The secrets in ``text``: strings as substrings, numbers as whole numbers (not digits of a longer one)."""
        found = [s for s in (CATEGORY, *self.hashes) if s in text]
        return found + [str(n) for n in self.numbers() if re.search(rf"(?<![\d.]){n}(?!\d)", text)]

    def found_in_bytes(self, data: bytes) -> list[str]:
        found = [s for s in (CATEGORY, *self.hashes) if s.encode() in data]
        return found + [str(n) for n in self.numbers() if re.search(rb"(?<![\d.])%d(?!\d)" % n, data)]

    def found_in_object(self, obj: Any, path: str = "model", seen: set[int] | None = None) -> list[str]:
        """Secrets anywhere in ``obj``'s attributes, containers and arrays (a pickle stores numbers in binary,
        where a search of its bytes would miss them). Network weights are skipped: they are DP-SGD's output."""
        seen = set() if seen is None else seen
        if id(obj) in seen or isinstance(obj, torch.Tensor | torch.nn.Module):
            return []
        seen.add(id(obj))
        if isinstance(obj, str):
            return [f"{path}: {s}" for s in self.found_in_text(obj)]
        if isinstance(obj, bool | type(None)):
            return []
        if isinstance(obj, int | float | np.number):
            return [f"{path} = {obj}" for n in self.numbers() if obj == n]
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                return [f for i, v in enumerate(obj.tolist()) for f in self.found_in_object(v, f"{path}[{i}]", seen)]
            hits = np.isin(np.asarray(self.numbers(), dtype=float), obj.astype(float, copy=False))
            return [f"{path} holds {n}" for n, hit in zip(self.numbers(), hits, strict=True) if hit]
        if isinstance(obj, dict):
            return [
                f
                for k, v in obj.items()
                for f in self.found_in_object(k, f"{path} key", seen) + self.found_in_object(v, f"{path}[{k!r}]", seen)
            ]
        if isinstance(obj, list | tuple | set | frozenset):
            return [f for i, v in enumerate(obj) for f in self.found_in_object(v, f"{path}[{i}]", seen)]
        state = vars(obj) if hasattr(obj, "__dict__") else {}
        return [f for k, v in state.items() for f in self.found_in_object(v, f"{path}.{k}", seen)]

    def found_in_rows(self, rows: pd.DataFrame) -> list[str]:
        """Secrets among the values of ``rows`` (compared as values: a float's digits are not a number)."""
        found: list[str] = []
        for column in rows.columns:
            values = rows[column].dropna()
            numbers = pd.to_numeric(values, errors="coerce").dropna()
            found += [f"{column}={n}" for n in self.numbers() if (numbers == n).any()]
            text = values.astype(str)
            found += [f"{column}~{s}" for s in (CATEGORY, *self.hashes) if text.str.contains(s, regex=False).any()]
        return found


@dataclasses.dataclass
class Fit:
    model: DPDeepSynthesizer
    secrets: Secrets
    log: str
    outputs: list[str]  # warnings and progress details


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, Secrets]:
    train = privsynth.load_dataset("nassCDS")
    canary = train.iloc[[0]].assign(occRole=CATEGORY, ageOFocc=AGE)
    frame = pd.concat([train, canary], ignore_index=True)
    hashes = [
        hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest(),
        hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest(),
        load_source(frame).fingerprint(),
    ]
    return frame, Secrets(rows=len(frame), hashes=hashes)


def _reviewed(frame: pd.DataFrame) -> Schema:
    """A reviewed schema: occRole's two roles and a plausible age range declared public (the canary fits neither)."""
    schema = Schema.infer(frame.drop(index=len(frame) - 1))
    public = {"occRole": {"categories": ["driver", "pass"]}, "ageOFocc": {"bounds": (16, 97)}}
    return Schema([dataclasses.replace(c, **public.get(c.name, {}), public=c.name in public) for c in schema])


def _fit(frame: pd.DataFrame, schema: Schema | None, secrets: Secrets, tmp: Path) -> Fit:
    events: list[ProgressEvent] = []
    handler = _Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught, listen(events.append):
            warnings.simplefilter("always")
            model = DPDeepSynthesizer(**PARAMS).fit(
                frame, schema, epsilon=1.0, ledger=privsynth.Ledger(tmp / "ledger.sqlite"), dataset="nass-canary"
            )
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert isinstance(model, DPDeepSynthesizer)
    outputs = [str(w.message) for w in caught] + [f"{e.task} {e.completed} {e.total} {e.detail}" for e in events]
    return Fit(model, secrets, "\n".join(handler.lines), outputs)


class _Capture(logging.Handler):
    """Every log record, formatted with its arguments (as a log file would hold it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


@pytest.fixture(scope="module", params=["reviewed schema", "no schema"])
def fit(
    request: pytest.FixtureRequest, data: tuple[pd.DataFrame, Secrets], tmp_path_factory: pytest.TempPathFactory
) -> Fit:
    frame, secrets = data
    schema = _reviewed(frame) if request.param == "reviewed schema" else None
    return _fit(frame, schema, secrets, tmp_path_factory.mktemp("boundary"))


def test_sampled_rows_hold_no_canary_value_count_or_hash(fit: Fit) -> None:
    rows = fit.model.sample(3000, seed=0)
    assert len(rows) == 3000
    assert fit.secrets.found_in_rows(rows) == []
    assert CATEGORY not in fit.model.known_categories("occRole")
    assert rows["ageOFocc"].dropna().max() < 200  # the canary's age was clipped, not learned as a bound


def test_model_file_and_fit_record_hold_no_canary_value_count_or_hash(fit: Fit, tmp_path: Path) -> None:
    fit.model.save(tmp_path / "model.pkl")
    assert fit.secrets.found_in_bytes((tmp_path / "model.pkl").read_bytes()) == []
    loaded = privsynth.Synthesizer.load(tmp_path / "model.pkl")
    state = {k: v for k, v in vars(loaded).items() if k != "record_"}  # the record is checked below
    assert fit.secrets.found_in_object(state) == []
    record: dict[str, Any] = fit.model.record_.to_dict()
    assert record["differentially_private"] and record["epsilon"] == 1.0 and record["dataset"] == "nass-canary"
    # the noisy row count is a DP release (it may equal the true count by chance); nothing else may
    released = dict(record["released"])
    assert abs(released.pop("noisy_rows") - fit.secrets.rows) < 1000
    text = json.dumps({**record, "released": released}, default=str)
    assert fit.secrets.found_in_text(text) == []
    assert fit.secrets.found_in_object(released) == []
    assert loaded.sample(200, seed=1).equals(fit.model.sample(200, seed=1))


def test_conditions_and_rebalance_on_canary_values_fail_without_showing_the_domain(fit: Fit) -> None:
    model = fit.model
    messages = []
    for call in (
        lambda: model.sample(10, conditions={"occRole": CATEGORY}),
        lambda: model.sample(10, conditions={"ageOFocc": AGE}),
        lambda: model.sample(10, conditions={"occRole": CATEGORY, "ageOFocc": 40}),
        lambda: model.rebalance("occRole", {CATEGORY: 0.5, "driver": 0.5}, 10),
    ):
        with pytest.raises(ParameterError, match="outside") as caught:
            call()
        messages.append(str(caught.value))
    for message in messages:
        assert fit.secrets.found_in_text(message) == []
        assert "driver" not in message  # no category list
        assert not re.search(r"\d", message)  # no bounds
    # values inside the DP domain work, and rebalancing spreads over the released categories only
    assert (model.sample(20, conditions={"occRole": "driver"}, seed=0)["occRole"] == "driver").all()
    uniform = model.rebalance("occRole", "uniform", 40, seed=0)
    assert set(uniform["occRole"]) <= {"driver", "pass"}


def test_logs_warnings_and_progress_hold_no_canary_value_count_or_hash(fit: Fit) -> None:
    assert fit.log  # the fit does log (domains, spends): the check below has something to read
    assert fit.secrets.found_in_text(fit.log) == []
    for output in fit.outputs:
        assert fit.secrets.found_in_text(output) == [], output


def test_the_canary_does_not_stop_the_fit_and_costs_only_the_budget(fit: Fit) -> None:
    record = fit.model.record_
    assert record.rho is not None and record.rho_spent <= record.rho * (1 + 1e-9)
    assert np.isfinite(fit.model.privacy_["noise_multiplier"])
