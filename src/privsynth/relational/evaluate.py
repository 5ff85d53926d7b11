"""Cross-table quality: does a synthetic set of related tables keep what ties its tables together?

For each relationship (a child's key -> its parent):

- **referential integrity**: the share of child rows with a key whose key finds a parent (1 is the only good value);
- **children per parent**: total variation distance (TVD) between the real and synthetic distributions of how many
  children a parent has (parents without children count as 0);
- **parent x child aggregate**: TVD of the 2-way marginal of a parent column and an aggregate of its children (their
  number, the mean of a numeric child column), averaged over the pairs; numeric values are binned at quantiles of
  the real values, so the bins depend on the real data only;
- for a sequential child (``order_by``): **length** (TVD of the number of children among parents that have some),
  **gaps** (TVD of the binned differences between consecutive order values), **transitions** (TVD of the pairs of
  consecutive states of each categorical child column, averaged).

And a person-level task (:func:`person_level_tstr`): a model trained on synthetic parents with summaries of their
children, tested on real held-out parents (pbc: death from the patient row and the visits).

TVD is half the L1 distance between two distributions: 0 for the same, 1 for disjoint. These read real rows: they
are for the custodian's report, like :mod:`privsynth.evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from privsynth.errors import DataError
from privsynth.relational.metadata import RelatedMetadata, Relationship

__all__ = [
    "aggregate_association_tvd",
    "children_per_parent",
    "children_per_parent_tvd",
    "evaluate_related",
    "gap_tvd",
    "person_features",
    "person_level_tstr",
    "referential_integrity",
    "sequence_length_tvd",
    "transition_tvd",
    "tvd",
]

Tables = Mapping[str, pd.DataFrame]
BINS = 10  # quantile bins for numeric values
ASSOCIATION_BINS = 5  # quantile bins of each side of a parent x child-aggregate marginal
CATEGORICAL_LEVELS = 10  # a numeric child column with at most this many values is a state for transitions


def tvd(real: pd.Series, synthetic: pd.Series) -> float:
    """Total variation distance between the distributions of two series of labels (missing is a label)."""
    codes, levels = _codes(real, synthetic)
    return _tvd_codes(codes[0], codes[1], levels)


def _codes(real: pd.Series, synthetic: pd.Series) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """Both series as integer codes over their shared labels (missing is one more code), and how many codes."""
    both = pd.concat([real, synthetic], ignore_index=True)
    codes, uniques = pd.factorize(both, use_na_sentinel=False)
    return (codes[: len(real)], codes[len(real) :]), max(len(uniques), 1)


def _tvd_codes(real: np.ndarray, synthetic: np.ndarray, levels: int) -> float:
    if len(real) == 0 or len(synthetic) == 0:
        return float(len(real) != len(synthetic))
    p = np.bincount(real, minlength=levels) / len(real)
    q = np.bincount(synthetic, minlength=levels) / len(synthetic)
    return float(0.5 * np.abs(p - q).sum())


def _key_index(frame: pd.DataFrame, key: tuple[str, ...]) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[list(key)])


def referential_integrity(tables: Tables, rel: Relationship) -> float:
    """The share of ``rel.child`` rows with a complete key whose key finds a ``rel.parent`` row (1.0 if none)."""
    child = tables[rel.child]
    complete = child[list(rel.child_key)].notna().all(axis=1).to_numpy()
    if not complete.any():
        return 1.0
    found = _key_index(child, rel.child_key)[complete].isin(_key_index(tables[rel.parent], rel.parent_key))
    return float(found.mean())


def children_per_parent(tables: Tables, rel: Relationship) -> pd.Series:
    """How many children each parent row has (0 for none), indexed like the parent table."""
    child = tables[rel.child].dropna(subset=list(rel.child_key))
    counts = child.groupby(list(rel.child_key), dropna=True).size()
    counts.index = (
        counts.index if isinstance(counts.index, pd.MultiIndex) else pd.MultiIndex.from_arrays([counts.index])
    )
    parent = _key_index(tables[rel.parent], rel.parent_key)
    return pd.Series(counts.reindex(parent, fill_value=0).to_numpy(), index=tables[rel.parent].index, name="children")


def children_per_parent_tvd(real: Tables, synthetic: Tables, rel: Relationship, bins: int = BINS) -> float:
    """TVD between the real and synthetic distributions of the number of children per parent (binned at
    quantiles of the real numbers when they take more than ``bins`` values)."""
    return tvd(*_binned(children_per_parent(real, rel), children_per_parent(synthetic, rel), bins))


def sequence_length_tvd(real: Tables, synthetic: Tables, rel: Relationship, bins: int = BINS) -> float:
    """TVD between the distributions of sequence length, over parents with at least one child (binned as
    :func:`children_per_parent_tvd`)."""
    real_n, synth_n = (children_per_parent(t, rel) for t in (real, synthetic))
    return tvd(*_binned(real_n[real_n > 0], synth_n[synth_n > 0], bins))


def _binned(real: pd.Series, synthetic: pd.Series, bins: int = BINS) -> tuple[pd.Series, pd.Series]:
    """Both series as labels: numeric ones cut at quantiles of the real values, others as text."""
    if not (pd.api.types.is_numeric_dtype(real) and pd.api.types.is_numeric_dtype(synthetic)):
        return real.astype(str).where(real.notna()), synthetic.astype(str).where(synthetic.notna())
    present = real.dropna().astype(float)
    if present.nunique() <= bins:
        return real, synthetic
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1))[1:-1])

    def cut(values: pd.Series) -> pd.Series:
        labels = np.digitize(values.astype(float).to_numpy(), edges).astype(float)
        labels[values.isna().to_numpy()] = np.nan
        return pd.Series(labels, index=values.index)

    return cut(real), cut(synthetic)


def _aggregates(tables: Tables, rel: Relationship, columns: list[str]) -> pd.DataFrame:
    """Per parent row: its number of children and the mean of each numeric child column (missing if none)."""
    child = tables[rel.child].dropna(subset=list(rel.child_key))
    means = child.groupby(list(rel.child_key))[columns].mean()
    means.index = means.index if isinstance(means.index, pd.MultiIndex) else pd.MultiIndex.from_arrays([means.index])
    parent = _key_index(tables[rel.parent], rel.parent_key)
    out = means.reindex(parent).set_axis(tables[rel.parent].index)
    out.insert(0, "children", children_per_parent(tables, rel))
    return out.rename(columns={c: f"mean {c}" for c in columns})


def _columns(frame: pd.DataFrame, exclude: set[str]) -> list[str]:
    return [str(c) for c in frame.columns if c not in exclude]


def aggregate_association_tvd(
    real: Tables, synthetic: Tables, rel: Relationship, bins: int = ASSOCIATION_BINS
) -> float:
    """Mean TVD of the 2-way marginals (parent column, child aggregate) over every parent column that is not a key
    and every aggregate: number of children, mean of each numeric child column that is not a key. Numeric values
    fall in ``bins`` quantile bins (5 by default: a 2-way table of 25 cells stays measurable on a few hundred
    parents)."""
    keys = _key_columns(rel)
    numeric = [
        c
        for c in _columns(real[rel.child], set(rel.child_key) | keys.get(rel.child, set()))
        if pd.api.types.is_numeric_dtype(real[rel.child][c]) and c in synthetic[rel.child]
    ]
    aggregates = [_aggregates(t, rel, numeric) for t in (real, synthetic)]
    coded = [_codes(*_binned(aggregates[0][a], aggregates[1][a], bins)) for a in aggregates[0].columns]
    distances = []
    for column in _columns(real[rel.parent], set(rel.parent_key) | keys.get(rel.parent, set())):
        if column not in synthetic[rel.parent]:
            continue
        (parent_real, parent_synth), levels = _codes(
            *_binned(real[rel.parent][column], synthetic[rel.parent][column], bins)
        )
        for (agg_real, agg_synth), agg_levels in coded:
            distances.append(
                _tvd_codes(
                    parent_real * agg_levels + agg_real, parent_synth * agg_levels + agg_synth, levels * agg_levels
                )
            )
    return float(np.mean(distances)) if distances else float("nan")


def _key_columns(rel: Relationship) -> dict[str, set[str]]:
    return {rel.child: set(rel.child_key), rel.parent: set(rel.parent_key)}


def _ordered(tables: Tables, rel: Relationship) -> pd.DataFrame:
    if rel.order_by is None:
        raise DataError(f"relationship {rel.describe()} has no order_by; sequence metrics need one")
    child = tables[rel.child].dropna(subset=[*rel.child_key, rel.order_by])
    return child.sort_values([*rel.child_key, rel.order_by], kind="stable")


def _as_number(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return (values - pd.Timestamp(0)).dt.total_seconds() / 86400.0
    return values.astype(float)


def gap_tvd(real: Tables, synthetic: Tables, rel: Relationship, bins: int = BINS) -> float:
    """TVD between the distributions of gaps between consecutive children of a parent (in ``order_by`` units;
    days for dates), binned at quantiles of the real gaps."""
    gaps = []
    for tables in (real, synthetic):
        child = _ordered(tables, rel)
        order = _as_number(child[rel.order_by])
        gaps.append(order.groupby([child[c] for c in rel.child_key]).diff().dropna())
    return tvd(*_binned(gaps[0], gaps[1], bins))


def _states(frame: pd.DataFrame, exclude: set[str]) -> list[str]:
    return [
        c
        for c in _columns(frame, exclude)
        if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].nunique() <= CATEGORICAL_LEVELS
    ]


def transition_tvd(real: Tables, synthetic: Tables, rel: Relationship, column: str | None = None) -> float:
    """TVD between the distributions of (state, next state) pairs of consecutive children; for ``column``, or the
    mean over the categorical child columns (text, or at most 10 distinct numbers) that are not keys."""
    if rel.order_by is None:
        raise DataError(f"relationship {rel.describe()} has no order_by; sequence metrics need one")
    columns = [column] if column is not None else _states(real[rel.child], {*rel.child_key, rel.order_by})
    ordered = [_ordered(t, rel) for t in (real, synthetic)]
    distances = []
    for name in columns:
        (real_codes, synth_codes), levels = _codes(ordered[0][name], ordered[1][name])
        pairs = []
        for child, codes in zip(ordered, (real_codes, synth_codes), strict=True):
            state = pd.Series(codes, index=child.index)
            following = state.groupby([child[c] for c in rel.child_key]).shift(-1)
            kept = following.notna().to_numpy()
            pairs.append(codes[kept] * levels + following.to_numpy()[kept].astype(np.int64))
        distances.append(_tvd_codes(pairs[0], pairs[1], levels * levels))
    return float(np.mean(distances)) if distances else float("nan")


def person_features(tables: Tables, rel: Relationship, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """One row per parent: its columns (not keys, not ``exclude``) plus its children's number and the mean and last
    value (in ``order_by`` order, else table order) of each numeric child column (not keys, not ``exclude``)."""
    child = tables[rel.child].dropna(subset=list(rel.child_key))
    if rel.order_by is not None:
        child = child.sort_values([*rel.child_key, rel.order_by], kind="stable")
    skip = set(rel.child_key) | set(exclude)
    numeric = [c for c in child.columns if c not in skip and pd.api.types.is_numeric_dtype(child[c])]
    groups = child.groupby(list(rel.child_key))[numeric]
    summaries = pd.concat([groups.mean().add_prefix("mean "), groups.last().add_prefix("last ")], axis=1)
    summaries.index = _as_multi(summaries.index)
    parent = tables[rel.parent]
    aligned = summaries.reindex(_key_index(parent, rel.parent_key)).set_axis(parent.index)
    own = parent.drop(columns=[c for c in parent.columns if c in set(rel.parent_key) | set(exclude)])
    return pd.concat([own, children_per_parent(tables, rel).rename("children"), aligned], axis=1)


def person_level_tstr(
    train: Tables, synthetic: Tables, holdout: Tables, rel: Relationship, target: str, positive: Any, seed: int = 0
) -> dict[str, float]:
    """Train on synthetic, test on real, for a person-level task: does ``target`` (a parent column) equal
    ``positive``, from the parent's other columns and summaries of its children (:func:`person_features`)?

    Histogram gradient boosting as in :mod:`privsynth.evaluate.utility`, scored by ROC AUC on the ``holdout``
    parents; ``real`` is the same model trained on the real ``train`` tables (TRTR), the reference. Child
    columns named like the target are left out (a visit's copy of the patient's status would give it away).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    frames = {
        name: person_features(t, rel, exclude=(target,))
        for name, t in (("train", train), ("synthetic", synthetic), ("holdout", holdout))
    }
    labels = {
        name: (t[rel.parent][target].astype(str) == str(positive)).to_numpy()
        for name, t in (("train", train), ("synthetic", synthetic), ("holdout", holdout))
    }
    columns = [c for c in frames["train"].columns if c in frames["synthetic"].columns]
    coded = _coded_features([frames[name][columns] for name in ("train", "synthetic", "holdout")])
    out: dict[str, float] = {"holdout_parents": float(len(labels["holdout"]))}
    for name, features in (("real", coded[0]), ("synthetic", coded[1])):
        y = labels["train" if name == "real" else "synthetic"]
        if y.all() or not y.any():
            out[name] = float("nan")
            continue
        model = HistGradientBoostingClassifier(random_state=seed).fit(features, y)
        out[name] = float(roc_auc_score(labels["holdout"], model.predict_proba(coded[2])[:, 1]))
    return out


