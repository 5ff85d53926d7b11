"""The schema: what each column is, what values it may take, and whether that is public knowledge.

``Schema.infer(df)`` proposes a schema for a person to review (saved as YAML). Every domain it learns from the
data (category lists, numeric bounds) is marked ``public: false``: under differential privacy such a domain may
not be used without paying for it, while a domain a person declares public is free. Identifier and PII columns
are proposed with ``synthesize: false`` and a ``reason`` that says why.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import yaml

from privsynth.errors import DataError, SchemaError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class Kind(StrEnum):
    """What a column holds; decides how synthesizers model it."""

    CATEGORICAL = "categorical"
    INTEGER = "integer"
    FLOAT = "float"
    DATETIME = "datetime"
    TEXT = "text"
    IDENTIFIER = "identifier"

    @property
    def numeric(self) -> bool:
        return self in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME)


Scalar = str | int | float | bool


@dataclass
class Column:
    """One column of a schema.

    ``categories`` is the domain of a categorical column, ``bounds`` the (low, high) domain of a numeric or
    datetime one (datetimes as ISO strings). ``public`` says whether that domain is public knowledge. ``dtype``
    is the pandas dtype synthetic data is restored to.
    """

    name: str
    kind: Kind
    dtype: str = "object"
    nullable: bool = False
    categories: list[Scalar] | None = None
    bounds: tuple[Scalar, Scalar] | None = None
    public: bool = False
    pii: bool = False
    synthesize: bool = True
    reason: str | None = None

    def to_dict(self, private_domains: bool = True) -> dict[str, Any]:
        """The column as plain data; ``private_domains=False`` replaces a non-public domain by its size."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "dtype": self.dtype}
        out["nullable"] = self.nullable
        shown = private_domains or self.public
        if self.categories is not None:
            if shown:
                out["categories"] = [_plain(v) for v in self.categories]
            else:
                out["categories_count"] = len(self.categories)
        if self.bounds is not None and shown:
            out["bounds"] = [_plain(v) for v in self.bounds]
        out["public"] = self.public
        out["pii"] = self.pii
        out["synthesize"] = self.synthesize
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, raw: Any, position: int) -> Column:
        if not isinstance(raw, dict) or "name" not in raw:
            raise SchemaError(f"schema column #{position + 1} must be a mapping with at least 'name' and 'kind'")
        name = str(raw["name"])
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise SchemaError(f"schema column '{name}' has unknown field(s) {sorted(unknown)}")
        try:
            kind = Kind(str(raw.get("kind")))
        except ValueError:
            choices = ", ".join(k.value for k in Kind)
            raise SchemaError(f"schema column '{name}' has kind {raw.get('kind')!r}; use one of: {choices}") from None
        categories = raw.get("categories")
        if categories is not None and not isinstance(categories, list):
            raise SchemaError(f"schema column '{name}': 'categories' must be a list")
        bounds = raw.get("bounds")
        if bounds is not None:
            if not isinstance(bounds, list | tuple) or len(bounds) != 2:
                raise SchemaError(f"schema column '{name}': 'bounds' must be a list [low, high]")
            if kind is not Kind.DATETIME and not all(isinstance(b, int | float) for b in bounds):
                raise SchemaError(f"schema column '{name}': bounds {bounds} must be numbers")
            low, high = (pd.Timestamp(b) for b in bounds) if kind is Kind.DATETIME else bounds
            if low > high:
                raise SchemaError(f"schema column '{name}': lower bound {bounds[0]} exceeds upper {bounds[1]}")
            bounds = (bounds[0], bounds[1])
        flags = {f: raw.get(f, default) for f, default in [("nullable", False), ("public", False), ("pii", False)]}
        for flag, value in flags.items():
            if not isinstance(value, bool):
                raise SchemaError(f"schema column '{name}': '{flag}' must be true or false, not {value!r}")
        return cls(
            name=name,
            kind=kind,
            dtype=str(raw.get("dtype", "object")),
            nullable=flags["nullable"],
            categories=categories,
            bounds=bounds,
            public=flags["public"],
            pii=flags["pii"],
            synthesize=bool(raw.get("synthesize", kind not in (Kind.IDENTIFIER, Kind.TEXT) and not flags["pii"])),
            reason=raw.get("reason"),
        )


