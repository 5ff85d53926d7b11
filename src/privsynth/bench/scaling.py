"""Utility against the number of synthetic rows: one fitted model sampled at growing sizes, a power law fitted
to ``1 - TSTR``, written as ``scaling.json`` and ``scaling.png``."""

from __future__ import annotations

import io
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from privsynth import __version__
from privsynth.bench import peers
from privsynth.bench.harness import _Context, _seed_list, is_dp
from privsynth.bench.run_info import with_run
from privsynth.data.datasets import bundled_schema, dataset_info, load_dataset
from privsynth.errors import OutputExistsError, ParameterError
from privsynth.evaluate.prepared import prepare
from privsynth.evaluate.utility import utility
from privsynth.progress import report as progress
from privsynth.synth import create
from privsynth.synth.dp import DEFAULT_DELTA

logger = logging.getLogger(__name__)


SCALING_JSON = "scaling.json"
SCALING_PNG = "scaling.png"


@dataclass(frozen=True)
class ScalingPoint:
    """Utility of synthetic sets of one size: mean TSTR over seeds and the loss ``1 - TSTR``."""

    rows: int
    tstr: float
    loss: float
    tstr_by_seed: list[float]


@dataclass(frozen=True)
class PowerLaw:
    """``loss(n) = a * n ** -b + c``: ``c`` is the plateau more synthetic rows cannot get below."""

    a: float
    b: float
    c: float
    errors: dict[str, float | None]

    def __call__(self, rows: float | np.ndarray) -> Any:
        return self.a * np.power(np.asarray(rows, dtype=float), -self.b) + self.c


@dataclass
class ScalingResult:
    """Utility against synthetic rows for one fitted model, the fitted power law and where it was written."""

    dataset: str
    method: str
    epsilon: float | None
    points: list[ScalingPoint]
    law: PowerLaw | None
    trtr: float | None
    fit_seconds: float
    paths: list[Path]

    def predict(self, rows: float) -> float:
        return float("nan") if self.law is None else float(self.law(rows))

    def describe(self) -> str:
        if self.law is None:
            return "the power law could not be fitted (fewer than 3 sizes or no convergence)"
        law = self.law
        reference = "" if self.trtr is None else f"; a model trained on the real train split loses {1 - self.trtr:.4f}"
        spread = law.errors.get("c")
        if spread is None or spread > max(0.02, law.c):
            shown = "unknown" if spread is None else f"{spread:.2g}"
            return (
                f"loss(n) = {law.a:.4g} * n^-{law.b:.3g} + {law.c:.4f}, but these sizes do not determine the plateau "
                f"(standard error of c: {shown}): the loss is still falling; try larger sizes or more seeds{reference}"
            )
        return (
            f"loss(n) = {law.a:.4g} * n^-{law.b:.3g} + {law.c:.4f}: the plateau (1 - TSTR with unlimited synthetic "
            f"rows) is {law.c:.4f} +- {spread:.2g}, TSTR {1 - law.c:.4f}{reference}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "method": self.method,
            "epsilon": self.epsilon,
            "loss": "1 - utility.tstr (AUC for classification targets, R^2 for regression)",
            "points": [vars(p) for p in self.points],
            "power_law": None
            if self.law is None
            else {"a": self.law.a, "b": self.law.b, "plateau_c": self.law.c, "standard_errors": self.law.errors},
            "trtr": self.trtr,
            "fit_seconds": round(self.fit_seconds, 3),
            "description": self.describe(),
            "privsynth_version": __version__,
        }


