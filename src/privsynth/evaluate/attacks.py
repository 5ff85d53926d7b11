"""Singling-out, linkability and attribute-inference attacks, following Anonymeter's method.

Giomi et al., 2023, "A Unified Framework for Quantifying Privacy Risk in Synthetic Data" (PETS), and its
reference implementation ``anonymeter``, which cannot share our environment (it pins numpy < 1.27). Each attack
is run three ways: the *main* attack uses the synthetic data against training rows, the *control* attack the
same way against holdout rows (never seen by the generator), and a *baseline* attack guesses at random. The
risk is the success the generator added: ``(main - control) / (1 - control)``, with success rates estimated by
Wilson score intervals and the error propagated to the risk, bounded to [0, 1], as Anonymeter does.

Differences from anonymeter 1.1, on purpose; ``benchmarks/evaluate_anonymeter.py`` runs both on the bundled
datasets and ``benchmarks/README.md`` has the numbers:

- Singling out, control size: when the holdout is smaller than the training set, the control count is rescaled by
  a curve fitted to how many queries single out in subsamples of the holdout, as anonymeter 1.0 did. anonymeter
  1.1 fits its curve to ``len()`` of the per-query counts, that is to the number of queries at every size; the
  fit then settles where the curve falls as ``1 / (n + 1)`` and scales the control count by about
  ``n_holdout / n_train`` (0.25 on the bundled 80/20 splits), which shrinks the control and overstates the risk.
  scipy's ``curve_fit`` from anonymeter's starting point could land there even on the right counts, so the fit
  here is a least-squares search (:func:`_size_correction`).
- Singling out, rates are over the queries found; anonymeter 1.1 divides by the number requested, which
  understates the risk when fewer are found (the development code in anonymeter's repository divides by the
  number found too).
- Queries are evaluated on encoded arrays rather than polars expressions (same semantics: a comparison with a
  missing value is false, ``!=`` is true); categorical columns that hold numbers are matched with ``==``, not
  ``<=``/``>=`` (anonymeter decides by dtype; the cross-check hands it categories as strings).
- The Gower-style distance counts a missing value as equal to a missing value and as distance 1 from any value;
  anonymeter adds 1 when both are missing and gives NaN (never nearest) when one is. Ties among nearest
  neighbours are broken by a seeded random order of the synthetic rows.
- A numeric secret counts as inferred when ``|guess - secret| <= 0.05 |guess|``; anonymeter divides by the guess
  itself, so every negative guess counts as inferred, and matches numbers exactly unless ``regression=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from privsynth.evaluate.prepared import BoolArray, FloatArray, IntArray, Prepared, Table, row_keys

N_ATTACKS = 500
QUERY_COLUMNS = 3
CONFIDENCE = 0.95
INFERENCE_TOLERANCE = 0.05
_MAX_ATTEMPTS_PER_QUERY = 100  # singling-out query generation gives up after this many tries per query wanted
_BLOCK_CELLS = 20_000_000  # distance-matrix cells held at once (targets x synthetic rows x columns)

Predicate = tuple[int, str, float]  # (column, operator, value); value NaN for isna / notna


@dataclass(frozen=True)
class Rate:
    """A success rate and its error bound at :data:`CONFIDENCE` (Wilson score interval)."""

    value: float
    error: float


@dataclass(frozen=True)
class AttackResult:
    """Counts of one attack and the risk they imply, with its confidence interval."""

    attack: str
    n_attacks: int
    n_success: float
    n_baseline: float
    n_control: float | None
    risk: float
    interval: tuple[float, float]
    attack_rate: Rate
    baseline_rate: Rate
    control_rate: Rate | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "n_attacks": self.n_attacks,
            "n_success": self.n_success,
            "n_baseline": self.n_baseline,
            "n_control": self.n_control,
            "risk": self.risk,
            "interval": list(self.interval),
            "attack_rate": self.attack_rate.value,
            "baseline_rate": self.baseline_rate.value,
            "control_rate": None if self.control_rate is None else self.control_rate.value,
            "note": self.note,
        }


def success_rate(n_total: int, n_success: float, confidence: float = CONFIDENCE) -> Rate:
    """Wilson score estimate of a Bernoulli success rate and its error bound."""
    z = float(norm.ppf(0.5 * (1.0 + confidence)))
    variance = n_success * (n_total - n_success) / n_total
    denominator = n_total + z * z
    rate = (n_success + 0.5 * z * z) / denominator
    error = (z / denominator) * math.sqrt(max(variance, 0.0) + 0.25 * z * z)
    return Rate(rate, error)


def residual_risk(attack: Rate, control: Rate | None) -> tuple[float, tuple[float, float]]:
    """Risk ``(attack - control) / (1 - control)`` with the propagated error, bounded to [0, 1].

    Without a control the attack rate itself is the risk, as in Anonymeter.
    """
    if control is None:
        value, error = attack.value, attack.error
    else:
        value = (attack.value - control.value) / (1.0 - control.value)
        d_attack = 1 / abs(1 - control.value)
        d_control = (attack.value - 1) / (1 - control.value) ** 2
        error = math.sqrt((attack.error * d_attack) ** 2 + (control.error * d_control) ** 2)

    def clip(x: float) -> float:
        return min(max(x, 0.0), 1.0)

    return clip(value), (clip(value - error), clip(value + error))


def evaluation(
    attack: str,
    n_attacks: int,
    n_success: float,
    n_baseline: float,
    n_control: float | None,
    note: str = "",
    confidence: float = CONFIDENCE,
) -> AttackResult:
    """Rates and risk from attack counts, as Anonymeter's ``EvaluationResults``."""
    attack_rate = success_rate(n_attacks, n_success, confidence)
    baseline_rate = success_rate(n_attacks, n_baseline, confidence)
    control_rate = None if n_control is None else success_rate(n_attacks, n_control, confidence)
    notes = [note] if note else []
    if baseline_rate.value >= attack_rate.value:
        notes.append("the attack did no better than random guessing: the estimate is not informative")
    risk, interval = residual_risk(attack_rate, control_rate)
    return AttackResult(
        attack,
        n_attacks,
        n_success,
        n_baseline,
        n_control,
        risk,
        interval,
        attack_rate,
        baseline_rate,
        control_rate,
        "; ".join(notes),
    )