def _coded_features(frames: list[pd.DataFrame]) -> list[np.ndarray]:
    """Frames as float matrices: numbers as they are, other columns as codes shared across the frames."""
    both = pd.concat(frames, keys=range(len(frames)))
    for column in both.columns:
        if not pd.api.types.is_numeric_dtype(both[column]):
            codes, _ = pd.factorize(both[column].astype(str).where(both[column].notna()))
            both[column] = np.where(codes < 0, np.nan, codes)
    matrix = both.astype(float)
    return [matrix.xs(i).to_numpy() for i in range(len(frames))]


def _as_multi(index: pd.Index) -> pd.MultiIndex:
    return index if isinstance(index, pd.MultiIndex) else pd.MultiIndex.from_arrays([index])


def evaluate_related(real: Tables, synthetic: Tables, metadata: RelatedMetadata) -> dict[str, dict[str, float]]:
    """Every cross-table metric for every relationship, keyed by ``child.key -> parent.key``: ``integrity`` (of the
    synthetic tables), ``children_per_parent``, ``association``, and for sequential children ``length``, ``gaps``
    and ``transitions``."""
    missing = [n for n in metadata.tables if n not in real or n not in synthetic]
    if missing:
        raise DataError(f"table '{missing[0]}' of the metadata is missing from the real or the synthetic tables")
    report: dict[str, dict[str, float]] = {}
    for rel in metadata.relationships:
        metrics = {
            "integrity": referential_integrity(synthetic, rel),
            "children_per_parent": children_per_parent_tvd(real, synthetic, rel),
            "association": aggregate_association_tvd(real, synthetic, rel),
        }
        if rel.order_by is not None:
            metrics["length"] = sequence_length_tvd(real, synthetic, rel)
            metrics["gaps"] = gap_tvd(real, synthetic, rel)
            metrics["transitions"] = transition_tvd(real, synthetic, rel)
        report[rel.describe()] = metrics
    return report