def fit_power_law(rows: Sequence[float], loss: Sequence[float]) -> PowerLaw | None:
    """Least-squares fit of ``loss = a * rows ** -b + c`` (scipy's ``curve_fit``) with a, b, c >= 0.

    Returns None with fewer than three sizes or when the fit does not converge.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.asarray(rows, dtype=float)
    y = np.asarray(loss, dtype=float)
    if len(x) < 3 or len(np.unique(x)) < 3:
        return None

    def law(n: np.ndarray, a: float, b: float, c: float) -> Any:
        return a * np.power(n, -b) + c

    c0 = max(0.0, float(y.min()) * 0.9)
    b0 = 0.5
    a0 = max(1e-9, float(y.max() - c0)) * float(x.min()) ** b0
    try:
        with warnings.catch_warnings():
            # With as many sizes as parameters the covariance is undefined: the errors are None then.
            warnings.simplefilter("ignore", OptimizeWarning)
            params, covariance = curve_fit(
                law, x, y, p0=(a0, b0, c0), bounds=([0.0, 0.0, 0.0], [np.inf, 4.0, np.inf]), maxfev=20_000
            )
    except (RuntimeError, ValueError) as exc:
        logger.info("power-law fit failed: %s", exc)
        return None
    with np.errstate(invalid="ignore"):
        spread = np.sqrt(np.diag(covariance))
    errors = {name: float(e) if np.isfinite(e) else None for name, e in zip("abc", spread, strict=True)}
    return PowerLaw(float(params[0]), float(params[1]), float(params[2]), errors)


def run_scaling(
    dataset: str,
    method: str,
    rows_grid: Sequence[int],
    *,
    epsilon: float | None = None,
    delta: float = DEFAULT_DELTA,
    seeds: int | Sequence[int] = 2,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    evaluate_seed: int = 0,
) -> ScalingResult:
    """TSTR of synthetic sets of growing size drawn from one fitted model, with a power law fitted to 1 - TSTR.

    A privsynth method is fitted once and sampled at each size with each seed; a peer runs once for the
    largest size times the number of seeds, and each set is a disjoint slice of that output. Writes
    ``scaling.json`` and ``scaling.png`` into ``out_dir`` when given.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    sizes = sorted({int(n) for n in rows_grid})
    if not sizes or sizes[0] < 10:
        raise ParameterError(f"rows_grid needs sizes of at least 10 rows, not {list(rows_grid)!r}")
    seed_list = _seed_list(seeds)
    if is_dp(method) != (epsilon is not None):
        need = "needs an epsilon" if epsilon is None else "is not differentially private and takes no epsilon"
        raise ParameterError(f"'{method}' {need}")
    folder = None if out_dir is None else Path(out_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / SCALING_JSON).exists() and not overwrite:
            raise OutputExistsError(f"{folder / SCALING_JSON} already exists; pass overwrite to replace it")
    info = dataset_info(dataset)
    train = load_dataset(dataset, "train")
    holdout = load_dataset(dataset, "holdout")
    schema = bundled_schema(dataset, train)
    context = _Context(dataset, train, holdout, schema, info.target, info.sensitive, max(sizes) * len(seed_list))
    started = time.perf_counter()
    progress("scaling", 0, len(sizes) * len(seed_list) + 1, f"fitting {method}")
    draw = _sampler(context, method, epsilon, delta, sizes, seed_list)
    fit_seconds = time.perf_counter() - started
    points: list[ScalingPoint] = []
    trtr: float | None = None
    step = 1
    for n in sizes:
        scores: list[float] = []
        for index, seed in enumerate(seed_list):
            progress("scaling", step, len(sizes) * len(seed_list) + 1, f"{n:,} rows, seed {seed}")
            data = prepare(train, draw(n, index, seed), holdout, info.target, None, schema)
            with threadpool_limits(limits=1, user_api="openmp"):
                section, _ = utility(data, evaluate_seed)
            values = {m.key: m.value for m in section.metrics}
            tstr_value, trtr_value = values.get("utility.tstr"), values.get("utility.trtr")
            scores.append(float("nan") if tstr_value is None else float(tstr_value))
            if trtr is None and trtr_value is not None:
                trtr = float(trtr_value)
            step += 1
        mean = float(np.nanmean(scores)) if not all(math.isnan(s) for s in scores) else float("nan")
        points.append(ScalingPoint(n, mean, 1.0 - mean, scores))
    usable = [p for p in points if math.isfinite(p.loss)]
    law = fit_power_law([p.rows for p in usable], [p.loss for p in usable])
    result = ScalingResult(dataset, method, epsilon, points, law, trtr, fit_seconds, [])
    if folder is not None:
        (folder / SCALING_JSON).write_text(json.dumps(with_run(result.to_dict()), indent=2, allow_nan=True) + "\n")
        (folder / SCALING_PNG).write_bytes(scaling_plot(result))
        result.paths = [folder / SCALING_JSON, folder / SCALING_PNG]
    progress("scaling", step, step, "done")
    return result


def _sampler(
    context: _Context, method: str, epsilon: float | None, delta: float, sizes: Sequence[int], seeds: Sequence[int]
) -> Callable[[int, int, int], pd.DataFrame]:
    """A function (rows, seed index, seed) -> synthetic rows, all from one fitted model."""
    if peers.is_peer(method):
        result = peers.run_peer(
            method,
            context.train,
            context.schema,
            max(sizes) * len(seeds),
            seed=seeds[0],
            epsilon=epsilon,
            delta=delta if epsilon is not None else None,
        )
        pool = result.data

        def from_pool(n: int, index: int, seed: int) -> pd.DataFrame:
            start = index * max(sizes)
            return pool.iloc[start : start + n].reset_index(drop=True)

        return from_pool
    synthesizer = create(method)
    if epsilon is not None:
        synthesizer.fit(context.train, context.schema, epsilon=epsilon, delta=delta, ledger=False)
    else:
        synthesizer.fit(context.train, context.schema)

    def from_model(n: int, index: int, seed: int) -> pd.DataFrame:
        return synthesizer.sample(n, seed=seed)

    return from_model


def scaling_plot(result: ScalingResult) -> bytes:
    """PNG of 1 - TSTR against synthetic rows (log x), per-seed points, the fitted power law and its plateau."""
    figure = Figure(figsize=(6, 3.6))
    axes = figure.subplots()
    rows = np.array([p.rows for p in result.points], dtype=float)
    for point in result.points:
        seeds = [1 - s for s in point.tstr_by_seed if math.isfinite(s)]
        axes.scatter([point.rows] * len(seeds), seeds, color="#4c72b0", alpha=0.4, s=12)
    axes.plot(rows, [p.loss for p in result.points], "o", color="#4c72b0", label="1 - TSTR (mean over seeds)")
    if result.law is not None:
        grid = np.geomspace(rows.min(), rows.max() * 4, 200)
        law = result.law
        axes.plot(grid, law(grid), color="#dd8452", label=f"{law.a:.3g} n^-{law.b:.2g} + {law.c:.4f}")
        spread = law.errors.get("c")
        plus = "" if spread is None else f" +- {spread:.2g}"
        axes.axhline(law.c, color="#dd8452", linestyle=":", label=f"plateau c = {law.c:.4f}{plus}")
    if result.trtr is not None:
        axes.axhline(1 - result.trtr, color="#55a868", linestyle="--", label=f"real train rows: {1 - result.trtr:.4f}")
    axes.set_xscale("log")
    axes.set_xlabel("synthetic rows", fontsize=8)
    axes.set_ylabel("utility loss 1 - TSTR", fontsize=8)
    budget = "" if result.epsilon is None else f", epsilon {result.epsilon:g}"
    axes.set_title(f"{result.dataset}: {result.method}{budget}", fontsize=9)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, frameon=False)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()