# ---- singling out -----------------------------------------------------------------------------------------------


def singling_out(
    data: Prepared, train: Table, holdout: Table, rng: np.random.Generator, n_attacks: int = N_ATTACKS
) -> AttackResult | None:
    """Multivariate singling out: predicates on 3 columns that isolate one synthetic row, tried on real rows.

    A query is built from a random synthetic row: for each of 3 random columns, ``<=`` or ``>=`` its value
    (towards the nearer tail, from the synthetic median) for numbers, ``==`` for categories, ``isna`` for
    missing. Queries that match exactly one (deduplicated) synthetic row are kept; a query succeeds when it
    matches exactly one training row. The control count is rescaled to the training set's size with
    Anonymeter's fitted model of singling-out probability versus table size (Cohen and Nissim, 2020).
    Generation stops after 100 tries per query wanted; rates are over the queries found (anonymeter 1.1 divides
    by the number requested, which understates the risk when fewer are found). None when no query is found.
    """
    synthetic = _deduplicate(data.synthetic)
    train, holdout = _deduplicate(train), _deduplicate(holdout)
    n_cols = min(QUERY_COLUMNS, len(data.columns))
    numeric = [c.numeric for c in data.columns]
    medians = np.array(
        [
            np.nanmedian(col) if numeric[j] and not np.isnan(col).all() else np.nan
            for j, col in enumerate(synthetic.values.T)
        ]
    )
    index = _SortedColumns(synthetic)
    queries: list[tuple[Predicate, ...]] = []
    tried: set[tuple[Predicate, ...]] = set()  # a query's outcome never changes: test each once
    attempts = 0
    while len(queries) < n_attacks and attempts < _MAX_ATTEMPTS_PER_QUERY * n_attacks:
        attempts += 1
        row = synthetic.values[rng.integers(synthetic.rows)]
        columns = sorted(int(c) for c in rng.choice(len(data.columns), n_cols, replace=False))
        query = tuple(_record_predicate(j, row[j], numeric[j], medians[j]) for j in columns)
        if query in tried:
            continue
        tried.add(query)
        if index.singles_out(query):
            queries.append(query)
    if not queries:
        return None
    note = f"{len(queries)} of {n_attacks} queries found in {attempts} tries" if len(queries) < n_attacks else ""
    n_success = sum(int(_matches(train, q).sum()) == 1 for q in queries)
    control_hits = np.array([_matches(holdout, q) for q in queries], dtype=bool).reshape(len(queries), -1)
    n_control = float((control_hits.sum(axis=1) == 1).sum())
    if holdout.rows != train.rows:
        n_control *= _size_correction(control_hits, train.rows, rng)
    baseline = [_random_query(data, synthetic, n_cols, rng) for _ in queries]
    n_baseline = sum(int(_matches(train, q).sum()) == 1 for q in baseline)
    return evaluation("singling_out", len(queries), n_success, n_baseline, n_control, note)


