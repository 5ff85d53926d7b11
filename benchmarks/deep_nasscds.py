"""``deep`` (and ``dp-deep``) against the copula on the three bundled datasets: wall time and quality.

For each dataset, each method is fitted on the train split with its defaults (seed 0), samples as many rows as the
train split has (seed 0), and is scored by ``privsynth.evaluate.evaluate`` against train, with the holdout split,
the dataset's target and sensitive column. Recorded per run: fit and sample wall time, the process CPU time of the
fit (on a shared machine the wall time depends on the other work; the CPU time much less), the load average, and
the metrics fidelity.tvd_2way, fidelity.tvd_3way, fidelity.detection_auc, utility.tstr (with utility.trtr, the
real-data reference), privacy.dcr_train_share. ``dp-deep`` runs at epsilon 1 and 3 (delta 1e-6) on the inferred
schema, so every domain is learned under DP and paid for. A ``real-halves`` row per dataset scores one random half
of train against the other as if it were synthetic: the noise floor of the metrics at half the size. Writes
``benchmarks/results/deep_nasscds.json``.

    .venv/bin/python benchmarks/deep_nasscds.py [--datasets nassCDS,covid_testing,nafld1]
        [--methods copula,deep,dp-deep]

PEERS.md: SDV TVAE (100 epochs) takes 168 s on nassCDS on 2 cores; the target for ``deep`` is under a third of that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULT = Path(__file__).resolve().parent / "results" / "deep_nasscds.json"
METRICS = (
    "fidelity.tvd_2way",
    "fidelity.tvd_3way",
    "fidelity.detection_auc",
    "utility.tstr",
    "utility.trtr",
    "privacy.dcr_train_share",
)
DP_EPSILONS = (1.0, 3.0)


def run(dataset: str, method: str, epsilon: float | None) -> dict[str, Any]:
    """Fit, sample and evaluate one method on one dataset; the numbers of one row of the result file."""

    from privsynth.data.datasets import dataset_info, load_dataset
    from privsynth.evaluate import evaluate
    from privsynth.synth import create
    from privsynth.threads import threads

    train, holdout = load_dataset(dataset), load_dataset(dataset, "holdout")
    info = dataset_info(dataset)
    load_before = os.getloadavg()[0]
    torch_threads = threads()
    start, cpu = time.perf_counter(), time.process_time()
    model = create(method)
    if epsilon is None:
        model.fit(train)
    else:
        model.fit(train, epsilon=epsilon, delta=1e-6)
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    synthetic = model.sample(len(train), seed=0)
    sample_seconds = time.perf_counter() - start
    report = evaluate(train, synthetic, holdout, target=info.target, sensitive=info.sensitive, seed=0)
    row: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "epsilon": epsilon,
        "rows": len(train),
        "fit_seconds": round(fit_seconds, 2),
        "fit_cpu_seconds": round(fit_cpu, 2),
        "sample_seconds": round(sample_seconds, 2),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        **{key: _round(report.metrics[key].value) for key in METRICS},
    }
    if method in ("deep", "dp-deep"):
        row["torch_threads"] = torch_threads
        history = model.history_  # type: ignore[attr-defined]
        row["epochs"] = len(history.validation_loss) or history.best_epoch
        row["stopped"] = history.stopped
    if method == "deep":
        row["best_validation_nll"] = round(min(model.history_.validation_loss), 4)  # type: ignore[attr-defined]
    if method == "dp-deep":
        privacy = model.privacy_  # type: ignore[attr-defined]
        row["noise_multiplier"] = round(privacy["noise_multiplier"], 4)
        row["steps"] = privacy["steps"]
        row["epsilon_opacus"] = round(privacy["epsilon_opacus"], 4)
    return row


def noise_floor(dataset: str) -> dict[str, Any]:
    """One half of train scored against the other half as if it were synthetic (seed 0)."""
    from privsynth.data.datasets import dataset_info, load_dataset
    from privsynth.evaluate import evaluate

    train, holdout = load_dataset(dataset), load_dataset(dataset, "holdout")
    info = dataset_info(dataset)
    first = train.sample(frac=0.5, random_state=0)
    second = train.drop(first.index)
    report = evaluate(first, second, holdout, target=info.target, sensitive=info.sensitive, seed=0)
    return {
        "dataset": dataset,
        "method": "real-halves",
        "rows": len(first),
        **{key: _round(report.metrics[key].value) for key in METRICS},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="nassCDS,covid_testing,nafld1")
    parser.add_argument("--methods", default="copula,deep,dp-deep")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()

    import torch

    rows: list[dict[str, Any]] = []
    for dataset in args.datasets.split(","):
        rows.append(noise_floor(dataset))
        print(json.dumps(rows[-1]), flush=True)
        for method in args.methods.split(","):
            for epsilon in DP_EPSILONS if method == "dp-deep" else (None,):
                row = run(dataset, method, epsilon)
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {
        "description": (__doc__ or "").strip().splitlines()[0],
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "peer_reference": {"sdv_tvae_100_epochs_nasscds_seconds": 168, "source": "shared/PEERS.md"},
        "runs": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    from privsynth.bench.run_info import with_run

    args.output.write_text(json.dumps(with_run(result), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
