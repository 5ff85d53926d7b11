"""Privacy risk, measured empirically: how close synthetic rows sit to training rows, and how well attacks do.

Distance to closest record compares each synthetic row's nearest training row with its nearest holdout row
(as Mostly AI's ``dcr_share``, reweighted to equal-size sets, so 0.5 means the generator is no closer to the rows
it saw than to rows it never saw). A membership-inference attack scores members (training rows) and non-members
(holdout rows) by their distance to the nearest synthetic row. The Anonymeter attacks are in
:mod:`privsynth.evaluate.attacks`. All of these are checks on one sample against particular attacks: they can
reveal leakage, never prove its absence. Only a differential-privacy guarantee bounds the risk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privsynth.evaluate._stats import BOOTSTRAP, auc, bootstrap, centred_interval, mean_interval, nearest
from privsynth.evaluate.attacks import AttackResult, linkability_and_inference, singling_out
from privsynth.evaluate.metric import Better, Metric, Section, metric
from privsynth.evaluate.prepared import FloatArray, Prepared, Table, distance_encoding, row_keys
from privsynth.progress import report

MAX_DCR_ROWS = 5_000  # synthetic rows whose closest records are sought
MAX_MIA_ROWS = 5_000  # members, and as many non-members, scored by the membership attack
_TIE = 1e-6  # distances closer than this are a tie
_HISTOGRAM_BINS = 40
_PREDICTABLE = 0.95  # control success rate above which an inference estimate is not informative

NEEDS_HOLDOUT = "needs a holdout (real rows the generator never saw)"


def privacy(data: Prepared, seed: int, aux_columns: tuple[list[int], list[int]] | None = None) -> Section:
    """Exact copies, distance to closest record, NNDR, membership inference and the Anonymeter attacks."""
    rng = np.random.default_rng(seed)
    train_keys = set(row_keys(data.real).tolist())
    copies = np.array([k in train_keys for k in row_keys(data.synthetic).tolist()], dtype=np.float64)
    holdout = data.holdout
    baseline_copies = (
        np.array([k in train_keys for k in row_keys(holdout).tolist()], dtype=np.float64)
        if holdout is not None
        else None
    )
    metrics: list[Metric] = [
        metric(
            "privacy.exact_copy_rate",
            float(copies.mean()),
            "Share of synthetic rows identical to some training row on every evaluated column",
            "lower",
            mean_interval(copies),
        ),
        metric(
            "privacy.exact_copy_rate_baseline",
            None if baseline_copies is None else float(baseline_copies.mean()),
            "Share of holdout rows identical to some training row: the rate of copies fresh real data shows",
            "lower",
            None if baseline_copies is None else mean_interval(baseline_copies),
            note="" if baseline_copies is not None else NEEDS_HOLDOUT,
        ),
    ]
    details: dict[str, Any] = {}
    report("evaluate", 0, None, "privacy: distances")
    if holdout is None:
        metrics += [
            metric(key, None, definition, better, note=NEEDS_HOLDOUT) for key, definition, better in _HOLDOUT_METRICS
        ]
        return Section(metrics, details)
    share, share_interval, nndr, nndr_baseline, histogram = distance_to_closest_record(data, holdout, rng)
    mia, mia_interval, members = membership_inference(data, holdout, rng)
    definitions = {key: (definition, better) for key, definition, better in _HOLDOUT_METRICS}
    metrics += [
        metric("privacy.dcr_train_share", share, *definitions["privacy.dcr_train_share"], share_interval),
        metric("privacy.nndr_mean", nndr, *definitions["privacy.nndr_mean"]),
        metric("privacy.nndr_baseline", nndr_baseline, *definitions["privacy.nndr_baseline"]),
        metric("privacy.mia_auc", mia, *definitions["privacy.mia_auc"], mia_interval, note=f"{members} of each"),
    ]
    details["dcr_histogram"] = histogram
    report("evaluate", 0, None, "privacy: singling out")
    singled = singling_out(data, data.real, holdout, rng)
    report("evaluate", 0, None, "privacy: linkability and inference")
    linked, inferred = linkability_and_inference(data, data.real, holdout, rng, aux_columns)
    worst_name, worst = _worst_inference(inferred)
    metrics += [
        _attack_metric("privacy.singling_out_risk", singled, missing="no query singles out one synthetic row"),
        _attack_metric("privacy.linkability_risk", linked),
        _attack_metric("privacy.inference_risk", worst, note=f"worst secret column: {worst_name}"),
    ]
    details["attacks"] = [a.to_dict() for a in (singled, linked) if a is not None]
    details["inference"] = [{"column": name, **result.to_dict()} for name, result in inferred]
    return Section(metrics, details)


def distance_to_closest_record(
    data: Prepared, holdout: Table, rng: np.random.Generator
) -> tuple[float, tuple[float, float] | None, float, float, dict[str, Any]]:
    """DCR train share with its interval, NNDR of synthetic and of holdout rows, and histogram data.

    At most :data:`MAX_DCR_ROWS` synthetic rows (and as many holdout rows, for the NNDR baseline) are
    queried against every training and every holdout row. When the synthetic data is a fresh sample of the
    real distribution, the nearest of all training and holdout rows is a training row with probability
    ``w = n_train / (n_train + n_holdout)``; ties count ``w``. The raw share ``p`` is reweighted to what equal-size
    sets would give, ``(p / n_train) / (p / n_train + (1 - p) / n_holdout)``: 0.5 for a fresh sample, 1 when every
    synthetic row copies a training row, whichever set is larger. Subsampling the training rows to the
    holdout's size instead (as Mostly AI's ``dcr_share``) gives the same 0.5 but lets copies of the rows left out
    read as fresh: a full copy of nassCDS scores 0.63 that way.
    """
    n_train, n_holdout = data.real.rows, holdout.rows
    weight = n_train / (n_train + n_holdout)
    queries = data.synthetic.take(
        rng.choice(data.synthetic.rows, min(MAX_DCR_ROWS, data.synthetic.rows), replace=False)
    )
    fresh = holdout.take(rng.choice(n_holdout, min(MAX_DCR_ROWS, n_holdout), replace=False))
    train_x, holdout_x, query_x, fresh_x = distance_encoding(data, [data.real, holdout, queries, fresh])
    to_train = nearest(query_x, train_x, k=min(2, n_train))
    to_holdout = nearest(query_x, holdout_x)[:, 0]
    closer = np.where(
        np.abs(to_train[:, 0] - to_holdout) <= _TIE, weight, (to_train[:, 0] < to_holdout).astype(np.float64)
    )

    def equal_size_share(raw: float) -> float:
        towards_train, towards_holdout = raw / n_train, (1.0 - raw) / n_holdout
        return towards_train / (towards_train + towards_holdout)

    share = equal_size_share(float(closer.mean()))
    draws = bootstrap(lambda idx: equal_size_share(float(closer[idx].mean())), len(closer), rng, BOOTSTRAP)
    fresh_to_train = nearest(fresh_x, train_x, k=min(2, n_train))
    histogram = _histogram(
        {
            "synthetic to train": to_train[:, 0],
            "synthetic to holdout": to_holdout,
            "holdout to train": fresh_to_train[:, 0],
        }
    )
    histogram["raw_train_share"] = float(closer.mean())
    return share, centred_interval(share, draws), _nndr(to_train), _nndr(fresh_to_train), histogram


def membership_inference(
    data: Prepared, holdout: Table, rng: np.random.Generator
) -> tuple[float, tuple[float, float] | None, int]:
    """AUC of telling members from non-members by closeness to the synthetic data, its interval, rows each."""
    size = min(data.real.rows, holdout.rows, MAX_MIA_ROWS)
    members = data.real.take(rng.choice(data.real.rows, size, replace=False))
    others = holdout.take(rng.choice(holdout.rows, size, replace=False))
    members_x, others_x, synthetic_x = distance_encoding(data, [members, others, data.synthetic])
    score = -np.r_[nearest(members_x, synthetic_x)[:, 0], nearest(others_x, synthetic_x)[:, 0]]
    is_member = np.r_[np.ones(size, dtype=bool), np.zeros(size, dtype=bool)]
    point = auc(is_member, score)
    draws = bootstrap(lambda idx: auc(is_member[idx], score[idx]), len(score), rng, BOOTSTRAP)
    return point, centred_interval(point, draws), size


def _nndr(distances: FloatArray) -> float:
    """Mean ratio of nearest to second-nearest distance (1 where both are 0: an exact duplicate group)."""
    if distances.shape[1] < 2:
        return float("nan")
    first, second = distances[:, 0], distances[:, 1]
    ratio = np.divide(first, second, out=np.ones_like(first), where=second > _TIE)
    return float(ratio.mean())


def _histogram(series: dict[str, FloatArray]) -> dict[str, Any]:
    top = max(float(np.quantile(v, 0.99)) for v in series.values() if len(v))
    edges = np.linspace(0.0, top if top > 0 else 1.0, _HISTOGRAM_BINS + 1)
    return {
        "edges": edges.tolist(),
        "series": {
            name: (np.histogram(np.minimum(v, edges[-1]), edges)[0] / max(len(v), 1)).tolist()
            for name, v in series.items()
        },
        "medians": {name: float(np.median(v)) for name, v in series.items()},
    }


def _worst_inference(inferred: list[tuple[str, AttackResult]]) -> tuple[str, AttackResult]:
    """The column with the strongest evidence of leakage: largest lower confidence bound, then largest risk.

    Columns whose secret the control attack guesses 95% of the time or more are passed over (when others
    exist): fresh rows give the secret away already, so the risk estimate there is all noise.
    """
    informative = [
        item for item in inferred if item[1].control_rate is not None and item[1].control_rate.value < _PREDICTABLE
    ]
    return max(informative or inferred, key=lambda item: (item[1].interval[0], item[1].risk))


def _attack_metric(key: str, result: AttackResult | None, missing: str = "", note: str = "") -> Metric:
    """The metric of one attack; ``missing`` says why there is no result, ``note`` adds to the attack's own."""
    definition, better = _ATTACK_DEFINITIONS[key]
    if result is None:
        return metric(key, None, definition, better, note=missing)
    notes = "; ".join(n for n in (note, result.note) if n)
    return metric(key, result.risk, definition, better, result.interval, notes)