class _SortedColumns:
    """Each column's row order by value, so the rows meeting ``>=``, ``<=``, ``==`` or ``isna`` are a slice.

    A record's query matches at least that record; to learn whether it matches only that one, start from the
    predicate with the smallest slice (found by binary search) and test the others on those rows alone.
    """

    def __init__(self, table: Table) -> None:
        self.rows = table.rows
        self.columns = np.ascontiguousarray(table.values.T)  # one contiguous row of values per column
        self.order = np.argsort(self.columns, axis=1, kind="stable")  # NaN sorts last
        self.sorted = np.take_along_axis(self.columns, self.order, axis=1)
        self.present = (~np.isnan(self.columns)).sum(axis=1)

    def _slice(self, column: int, op: str, value: float) -> tuple[int, int]:
        present = int(self.present[column])
        values = self.sorted[column, :present]
        if op == "isna":
            return present, self.rows
        if op == ">=":
            return int(np.searchsorted(values, value, "left")), present
        if op == "<=":
            return 0, int(np.searchsorted(values, value, "right"))
        return int(np.searchsorted(values, value, "left")), int(np.searchsorted(values, value, "right"))

    def singles_out(self, query: Sequence[Predicate]) -> bool:
        slices = [self._slice(c, op, v) for c, op, v in query]
        best = min(range(len(query)), key=lambda i: slices[i][1] - slices[i][0])
        low, high = slices[best]
        if high - low <= 1:
            return high - low == 1
        rows = self.order[query[best][0], low:high]
        for i, (column, op, value) in enumerate(query):
            if i != best:
                rows = rows[_holds(self.columns[column, rows], op, value)]
                if len(rows) == 1:  # the record itself meets every predicate: it is the one left
                    break
        return len(rows) == 1


def _deduplicate(table: Table) -> Table:
    _, first = np.unique(row_keys(table), return_index=True)
    return table.take(np.sort(first))


def _record_predicate(column: int, value: float, numeric: bool, median: float) -> Predicate:
    if math.isnan(value):
        return (column, "isna", math.nan)
    if numeric:
        return (column, ">=" if value > median else "<=", float(value))
    return (column, "==", float(value))


def _random_query(data: Prepared, synthetic: Table, n_cols: int, rng: np.random.Generator) -> tuple[Predicate, ...]:
    """Anonymeter's baseline: random columns, a random value of each from the synthetic data, random operators."""
    query = []
    for j in sorted(int(c) for c in rng.choice(len(data.columns), n_cols, replace=False)):
        value = float(synthetic.values[rng.integers(synthetic.rows), j])
        if math.isnan(value):
            query.append((j, str(rng.choice(["isna", "notna"])), math.nan))
        elif data.columns[j].numeric:
            query.append((j, str(rng.choice(["==", "!=", ">", "<", ">=", "<="])), value))
        else:
            query.append((j, str(rng.choice(["==", "!="])), value))
    return tuple(query)


def _matches(table: Table, query: Sequence[Predicate]) -> BoolArray:
    mask = np.ones(table.rows, dtype=bool)
    for column, op, value in query:
        mask &= _holds(table.values[:, column], op, value)
    return mask


def _holds(x: FloatArray, op: str, value: float) -> BoolArray:
    """Where ``x op value`` holds; comparisons with a missing value are false, ``!=`` true (as pandas)."""
    if op == "isna":
        return np.isnan(x)
    if op == "notna":
        return ~np.isnan(x)
    comparison = {
        "==": np.equal,
        "!=": np.not_equal,
        ">=": np.greater_equal,
        "<=": np.less_equal,
        ">": np.greater,
        "<": np.less,
    }[op]
    return np.asarray(comparison(x, value), dtype=bool)


def _singling_out_integral(n: FloatArray, w_max: float) -> FloatArray:
    """Integral over query weights 0..w_max of P(single out | n rows) = n w (1 - w)^(n - 1).

    That is ``(1 - (n w_max + 1)(1 - w_max)^n) / (n + 1)``, computed as ``-expm1(log1p(n w) + n log1p(-w))`` so
    that small weights do not cancel to zero.
    """
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf at w_max = 1 gives the right limit, 1 / (n + 1)
        inner = -np.expm1(np.log1p(n * w_max) + n * np.log1p(-w_max))
    return np.asarray(inner / (n + 1), dtype=np.float64)


