"""The synthesizer contract and the registry that names every method.

Synthesizers follow scikit-learn's shape: the constructor stores hyperparameters only; ``fit`` learns from a
source (reading it only through the source's queries) and sets attributes ending in ``_``; ``sample`` is
post-processing and never touches the data again. The registry maps names (``copula``, ``aim``, ...) to classes
so the CLI, benchmarks and service create them the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import pandas as pd

from privsynth.data.profile import infer_source_schema
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import DuckDBSource, Source, load_source
from privsynth.errors import DataError, ParameterError, PrivsynthError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget
from privsynth.synth.dp import (
    KINDS_NOTE,
    KINDS_SHARE,
    NO_SCHEMA_NOTE,
    FitRecord,
    dataset_name,
    detect_kinds,
    dp_schema,
    open_fit,
    storage_of,
)

logger = logging.getLogger(__name__)

Conditions = Mapping[str, Any]
_FORMAT = "privsynth-model"
_FORMAT_VERSION = 1
_MAX_REJECTION_DRAWS = 200  # batches drawn before conditional sampling gives up


class Synthesizer(ABC):
    """Learns a table's distribution and samples synthetic rows from it."""

    name: ClassVar[str]
    differentially_private: ClassVar[bool] = False
    contribution_bound: int = 1
    """The most rows one privacy unit contributes (k); a DP method whose mechanisms calibrate to k takes it as a
    parameter (the marginal methods), the others protect one row."""
    unit: str = "row"
    """The privacy unit a DP fit protects: ``row``, or the name of whoever owns up to ``contribution_bound`` rows."""

    schema_: Schema
    declared_: Schema
    """The whole structure the fit worked from, the columns it left out too (for a DP fit: declared structure,
    without the domains that are not public)."""
    record_: FitRecord
    ancestry_: Any
    """Set by the pipeline: the lineage of the data the model was fitted on (no data), saved with the model."""

    def fit(
        self,
        source: Source | pd.DataFrame | str | Path,
        schema: Schema | None = None,
        epsilon: float | None = None,
        delta: float | None = None,
        ledger: Any = None,
        dataset: str | None = None,
    ) -> Self:
        """Learn from ``source``. Columns the schema excludes (identifiers, PII, text) are left out.

        A DP method spends ``epsilon``/``delta`` on ``dataset`` (the name its budget is kept under in
        ``ledger``: by default the source's name) and takes its structure only from what is declared: the
        ``schema`` given (its domains only where ``public``), else the source's storage types
        (:meth:`Schema.from_storage`); every column gets a missing-value cell, measured like the others.
        ``record_`` is then what the fit may publish (:class:`~privsynth.synth.dp.FitRecord`).
        """
        if not self.differentially_private and (epsilon is not None or delta is not None or ledger is not None):
            raise ParameterError(
                f"'{self.name}' is not differentially private and takes no epsilon, delta or ledger; "
                "use a DP method (see `privsynth methods`) or drop those options"
            )
        given = source
        source = load_source(source)
        assumptions: tuple[str, ...] = ()
        self._kinds_pending = False
        if self.differentially_private:
            if schema is None and not source.declares_types and not isinstance(source, DuckDBSource):
                # Only DuckDB re-reads a file through kinds chosen under DP (detect_kinds): refuse before the
                # ledger is opened or anything is spent.
                raise ParameterError(
                    f"'{source.name}' is read without declared column types (a CSV file read by Spark, whose types "
                    "are guessed from its values), and a DP fit may not take structure from the data; give a "
                    "reviewed schema (`privsynth schema infer FILE -o schema.yaml`, review it, then `--schema "
                    "schema.yaml`), or convert the file to Parquet, or read it with `--engine duckdb`, which "
                    "chooses the column kinds under DP"
                )
            if schema is None and not source.declares_types:
                # A CSV file's types would be guessed from its values: the fit chooses them under DP instead
                # (see _declare_structure); until then every column is a placeholder with no domain.
                schema = Schema.from_storage(dict.fromkeys(source.columns, "string"))
                assumptions = (NO_SCHEMA_NOTE, KINDS_NOTE)
                self._kinds_pending = True
            else:
                schema, assumptions = dp_schema(source, schema)
                if not source.declares_types and isinstance(source, DuckDBSource):
                    source = source.retyped(storage_of(schema))  # read as declared, never as guessed
            for note in assumptions:
                logger.log(logging.WARNING if note == NO_SCHEMA_NOTE else logging.INFO, "%s", note)
            self.dataset_ = dataset_name(dataset, source)
        elif schema is None:
            schema = infer_schema(given if isinstance(given, pd.DataFrame) else source)  # a frame keeps its dtypes
        modelled = schema.synthesized()
        if len(modelled) == 0:
            raise DataError("no column is left to synthesize: the schema excludes them all")
        missing = [c for c in modelled.names if c not in source.columns]
        if missing:
            raise DataError(f"the schema names column(s) {missing} that the data lacks; data has {source.columns}")
        for col in schema.excluded():
            logger.info("column '%s' is left out of synthesis: %s", col.name, col.reason or "synthesize: false")
        self.schema_ = modelled
        self.declared_ = schema
        self.assumptions_ = assumptions
        self._fit(source, modelled, epsilon=epsilon, delta=delta, ledger=ledger)
        if self.differentially_private:
            self.schema_ = self._released_schema()
        else:
            self.record_ = FitRecord.of(self.name, self.get_params(), dataset=dataset_name(dataset, source))
        return self

    @contextmanager
    def _accounting(
        self, budget: Budget, ledger: Any, source: Source, schema: Schema
    ) -> Iterator[tuple[Accountant, Budget | None, Source, Schema]]:
        """A DP method's fit, for ``_fit`` to run inside: the budget reserved in the ledger under the dataset's
        name (with the source's content fingerprint for the ledger's keyed look-alike hint, not computed without
        a ledger), the structure settled (:meth:`_declare_structure`), and the accountant, the dataset's cap and
        the source and schema to read with."""
        purpose = f"{self.name} fit at epsilon={budget.epsilon:g}, delta={budget.delta:g}"
        content = None if ledger is False else source.fingerprint()
        bound = self.contribution_bound
        with open_fit(
            budget, ledger, self.dataset_, purpose, content=content, contribution_bound=bound, unit=self.unit
        ) as (accountant, cap):
            source, schema = self._declare_structure(source, schema, accountant)
            yield accountant, cap, source, schema

    def _record_fit(self, budget: Budget, accountant: Accountant, released: Mapping[str, Any]) -> None:
        """What the DP fit may publish (``record_``): the user's parameters, the budget, the spends, the noisy
        values ``released``, the assumptions."""
        self.record_ = FitRecord.of(
            self.name,
            self.get_params(),
            budget=budget,
            accountant=accountant,
            dataset=self.dataset_,
            released=released,
            assumptions=self.assumptions_,
            unit=accountant.unit,
            contribution_bound=accountant.contribution_bound,
        )

    def _declare_structure(self, source: Source, schema: Schema, accountant: Accountant) -> tuple[Source, Schema]:
        """Called by a DP method's ``_fit`` first thing under its accountant: for a CSV file given without a
        schema, choose the column kinds under DP (:data:`~privsynth.synth.dp.KINDS_SHARE` of the budget, see
        :func:`~privsynth.synth.dp.detect_kinds`) and read the file through them; otherwise nothing changes."""
        if not getattr(self, "_kinds_pending", False):
            return source, schema
        if not isinstance(source, DuckDBSource):
            raise ParameterError("column kinds can only be chosen under DP for files read by DuckDB; give a schema")
        kinds = detect_kinds(source, schema.names, accountant, KINDS_SHARE * accountant.budget.rho)
        self._kinds_pending = False
        decided = Schema.from_storage(kinds)
        decided = Schema(list(decided), target=schema.target)
        self.schema_ = decided
        return source.retyped(kinds), decided

    def published_schema(self) -> Schema:
        """The structure a release's card shows: every column the fit worked from, the modelled ones as the model
        holds them (for a DP model, with only the domains its fit released or that are public), the others as
        declared."""
        self._check_fitted()
        declared = getattr(self, "declared_", None)
        if declared is None:  # a model saved before declared_ was kept
            return self.schema_
        return Schema(
            [self.schema_[c.name] if c.name in self.schema_ else c for c in declared],  # noqa: SIM401 (no Schema.get)
            target=declared.target,
        )

    def _released_schema(self) -> Schema:
        """The schema a DP model keeps after fitting: structure plus public domains only. Methods that learn
        domains under DP override this to add them (they are DP outputs)."""
        return Schema(
            [col if col.public else dataclasses.replace(col, categories=None, bounds=None) for col in self.schema_],
            target=self.schema_.target,
        )

    @abstractmethod
    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        """Learn the model from ``source``'s columns in ``schema``."""

    @abstractmethod
    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        """Draw ``n`` unconditional rows with the schema's columns and dtypes."""

    def sample(self, n: int, conditions: Conditions | None = None, seed: int | None = None) -> pd.DataFrame:
        """Draw ``n`` rows; ``conditions`` fixes columns to values (``{"dead": "dead"}``). Same seed, same rows."""
        self._check_fitted()
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
            raise ParameterError(f"the number of rows must be a positive whole number, not {n!r}")
        rng = np.random.default_rng(seed)
        if not conditions:
            return self._sample(int(n), rng)
        conditions = self._check_conditions(conditions)
        return self._sample_conditional(int(n), conditions, rng)

    def _sample_conditional(self, n: int, conditions: Conditions, rng: np.random.Generator) -> pd.DataFrame:
        """Rejection sampling: draw batches and keep rows that meet the conditions (methods may do better)."""
        kept: list[pd.DataFrame] = []
        have = drawn = 0
        batch = max(n, 1000)
        for _ in range(_MAX_REJECTION_DRAWS):
            rows = self._sample(batch, rng)
            drawn += batch
            mask = np.ones(len(rows), dtype=bool)
            for column, value in conditions.items():
                mask &= _matches(rows[column], value)
            kept.append(rows[mask])
            have += int(mask.sum())
            if have >= n:
                return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)
            if drawn >= 20 * batch and have / drawn < 1e-4:
                break
        raise DataError(
            f"the model almost never produces rows with {dict(conditions)} ({have} in {drawn} draws); "
            "the condition is too rare for this method to sample"
        )

    def _check_conditions(self, conditions: Conditions) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for column, value in conditions.items():
            if column not in self.schema_:
                raise ParameterError(
                    f"cannot condition on '{column}': the model has no such column ({', '.join(self.schema_.names)})"
                )
            shown = not self.differentially_private or self.schema_[column].public
            checked[column] = _condition_value(self.schema_[column], value, show_domain=shown)
        return checked

    def _check_fitted(self) -> None:
        if not hasattr(self, "schema_"):
            raise PrivsynthError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to the constructor (recorded in data cards)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def save(self, path: str | Path) -> None:
        """Write the fitted model to ``path`` (a pickle: load only models you trust)."""
        self._check_fitted()
        write_model_file(path, self.name, self)

    @classmethod
    def load(cls, path: str | Path) -> Synthesizer:
        """Read a model written by :meth:`save`."""
        model: Synthesizer = read_model_file(path, cls)
        return model