_HOLDOUT_METRICS: list[tuple[str, str, Better]] = [
    (
        "privacy.dcr_train_share",
        f"Share of synthetic rows (at most {MAX_DCR_ROWS}) whose closest record is a training row rather than a "
        "holdout row, reweighted to equal-size training and holdout sets; 0.5 means no closer to the rows seen "
        "than to fresh ones, 1 means every row sits on a training row",
        "half",
    ),
    (
        "privacy.nndr_mean",
        f"Mean over synthetic rows (at most {MAX_DCR_ROWS}) of distance to the nearest / second-nearest training "
        "row; values near 0 mean rows that sit on one particular training record",
        "higher",
    ),
    (
        "privacy.nndr_baseline",
        f"The same nearest-neighbour distance ratio for holdout rows (at most {MAX_DCR_ROWS}): what fresh real "
        "data shows",
        "higher",
    ),
    (
        "privacy.mia_auc",
        "AUC of a distance-based membership attack: training rows (members) and as many holdout rows "
        f"(non-members), at most {MAX_MIA_ROWS} each, scored by closeness to the nearest synthetic row; 0.5 is "
        "chance",
        "half",
    ),
    (
        "privacy.singling_out_risk",
        "Anonymeter singling-out risk (multivariate, 3 columns, up to 500 queries that isolate one synthetic "
        "row): (main - control) / (1 - control) success on training vs holdout rows, 95% interval",
        "lower",
    ),
    (
        "privacy.linkability_risk",
        "Anonymeter linkability risk (two column halves re-joined through the nearest synthetic row, 500 "
        "targets): (main - control) / (1 - control), 95% interval",
        "lower",
    ),
    (
        "privacy.inference_risk",
        "Anonymeter attribute-inference risk of the worst column (largest lower bound, then risk, among columns "
        "the control attack guesses < 95% of the time), each column guessed from the nearest synthetic row on "
        "the others (500 targets): (main - control) / (1 - control); intervals Bonferroni-adjusted over columns "
        "(family-wise 95%)",
        "lower",
    ),
]
_ATTACK_DEFINITIONS: dict[str, tuple[str, Better]] = {
    key: (definition, better) for key, definition, better in _HOLDOUT_METRICS if key.endswith("_risk")
}