def _size_correction(hits: BoolArray, n_target: int, rng: np.random.Generator) -> float:
    """How many more queries would single out in a table of ``n_target`` rows than in the control table.

    Anonymeter's ``fit_correction_term`` (as in anonymeter 1.0): count the queries that single out in subsamples
    of the control rows (10 sizes, 5 draws each), fit ``scale * integral(n, 0, w_eff)`` by least squares, and
    take the ratio of the fitted curve at the two sizes. The scale enters linearly, so for each ``w_eff`` its best
    value is closed-form; ``w_eff`` is searched on a log grid (1e-7 to 1) and refined by a bounded scalar search.
    scipy's ``curve_fit`` from anonymeter's starting point stopped at ``w_eff`` near 0.6 on the bundled data, with
    a sum of squares several times the optimum: there the curve falls as ``1 / (n + 1)`` and the ratio is about
    ``n_control / n_target``, which shrank the control count instead of growing it and overstated the risk.
    The curve is still extrapolated from subsamples no larger than the control set: on nafld1 (5,000 training
    rows memorised, 1,500 control rows) it recovers about two thirds of the successes 5,000 fresh rows show.
    """
    n_control = hits.shape[1]
    sizes: list[int] = []
    successes: list[int] = []
    for size in np.linspace(min(1000, n_control), n_control, 10).astype(int):
        for _ in range(5):
            rows = rng.choice(n_control, size, replace=False)
            successes.append(int((hits[:, rows].sum(axis=1) == 1).sum()))
            sizes.append(int(size))
    x = np.array(sizes, dtype=np.float64)
    y = np.array(successes, dtype=np.float64)
    if not y.any():
        return 1.0  # no query singles out in any subsample: there is nothing to rescale

    def loss(log_w: float) -> float:
        curve = _singling_out_integral(x, 10.0**log_w)
        scale = float(curve @ y) / max(float(curve @ curve), np.finfo(np.float64).tiny)
        return float(((scale * curve - y) ** 2).sum())

    grid = np.linspace(-7.0, 0.0, 141)  # 20 points a decade
    start = float(grid[int(np.argmin([loss(g) for g in grid]))])
    found = minimize_scalar(loss, bounds=(max(-7.0, start - 0.05), min(0.0, start + 0.05)), method="bounded")
    at_target, at_control = _singling_out_integral(np.array([n_target, n_control], dtype=np.float64), 10.0**found.x)
    return float(at_target / at_control) if at_control > 0 else 1.0


# ---- linkability and inference ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NeighbourGuesses:
    """For each target row: the synthetic row nearest on each auxiliary half, and nearest without each column."""

    link_a: IntArray
    link_b: IntArray
    without: IntArray  # (targets, columns): nearest synthetic row on all columns but that one


def linkability_and_inference(
    data: Prepared,
    train: Table,
    holdout: Table,
    rng: np.random.Generator,
    aux_columns: tuple[list[int], list[int]] | None = None,
    n_attacks: int = N_ATTACKS,
) -> tuple[AttackResult, list[tuple[str, AttackResult]]]:
    """Linkability (re-joining two halves of a record through the synthetic data) and, for every column,
    attribute inference (guessing it from the nearest synthetic row on all the other columns).

    Distances are Gower-style: numbers scaled by their range over real and synthetic rows, categories 0 or 1.
    The same targets (``n_attacks`` training rows, ``n_attacks`` holdout rows as control) serve every attack.
    """
    n_columns = len(data.columns)
    if aux_columns is None:
        half = (n_columns + 1) // 2
        aux_columns = (list(range(half)), list(range(half, n_columns)))
    n = min(n_attacks, train.rows, holdout.rows)
    order = rng.permutation(data.synthetic.rows)
    synthetic = data.synthetic.take(order)
    scale = _ranges(data, [train, synthetic])
    main_targets = train.take(rng.choice(train.rows, n, replace=False))
    control_targets = holdout.take(rng.choice(holdout.rows, n, replace=False))
    main = _neighbours(data, main_targets, synthetic, scale, aux_columns)
    control = _neighbours(data, control_targets, synthetic, scale, aux_columns)
    random_a, random_b = rng.integers(0, synthetic.rows, n), rng.integers(0, synthetic.rows, n)
    names = [data.columns[j].name for j in aux_columns[0]], [data.columns[j].name for j in aux_columns[1]]
    linkability = evaluation(
        "linkability",
        n,
        float((main.link_a == main.link_b).sum()),
        float((random_a == random_b).sum()),
        float((control.link_a == control.link_b).sum()),
        note=f"auxiliary columns {names[0]} and {names[1]}",
    )
    # One interval per column, read as a family: Bonferroni keeps the chance that any of them excludes a true
    # risk of 0 at 5%, so the worst column is not picked out of noise.
    family_confidence = 1 - (1 - CONFIDENCE) / n_columns
    inference: list[tuple[str, AttackResult]] = []
    for j, col in enumerate(data.columns):
        secrets, control_secrets = main_targets.values[:, j], control_targets.values[:, j]
        guesses = synthetic.values[main.without[:, j], j]
        control_guesses = synthetic.values[control.without[:, j], j]
        random_guesses = synthetic.values[rng.integers(0, synthetic.rows, n), j]
        result = evaluation(
            "inference",
            n,
            float(_inferred(guesses, secrets, col.numeric).sum()),
            float(_inferred(random_guesses, secrets, col.numeric).sum()),
            float(_inferred(control_guesses, control_secrets, col.numeric).sum()),
            confidence=family_confidence,
        )
        inference.append((col.name, result))
    return linkability, inference


