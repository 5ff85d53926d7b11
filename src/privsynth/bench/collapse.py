"""The collapse lab: fit generation after generation on synthetic output and measure what is lost.

Shumailov et al. ("AI models collapse when trained on recursively generated data", Nature 2024) show that when
each model is trained on the previous model's output (*replace*), the tails of the distribution and rare
categories disappear; Gerstgrasser et al. ("Is Model Collapse Inevitable?", 2024) show that when synthetic data
is added to the real data instead (*accumulate*), the error stays bounded. :func:`run_collapse` reproduces both
set-ups with any privsynth method and records, per generation, against the real data:

- the mean total variation distance of the 1-way and 2-way marginals, on the evaluation report's fixed binning
  (categories as they are, numbers in 16 quantile bins of the real data, missing as a bin of its own);
- tail coverage: for each numeric column, the synthetic share at or below the real 1% quantile divided by the
  real share there (and the same above the 99% quantile): 1 keeps the tail, 0 has lost it;
- the survival of rare values: of the values (categories, or levels of an integer column with at most 32 of
  them, missing included) that are rarer than ``rare_share`` in the real data, the fraction that still occurs
  at least once, and their total synthetic mass relative to the real mass; the same for pairs of such columns.

Next to the generations stands a baseline: a bootstrap resample of the real rows of the same size, that is a
perfect sampler of the real data, which shows the sampling noise every metric has at this size.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from privsynth._version import __version__
from privsynth.bench.run_info import with_run
from privsynth.data.datasets import DATASETS, dataset_names, load_dataset
from privsynth.data.schema import Kind, Schema
from privsynth.errors import OutputExistsError, ParameterError
from privsynth.evaluate.prepared import Prepared, prepare
from privsynth.progress import report
from privsynth.render import plain
from privsynth.synth import create

__all__ = ["CollapseResult", "GenerationMetrics", "measure", "plot_collapse", "run_collapse"]

logger = logging.getLogger(__name__)

Mode = Literal["replace", "accumulate"]
MODES: Final = ("replace", "accumulate")
RARE_SHARE: Final = 0.01
DISCRETE_LEVELS: Final = 32  # an integer column with at most this many values counts its values as categories
TAIL_QUANTILES: Final = (0.01, 0.99)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class GenerationMetrics:
    """What generation ``generation`` kept of the real data (generation 0 is the resampling baseline)."""

    generation: int
    training_rows: int
    training_synthetic_share: float
    tvd_1way: float
    tvd_2way: float
    tvd_1way_worst: float
    tail_lower: float | None
    tail_upper: float | None
    quantile_span: float | None
    range_span: float | None
    rare_1way: int
    rare_1way_survival: float | None
    rare_1way_mass: float | None
    rare_2way: int
    rare_2way_survival: float | None
    rare_2way_mass: float | None
    columns: dict[str, dict[str, float | None]] = field(default_factory=dict)
    fit_seconds: float = 0.0
    sample_seconds: float = 0.0


@dataclass
class CollapseResult:
    """A run of the lab: its settings, the baseline and one :class:`GenerationMetrics` per generation."""

    dataset: str
    method: str
    mode: str
    rows: int
    real_rows: int
    seed: int
    params: dict[str, Any]
    baseline: GenerationMetrics
    generations: list[GenerationMetrics]
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)

    @property
    def stem(self) -> str:
        """The file name stem of this run's outputs, ``collapse-<dataset>-<method>-<mode>``."""
        return f"collapse-{_slug(self.dataset)}-{_slug(self.method)}-{self.mode}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "privsynth_collapse": 1,
            "privsynth_version": __version__,
            "dataset": self.dataset,
            "method": self.method,
            "mode": self.mode,
            "rows_per_generation": self.rows,
            "real_rows": self.real_rows,
            "seed": self.seed,
            "params": self.params,
            "rare_share": RARE_SHARE,
            "definitions": {
                "tvd_1way / tvd_2way": "mean total variation distance of the 1-/2-way marginals to the real data "
                "(16 quantile bins for numbers, missing as a bin); 0 is identical",
                "tvd_1way_worst": "the largest 1-way TVD over the columns",
                "tail_lower / tail_upper": "mean over numeric columns of P_synthetic(x <= real 1% quantile) / "
                "P_real(same), and of the same at or above the 99% quantile; 1 keeps the tail, 0 lost it",
                "quantile_span": "mean over numeric columns of (synthetic q99 - q01) / (real q99 - q01)",
                "range_span": "mean over numeric columns of (synthetic max - min) / (real max - min)",
                "rare_1way_survival": f"fraction of the values rarer than {RARE_SHARE:.0%} in the real data "
                "(categories, levels of integer columns with at most 32 levels, missing) that still occur",
                "rare_1way_mass": "synthetic share of those rare values / their real share",
                "rare_2way_*": "the same for value pairs of two such columns",
                "baseline": "a bootstrap resample of the real rows of the same size: a perfect sampler",
            },
            "baseline": asdict(self.baseline),
            "generations": [asdict(g) for g in self.generations],
            "seconds": self.seconds,
        }
        return plain(out)  # type: ignore[no-any-return]


