"""``evaluate``: score a synthetic table against the real one on fidelity, diversity, utility, equity, privacy."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence

import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.evaluate.diversity import diversity
from privsynth.evaluate.equity import equity
from privsynth.evaluate.fidelity import fidelity
from privsynth.evaluate.metric import Section
from privsynth.evaluate.prepared import Prepared, prepare
from privsynth.evaluate.privacy import privacy
from privsynth.evaluate.report import Report
from privsynth.evaluate.utility import utility
from privsynth.progress import report as progress

logger = logging.getLogger(__name__)

_STEPS = ("fidelity", "diversity", "utility", "equity", "privacy")


def evaluate(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame | None = None,
    target: str | None = None,
    sensitive: str | None = None,
    schema: Schema | None = None,
    seed: int = 0,
    privacy_budget: Mapping[str, float] | None = None,
    linkability_columns: tuple[Sequence[str], Sequence[str]] | None = None,
) -> Report:
    """Compare ``synthetic`` with the ``real`` rows it was generated from; return a :class:`Report`.

    ``holdout`` holds real rows the generator never saw: utility is tested on them and they are the control
    group of every privacy attack (without it those metrics are None). ``target`` (default: the schema's)
    enables utility and ``sensitive`` the per-subgroup equity metrics. Only the columns the ``schema``
    (inferred from ``real`` when not given) marks for synthesis are evaluated. ``seed`` fixes every subsample,
    split and attack. ``privacy_budget`` (``{"epsilon": 1, "delta": 1e-6}``) is shown in the report, not checked.
    ``linkability_columns`` are the two auxiliary column sets of the linkability attack (default: the first
    and second half of the columns).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParameterError(f"seed must be a whole number, not {seed!r}")
    budget = check_budget(privacy_budget)
    if target is None and schema is not None:
        target = schema.target
    data = prepare(real, synthetic, holdout, target, sensitive, schema)
    aux = _aux_columns(data, linkability_columns)
    seconds: dict[str, float] = {}
    sections: dict[str, Section] = {}
    predictions = None
    # Gradient boosting runs single-threaded: its OpenMP threads spin-wait, and on a machine with other work
    # two threads ran detection 10x slower than one (13 s against 1.2 s on 2 busy cores); idle, one costs ~20%.
    with threadpool_limits(limits=1, user_api="openmp"):
        for done, step in enumerate(_STEPS):
            progress("evaluate", done, len(_STEPS), step)
            start = time.perf_counter()
            if step == "fidelity":
                sections[step] = fidelity(data, seed)
            elif step == "diversity":
                sections[step] = diversity(data, seed)
            elif step == "utility":
                sections[step], predictions = utility(data, seed)
            elif step == "equity":
                sections[step] = equity(data, predictions)
            else:
                sections[step] = privacy(data, seed, aux)
            seconds[step] = round(time.perf_counter() - start, 3)
            logger.debug("evaluate: %s took %.1f s", step, seconds[step])
    progress("evaluate", len(_STEPS), len(_STEPS), "done")
    metrics = {m.key: m for section in sections.values() for m in section.metrics}
    meta = {
        "real_rows": data.real.rows,
        "synthetic_rows": data.synthetic.rows,
        "holdout_rows": data.holdout.rows if data.holdout is not None else None,
        "columns": [{"name": c.name, "kind": c.kind.value} for c in data.columns],
        "target": target,
        "sensitive": sensitive,
        "seed": seed,
        "privacy_budget": budget,
        "seconds": seconds,
    }
    return Report(metrics, {name: s.details for name, s in sections.items()}, meta)


def check_budget(budget: Mapping[str, float] | None) -> dict[str, float] | None:
    if budget is None:
        return None
    if not isinstance(budget, Mapping):
        raise ParameterError(f"privacy_budget must be a mapping like {{'epsilon': 1, 'delta': 1e-6}}, not {budget!r}")
    checked: dict[str, float] = {}
    for name, value in budget.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ParameterError(f"privacy_budget['{name}'] must be a finite number >= 0, not {value!r}")
        checked[str(name)] = value
    return checked


def _aux_columns(
    data: Prepared, columns: tuple[Sequence[str], Sequence[str]] | None
) -> tuple[list[int], list[int]] | None:
    if columns is None:
        return None
    if len(columns) != 2 or not columns[0] or not columns[1]:
        raise ParameterError("linkability_columns must be two non-empty lists of column names")
    for name in (*columns[0], *columns[1]):
        if name not in data.names:
            raise ParameterError(f"linkability column '{name}' is not an evaluated column ({', '.join(data.names)})")
    return [data.index(n) for n in columns[0]], [data.index(n) for n in columns[1]]