def _ranges(data: Prepared, tables: Sequence[Table]) -> FloatArray:
    stacked = np.vstack([t.values for t in tables])
    with np.errstate(all="ignore"):
        spread = np.nanmax(stacked, axis=0) - np.nanmin(stacked, axis=0)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    return np.asarray(spread, dtype=np.float64)


def _neighbours(
    data: Prepared, targets: Table, synthetic: Table, scale: FloatArray, aux: tuple[list[int], list[int]]
) -> _NeighbourGuesses:
    """Nearest synthetic rows by Gower-style distance, in blocks of targets to bound memory (float32)."""
    n_columns = len(data.columns)
    numeric = [c.numeric for c in data.columns]
    # One contiguous row per column: numbers divided by their range, categories as cell codes.
    candidates = np.where(np.array(numeric)[:, None], synthetic.values.T / scale[:, None], synthetic.cells.T).astype(
        np.float32
    )
    queries = np.where(np.array(numeric)[None, :], targets.values / scale[None, :], targets.cells).astype(np.float32)
    block = max(1, _BLOCK_CELLS // max(1, n_columns * synthetic.rows))
    link_a = np.empty(targets.rows, dtype=np.int64)
    link_b = np.empty(targets.rows, dtype=np.int64)
    without = np.empty((targets.rows, n_columns), dtype=np.int64)
    for start in range(0, targets.rows, block):
        stop = min(start + block, targets.rows)
        parts = [_column_distance(queries[start:stop, j], candidates[j], numeric[j]) for j in range(n_columns)]
        link_a[start:stop] = np.argmin(_total(parts, aux[0]), axis=1)
        link_b[start:stop] = np.argmin(_total(parts, aux[1]), axis=1)
        total = _total(parts, range(n_columns))
        for j in range(n_columns):
            without[start:stop, j] = np.argmin(total - parts[j], axis=1)
    return _NeighbourGuesses(link_a, link_b, without)


def _total(parts: list[npt.NDArray[np.float32]], columns: Sequence[int]) -> npt.NDArray[np.float32]:
    total = np.zeros_like(parts[0])
    for j in columns:
        total += parts[j]
    return total


def _column_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], numeric: bool) -> npt.NDArray[np.float32]:
    """Per-column Gower term: |a - b| for range-scaled numbers, 0/1 for categories; missing equals missing
    and is 1 from any value (categories carry missing as a cell code of their own)."""
    if not numeric:
        return np.not_equal(a[:, None], b[None, :]).astype(np.float32)
    distance = np.abs(a[:, None] - b[None, :])
    missing = np.isnan(distance)
    if missing.any():
        distance[missing] = 1.0
        distance[np.ix_(np.isnan(a), np.isnan(b))] = 0.0
    return np.asarray(distance, dtype=np.float32)


def _inferred(guesses: FloatArray, secrets: FloatArray, numeric: bool) -> BoolArray:
    both_missing = np.isnan(guesses) & np.isnan(secrets)
    if numeric:
        with np.errstate(invalid="ignore"):
            close = np.abs(guesses - secrets) <= INFERENCE_TOLERANCE * np.abs(guesses)
    else:
        close = guesses == secrets
    return np.asarray(both_missing | close, dtype=bool)
