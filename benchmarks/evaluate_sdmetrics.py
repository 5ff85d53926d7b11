"""Cross-check privsynth's per-column fidelity scores against sdmetrics' QualityReport column shapes.

sdmetrics pins pandas < 3, so it cannot share privsynth's environment: this script runs sdmetrics in a virtual
environment of its own (created on first use under benchmarks/data/, which git ignores) and writes both sets of
scores to ``benchmarks/results/evaluate_sdmetrics.json``. ``tests/evaluate/test_sdmetrics_agreement.py``
recomputes privsynth's scores for the deterministic pairs and checks them against the committed sdmetrics ones.

Pairs per bundled dataset (train split as the real data): ``holdout`` (the real holdout split), ``shuffled``
(every train column permuted independently, numpy seed 0) and ``copula`` (``copula`` synthesizer, 21k rows,
seed 0; informative only, as the copula evolves).

    .venv/bin/python benchmarks/evaluate_sdmetrics.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENV = ROOT / "data" / "venv-sdmetrics"
RESULT = ROOT / "results" / "evaluate_sdmetrics.json"
DATASETS = ("nassCDS", "covid_testing", "nafld1")


def shuffled(frame: Any) -> Any:
    """Every column permuted independently with numpy seed 0 (the test repeats this exactly)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({c: frame[c].to_numpy()[rng.permutation(len(frame))] for c in frame.columns})


def ours(real: Any, synthetic: Any) -> dict[str, float]:
    """privsynth's per-column score (1 - KS or 1 - TVD) on the columns the inferred schema evaluates."""
    from privsynth.evaluate.fidelity import column_shapes
    from privsynth.evaluate.prepared import prepare

    return {c["name"]: c["score"] for c in column_shapes(prepare(real, synthetic, None, None, None, None))}


def run() -> None:
    import pandas as pd

    from privsynth.data.datasets import load_dataset
    from privsynth.data.schema import Kind, Schema
    from privsynth.synth import create

    python = _sdmetrics_python()
    results: dict[str, Any] = {"datasets": {}}
    with tempfile.TemporaryDirectory() as folder:
        jobs = []
        for name in DATASETS:
            train = load_dataset(name)
            schema = Schema.infer(train).synthesized()
            sdtypes = {
                c.name: "datetime" if c.kind is Kind.DATETIME else "numerical" if c.kind.numeric else "categorical"
                for c in schema
                if c.kind in (Kind.CATEGORICAL, Kind.INTEGER, Kind.FLOAT, Kind.DATETIME)
            }
            pairs = {
                "holdout": load_dataset(name, "holdout"),
                "shuffled": shuffled(train),
                "copula": create("copula").fit(train).sample(len(train), seed=0),
            }
            results["datasets"][name] = {}
            train[list(sdtypes)].to_parquet(Path(folder) / f"{name}.real.parquet")
            for pair, synthetic in pairs.items():
                synthetic[list(sdtypes)].to_parquet(Path(folder) / f"{name}.{pair}.parquet")
                jobs.append({"dataset": name, "pair": pair, "sdtypes": sdtypes})
                results["datasets"][name][pair] = {"privsynth": ours(train, synthetic)}
        (Path(folder) / "jobs.json").write_text(json.dumps(jobs))
        subprocess.run([str(python), __file__, "--worker", folder], check=True)
        theirs = json.loads((Path(folder) / "sdmetrics.json").read_text())
    results["sdmetrics_version"] = theirs.pop("version")
    results["pandas_version_sdmetrics"] = theirs.pop("pandas")
    worst = 0.0
    for key, scores in theirs.items():
        name, pair = key.split("/")
        entry = results["datasets"][name][pair]
        entry["sdmetrics"] = scores
        entry["max_abs_difference"] = max(abs(entry["privsynth"][c] - scores[c]) for c in scores)
        worst = max(worst, entry["max_abs_difference"])
    results["max_abs_difference"] = worst
    results["pandas_version_privsynth"] = pd.__version__
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    from privsynth.bench.run_info import with_run

    RESULT.write_text(json.dumps(with_run(results), indent=2, sort_keys=True) + "\n")
    print(f"largest per-column difference from sdmetrics: {worst:.2e}; wrote {RESULT}")


def worker(folder: Path) -> None:
    """Runs inside the sdmetrics environment: column-shape scores of every job."""
    import pandas as pd
    import sdmetrics
    from sdmetrics.reports import QualityReport

    out: dict[str, Any] = {"version": sdmetrics.__version__, "pandas": pd.__version__}
    real_frames: dict[str, pd.DataFrame] = {}
    for job in json.loads((folder / "jobs.json").read_text()):
        name, pair = job["dataset"], job["pair"]
        real = real_frames.setdefault(name, pd.read_parquet(folder / f"{name}.real.parquet"))
        synthetic = pd.read_parquet(folder / f"{name}.{pair}.parquet")
        metadata = {"tables": {name: {"columns": {c: {"sdtype": t} for c, t in job["sdtypes"].items()}}}}
        report = QualityReport()
        report.generate({name: real}, {name: synthetic}, metadata, verbose=False)
        details = report.get_details("Column Shapes")
        out[f"{name}/{pair}"] = {row["Column"]: float(row["Score"]) for _, row in details.iterrows()}
    (folder / "sdmetrics.json").write_text(json.dumps(out))


def _sdmetrics_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "sdmetrics", "pyarrow"], check=True)
    return python


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker is not None:
        worker(arguments.worker)
    else:
        run()