def write_model_file(path: str | Path, method: str, model: Any) -> None:
    """Pickle a fitted model (tabular or text) with privsynth's format header."""
    payload = {"format": _FORMAT, "version": _FORMAT_VERSION, "method": method, "model": model}
    with Path(path).open("wb") as fh:
        pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)


def read_model_file(path: str | Path, kind: type) -> Any:
    """The model of ``kind`` in a file :func:`write_model_file` wrote; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file '{path}' does not exist")
    with path.open("rb") as fh:
        try:
            payload = pickle.load(fh)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise DataError(f"'{path}' is not a privsynth model ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise DataError(f"'{path}' is not a privsynth model")
    model = payload["model"]
    if not isinstance(model, kind):
        raise DataError(f"'{path}' holds a '{payload.get('method')}' model, not a {kind.__name__}")
    return model


def infer_schema(data: Source | pd.DataFrame | str | Path, rows: int = 100_000) -> Schema:
    """Propose a schema from a frame as given (keeping its dtypes), or from a source: whole when it has ``rows``
    rows or fewer, else kinds from a uniform sample and domains from aggregates over every row
    (:func:`privsynth.data.profile.infer_source_schema`)."""
    if isinstance(data, pd.DataFrame):
        return Schema.infer(data)
    return infer_source_schema(load_source(data), rows)


def _condition_value(column: Column, value: Any, *, show_domain: bool = True) -> Any:
    """The condition value in the column's own type, or a clear error when it is outside the domain.

    ``show_domain=False`` (a DP model's column whose domain is not public) says only that the value is outside
    the model's domain: the message reaches people the data's custodian did not show the domain to.
    """
    if column.kind is Kind.CATEGORICAL:
        categories = column.categories or []
        for category in categories:
            if str(category) == str(value):
                return category
        if not show_domain:
            raise ParameterError(
                f"'{column.name}' = {value!r} is outside the model's domain for that column (a value the DP fit "
                "did not release); condition on a released value, or declare the column's categories public"
            )
        shown = ", ".join(map(str, categories[:20]))
        raise ParameterError(f"'{value}' is not a category of '{column.name}'; its categories are: {shown}")
    if column.kind in (Kind.INTEGER, Kind.FLOAT):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"'{column.name}' is numeric; the condition value {value!r} is not a number") from None
        if column.bounds is not None and not float(column.bounds[0]) <= number <= float(column.bounds[1]):
            if not show_domain:
                raise ParameterError(f"{value} is outside the model's range for '{column.name}'")
            raise ParameterError(f"{value} is outside the range of '{column.name}' {list(column.bounds)}")
        return number
    raise ParameterError(f"conditions on {column.kind.value} columns such as '{column.name}' are not supported")


def _matches(values: pd.Series, value: Any) -> np.ndarray:
    if isinstance(value, float):
        return np.asarray(np.isclose(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), value))
    return (values.astype(str) == str(value)).to_numpy()


# ---- registry ------------------------------------------------------------------------------------------------

S = TypeVar("S", bound=type[Synthesizer])
_REGISTRY: dict[str, type[Synthesizer]] = {}

# Methods whose module needs an optional extra are imported on first use: name -> (module, extra).
_LAZY: dict[str, tuple[str, str]] = {
    "mst": ("privsynth.synth.mst", "dp"),
    "aim": ("privsynth.synth.aim", "dp"),
    "privbayes": ("privsynth.synth.privbayes", "dp"),
    "deep": ("privsynth.synth.deep", "deep"),
    "dp-deep": ("privsynth.synth.deep", "deep"),
}


def register(cls: S) -> S:
    """Class decorator: make a synthesizer available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load(method: str) -> str | None:
    """Import the module of a lazily registered method; the reason it is unavailable, or None."""
    if method in _REGISTRY or method not in _LAZY:
        return None
    module, extra = _LAZY[method]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # not part of this version of privsynth
            return "not built yet"
        return f"needs the '{extra}' extra: pip install 'privsynth[{extra}]' ({exc.name} is missing)"
    return None if method in _REGISTRY else "not built yet"


def unavailable() -> dict[str, str]:
    """Methods privsynth knows but cannot run here, with the reason (a missing optional extra)."""
    reasons = {name: _load(name) for name in _LAZY}
    return {name: reason for name, reason in sorted(reasons.items()) if reason and reason != "not built yet"}


def available() -> dict[str, type[Synthesizer]]:
    """Registered methods by name (importing the optional ones whose extras are installed)."""
    for name in _LAZY:
        _load(name)
    return dict(sorted(_REGISTRY.items()))


def default_method() -> tuple[str, str]:
    """The method ``privsynth generate`` runs without ``--method``, and why: the deep synthesizer where its extra
    is installed, else the copula. The best one installed, not the weakest: on wide tables the copula keeps the
    marginals but loses what a target depends on. A DP method is never the implicit default: it spends budget."""
    if _load("deep") is None and "deep" in _REGISTRY:
        return "deep", "default: the best installed; `--method copula` for the fast one"
    return "copula", "default; install privsynth[deep] for the deep synthesizer"


def create(method: str, **params: Any) -> Synthesizer:
    """A new, unfitted synthesizer of ``method`` with hyperparameters ``params``."""
    reason = _load(method)
    if reason is not None and reason != "not built yet":
        raise ParameterError(f"method '{method}' {reason}")
    try:
        cls = _REGISTRY[method]
    except KeyError:
        raise ParameterError(f"unknown method '{method}'; available: {', '.join(available())}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise ParameterError(f"bad parameter for '{method}': {exc}") from None
