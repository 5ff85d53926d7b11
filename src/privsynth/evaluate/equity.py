"""Equity: does the synthetic data serve every subgroup of a sensitive column as well as the real data does?

Per subgroup (each category of the sensitive column, or each quantile bin of a numeric one): its share of the
rows, the fidelity within it (1-way TVD of the other columns, against the same TVD between real and holdout
rows of that group as the noise floor), and the utility within it (TSTR and TRTR scored on the group's holdout
rows). The worst-group gap of TSTR is set against the same gap of TRTR: a generator that drops or distorts a
minority group widens it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privsynth.evaluate._stats import tvd
from privsynth.evaluate.metric import Metric, Section, metric
from privsynth.evaluate.prepared import Prepared, Table
from privsynth.evaluate.utility import Predictions, score

MIN_GROUP_ROWS = 20  # smaller groups are listed but not scored


def equity(data: Prepared, predictions: Predictions | None) -> Section:
    """Per-subgroup representation, fidelity and utility, and the worst-group gaps."""
    if data.sensitive is None:
        return Section([metric(key, None, text, "lower", note="needs a sensitive column") for key, text in _TEXT])
    s = data.index(data.sensitive)
    col = data.columns[s]
    labels = col.bin_labels()
    others = [j for j in range(len(data.columns)) if j != s]
    real_groups = data.real.cells[:, s]
    synthetic_groups = data.synthetic.cells[:, s]
    holdout = data.holdout
    holdout_groups = None if holdout is None else holdout.cells[:, s]
    scored_groups = None if predictions is None or holdout_groups is None else holdout_groups[predictions.rows]
    groups: list[dict[str, Any]] = []
    for g in np.unique(real_groups):
        real_rows = real_groups == g
        synthetic_rows = synthetic_groups == g
        row: dict[str, Any] = {
            "group": labels[g],
            "real_rows": int(real_rows.sum()),
            "synthetic_rows": int(synthetic_rows.sum()),
            "real_share": float(real_rows.mean()),
            "synthetic_share": float(synthetic_rows.mean()),
            "tvd_1way": None,
            "tvd_1way_holdout": None,
            "tstr": None,
            "trtr": None,
        }
        if real_rows.sum() >= MIN_GROUP_ROWS and synthetic_rows.sum() > 0:
            row["tvd_1way"] = _tvd_1way(data, others, data.real.take(real_rows), data.synthetic.take(synthetic_rows))
        if holdout is not None and holdout_groups is not None and (holdout_groups == g).sum() >= MIN_GROUP_ROWS:
            row["tvd_1way_holdout"] = _tvd_1way(
                data, others, data.real.take(real_rows), holdout.take(holdout_groups == g)
            )
        if predictions is not None and scored_groups is not None and (scored_groups == g).sum() >= MIN_GROUP_ROWS:
            in_group = scored_groups == g
            truth = predictions.truth[in_group]
            for name, values in (("tstr", predictions.tstr), ("trtr", predictions.trtr)):
                if values is not None:
                    value = score(predictions.task, truth, values[in_group])
                    row[name] = value if np.isfinite(value) else None
        groups.append(row)
    return Section(_gap_metrics(groups, col.name), {"column": col.name, "groups": groups})


def _tvd_1way(data: Prepared, columns: list[int], real: Table, other: Table) -> float:
    return float(
        np.mean(
            [
                tvd(
                    np.bincount(real.cells[:, j], minlength=data.columns[j].bins).astype(np.float64),
                    np.bincount(other.cells[:, j], minlength=data.columns[j].bins).astype(np.float64),
                )
                for j in columns
            ]
        )
        if columns
        else 0.0
    )


def _gap(groups: list[dict[str, Any]], key: str) -> float | None:
    values = [g[key] for g in groups if g.get(key) is not None]
    return float(max(values) - min(values)) if len(values) >= 2 else None


def _gap_metrics(groups: list[dict[str, Any]], column: str) -> list[Metric]:
    text = dict(_TEXT)
    tstr_gap, trtr_gap = _gap(groups, "tstr"), _gap(groups, "trtr")
    scored = [g for g in groups if g.get("tvd_1way") is not None]
    worst = max(scored, key=lambda g: g["tvd_1way"], default=None)
    absent = [g["group"] for g in groups if g["synthetic_rows"] == 0]
    representation = 0.5 * sum(abs(g["real_share"] - g["synthetic_share"]) for g in groups)
    note = f"sensitive column {column}"
    return [
        metric(
            "equity.representation_tvd",
            representation,
            text["equity.representation_tvd"],
            "lower",
            note=note + (f"; groups absent from the synthetic data: {absent}" if absent else ""),
        ),
        metric("equity.tstr_gap", tstr_gap, text["equity.tstr_gap"], "lower", note=note),
        metric("equity.trtr_gap", trtr_gap, text["equity.trtr_gap"], "lower", note=note),
        metric(
            "equity.gap_excess",
            None if tstr_gap is None or trtr_gap is None else tstr_gap - trtr_gap,
            text["equity.gap_excess"],
            "lower",
            note=note,
        ),
        metric(
            "equity.tvd_1way_worst",
            None if worst is None else worst["tvd_1way"],
            text["equity.tvd_1way_worst"],
            "lower",
            note=f"worst group: {worst['group']}" if worst else note,
        ),
        metric(
            "equity.tvd_1way_worst_baseline",
            None if worst is None else worst.get("tvd_1way_holdout"),
            text["equity.tvd_1way_worst_baseline"],
            "lower",
            note=f"group: {worst['group']}" if worst else note,
        ),
    ]


_TEXT = [
    ("equity.representation_tvd", "Total variation distance between the real and synthetic subgroup shares"),
    (
        "equity.tstr_gap",
        f"Best minus worst subgroup TSTR score on the holdout (groups of at least {MIN_GROUP_ROWS} rows)",
    ),
    ("equity.trtr_gap", "Best minus worst subgroup TRTR score on the holdout: the gap real data shows"),
    ("equity.gap_excess", "TSTR gap minus TRTR gap: how much the synthetic data widens the subgroup gap"),
    (
        "equity.tvd_1way_worst",
        "Largest over subgroups of the mean 1-way TVD of the other columns between real and synthetic rows of "
        "the subgroup",
    ),
    (
        "equity.tvd_1way_worst_baseline",
        "The same within-group 1-way TVD between real and holdout rows of that worst group: the noise floor "
        "(at the holdout's size, so a little high when the holdout is smaller than the synthetic data)",
    ),
]
