"""Cross-check privsynth's singling-out, linkability and inference attacks against the ``anonymeter`` package.

anonymeter 1.1 pins numpy < 1.27 and pyarrow < 22, so it cannot share privsynth's environment: this script runs it
in a virtual environment of its own (created on first use under benchmarks/data/, which git ignores) and writes
both libraries' risks, with their 95% intervals, to ``benchmarks/results/evaluate_anonymeter.json``.

Cases per bundled dataset, the holdout split always being the control rows:

- ``copula`` and ``copy``: the train split as the real rows; as the synthetic rows the copula synthesizer (as many
  rows as train, seed 0), or the train rows themselves (a generator that memorised everything: the risk must be
  high). All three attacks. The control set is smaller than train, so singling out rescales its control count.
- ``copula-equal`` and ``copy-equal``: a sample of the train split as large as the holdout (seed 0) as the real rows,
  the copula fitted on it or the sample itself as the synthetic rows. Singling out only: with equal sizes there is
  no rescaling, so this compares the attack itself.

Both libraries read the same values: privsynth's evaluation encoding (numbers as floats, categories as their
labels, identifier and PII columns left out), handed to anonymeter as numeric and string columns, so that it treats
every column the way privsynth does. Both run with the same settings: 500 targets or queries, 3-column multivariate
singling out with at most 100 tries per query wanted, linkability on the first and second half of the columns,
inference of every column from all the others (numeric secrets within 5%, ``regression=True`` in anonymeter), one
repeat per seed. The libraries draw targets from their own random streams, so single runs differ by sampling noise:
the comparison sets the difference of the means over the repeats against the error of those means.

anonymeter's singling out is run twice per seed: as released, and with its size correction counting the queries
that single out in each subsample (as anonymeter 1.0 did; 1.1 counts all queries, see privsynth.evaluate.attacks).
Its rates are reported over the queries requested (as released) and over the queries found (as privsynth).

    .venv/bin/python benchmarks/evaluate_anonymeter.py [--seeds 5] [--datasets nassCDS,nafld1] [--attacks 500]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENV = ROOT / "data" / "venv-anonymeter"
RESULT = ROOT / "results" / "evaluate_anonymeter.json"
DATASETS = ("nassCDS", "covid_testing", "nafld1")
N_ATTACKS = 500
CONFIDENCE = 0.95
ALL_ATTACKS = ["singling_out", "linkability", "inference"]


def encoded_frames(data: Any) -> dict[str, Any]:
    """The real, synthetic and holdout rows as privsynth encoded them: floats, category labels, None for missing."""
    import numpy as np
    import pandas as pd

    frames = {}
    for label, table in (("real", data.real), ("synthetic", data.synthetic), ("holdout", data.holdout)):
        columns: dict[str, Any] = {}
        for j, col in enumerate(data.columns):
            values = table.values[:, j]
            if col.numeric:
                columns[col.name] = values.astype(np.float64)
            else:
                labels = np.array(col.categories, dtype=object)
                codes = np.nan_to_num(values, nan=0).astype(np.int64)
                columns[col.name] = pd.Series(np.where(np.isnan(values), None, labels[codes]), dtype=object)
        frames[label] = pd.DataFrame(columns)
    return frames


def attack_entry(result: Any, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Risk, interval and counts of one privsynth attack, the interval recomputed at ``confidence``.

    privsynth reports inference intervals Bonferroni-adjusted over the columns; anonymeter reports each column at
    95%, so both are compared at 95% here.
    """
    from privsynth.evaluate.attacks import evaluation

    again = evaluation(
        result.attack, result.n_attacks, result.n_success, result.n_baseline, result.n_control, confidence=confidence
    )
    return {
        "risk": again.risk,
        "interval": list(again.interval),
        "n_attacks": result.n_attacks,
        "n_success": result.n_success,
        "n_control": result.n_control,
        "n_baseline": result.n_baseline,
    }


