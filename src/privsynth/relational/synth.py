"""Related synthetic tables (non-DP): parents first, then each child table conditioned on its parent's synthetic rows.

:class:`RelatedSynthesizer` fits one single-table synthesizer (``deep`` or ``copula``) per table, in the order the
metadata puts parents before children, and samples a whole set of tables whose keys are new, so that referential
integrity holds by construction. The roles a table can play:

- **root** (no parent it is generated from): its model learns its own columns plus, for every relationship in which
  it is the parent, the number of children of each row (``__n:...``), so a patient's number of visits is learned
  jointly with the patient's attributes. For a sequential child it also learns the first order value (``__start``:
  the day of the first visit) and the child's columns that never change within a parent (a visit's ``sex``, which
  is the patient's): those are generated once per parent and copied to every child, or copied from the parent's
  column of the same name when the two always agree. With ``counts="matched"`` (the default) the number of
  children a synthetic parent row *generates* is then drawn again given that row's own columns, by predictive mean
  matching (:class:`_CountModel`: a Poisson gradient-boosting regression of the real counts on the parent's
  columns, and the count of one of the real parents whose predicted mean is nearest), because a tokenized network
  on a few hundred parents does not learn that a patient followed for twelve years has more visits than one
  followed for two.
- **child** of a *driving* parent (the relationship with ``order_by``; otherwise the parent with the most rows): each
  synthetic parent row gets as many children as its count column says, and the child model draws each child given
  the parent's synthetic row (its columns as context, ``__parent.<column>``). For a sequential child the model also
  sees the position in the sequence (``__pos``) and the previous child's values (``__prev.<column>``), and learns
  the gap since the previous child (``__gap``): children are drawn position by position, the first at the parent's
  ``__start`` and each next one at a gap that must be positive (redrawn when it is not, then the smallest positive
  real gap), so the order increases and transitions between consecutive states are learned. The deep generator
  conditions each row on its own values (:meth:`privsynth.synth.deep.DeepSynthesizer.sample_given`); the copula
  draws from its Gaussian conditional (:meth:`privsynth.synth.copula.GaussianCopula.sample_given`).
- **other parents** of a multi-parent child (flights -> planes, airlines, airports, weather): one parent drives, the
  other foreign keys are *lookups*. A lookup into a synthetic parent picks one of that parent's synthetic keys, with
  probability proportional to the number of children the parent's model gave the row (its ``__n`` column for that
  relationship), so a busy plane stays busy; keys missing in the real data stay missing at the real rate. A lookup
  into a table kept whole (``keep``: public reference tables such as airlines and airports) is modelled as an
  ordinary categorical column of the child, so it is conditioned on the child's other columns for free.
- **kept** tables (``keep``) are copied as they are, keys and all: use it only for public lookup tables.

Primary keys are new (1..n, or ``<table>-<i>`` for text keys). A composite primary key that includes foreign-key
columns (weather: origin, time_hour) keeps its other columns as modelled data; synthetic rows that repeat a key are
dropped (logged). Child rows whose driving key is missing in the real data are not learned from.

Privacy: none. Every model reads the real rows; the counts, first order values, constant columns and the smallest
gap are learned without noise. A DP variant (person-level, contributions bounded per parent) will pass its budget
and bound through :meth:`RelatedSynthesizer._fit_table`; DP methods are refused here until then.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source
from privsynth.errors import DataError, ParameterError
from privsynth.progress import report
from privsynth.relational.checks import check_tables
from privsynth.relational.datasets import RelatedData
from privsynth.relational.evaluate import children_per_parent
from privsynth.relational.metadata import RelatedMetadata, Relationship
from privsynth.relational.sources import open_related
from privsynth.synth import Synthesizer, create
from privsynth.synth.base import default_method

__all__ = ["RelatedSynthesizer", "TablePlan"]

logger = logging.getLogger(__name__)

_POS, _GAP = "__pos", "__gap"
_REDRAWS = 5  # times a non-positive gap is redrawn before the smallest positive real gap is used
_METHODS = ("deep", "copula")
_FIRST_COPY = 0.9  # share of parents whose first child repeats their value, for the first child to copy it
_COUNTS = ("matched", "joint")
_DONORS = 5  # predictive mean matching: a synthetic parent's count is one of its 5 nearest real parents'
_STEPS_PER_EPOCH = 10  # deep's batch size on a small table: a tenth of its rows (between 32 and 1,024)
_ROWS_PER_BIN = 32  # deep's numeric bins on a table of n rows: n / 32, between 12 and 48 (its single-table default)
# A child model (context given) trains 15 epochs without early stopping: on pbc's visits its validation loss was
# lowest after 5 and early stopping kept that model, but the visits' transitions and association against the
# real ones kept improving (seeds 0-2: transitions 0.090 at 15 fixed epochs, 0.101 stopped early, 0.097 at 20).
_CHILD_EPOCHS = 15
# A table drawn on its own stops 3 epochs after its best validation epoch (deep's default: 6), then anneals over 3: on
# pbc's patients the best epoch (7-9) and so the model kept were the same, in 13-15 epochs instead of 19-21.
_OWN_PATIENCE = 3
_ONE_THREAD_ROWS = 10_000  # deep trains a smaller table on one torch thread (batches of at most 1,000 rows)


def _count_column(rel: Relationship) -> str:
    return f"__n:{rel.child}.{','.join(rel.child_key)}"


def _start_column(rel: Relationship) -> str:
    return f"__start:{rel.child}"


def _moved_column(rel: Relationship, column: str) -> str:
    return f"__c:{rel.child}.{column}"


def _is_context(column: str) -> bool:
    return column.startswith(("__parent.", "__prev.")) or column == _POS


def _parent_column(column: str) -> str:
    return f"__parent.{column}"


def _prev_column(column: str) -> str:
    return f"__prev.{column}"


@dataclass
class TablePlan:
    """How one table is made: copied (``kept``), drawn on its own (a root), or drawn per row of its ``driver``
    parent; which of its columns get new keys, are set by lookups, are modelled, or come from the parent."""

    name: str
    columns: list[str]
    kept: bool = False
    driver: Relationship | None = None
    lookups: list[Relationship] = field(default_factory=list)
    new_key: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    copied: dict[str, str] = field(default_factory=dict)  # child column -> parent column with the same values
    moved: list[str] = field(default_factory=list)  # constant within a parent: modelled in the parent's model
    parent_internals: list[str] = field(default_factory=list)  # __n / __start / __c columns of its own children
    first_copies: list[str] = field(default_factory=list)  # the first child takes the parent's value (baseline)
    excluded: list[Column] = field(default_factory=list)

    @property
    def sequential(self) -> bool:
        return self.driver is not None and self.driver.order_by is not None

    @property
    def role(self) -> str:
        if self.kept:
            return "kept"
        return "root" if self.driver is None else ("sequential child" if self.sequential else "child")

    def describe(self) -> dict[str, Any]:
        """The plan as plain data, for the card."""
        out: dict[str, Any] = {"table": self.name, "role": self.role}
        if self.driver is not None:
            out["generated_per_row_of"] = self.driver.describe()
            if self.driver.order_by is not None:
                out["order_by"] = self.driver.order_by
        if self.lookups:
            out["lookups"] = [rel.describe() for rel in self.lookups]
        if self.new_key:
            out["new_keys"] = self.new_key
        if self.copied or self.moved:
            out["constant_within_parent"] = sorted([*self.copied, *self.moved])
        return out


class RelatedSynthesizer:
    """Fits a synthesizer per table of a set of related tables and samples new related tables (non-DP).

    Parameters
    ----------
    method:
        ``deep`` (default where torch is installed) or ``copula``, used for every table's model.
    epochs:
        Training epochs of the deep models (None: the deep generator's default, 30 with early stopping after 3
        epochs without improvement, for a table drawn on its own; 15 without early stopping for a child model, which
        learns only the child's columns given its parent's row, position and previous child).
    params:
        More hyperparameters for every table's synthesizer (e.g. ``{"hidden": 64}``).
    keep:
        Tables copied whole (public lookup tables such as airlines); their keys are the real ones.
    drivers:
        For a child with several parents, the parent table whose rows generate it (default: the relationship with
        ``order_by``, else the parent with the most rows).
    counts:
        How the number of children a parent row generates is drawn: ``"matched"`` (default), by predictive mean
        matching on the parent's synthetic columns (:class:`_CountModel`), or ``"joint"``, the parent model's own
        count column.
    seed:
        Seeds every model's fit; the same data and seed give the same models.
    """

    def __init__(
        self,
        method: str | None = None,
        *,
        epochs: int | None = None,
        params: Mapping[str, Any] | None = None,
        keep: Sequence[str] = (),
        drivers: Mapping[str, str] | None = None,
        counts: str = "matched",
        seed: int = 0,
    ) -> None:
        self.method = method
        self.epochs = epochs
        self.params = dict(params or {})
        self.keep = tuple(keep)
        self.drivers = dict(drivers or {})
        self.counts = counts
        self.seed = seed

    # ---- fit ---------------------------------------------------------------------------------------------------

    def fit(
        self,
        tables: RelatedData | Mapping[str, pd.DataFrame | Source] | str | Path,
        metadata: RelatedMetadata | None = None,
    ) -> RelatedSynthesizer:
        """Learn every table of ``tables`` (a :class:`RelatedData`, a mapping of table name to frame or source, or
        a folder / DuckDB file) related by ``metadata``; the data is checked against the metadata first."""
        self.method_ = self._check_method()
        if self.counts not in _COUNTS:
            raise ParameterError(f"counts must be {' or '.join(_COUNTS)}, not {self.counts!r}")
        frames, metadata = _frames(tables, metadata)
        unknown = [t for t in [*self.keep, *self.drivers] if t not in metadata.tables]
        if unknown:
            raise ParameterError(f"table '{unknown[0]}' is not in the metadata; tables: {', '.join(metadata.tables)}")
        check_tables(metadata, frames)
        self.metadata_ = metadata
        self.plans_ = self._plan(frames, metadata)
        wide = self._wide_frames(frames)
        self.real_rows_ = {name: len(frame) for name, frame in frames.items()}
        self.kept_ = {name: frames[name].copy() for name in self.keep}
        self.key_dtypes_ = {name: frames[name].dtypes.astype(str).to_dict() for name in frames}
        self.null_rates_ = {
            (rel.child, rel.child_key): float(frames[rel.child][list(rel.child_key)].isna().any(axis=1).mean())
            for plan in self.plans_.values()
            for rel in plan.lookups
        }
        self.max_children_ = {
            _count_column(rel): int(wide[rel.parent][_count_column(rel)].max())
            for plan in self.plans_.values()
            if (rel := plan.driver) is not None
        }
        self.min_gap_ = {
            name: _smallest_gap(frames[name], plan.driver) for name, plan in self.plans_.items() if plan.sequential
        }
        self.count_models_ = {
            _count_column(rel): _CountModel.fit(wide[rel.parent], self.plans_[rel.parent].data, _count_column(rel))
            for plan in self.plans_.values()
            if (rel := plan.driver) is not None and self.counts == "matched"
        }
        self.models_: dict[str, Synthesizer] = {}
        self.model_columns_: dict[str, list[str]] = {}
        self.timings_: dict[str, float] = {}
        self.seen_: dict[str, dict[str, _Seen]] = {}
        fitted = [name for name in metadata.order() if not self.plans_[name].kept]
        for i, name in enumerate(fitted):
            report("fit related", i, len(fitted), name)
            frame = self._training_frame(name, wide)
            start = time.process_time()
            self.models_[name] = self._fit_table(name, frame, self._model_schema(name, frame, frames))
            self.timings_[name] = round(time.process_time() - start, 3)
            self.model_columns_[name] = list(frame.columns)
            self.seen_[name] = {str(c): _Seen.of(frame[c], self.models_[name].schema_[str(c)]) for c in frame.columns}
        report("fit related", len(fitted), len(fitted))
        return self

    def _check_method(self) -> str:
        method = self.method or default_method()[0]
        model = create(method)
        if model.differentially_private:
            raise ParameterError(
                f"'{method}' is differentially private, and DP with the person as the unit is not available yet for "
                f"related tables; use a non-DP method ({', '.join(_METHODS)})"
            )
        if method not in _METHODS:
            raise ParameterError(f"related tables are generated with {' or '.join(_METHODS)}, not '{method}'")
        return method

    def _fit_table(self, table: str, frame: pd.DataFrame, schema: Schema, **fit_options: Any) -> Synthesizer:
        """Fit one table's model; ``fit_options`` go to :meth:`Synthesizer.fit` (the hook a DP variant uses to pass
        its budget and contribution bound)."""
        params = dict(self.params)
        if self.method_ == "deep":
            params.setdefault("seed", self.seed)
            if self.epochs is not None:
                params.setdefault("epochs", self.epochs)
            # Related tables are often small (418 patients): ten steps an epoch, not one batch of every row, and
            # coarser numeric bins, each with enough rows for the network to tie it to the other columns.
            params.setdefault("batch_size", int(np.clip(len(frame) // _STEPS_PER_EPOCH, 32, 1024)))
            params.setdefault("bins", int(np.clip(len(frame) // _ROWS_PER_BIN, 12, 48)))
            # A child's parent columns, position and previous values are always given when it is drawn: the
            # network learns only the child's own columns (and the gap) given them, on a fixed schedule.
            params.setdefault("context", [c for c in map(str, frame.columns) if _is_context(c)])
            if params["context"]:
                params.setdefault("epochs", _CHILD_EPOCHS)
                params.setdefault("patience", params["epochs"])
            else:
                params.setdefault("patience", _OWN_PATIENCE)
            if len(frame) < _ONE_THREAD_ROWS:
                params.setdefault("threads", 1)
        model = create(self.method_, **params)
        logger.info("related: fitting %s on %s (%d rows x %d columns)", self.method_, table, *frame.shape)
        return model.fit(frame, schema, **fit_options)

    # ---- planning ----------------------------------------------------------------------------------------------

    def _plan(self, frames: Mapping[str, pd.DataFrame], metadata: RelatedMetadata) -> dict[str, TablePlan]:
        plans: dict[str, TablePlan] = {}
        for name in metadata.order():
            frame = frames[name]
            plan = TablePlan(name, [str(c) for c in frame.columns], kept=name in self.keep)
            plans[name] = plan
            if plan.kept:
                continue
            generated = [r for r in metadata.parents(name) if r.parent not in self.keep]
            plan.driver = self._driver(name, generated, frames)
            plan.lookups = [r for r in generated if r is not plan.driver]
            assigned = set(plan.driver.child_key) if plan.driver is not None else set()
            plan.lookups = [r for r in plan.lookups if not set(r.child_key) <= assigned]
            for rel in plan.lookups:
                assigned |= set(rel.child_key)
            in_foreign = {c for r in metadata.parents(name) for c in r.child_key}
            key = metadata.tables[name].primary_key
            if key and not set(key) & in_foreign:
                plan.new_key = list(key)
            schema = metadata.tables[name].schema or Schema.infer(frame)
            skip = set(plan.new_key) | assigned
            if plan.driver is not None:
                parent = plans[plan.driver.parent]
                plan.copied, plan.moved = _constants(frame, frames[parent.name], plan.driver, skip)
                skip |= set(plan.copied) | set(plan.moved)
                if plan.driver.order_by is not None:
                    skip.add(plan.driver.order_by)
                parent.parent_internals.append(_count_column(plan.driver))
                if plan.sequential:
                    parent.parent_internals.append(_start_column(plan.driver))
                parent.parent_internals += [_moved_column(plan.driver, c) for c in plan.moved]
            protected = set(key) | in_foreign
            for column in plan.columns:
                if column in skip:
                    continue
                if column in schema and not schema[column].synthesize and column not in protected:
                    plan.excluded.append(schema[column])
                    continue
                plan.data.append(column)
            for rel in plan.lookups:
                plans[rel.parent].parent_internals.append(_count_column(rel))
            if plan.sequential:
                assert plan.driver is not None
                parent_data = plans[plan.driver.parent].data
                shared = [c for c in plan.data if c in parent_data]
                plan.first_copies = _first_copies(frame, frames[plan.driver.parent], plan.driver, shared)
        return plans

    def _driver(
        self, name: str, generated: list[Relationship], frames: Mapping[str, pd.DataFrame]
    ) -> Relationship | None:
        if not generated:
            return None
        if name in self.drivers:
            chosen = [r for r in generated if r.parent == self.drivers[name]]
            if not chosen:
                raise ParameterError(
                    f"drivers names '{self.drivers[name]}' for '{name}', which is not one of its generated parents "
                    f"({', '.join(r.parent for r in generated)})"
                )
            return chosen[0]
        ordered = [r for r in generated if r.order_by is not None]
        if ordered:
            return ordered[0]
        return max(generated, key=lambda r: len(frames[r.parent]))

    # ---- training frames ---------------------------------------------------------------------------------------

    def _wide_frames(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """Each real table with its parent-role columns: children counts, first order values, moved constants."""
        wide = {name: frame.reset_index(drop=True).copy() for name, frame in frames.items()}
        for plan in self.plans_.values():
            rels = [plan.driver] if plan.driver is not None else []
            for counted in [*rels, *plan.lookups]:
                wide[counted.parent][_count_column(counted)] = children_per_parent(frames, counted).to_numpy()
            rel = plan.driver
            if rel is None or not (plan.sequential or plan.moved):
                continue
            child = frames[plan.name].dropna(subset=list(rel.child_key))
            if plan.sequential:
                assert rel.order_by is not None
                child = child.assign(__order=_as_number(child[rel.order_by])).sort_values(
                    [*rel.child_key, "__order"], kind="stable"
                )
            firsts = child.groupby(list(rel.child_key), sort=False).first()
            firsts.index = _as_multi(firsts.index)
            where = pd.MultiIndex.from_frame(wide[rel.parent][list(rel.parent_key)])
            aligned = firsts.reindex(where)
            if plan.sequential:
                wide[rel.parent][_start_column(rel)] = aligned["__order"].to_numpy()
            for column in plan.moved:
                wide[rel.parent][_moved_column(rel, column)] = aligned[column].to_numpy()
        return wide

    def _context(self, parent: str, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns of ``parent``'s rows a child is drawn given: its data and its parent-role columns."""
        plan = self.plans_[parent]
        columns = [c for c in [*plan.data, *plan.parent_internals] if c in frame.columns]
        return frame[columns].rename(columns=_parent_column).reset_index(drop=True)

    def _training_frame(self, name: str, wide: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        plan = self.plans_[name]
        own = wide[name]
        columns = [*plan.data, *plan.parent_internals]
        rel = plan.driver
        if rel is None:
            return own[columns].reset_index(drop=True)
        child = own.dropna(subset=list(rel.child_key))
        if plan.sequential:
            assert rel.order_by is not None
            child = child.assign(**{_GAP: _as_number(child[rel.order_by])})
            child = child.sort_values([*rel.child_key, _GAP], kind="stable")
        parent = wide[rel.parent]
        context = self._context(rel.parent, parent)
        context.index = pd.MultiIndex.from_frame(parent[list(rel.parent_key)])
        joined = context.reindex(pd.MultiIndex.from_frame(child[list(rel.child_key)])).reset_index(drop=True)
        parts = [joined]
        if plan.sequential:
            groups = child.groupby(list(rel.child_key), sort=False)
            sequence = pd.DataFrame(
                {_POS: groups.cumcount().to_numpy() + 1, _GAP: groups[_GAP].diff().to_numpy()},
            )
            previous = groups[plan.data].shift(1).rename(columns=_prev_column).reset_index(drop=True)
            parts += [sequence, previous]
        parts.append(child[columns].reset_index(drop=True))
        return pd.concat(parts, axis=1)

    def _model_schema(self, name: str, frame: pd.DataFrame, frames: Mapping[str, pd.DataFrame]) -> Schema:
        """The model's schema: each data column as the table's schema has it (synthesized, even a key column kept
        as data), prefixed copies for context and previous values, numbers for the internal columns."""
        plan = self.plans_[name]
        own = self._table_schema(name, frames)
        parent = self._table_schema(plan.driver.parent, frames) if plan.driver is not None else None
        moved = {  # a child's constant column modelled here has the child's kind
            _moved_column(other.driver, column): self._table_schema(other.name, frames)[column]
            for other in self.plans_.values()
            if other.driver is not None
            for column in other.moved
        }
        columns = []
        for column in frame.columns:
            inner = str(column)[len("__parent.") :] if str(column).startswith("__parent.") else str(column)
            base = moved[inner] if inner in moved else _base(str(column), own, parent)
            columns.append(dataclasses.replace(base, name=str(column), synthesize=True, nullable=True, reason=None))
        return Schema(columns)

    def _table_schema(self, name: str, frames: Mapping[str, pd.DataFrame]) -> Schema:
        declared = self.metadata_.tables[name].schema
        return declared if declared is not None else Schema.infer(frames[name])

    # ---- sample ------------------------------------------------------------------------------------------------

    def sample(self, rows: int | None = None, seed: int | None = None) -> dict[str, pd.DataFrame]:
        """A new set of related tables. ``rows`` sets the size of the largest root table (patients; default as
        many as the real one), the other root tables in proportion; children follow their parents' counts."""
        if not hasattr(self, "models_"):
            raise ParameterError("this RelatedSynthesizer is not fitted yet; call fit() first")
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ParameterError(f"rows must be a positive whole number, not {rows!r}")
        roots = [p.name for p in self.plans_.values() if p.role == "root"]
        main = max(roots, key=lambda t: self.real_rows_[t]) if roots else None
        scale = 1.0 if rows is None or main is None else rows / self.real_rows_[main]
        seeds = iter(np.random.SeedSequence(seed).generate_state(4 * len(self.plans_) + 4))
        rng = np.random.default_rng(next(seeds))
        wide: dict[str, pd.DataFrame] = {}
        out: dict[str, pd.DataFrame] = {}
        names = self.metadata_.order()
        self.sample_timings_: dict[str, float] = {}
        for i, name in enumerate(names):
            report("sample related", i, len(names), name)
            plan = self.plans_[name]
            start = time.process_time()
            if plan.kept:
                out[name] = self.kept_[name].copy()
                continue
            if plan.driver is None:
                n = max(1, round(self.real_rows_[name] * scale))
                frame = self.models_[name].sample(n, seed=int(next(seeds)))
                frame = frame.reset_index(drop=True)
            else:
                frame = self._children(plan, wide, out, int(next(seeds)))
            frame = self._keys(plan, frame, out, wide, rng)
            wide[name] = frame
            out[name] = frame[[c for c in plan.columns if c in frame.columns]].reset_index(drop=True)
            self.sample_timings_[name] = round(time.process_time() - start, 3)
        report("sample related", len(names), len(names))
        return out

    def _counts(self, rel: Relationship, parent: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        column = _count_column(rel)
        matched = self.count_models_.get(column)
        if matched is not None:
            return matched.draw(parent, rng)
        counts = pd.to_numeric(parent[column], errors="coerce").fillna(0).to_numpy(dtype=float)
        return np.clip(np.round(counts), 0, self.max_children_[column]).astype(np.int64)

    def _children(
        self, plan: TablePlan, wide: Mapping[str, pd.DataFrame], out: Mapping[str, pd.DataFrame], seed: int
    ) -> pd.DataFrame:
        rel = plan.driver
        assert rel is not None
        parent = wide[rel.parent]
        counts = self._counts(rel, parent, np.random.default_rng([seed, 1]))
        parent = parent.assign(**{_count_column(rel): counts})  # the children see the count they are drawn with
        owner = np.repeat(np.arange(len(parent)), counts)
        if len(owner) == 0:
            logger.warning("related: the synthetic %s rows have no %s children", rel.parent, plan.name)
            return pd.DataFrame(columns=self.model_columns_[plan.name])
        context = self._context(rel.parent, parent)
        model = self.models_[plan.name]
        if not plan.sequential:
            frame = self._given(plan.name, model, context.iloc[owner].reset_index(drop=True), seed)
        else:
            frame = self._sequence(plan, model, context, counts, owner, parent, seed)
        keys = out[rel.parent][list(rel.parent_key)].iloc[owner].reset_index(drop=True)
        for child_column, parent_column in zip(rel.child_key, rel.parent_key, strict=True):
            frame[child_column] = keys[parent_column].to_numpy()
        for column, source in plan.copied.items():
            frame[column] = out[rel.parent][source].iloc[owner].to_numpy()
        with_children = counts > 0
        for column in plan.moved:
            values = parent[_moved_column(rel, column)].reset_index(drop=True)
            frame[column] = _fill_from_others(values, with_children, np.random.default_rng(seed)).iloc[owner].to_numpy()
        return frame

    def _sequence(
        self,
        plan: TablePlan,
        model: Synthesizer,
        context: pd.DataFrame,
        counts: np.ndarray,
        owner: np.ndarray,
        parent: pd.DataFrame,
        seed: int,
    ) -> pd.DataFrame:
        """Children drawn position by position, each given its parent's row, its position and the one before."""
        rel = plan.driver
        assert rel is not None and rel.order_by is not None
        rng = np.random.default_rng(seed)
        starts = pd.to_numeric(parent[_start_column(rel)], errors="coerce").to_numpy(dtype=float)
        fallback = float(np.nanmedian(starts)) if np.isfinite(starts).any() else 0.0
        starts = np.where(np.isfinite(starts), starts, fallback)
        rows: list[pd.DataFrame] = []
        previous: pd.DataFrame | None = None
        order = np.zeros(len(parent))
        for position in range(1, int(counts.max()) + 1):
            active = np.flatnonzero(counts >= position)
            given = context.iloc[active].reset_index(drop=True)
            given[_POS] = position
            if previous is None:
                for column in plan.data:
                    given[_prev_column(column)] = np.nan
                for column in plan.first_copies:  # the first visit holds the patient's baseline values
                    given[column] = given[_parent_column(column)]
            else:
                kept = previous.set_index("__owner").loc[active]
                for column in plan.data:
                    given[_prev_column(column)] = kept[column].to_numpy()
            drawn = self._given(plan.name, model, given, int(rng.integers(2**31)))
            if position == 1:
                order[active] = starts[active]
            else:
                gaps = self._positive_gaps(plan, model, given, drawn, rng)
                order[active] = order[active] + gaps
            drawn["__owner"] = active
            drawn[rel.order_by] = order[active]
            rows.append(drawn)
            previous = drawn
        frame = pd.concat(rows, ignore_index=True).sort_values(["__owner", rel.order_by], kind="stable")
        frame[rel.order_by] = _from_number(frame[rel.order_by], self.key_dtypes_[plan.name][rel.order_by])
        return frame.drop(columns="__owner").reset_index(drop=True)

    def _positive_gaps(
        self, plan: TablePlan, model: Synthesizer, given: pd.DataFrame, drawn: pd.DataFrame, rng: np.random.Generator
    ) -> np.ndarray:
        integer = not self.key_dtypes_[plan.name][plan.driver.order_by].startswith("float")  # type: ignore[union-attr]
        gaps = pd.to_numeric(drawn[_GAP], errors="coerce").to_numpy(dtype=float)
        if integer:
            gaps = np.round(gaps)
        for _ in range(_REDRAWS):
            bad = np.flatnonzero(~(gaps > 0))
            if len(bad) == 0:
                break
            again = self._given(plan.name, model, given.iloc[bad].reset_index(drop=True), int(rng.integers(2**31)))
            redrawn = pd.to_numeric(again[_GAP], errors="coerce").to_numpy(dtype=float)
            gaps[bad] = np.round(redrawn) if integer else redrawn
        return np.where(gaps > 0, gaps, self.min_gap_[plan.name])

    def _given(self, table: str, model: Synthesizer, given: pd.DataFrame, seed: int) -> pd.DataFrame:
        seen = self.seen_[table]
        cleaned = pd.DataFrame({c: seen[str(c)].clean(given[c]) for c in given.columns})
        return _sample_given(model, cleaned, seed)

    def _keys(
        self,
        plan: TablePlan,
        frame: pd.DataFrame,
        out: Mapping[str, pd.DataFrame],
        wide: Mapping[str, pd.DataFrame],
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """New primary keys, lookup keys drawn from the parents' synthetic keys, rows repeating a key dropped."""
        frame = frame.reset_index(drop=True)
        for column in plan.new_key:
            numeric = self.key_dtypes_[plan.name][column].startswith(("int", "float"))
            ids = np.arange(1, len(frame) + 1)
            frame[column] = ids if numeric else [f"{plan.name}-{i}" for i in ids]
        for rel in plan.lookups:
            keys = out[rel.parent][list(rel.parent_key)]
            weights = pd.to_numeric(wide[rel.parent][_count_column(rel)], errors="coerce").fillna(0).clip(lower=0)
            p = weights.to_numpy(dtype=float)
            p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / max(1, len(p)))
            picks = rng.choice(len(keys), size=len(frame), p=p)
            missing = rng.random(len(frame)) < self.null_rates_[(rel.child, rel.child_key)]
            for child_column, parent_column in zip(rel.child_key, rel.parent_key, strict=True):
                values = pd.Series(keys[parent_column].to_numpy()[picks], dtype=object)
                values[missing] = None
                frame[child_column] = values.to_numpy()
        key = list(self.metadata_.tables[plan.name].primary_key)
        if key and not plan.new_key:
            repeated = frame.duplicated(subset=key)
            if repeated.any():
                logger.info("related: dropped %d synthetic %s rows repeating a key", int(repeated.sum()), plan.name)
                frame = frame[~repeated].reset_index(drop=True)
        return frame


# ---- helpers --------------------------------------------------------------------------------------------------------


@dataclass
class _CountModel:
    """A parent's number of children given its other columns, by predictive mean matching (Little, "Missing-data
    adjustments in large surveys", JBES 1988; the default of R's ``mice``): a Poisson gradient-boosting regression
    (shallow and slow-learning: a few hundred parents) predicts each parent's mean count from its columns, and a
    synthetic parent takes the real count of one of the :data:`_DONORS` real parents whose predicted means are
    nearest its own. Synthetic parents are not distributed exactly like the real ones, so those matched counts only
    rank the parents: the counts given are as many draws from the real counts, the largest to the parent with the
    largest matched count (ties at random). The counts thus follow the real distribution, and their relation to the
    parent's columns is the regression's."""

    features: list[str]
    categories: dict[str, list[str]]
    regression: Any
    predicted: np.ndarray  # the real parents' predicted means, ascending
    counts: np.ndarray  # their counts, in the same order

    @classmethod
    def fit(cls, parent: pd.DataFrame, features: list[str], column: str) -> _CountModel:
        from sklearn.ensemble import HistGradientBoostingRegressor

        categories = {
            c: sorted(parent[c].dropna().astype(str).unique())
            for c in features
            if not pd.api.types.is_numeric_dtype(parent[c])
        }
        counts = pd.to_numeric(parent[column], errors="coerce").fillna(0).to_numpy(dtype=float)
        model = cls(list(features), categories, None, np.zeros(0), np.zeros(0, dtype=np.int64))
        x = model._matrix(parent)
        if x.shape[1] and counts.any():
            with _one_thread():
                model.regression = HistGradientBoostingRegressor(
                    loss="poisson",
                    max_iter=50,
                    learning_rate=0.05,
                    min_samples_leaf=int(np.clip(len(x) // 8, 5, 40)),
                    random_state=0,
                ).fit(x, counts)
        predicted = model._predict(x)
        order = np.argsort(predicted, kind="stable")
        model.predicted, model.counts = predicted[order], counts[order].astype(np.int64)
        return model

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for c in self.features:
            if c in self.categories:
                codes = pd.Categorical(frame[c].astype(str).where(frame[c].notna()), categories=self.categories[c])
                columns.append(np.where(codes.codes < 0, np.nan, codes.codes).astype(float))
            else:
                columns.append(pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float))
        return np.column_stack(columns) if columns else np.zeros((len(frame), 0))

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.regression is None:
            return np.zeros(len(x))
        with _one_thread():
            return np.asarray(self.regression.predict(x), dtype=float)

    def draw(self, parent: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        """One count per row of ``parent``: draws from the real counts, ranked by the count of a random one of the
        row's nearest donors."""
        wanted = self._predict(self._matrix(parent))
        n = len(self.predicted)
        k = min(_DONORS, n)
        # The k nearest predictions lie within k places of where ``wanted`` would go in the sorted ones; every real
        # parent within the k-th nearest distance is a donor (ties included), each as likely.
        start = np.clip(np.searchsorted(self.predicted, wanted) - k, 0, max(0, n - 2 * k))
        window = start[:, None] + np.arange(min(2 * k, n))[None, :]
        radius = np.sort(np.abs(self.predicted[window] - wanted[:, None]), axis=1)[:, k - 1]
        radius = radius * (1 + 1e-9) + 1e-12
        low = np.searchsorted(self.predicted, wanted - radius, "left")
        high = np.searchsorted(self.predicted, wanted + radius, "right")
        chosen = np.minimum(low + (rng.random(len(wanted)) * (high - low)).astype(np.int64), n - 1)
        rank = np.argsort(self.counts[chosen] + rng.random(len(wanted)), kind="stable")
        out = np.empty(len(wanted), dtype=np.int64)
        out[rank] = np.sort(rng.choice(self.counts, size=len(wanted)))
        return out


@dataclass(frozen=True)
class _Seen:
    """What a model column held in training, so a given value it never saw (a parent's missing value where the
    children's parents had none, a category no child's parent had) is replaced by the most common one instead of
    failing the draw."""

    categories: frozenset[str] | None
    missing: bool
    fill: Any

    @classmethod
    def of(cls, values: pd.Series, column: Column) -> _Seen:
        present = values.dropna()
        fill = present.mode().iloc[0] if len(present) else None
        categories = frozenset(present.astype(str)) if column.kind is Kind.CATEGORICAL else None
        return cls(categories, bool(values.isna().any()), fill)

    def clean(self, values: pd.Series) -> pd.Series:
        bad = values.isna() if not self.missing else pd.Series(False, index=values.index)
        if self.categories is not None:
            bad |= values.notna() & ~values.astype(str).isin(self.categories)
        return values.where(~bad, self.fill) if bad.any() else values


def _one_thread() -> Any:
    """One OpenMP thread for the count regression: on a few hundred parents two threads spin more than they work
    (pbc's fit took 0.4 to 1.7 s of CPU with two on a busy machine, 0.03 s with one)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(limits=1, user_api="openmp")


def _frames(
    tables: RelatedData | Mapping[str, pd.DataFrame | Source] | str | Path, metadata: RelatedMetadata | None
) -> tuple[dict[str, pd.DataFrame], RelatedMetadata]:
    if isinstance(tables, RelatedData):
        metadata = metadata or tables.metadata
        tables = tables.tables
    elif isinstance(tables, str | Path):
        tables = open_related(tables)
    if metadata is None:
        raise ParameterError("give the metadata that relates the tables (RelatedMetadata.load or infer_metadata)")
    missing = [name for name in metadata.tables if name not in tables]
    if missing:
        raise DataError(f"table '{missing[0]}' of the metadata is not among the tables given ({', '.join(tables)})")
    frames = {
        name: (table.to_pandas() if isinstance(table, Source) else table).reset_index(drop=True)
        for name, table in tables.items()
        if name in metadata.tables
    }
    return frames, metadata


def _fill_from_others(values: pd.Series, wanted: np.ndarray, rng: np.random.Generator) -> pd.Series:
    """``values`` with the missing ones among the ``wanted`` rows drawn from the present ones of other rows (a
    parent with children needs a value for a column its children always have; synthetic values, not real ones)."""
    holes = np.flatnonzero(wanted & values.isna().to_numpy())
    donors = values.dropna()
    if len(holes) == 0 or donors.empty:
        return values
    out = values.copy()
    out.iloc[holes] = donors.to_numpy()[rng.integers(len(donors), size=len(holes))]
    return out


def _sample_given(model: Synthesizer, given: pd.DataFrame, seed: int) -> pd.DataFrame:
    draw = getattr(model, "sample_given", None)
    if draw is None:
        raise ParameterError(f"method '{model.name}' cannot draw rows given their parent's; use deep or copula")
    frame: pd.DataFrame = draw(given, seed=seed)
    return frame.reset_index(drop=True)


def _first_copies(child: pd.DataFrame, parent: pd.DataFrame, rel: Relationship, columns: list[str]) -> list[str]:
    """The child columns whose first value (in order) equals the parent's column of the same name for at least
    :data:`_FIRST_COPY` of the parents with children: a baseline measurement the first visit repeats."""
    assert rel.order_by is not None
    keyed = child.dropna(subset=list(rel.child_key))
    if keyed.empty or not columns:
        return []
    ordered = keyed.assign(__order=_as_number(keyed[rel.order_by])).sort_values([*rel.child_key, "__order"])
    firsts = ordered.groupby(list(rel.child_key), sort=False).head(1)
    index = pd.MultiIndex.from_frame(parent[list(rel.parent_key)])
    looked_up = parent.set_index(index).reindex(pd.MultiIndex.from_frame(firsts[list(rel.child_key)]))
    return [c for c in columns if _agreement(firsts[c], looked_up[c]) >= _FIRST_COPY]


def _agreement(a: pd.Series, b: pd.Series) -> float:
    """The share of positions where two series hold the same value (numbers compared as numbers; both missing
    agree)."""
    left, right = a.reset_index(drop=True), b.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
        x, y = left.to_numpy(dtype=float), right.to_numpy(dtype=float)
        return float(np.mean((x == y) | (np.isnan(x) & np.isnan(y))))
    same = left.astype(str).where(left.notna()).fillna("\0") == right.astype(str).where(right.notna()).fillna("\0")
    return float(same.mean())


def _constants(
    child: pd.DataFrame, parent: pd.DataFrame, rel: Relationship, skip: set[str]
) -> tuple[dict[str, str], list[str]]:
    """Child columns that never change within a parent: those equal to the parent's column of the same name (copied)
    and the others (moved into the parent's model)."""
    keyed = child.dropna(subset=list(rel.child_key))
    candidates = [c for c in keyed.columns if c not in skip and c != rel.order_by]
    if keyed.empty or not candidates:
        return {}, []
    groups = keyed.groupby(list(rel.child_key), sort=False)
    varying = groups[candidates].nunique(dropna=False).max()
    constant = [c for c in candidates if varying[c] <= 1]
    if not constant:
        return {}, []
    index = pd.MultiIndex.from_frame(parent[list(rel.parent_key)])
    looked_up = parent.set_index(index).reindex(pd.MultiIndex.from_frame(keyed[list(rel.child_key)]))
    copied: dict[str, str] = {}
    for column in constant:
        if column in parent.columns and _same(keyed[column], looked_up[column]):
            copied[column] = column
    return copied, [c for c in constant if c not in copied]


def _same(a: pd.Series, b: pd.Series) -> bool:
    return _agreement(a, b) == 1.0


def _base(column: str, own: Schema, parent: Schema | None) -> Column:
    """The schema column a model column is built from."""
    if column.startswith("__parent."):
        inner = column[len("__parent.") :]
        if parent is not None and inner in parent:
            return parent[inner]
        return _internal(inner)
    if column.startswith("__prev."):
        return own[column[len("__prev.") :]]
    if column in own and not column.startswith("__"):
        base = own[column]
        if base.kind is Kind.IDENTIFIER or base.kind is Kind.TEXT:
            return dataclasses.replace(base, kind=Kind.CATEGORICAL)
        return base
    return _internal(column)


def _internal(column: str) -> Column:
    """Counts and positions are whole numbers; gaps, starts and moved constants numbers or categories."""
    if column.startswith(("__n:", "__pos")):
        return Column(column, Kind.INTEGER, dtype="float64")
    if column.startswith("__c:"):
        return Column(column, Kind.CATEGORICAL, dtype="object")
    return Column(column, Kind.FLOAT, dtype="float64")


def _as_multi(index: pd.Index) -> pd.MultiIndex:
    return index if isinstance(index, pd.MultiIndex) else pd.MultiIndex.from_arrays([index])


def _as_number(values: pd.Series) -> pd.Series:
    """Order values as numbers (dates as days since 1970)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return (values - pd.Timestamp(0, tz=getattr(values.dt, "tz", None))).dt.total_seconds() / 86400.0
    return pd.to_numeric(values, errors="coerce").astype(float)


def _from_number(values: pd.Series, dtype: str) -> pd.Series:
    if dtype.startswith("datetime64"):
        return pd.to_datetime(values * 86400.0, unit="s")
    if dtype.startswith("int"):
        return values.round().astype("int64")
    return values.astype(float)


def _smallest_gap(frame: pd.DataFrame, rel: Relationship | None) -> float:
    assert rel is not None and rel.order_by is not None
    child = frame.dropna(subset=[*rel.child_key, rel.order_by])
    order = _as_number(child[rel.order_by])
    gaps = order.groupby([child[c] for c in rel.child_key]).apply(lambda s: s.sort_values().diff()).dropna()
    positive = gaps[gaps > 0]
    return float(positive.min()) if len(positive) else 1.0