@dataclass
class Schema:
    """An ordered list of columns, with the warnings inference raised for a person to review.

    ``target``: the column models trained on the synthetic rows will predict (synthcity's ``target_column``),
    if there is one. Which column is the target is a choice, not a fact about the rows, so it is public: AIM
    weights the marginals that hold it, and evaluation tests utility on it when no other target is given.
    """

    columns: list[Column]
    warnings: list[str] = field(default_factory=list)
    target: str | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for col in self.columns:
            if col.name in seen:
                raise SchemaError(f"schema lists column '{col.name}' twice")
            seen.add(col.name)
        if self.target is not None and self.target not in seen:
            raise SchemaError(
                f"the schema's target '{self.target}' is not one of its columns ({', '.join(self.names)}); "
                "name one of them or remove the target"
            )

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise SchemaError(f"the schema has no column '{name}'; columns: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return any(col.name == name for col in self.columns)

    @property
    def names(self) -> list[str]:
        return [col.name for col in self.columns]

    def synthesized(self) -> Schema:
        """The schema restricted to the columns a synthesizer models."""
        kept = [col for col in self.columns if col.synthesize]
        return Schema(kept, target=self.target if any(c.name == self.target for c in kept) else None)

    def excluded(self) -> list[Column]:
        """Columns left out of synthesis, each with the reason."""
        return [col for col in self.columns if not col.synthesize]

    def select(self, names: Sequence[str]) -> Schema:
        return Schema([self[name] for name in names], target=self.target if self.target in names else None)

    # ---- inference -------------------------------------------------------------------------------------------

    @classmethod
    def infer(cls, df: pd.DataFrame) -> Schema:
        """Propose a schema for ``df``. Domains are learned from the data and so marked not public."""
        if df.shape[1] == 0:
            raise DataError("the data has no columns")
        if len(df) == 0:
            raise DataError("the data has a header but no rows; a schema needs at least one row to infer from")
        warnings: list[str] = []
        columns = [_infer_column(str(name), df[name], warnings) for name in df.columns]
        for message in warnings:
            logger.warning(message)
        return cls(columns, warnings)

    @classmethod
    def from_storage(cls, types: Mapping[str, str]) -> Schema:
        """A schema from storage types only (``Source.storage_types()``), for a DP fit without a reviewed schema.

        Nothing here looks at a value: kinds follow the engine's types (numbers, timestamps; booleans as the
        public categories false/true; everything else categorical), every column may be missing, no domain is
        known, and personal data is flagged by column name alone (names are structure, not data).
        """
        columns = []
        for name, stored in types.items():
            kind = _STORAGE_KINDS.get(stored, Kind.CATEGORICAL)
            column = Column(name, kind, _STORAGE_DTYPES.get(stored, "object"), nullable=True)
            if stored == "boolean":
                column = replace(column, categories=[False, True], public=True)
            pii = _pii_by_name(name)
            if pii is not None:
                column = replace(
                    column, pii=True, synthesize=False, reason=f"column name suggests personal data ({pii})"
                )
            elif set(_tokens(name)) & _ID_TOKENS and kind in (Kind.CATEGORICAL, Kind.INTEGER):
                column = replace(
                    column, kind=Kind.IDENTIFIER, synthesize=False, reason="column name suggests an identifier"
                )
            columns.append(column)
        return cls(columns)

    # ---- YAML --------------------------------------------------------------------------------------------------

    def to_dict(self, private_domains: bool = True) -> dict[str, Any]:
        """The schema as plain data; ``private_domains=False`` leaves out every domain not declared public."""
        columns = [col.to_dict(private_domains) for col in self.columns]
        target = {} if self.target is None else {"target": self.target}
        return {"privsynth_schema": SCHEMA_VERSION, **target, "columns": columns}

    def to_yaml(self) -> str:
        header = (
            "# privsynth schema: review before use. Domains learned from the data are public: false and cost\n"
            "# privacy budget under DP; set public: true only for domains that are public knowledge.\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: Any) -> Schema:
        if not isinstance(raw, dict) or not isinstance(raw.get("columns"), list):
            raise SchemaError("a schema must be a mapping with a 'columns' list (see `privsynth schema infer`)")
        version = raw.get("privsynth_schema", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise SchemaError(f"schema version {version} is not supported; this privsynth reads {SCHEMA_VERSION}")
        if not raw["columns"]:
            raise SchemaError("the schema lists no columns")
        target = raw.get("target")
        if target is not None and not isinstance(target, str):
            raise SchemaError(f"the schema's target must be a column name, not {target!r}")
        return cls([Column.from_dict(c, i) for i, c in enumerate(raw["columns"])], target=target)

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.is_file():
            raise SchemaError(f"schema file '{path}' does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SchemaError(f"schema file '{path}' is not valid YAML: {exc}") from None
        return cls.from_dict(raw)

    # ---- validation --------------------------------------------------------------------------------------------

    def validate(self, df: pd.DataFrame, check_domains: bool = True) -> None:
        """Check that ``df`` fits the schema; raise :class:`SchemaError` naming the column and value if not.

        With ``check_domains`` a categorical value outside ``categories`` or a number outside ``bounds`` is an
        error when the domain is public (the data contradicts a declared fact); a private domain was learned
        from other rows and only the kinds are checked.
        """
        missing = [name for name in self.names if name not in df.columns]
        if missing:
            raise SchemaError(
                f"the schema names column(s) {missing} that the data lacks; data columns: {list(df.columns)}"
            )
        for col in self.columns:
            _validate_column(col, df[col.name], check_domains)


# ---- inference helpers ---------------------------------------------------------------------------------------

_TOKEN_SPLIT = re.compile(r"[^0-9a-zA-Z]+|(?<=[a-z])(?=[A-Z])")

# Column-name tokens that mark direct personal data by themselves (a person's name, contact, government id).
_PII_NAME_PATTERNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "personal name": (
        ("first", "name"),
        ("last", "name"),
        ("full", "name"),
        ("given", "name"),
        ("family", "name"),
        ("middle", "name"),
        ("maiden", "name"),
        ("firstname",),
        ("lastname",),
        ("surname",),
        ("fullname",),
        ("forename",),
    ),
    "e-mail address": (("email",), ("e", "mail"), ("mail", "address")),
    "phone number": (("phone",), ("telephone",), ("mobile", "number"), ("cell", "phone"), ("fax",)),
    "postal address": (
        ("address",),
        ("street",),
        ("zip", "code"),
        ("zipcode",),
        ("postcode",),
        ("postal", "code"),
    ),
    "government id": (
        ("ssn",),
        ("social", "security"),
        ("passport",),
        ("national", "id"),
        ("nin",),
        ("sin",),
    ),
    "date of birth": (("dob",), ("birth", "date"), ("date", "of", "birth"), ("birthdate",), ("birthday",)),
    "financial account": (("iban",), ("card", "number"), ("credit", "card"), ("account", "number")),
    "network address": (("ip", "address"), ("ip",), ("mac", "address")),
}
_ID_TOKENS = {"id", "uuid", "guid", "key", "mrn", "identifier", "rownames", "index"}

# Most specific first: a card number also fits the loose phone pattern.
VALUE_PATTERNS: dict[str, re.Pattern[str]] = {
    "e-mail address": re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$"),
    "government id": re.compile(r"^\d{3}-\d{2}-\d{4}$"),
    "card number": re.compile(r"^(\d[ -]?){12,18}\d$"),
    "network address": re.compile(r"^(\d{1,3}\.){3}\d{1,3}$"),
    "phone number": re.compile(r"^\+?(\(?\d{1,4}\)?[\s.-]?){2,5}\d{2,4}$"),
}
_PATTERN_SHARE = 0.8  # share of non-null values that must match a PII pattern
_NEAR_UNIQUE = 0.95  # distinct/non-null above which a string column is an identifier
_ID_UNIQUE = 0.5  # distinct/non-null above which an id-named column is an identifier
_MAX_CATEGORIES = 1000  # above this many levels a string column is text or an identifier, not a category
_TEXT_MEAN_LENGTH = 40  # strings longer than this on average, with spaces, are free text


_STORAGE_KINDS: Final = {"integer": Kind.INTEGER, "float": Kind.FLOAT, "datetime": Kind.DATETIME}
_STORAGE_DTYPES: Final = {
    "integer": "Int64",
    "float": "float64",
    "datetime": "datetime64[ns]",
    "boolean": "boolean",
    "string": "object",
}


def _tokens(name: str) -> list[str]:
    return [t.lower() for t in _TOKEN_SPLIT.split(name) if t]


def _contains_run(tokens: list[str], run: tuple[str, ...]) -> bool:
    return any(tuple(tokens[i : i + len(run)]) == run for i in range(len(tokens) - len(run) + 1))


def _pii_by_name(name: str) -> str | None:
    tokens = _tokens(name)
    for what, runs in _PII_NAME_PATTERNS.items():
        if any(_contains_run(tokens, run) for run in runs):
            return what
    return None


def _pii_by_value(values: pd.Series) -> str | None:
    sample = values.dropna().astype(str).str.strip()
    sample = sample.sample(min(len(sample), 2000), random_state=0) if len(sample) else sample
    if sample.empty:
        return None
    for what, pattern in VALUE_PATTERNS.items():
        matches = sample.str.fullmatch(pattern)
        if matches.mean() < _PATTERN_SHARE:
            continue
        if what == "card number" and not sample[matches].map(luhn_ok).mean() >= _PATTERN_SHARE:
            continue
        digits = sample.str.replace(r"\D", "", regex=True).str.len()
        if what == "phone number" and not digits.between(7, 15).all():  # E.164 numbers have at most 15 digits
            continue
        return what
    return None


def luhn_ok(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _plain(value: Any) -> Scalar:
    """A YAML-safe Python scalar for a numpy/pandas value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value  # type: ignore[no-any-return]


def _infer_column(name: str, values: pd.Series, warnings: list[str]) -> Column:
    nullable = bool(values.isna().any())
    present = values.dropna()
    dtype = str(values.dtype)
    if present.empty:
        warnings.append(f"column '{name}' has no values (all missing); it is left out of synthesis")
        return Column(name, Kind.CATEGORICAL, dtype, True, [], synthesize=False, reason="all values are missing")

    col = _infer_kind(name, values, present, dtype, nullable, warnings)
    pii = _pii_by_name(name)
    strings = col.kind in (Kind.CATEGORICAL, Kind.IDENTIFIER, Kind.TEXT) and not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    )
    if pii is None and strings:
        pii = _pii_by_value(present)
    n_unique = int(present.nunique())
    unique_share = n_unique / len(present)
    id_named = bool(set(_tokens(name)) & _ID_TOKENS)
    if n_unique == 1:
        warnings.append(
            f"column '{name}' has a single value ({_plain(present.iloc[0])!r}); synthetic data will repeat it"
        )
    if pii is not None:
        return replace(col, pii=True, synthesize=False, reason=f"column looks like personal data ({pii})")
    if col.kind in (Kind.CATEGORICAL, Kind.INTEGER, Kind.IDENTIFIER) and id_named and unique_share >= _ID_UNIQUE:
        return replace(
            col,
            kind=Kind.IDENTIFIER,
            categories=None,
            bounds=None,
            synthesize=False,
            reason=f"name looks like an identifier and {unique_share:.0%} of its values are distinct",
        )
    return col


def _infer_kind(
    name: str, values: pd.Series, present: pd.Series, dtype: str, nullable: bool, warnings: list[str]
) -> Column:
    if pd.api.types.is_bool_dtype(values):
        return Column(name, Kind.CATEGORICAL, dtype, nullable, sorted(present.unique().tolist()))
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetime_column(name, pd.to_datetime(present), dtype, nullable)
    if pd.api.types.is_numeric_dtype(values):
        return _numeric_column(name, present.astype(float), dtype, nullable)

    text = present.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    numeric_share = float(numbers.notna().mean())
    if numeric_share == 1.0:
        return _numeric_column(name, numbers.astype(float), dtype, nullable)
    if 0.5 <= numeric_share < 1.0:
        bad = text[numbers.isna()]
        warnings.append(
            f"column '{name}' mixes numbers and text: {len(bad)} of {len(text)} values are not numbers "
            f"(e.g. {bad.iloc[0]!r}); it is treated as categorical. If those values mean 'missing', "
            "convert them to empty cells; otherwise edit its kind in the schema"
        )
    elif numeric_share < 0.5 and _looks_like_dates(text):
        return _datetime_column(name, pd.to_datetime(text, format="mixed"), dtype, nullable)

    n_unique = int(text.nunique())
    mean_length = float(text.str.len().mean())
    if mean_length > _TEXT_MEAN_LENGTH and text.str.contains(" ").mean() > 0.5:
        return Column(name, Kind.TEXT, dtype, nullable, synthesize=False, reason="free text (use `privsynth text`)")
    if n_unique / len(text) >= _NEAR_UNIQUE and len(text) >= 20:
        return Column(
            name,
            Kind.IDENTIFIER,
            dtype,
            nullable,
            synthesize=False,
            reason=f"{n_unique / len(text):.0%} of its values are distinct (an identifier or key)",
        )
    if n_unique > _MAX_CATEGORIES:
        warnings.append(
            f"column '{name}' has {n_unique} distinct values; categories that rare cannot be synthesized well "
            "(under DP most will be merged); consider dropping or grouping it"
        )
    return Column(name, Kind.CATEGORICAL, dtype, nullable, sorted(present.unique().tolist(), key=str))


def _looks_like_dates(text: pd.Series) -> bool:
    sample = text.sample(min(len(text), 500), random_state=0)
    if not sample.str.contains(r"\d{1,4}[-/.:]\d{1,2}", regex=True).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.99)


def _numeric_column(name: str, numbers: pd.Series, dtype: str, nullable: bool) -> Column:
    finite = numbers[np.isfinite(numbers)]
    if len(finite) < len(numbers):
        raise DataError(f"column '{name}' holds infinite values; replace them with numbers or empty cells")
    integral = bool((finite == np.round(finite)).all())
    low, high = float(finite.min()), float(finite.max())
    if integral and finite.nunique() <= 2:
        levels = sorted({_as_int(v) for v in finite.unique()})
        return Column(name, Kind.CATEGORICAL, dtype, nullable, list(levels))
    if integral:
        return Column(name, Kind.INTEGER, dtype, nullable, bounds=(_as_int(low), _as_int(high)))
    return Column(name, Kind.FLOAT, dtype, nullable, bounds=(low, high))


def _as_int(value: float) -> int:
    return int(value) if math.isfinite(value) else 0


def _datetime_column(name: str, stamps: pd.Series, dtype: str, nullable: bool) -> Column:
    low, high = stamps.min(), stamps.max()
    return Column(name, Kind.DATETIME, dtype, nullable, bounds=(low.isoformat(), high.isoformat()))


def _validate_column(col: Column, values: pd.Series, check_domains: bool) -> None:
    present = values.dropna()
    if not col.nullable and len(present) < len(values):
        position = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise SchemaError(
            f"column '{col.name}' has a missing value (row {position + 1}) but the schema says nullable: false"
        )
    if col.kind.numeric and col.kind is not Kind.DATETIME:
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.isna().any():
            bad = present[numbers.isna()].iloc[0]
            raise SchemaError(f"column '{col.name}' is {col.kind.value} in the schema but holds {bad!r}")
        if col.kind is Kind.INTEGER and not (numbers == np.round(numbers)).all():
            bad = present[numbers != np.round(numbers)].iloc[0]
            raise SchemaError(f"column '{col.name}' is integer in the schema but holds {bad!r}")
        if check_domains and col.public and col.bounds is not None:
            low, high = (float(b) for b in col.bounds)
            outside = present[(numbers < low) | (numbers > high)]
            if len(outside):
                raise SchemaError(
                    f"column '{col.name}' holds {outside.iloc[0]!r}, outside its public bounds [{low}, {high}] "
                    f"({len(outside)} values in all); widen the bounds or clip the data"
                )
    elif col.kind is Kind.DATETIME:
        parsed = pd.to_datetime(present, errors="coerce", format="mixed")
        if parsed.isna().any():
            bad = present[parsed.isna()].iloc[0]
            raise SchemaError(f"column '{col.name}' is datetime in the schema but holds {bad!r}")
    elif col.kind is Kind.CATEGORICAL and check_domains and col.public and col.categories is not None:
        allowed = {str(c) for c in col.categories}
        unknown = present[~present.astype(str).isin(allowed)]
        if len(unknown):
            raise SchemaError(
                f"column '{col.name}' holds {unknown.iloc[0]!r}, which is not among its public categories "
                f"({len(unknown)} values in all); add it to the schema's categories"
            )