def ours(data: Any, seed: int, n_attacks: int, attacks: list[str]) -> dict[str, Any]:
    """privsynth's attacks on one prepared case, with the rng seeded by ``seed``."""
    import numpy as np

    from privsynth.evaluate.attacks import linkability_and_inference, residual_risk, singling_out, success_rate

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    singled = singling_out(data, data.real, data.holdout, rng, n_attacks)
    out: dict[str, Any] = {"singling_out": None if singled is None else attack_entry(singled)}
    if singled is not None:
        # anonymeter 1.1 divides by the queries requested, privsynth by the queries found: privsynth's counts both ways
        risk, interval = residual_risk(
            success_rate(n_attacks, singled.n_success), success_rate(n_attacks, float(singled.n_control or 0.0))
        )
        out["singling_out_over_requested"] = {
            **out["singling_out"],
            "risk": risk,
            "interval": list(interval),
            "n_attacks": n_attacks,
        }
    out["seconds"] = {"singling_out": round(time.perf_counter() - start, 2)}
    if "linkability" in attacks:
        start = time.perf_counter()
        linked, inferred = linkability_and_inference(data, data.real, data.holdout, rng, None, n_attacks)
        out["linkability"] = attack_entry(linked)
        out["inference"] = {name: attack_entry(result) for name, result in inferred}
        out["seconds"]["linkability_and_inference"] = round(time.perf_counter() - start, 2)
    return out