def run_collapse(
    dataset: str | pd.DataFrame,
    method: str = "copula",
    generations: int = 10,
    mode: Mode = "replace",
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    rows: int | None = None,
    params: Mapping[str, Any] | None = None,
    schema: Schema | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    ledger: Any = None,
    name: str | None = None,
    overwrite: bool = False,
) -> CollapseResult:
    """Fit ``generations`` successive models of ``method`` and measure each one's output against the real data.

    ``dataset`` is a bundled dataset name (its train split) or a frame. Generation 1 is fitted on the real rows;
    in ``replace`` mode generation k + 1 is fitted on generation k's rows only, in ``accumulate`` mode on the real
    rows plus every earlier generation's. Each generation samples ``rows`` rows (default: as many as the real
    data has). A DP method gets ``epsilon`` and ``delta`` at every generation, and records its spends in
    ``ledger`` when one is given (only generation 1 reads the real data). With ``out_dir``,
    ``collapse-<dataset>-<method>-<mode>.json`` and ``.png`` are written there (``name`` labels a frame).
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be 'replace' or 'accumulate', not {mode!r}")
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ParameterError(f"generations must be a whole number of at least 1, not {generations!r}")
    if isinstance(dataset, str):
        if dataset not in DATASETS or DATASETS[dataset].kind != "table":
            tables = ", ".join(dataset_names("table"))
            raise ParameterError(f"unknown table '{dataset}'; the collapse lab runs on a bundled table: {tables}")
        real, name = load_dataset(dataset, "train"), dataset
    else:
        real, name = dataset.reset_index(drop=True), name or "data frame"
    schema = (schema or Schema.infer(real)).synthesized()
    real = real[schema.names]
    n = len(real) if rows is None else rows
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"rows must be a whole number of at least 1, not {rows!r}")
    stem = f"collapse-{_slug(name)}-{_slug(method)}-{mode}"
    paths = _output_paths(out_dir, stem, overwrite)
    fit_options = {k: v for k, v in {"epsilon": epsilon, "delta": delta, "ledger": ledger}.items() if v is not None}
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    baseline = measure(real, real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True), schema, 0)
    history: list[pd.DataFrame] = []
    results: list[GenerationMetrics] = []
    for generation in range(1, generations + 1):
        report("collapse", generation - 1, generations, f"{method} {mode}: generation {generation}")
        if generation == 1:
            training = real
        elif mode == "replace":
            training = history[-1]
        else:
            training = pd.concat([real, *history], ignore_index=True)
        synthetic_share = 0.0 if generation == 1 else 1 - (len(real) if mode == "accumulate" else 0) / len(training)
        start = time.perf_counter()
        model = create(method, **dict(params or {})).fit(training, schema, **fit_options)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        synthetic = model.sample(n, seed=seed + generation)
        sample_seconds = time.perf_counter() - start
        metrics = measure(real, synthetic, schema, generation, training_rows=len(training))
        results.append(
            replace(
                metrics,
                training_synthetic_share=synthetic_share,
                fit_seconds=round(fit_seconds, 3),
                sample_seconds=round(sample_seconds, 3),
            )
        )
        logger.info(
            "collapse %s %s generation %d: tvd_2way %.4f, tail %.2f/%.2f, rare survival %s",
            method,
            mode,
            generation,
            metrics.tvd_2way,
            metrics.tail_lower or float("nan"),
            metrics.tail_upper or float("nan"),
            metrics.rare_1way_survival,
        )
        history.append(synthetic.reset_index(drop=True))
    report("collapse", generations, generations, "done")
    result = CollapseResult(
        dataset=name,
        method=method,
        mode=mode,
        rows=n,
        real_rows=len(real),
        seed=seed,
        params={**dict(params or {}), **{k: v for k, v in (("epsilon", epsilon), ("delta", delta)) if v is not None}},
        baseline=baseline,
        generations=results,
        seconds=round(time.perf_counter() - started, 1),
    )
    if paths is not None:
        json_path, png_path = paths
        json_path.write_text(json.dumps(with_run(result.to_dict()), indent=2) + "\n", encoding="utf-8")
        plot_collapse([result], png_path)
        result.files = [json_path, png_path]
    return result


def measure(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    generation: int,
    *,
    training_rows: int = 0,
    rare_share: float = RARE_SHARE,
) -> GenerationMetrics:
    """Marginal TVDs, tail coverage and rare-value survival of ``synthetic`` against ``real``."""
    data = prepare(real, synthetic, None, None, None, schema)
    tvd1 = [_tvd(data.real.cells[:, j], data.synthetic.cells[:, j], c.bins) for j, c in enumerate(data.columns)]
    tvd2 = [
        _tvd(*_pair_cells(data, a, b), data.columns[a].bins * data.columns[b].bins)
        for a, b in itertools.combinations(range(len(data.columns)), 2)
    ]
    columns: dict[str, dict[str, float | None]] = {c.name: {"tvd_1way": tvd1[j]} for j, c in enumerate(data.columns)}
    tails = []
    for j, col in enumerate(data.columns):
        if col.numeric:
            tail = _tail(data.real.values[:, j], data.synthetic.values[:, j])
            columns[col.name].update(tail)
            tails.append(tail)
    discrete = _discrete_codes(data, schema)
    rare1 = [_rare(r, s, rare_share) for r, s in discrete.values()]
    for name, (count, present, mass) in zip(discrete, rare1, strict=True):
        columns[name].update({"rare_values": count, "rare_values_present": present, "rare_mass": mass})
    rare2 = [_rare(*_pair_codes(discrete[a], discrete[b]), rare_share) for a, b in itertools.combinations(discrete, 2)]
    return GenerationMetrics(
        generation=generation,
        training_rows=training_rows,
        training_synthetic_share=0.0,
        tvd_1way=float(np.mean(tvd1)),
        tvd_2way=float(np.mean(tvd2)) if tvd2 else float("nan"),
        tvd_1way_worst=float(np.max(tvd1)),
        tail_lower=_mean([t["tail_lower"] for t in tails]),
        tail_upper=_mean([t["tail_upper"] for t in tails]),
        quantile_span=_mean([t["quantile_span"] for t in tails]),
        range_span=_mean([t["range_span"] for t in tails]),
        rare_1way=sum(c for c, _, _ in rare1),
        rare_1way_survival=_survival(rare1),
        rare_1way_mass=_mass(rare1),
        rare_2way=sum(c for c, _, _ in rare2),
        rare_2way_survival=_survival(rare2),
        rare_2way_mass=_mass(rare2),
        columns=columns,
    )


def plot_collapse(results: Sequence[CollapseResult], path: str | Path) -> Path:
    """Four panels (marginal TVD, tail coverage, quantile span, rare-value survival) by generation, one line per
    run and metric, the resampling baseline dotted; written as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2)
    panels: list[tuple[Any, str, list[tuple[str, str]]]] = [
        (axes[0, 0], "marginal TVD to the real data (lower is better)", [("tvd_1way", "1-way"), ("tvd_2way", "2-way")]),
        (
            axes[0, 1],
            "tail coverage: synthetic / real share beyond the real 1% and 99% quantiles",
            [("tail_lower", "below q01"), ("tail_upper", "above q99")],
        ),
        (
            axes[1, 0],
            "spread, synthetic / real, mean over numeric columns",
            [("quantile_span", "q99 - q01"), ("range_span", "max - min")],
        ),
        (
            axes[1, 1],
            "rare values (< 1% of real rows) still present",
            [("rare_1way_survival", "1-way"), ("rare_2way_survival", "2-way")],
        ),
    ]
    styles = ["-", "--", ":", "-."]
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    for ax, title, metrics in panels:
        for r, result in enumerate(results):
            x = [g.generation for g in result.generations]
            for m, (key, label) in enumerate(metrics):
                colour = colours[(r * len(metrics) + m) % len(colours)]
                y = [_nan(getattr(g, key)) for g in result.generations]
                ax.plot(x, y, styles[r % len(styles)], marker="o", ms=3, color=colour, label=f"{result.mode} {label}")
                if r == 0:
                    ax.axhline(_nan(getattr(result.baseline, key)), color=colour, ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    first = results[0]
    figure.suptitle(
        f"Collapse lab: {first.method} on {first.dataset}, {first.rows:,} rows per generation "
        "(dotted: resampled real rows, the sampling-noise floor)",
        fontsize=11,
    )
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path


# ---- metrics ------------------------------------------------------------------------------------------------------


def _tvd(real: IntArray, synthetic: IntArray, size: int) -> float:
    p = np.bincount(real, minlength=size) / len(real)
    q = np.bincount(synthetic, minlength=size) / len(synthetic)
    return float(0.5 * np.abs(p - q).sum())


def _pair_cells(data: Prepared, a: int, b: int) -> tuple[IntArray, IntArray]:
    bins = data.columns[b].bins
    return (
        data.real.cells[:, a] * bins + data.real.cells[:, b],
        data.synthetic.cells[:, a] * bins + data.synthetic.cells[:, b],
    )


def _tail(real: FloatArray, synthetic: FloatArray) -> dict[str, float | None]:
    """Tail coverage of one numeric column (see the module docstring); None where undefined."""
    r, s = real[~np.isnan(real)], synthetic[~np.isnan(synthetic)]
    if len(r) == 0 or len(s) == 0:
        return {"tail_lower": None, "tail_upper": None, "quantile_span": None, "range_span": None}
    low, high = np.quantile(r, TAIL_QUANTILES)
    s_low, s_high = np.quantile(s, TAIL_QUANTILES)
    return {
        "tail_lower": float(np.mean(s <= low) / np.mean(r <= low)),
        "tail_upper": float(np.mean(s >= high) / np.mean(r >= high)),
        "quantile_span": float((s_high - s_low) / (high - low)) if high > low else None,
        "range_span": float((s.max() - s.min()) / (r.max() - r.min())) if r.max() > r.min() else None,
    }


def _discrete_codes(data: Prepared, schema: Schema) -> dict[str, tuple[IntArray, IntArray]]:
    """Integer codes (missing included) of the columns whose values count as categories, real and synthetic."""
    out: dict[str, tuple[IntArray, IntArray]] = {}
    for j, col in enumerate(data.columns):
        if col.kind is Kind.CATEGORICAL:
            out[col.name] = (data.real.cells[:, j], data.synthetic.cells[:, j])
            continue
        if schema[col.name].kind is not Kind.INTEGER:
            continue
        real, synthetic = data.real.values[:, j], data.synthetic.values[:, j]
        if len(np.unique(real[~np.isnan(real)])) > DISCRETE_LEVELS:
            continue
        codes, _ = pd.factorize(pd.Series(np.concatenate([real, synthetic])), use_na_sentinel=False)
        out[col.name] = (codes[: len(real)].astype(np.int64), codes[len(real) :].astype(np.int64))
    return out


def _pair_codes(a: tuple[IntArray, IntArray], b: tuple[IntArray, IntArray]) -> tuple[IntArray, IntArray]:
    width = int(max(b[0].max(initial=0), b[1].max(initial=0))) + 1
    return a[0] * width + b[0], a[1] * width + b[1]


def _rare(real: IntArray, synthetic: IntArray, share: float) -> tuple[int, int, float]:
    """(number of rare real values, how many occur in ``synthetic``, their synthetic mass / real mass)."""
    values, counts = np.unique(real, return_counts=True)
    rare = values[counts < share * len(real)]
    if len(rare) == 0:
        return 0, 0, float("nan")
    in_synthetic = np.isin(synthetic, rare)
    present = int(np.isin(rare, synthetic[in_synthetic]).sum())
    real_mass = float(np.isin(real, rare).mean())
    return len(rare), present, float(in_synthetic.mean()) / real_mass


def _survival(rare: list[tuple[int, int, float]]) -> float | None:
    total = sum(c for c, _, _ in rare)
    return sum(p for _, p, _ in rare) / total if total else None


def _mass(rare: list[tuple[int, int, float]]) -> float | None:
    """Mean synthetic/real mass ratio over the columns (or pairs) that have rare values."""
    ratios = [m for c, _, m in rare if c]
    return float(np.mean(ratios)) if ratios else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text).strip("-") or "data"


def _output_paths(out_dir: str | Path | None, stem: str, overwrite: bool) -> tuple[Path, Path] | None:
    if out_dir is None:
        return None
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"'{folder}' is a file; give a folder for the collapse lab's outputs")
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / f"{stem}.json", folder / f"{stem}.png")
    for path in paths:
        if path.exists() and not overwrite:
            raise OutputExistsError(f"'{path}' exists already; pass --overwrite (overwrite=True) to replace it")
    return paths