def run(seeds: int, datasets: list[str], n_attacks: int) -> None:
    from privsynth.data.datasets import load_dataset
    from privsynth.evaluate.prepared import prepare
    from privsynth.synth import create

    python = _anonymeter_python()
    results: dict[str, Any] = {
        "n_attacks": n_attacks,
        "max_query_tries": 100 * n_attacks,
        "seeds": list(range(seeds)),
        "confidence": CONFIDENCE,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        jobs = []
        for name in datasets:
            train, holdout = load_dataset(name), load_dataset(name, "holdout")
            equal = train.sample(len(holdout), random_state=0).reset_index(drop=True)
            cases = {
                "copula": (train, create("copula").fit(train).sample(len(train), seed=0), ALL_ATTACKS),
                "copy": (train, train.copy(), ALL_ATTACKS),
                "copula-equal": (equal, create("copula").fit(equal).sample(len(equal), seed=0), ["singling_out"]),
                "copy-equal": (equal, equal.copy(), ["singling_out"]),
            }
            for case, (real, synthetic, attacks) in cases.items():
                key = f"{name}/{case}"
                data = prepare(real, synthetic, holdout, None, None, None)
                for label, frame in encoded_frames(data).items():
                    frame.to_parquet(Path(folder) / f"{name}.{case}.{label}.parquet")
                half = (len(data.columns) + 1) // 2
                job = {
                    "key": key,
                    "files": f"{name}.{case}",
                    "numeric": [c.name for c in data.columns if c.numeric],
                    "aux": [data.names[:half], data.names[half:]],
                    "attacks": attacks,
                    "n_attacks": n_attacks,
                    "seeds": list(range(seeds)),
                }
                jobs.append(job)
                runs = []
                for seed in range(seeds):
                    print(f"privsynth: {key} seed {seed}", flush=True)
                    runs.append(ours(data, seed, n_attacks, attacks))
                results["cases"][key] = {
                    "rows": {"real": data.real.rows, "synthetic": data.synthetic.rows, "holdout": data.holdout.rows},
                    "columns": data.names,
                    "numeric": job["numeric"],
                    "aux": job["aux"],
                    "attacks": attacks,
                    "privsynth": runs,
                }
        (Path(folder) / "jobs.json").write_text(json.dumps(jobs))
        subprocess.run([str(python), __file__, "--worker", folder], check=True)
        theirs = json.loads((Path(folder) / "anonymeter.json").read_text())
    results["anonymeter_version"] = theirs.pop("version")
    results["numpy_version_anonymeter"] = theirs.pop("numpy")
    for key, runs in theirs.items():
        results["cases"][key]["anonymeter"] = runs
    results["comparison"] = {key: compare(case) for key, case in results["cases"].items()}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    from privsynth.bench.run_info import with_run

    RESULT.write_text(json.dumps(with_run(results), indent=2, sort_keys=True, allow_nan=False) + "\n")
    for key, rows in results["comparison"].items():
        for attack, row in rows.items():
            print(
                f"{key:28} {attack:42} privsynth {row['privsynth_mean']:.3f} anonymeter {row['anonymeter_mean']:.3f} "
                f"diff {row['difference']:+.3f} (allowed {row['allowed']:.3f}) {'ok' if row['agree'] else 'DISAGREE'}"
            )
    print(f"wrote {RESULT}")


def compare(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mean risk (and counts) over the repeats for each attack and library, and whether they agree.

    Two estimates agree when their means differ by less than the combined 95% error of the two means,
    ``1.96 sqrt(s_a^2 / k_a + s_b^2 / k_b)``, with ``s`` the larger of the spread over the ``k`` repeats and the
    error one run's interval states (half its width / 1.96).
    """
    pairs: dict[str, tuple[str, str]] = {
        "singling_out": ("singling_out", "singling_out_fixed_over_found"),
        "singling_out, anonymeter 1.1 as released": ("singling_out_over_requested", "singling_out"),
    }
    if "linkability" in case["attacks"]:
        pairs["linkability"] = ("linkability", "linkability")
        for column in case["columns"]:
            pairs[f"inference {column}"] = (f"inference/{column}", f"inference/{column}")
    out: dict[str, dict[str, Any]] = {}
    for label, (mine, theirs) in pairs.items():
        a = [e for e in (_entry(run, mine) for run in case["privsynth"]) if e is not None]
        b = [e for e in (_entry(run, theirs) for run in case["anonymeter"]) if e is not None]
        if not a or not b:
            continue
        mean_a, sd_a = _mean_sd([e["risk"] for e in a])
        mean_b, sd_b = _mean_sd([e["risk"] for e in b])
        stated_a = _mean_sd([(e["interval"][1] - e["interval"][0]) / 2 / 1.96 for e in a])[0]
        stated_b = _mean_sd([(e["interval"][1] - e["interval"][0]) / 2 / 1.96 for e in b])[0]
        allowed = 1.96 * math.sqrt(max(sd_a, stated_a) ** 2 / len(a) + max(sd_b, stated_b) ** 2 / len(b))
        out[label] = {
            "privsynth_mean": mean_a,
            "privsynth_sd": sd_a,
            "privsynth_interval_mean": [_mean_sd([e["interval"][i] for e in a])[0] for i in (0, 1)],
            "privsynth_counts_mean": _counts(a),
            "anonymeter_mean": mean_b,
            "anonymeter_sd": sd_b,
            "anonymeter_interval_mean": [_mean_sd([e["interval"][i] for e in b])[0] for i in (0, 1)],
            "anonymeter_counts_mean": _counts(b),
            "repeats": [len(a), len(b)],
            "difference": mean_a - mean_b,
            "allowed": allowed,
            "agree": abs(mean_a - mean_b) <= allowed,
        }
    return out


def _counts(entries: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: _mean_sd([float(e[key]) for e in entries])[0]
        for key in ("n_attacks", "n_success", "n_control", "n_baseline")
        if all(e.get(key) is not None for e in entries)
    }


def _entry(run: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key.startswith("inference/"):
        return run.get("inference", {}).get(key.split("/", 1)[1])  # type: ignore[no-any-return]
    return run.get(key)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def worker(folder: Path) -> None:
    """Runs inside the anonymeter environment: every attack of every job, once per seed."""
    import warnings
    from importlib.metadata import version

    import numpy as np
    import pandas as pd
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator
    from anonymeter.evaluators import singling_out_evaluator as so_module
    from anonymeter.stats.confidence import EvaluationResults

    warnings.filterwarnings("ignore")  # "attack as good as baseline" warnings: the counts are recorded anyway
    generated: list[int] = []
    generate = so_module._generate_singling_out_queries

    def counting(**kwargs: Any) -> Any:
        queries = generate(**kwargs)
        generated.append(len(queries))
        return queries

    so_module._generate_singling_out_queries = counting
    released_measure = so_module._measure_queries_success

    def fixed_measure(df: Any, queries: Any, n_repeat: int, n_meas: int) -> tuple[Any, Any]:
        """anonymeter 1.0's size correction data: the queries that single out in each subsample.

        1.1 (polars) takes ``len()`` of the per-query counts, which is the number of queries at every size, so the
        fitted curve is flat in the data and the correction degenerates to about ``n_control / n_train``.
        """
        sizes, successes = [], []
        for n_rows in np.linspace(min(1000, len(df)), len(df), n_meas).astype(int):
            for _ in range(n_repeat):
                counts = so_module._evaluate_queries(df=df.sample(n_rows, with_replacement=False), queries=queries)
                successes.append(sum(1 for c in counts if c == 1))
                sizes.append(n_rows)
        return np.array(sizes), np.array(successes)

    def entry(results: Any, n_queries: int | None = None) -> dict[str, Any]:
        risk = results.risk()
        out = {
            "risk": float(risk.value),
            "interval": [float(risk.ci[0]), float(risk.ci[1])],
            "n_attacks": int(results.n_attacks_ori),
            "n_success": float(results.n_success),
            "n_control": None if results.n_control is None else float(results.n_control),
            "n_baseline": float(results.n_baseline),
        }
        if n_queries is not None:
            out["n_queries_found"] = n_queries
        return out

    out: dict[str, Any] = {"version": version("anonymeter"), "numpy": np.__version__}
    for job in json.loads((folder / "jobs.json").read_text()):
        n_attacks = job["n_attacks"]
        frames = {
            label: pd.read_parquet(folder / f"{job['files']}.{label}.parquet")
            for label in ("real", "synthetic", "holdout")
        }
        for frame in frames.values():
            for column in frame.columns:
                if column not in job["numeric"]:
                    frame[column] = frame[column].astype(object)
        ori, syn, control = frames["real"], frames["synthetic"], frames["holdout"]
        runs = []
        for seed in job["seeds"]:
            print(f"anonymeter: {job['key']} seed {seed}", flush=True)
            start = time.perf_counter()
            run: dict[str, Any] = {}
            for key, measure in (("singling_out", released_measure), ("singling_out_fixed", fixed_measure)):
                so_module._measure_queries_success = measure
                try:
                    singling = SinglingOutEvaluator(
                        ori,
                        syn,
                        n_attacks=n_attacks,
                        n_cols=3,
                        control=control,
                        max_attempts=100 * n_attacks,
                        seed=seed,
                    ).evaluate(mode="multivariate")
                except RuntimeError as error:  # the size-correction fit (scipy curve_fit) can fail to converge
                    run[key] = None
                    run.setdefault("errors", []).append(f"{key}: {error}")
                    continue
                found = generated[-1]
                result = singling.results(confidence_level=CONFIDENCE)
                run[key] = entry(result, found)
                if found:
                    # the same counts over the queries found, privsynth's denominator (the baseline is a rate already)
                    over_found = EvaluationResults(
                        n_attacks=(found, n_attacks, found),
                        n_success=result.n_success,
                        n_baseline=result.n_baseline,
                        n_control=result.n_control,
                        confidence_level=CONFIDENCE,
                    )
                    run[f"{key}_over_found"] = {**entry(over_found, found), "n_attacks": found}
            run["seconds"] = {"singling_out": round(time.perf_counter() - start, 2)}
            if "linkability" in job["attacks"]:
                start = time.perf_counter()
                # anonymeter draws linkability and inference targets from numpy's global state: seed that
                np.random.seed(seed)  # noqa: NPY002
                linkability = LinkabilityEvaluator(
                    ori, syn, aux_cols=tuple(job["aux"]), n_attacks=n_attacks, n_neighbors=1, control=control
                ).evaluate(n_jobs=1)
                run["linkability"] = entry(linkability.results(confidence_level=CONFIDENCE))
                run["inference"] = {}
                for secret in ori.columns:
                    inference = InferenceEvaluator(
                        ori,
                        syn,
                        aux_cols=[c for c in ori.columns if c != secret],
                        secret=secret,
                        regression=secret in job["numeric"],
                        n_attacks=n_attacks,
                        control=control,
                    ).evaluate(n_jobs=1)
                    run["inference"][secret] = entry(inference.results(confidence_level=CONFIDENCE))
                run["seconds"]["linkability_and_inference"] = round(time.perf_counter() - start, 2)
            runs.append(run)
        out[job["key"]] = runs
        (folder / "anonymeter.json").write_text(json.dumps(out))  # after every job: a crash keeps what is done


def _anonymeter_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "anonymeter==1.1.0", "pyarrow"], check=True)
    return python


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=5, help="repeats, seeds 0 .. SEEDS-1 (default 5)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated bundled datasets")
    parser.add_argument("--attacks", type=int, default=N_ATTACKS, help="targets or queries per attack (default 500)")
    arguments = parser.parse_args()
    if arguments.worker is not None:
        worker(arguments.worker)
    else:
        run(arguments.seeds, arguments.datasets.split(","), arguments.attacks)
