"""The Markdown tables that benchmarks/README.md and docs/STATUS.md quote, regenerated from the committed results.

One command per table; nothing is run, only ``benchmarks/results/`` is read, so a table that no longer matches its
result file shows at once. ``python benchmarks/tables.py`` lists the tables.

    .venv/bin/python benchmarks/tables.py bench_issue4 --methods copula,sdv-ctgan,sdv-tvae,smartnoise-mst
    .venv/bin/python benchmarks/tables.py deep_vs_peers
    .venv/bin/python benchmarks/tables.py bench_issue5 [--epsilon 1]
    .venv/bin/python benchmarks/tables.py dp_vs_best_peer [--epsilon 1]
    .venv/bin/python benchmarks/tables.py anonymeter
    .venv/bin/python benchmarks/tables.py ten_million
    .venv/bin/python benchmarks/tables.py counts_parquet
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from privsynth.bench.leaderboard import leaderboard_table
from privsynth.bench.results import REFERENCE_METHOD, read_results

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("nassCDS", "covid_testing", "nafld1")
PRIVSYNTH_DP = ("aim", "mst")


def _row(cells: Sequence[Any]) -> str:
    return ("| " + " | ".join(str(c) for c in cells) + " |").replace("|  |", "| |").replace("|  |", "| |")


def _header(*names: str) -> list[str]:
    return [_row(names), "|" + "---|" * len(names)]


def _f3(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _time(value: float | None) -> str:
    """Seconds as the README writes them: whole seconds from 10 s up (with thousands commas), else 3 decimals."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3f}"


def _short(value: float) -> str:
    """An interval end in at most two decimals, without trailing zeros (0.19, 0.08, 1, 0)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {statistics.pstdev(values):.3f}"


def _ok_rows(folder: str) -> list[dict[str, Any]]:
    return [r for r in read_results(RESULTS / folder / "results.jsonl") if r.get("status") == "ok"]


def bench_issue4(args: argparse.Namespace) -> str:
    """``privsynth bench run``'s leaderboard of bench_issue4 (ranked by TSTR per dataset; means over seeds)."""
    rows = read_results(RESULTS / "bench_issue4" / "results.jsonl")
    if args.methods:
        keep = {*args.methods.split(","), REFERENCE_METHOD}
        rows = [r for r in rows if r["method"] in keep]
    lines = _header(
        "dataset", "rank", "method", "eps", "TSTR", "2-way TVD", "3-way TVD", "detection AUC", "DCR share",
        "MIA AUC", "fit s", "sample s", "eval s",
    )  # fmt: skip
    for e in leaderboard_table(rows):
        lines.append(
            _row(
                [
                    e["dataset"],
                    e["rank"],
                    e["method"],
                    e["epsilon"],
                    _f3(e["utility.tstr"]),
                    _f3(e["fidelity.tvd_2way"]),
                    _f3(e["fidelity.tvd_3way"]),
                    _f3(e["fidelity.detection_auc"]),
                    _f3(e["privacy.dcr_train_share"]),
                    _f3(e["privacy.mia_auc"]),
                    _time(e["fit_seconds"]),
                    _time(e["sample_seconds"]),
                    _time(e["evaluate_seconds"]),
                ]
            )
        )
    return "\n".join(lines)


def deep_vs_peers(args: argparse.Namespace) -> str:
    """privsynth deep (mean over its seeds) and dp-deep beside SDV's CTGAN and TVAE at their defaults."""
    rows = [r for r in _ok_rows("bench_issue4") if not r.get("options")]
    lines = _header(
        "dataset", "method", "runs", "2-way TVD", "3-way TVD", "TSTR", "detection AUC", "DCR share", "fit s"
    )
    for dataset in DATASETS:
        for method in ("deep", "dp-deep", "sdv-ctgan", "sdv-tvae"):
            for epsilon in sorted({r["epsilon"] for r in rows if r["method"] == method}, key=lambda e: e or 0):
                cell = [r for r in rows if (r["dataset"], r["method"], r["epsilon"]) == (dataset, method, epsilon)]
                if not cell:
                    continue
                fits = [r["fit_seconds"] for r in cell]
                fit = _time(fits[0]) if len(fits) == 1 else f"{_time(min(fits))}-{_time(max(fits))}"
                label = method if epsilon is None else f"{method} eps {epsilon:g}"
                lines.append(
                    _row(
                        [dataset, label, len(cell)]
                        + [
                            _mean_sd([r["metrics"][k] for r in cell])
                            for k in (
                                "fidelity.tvd_2way",
                                "fidelity.tvd_3way",
                                "utility.tstr",
                                "fidelity.detection_auc",
                                "privacy.dcr_train_share",
                            )
                        ]
                        + [fit]
                    )
                )
    return "\n".join(lines)


def bench_issue5(args: argparse.Namespace) -> str:
    """Issue #5's DP bench, every cell (or one epsilon): mean ± sd over privsynth's seeds, the peers' one run."""
    spec = importlib.util.spec_from_file_location(
        "dp_bench_issue5", Path(__file__).resolve().parent / "dp_bench_issue5.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text: str = script.table(RESULTS / "bench_issue5")
    if args.epsilon is None:
        return text
    lines = text.splitlines()
    keep = [line for line in lines[2:] if line.split(" | ")[1] in (f"{args.epsilon:g}", "-")]
    return "\n".join(lines[:2] + keep)


def dp_vs_best_peer(args: argparse.Namespace) -> str:
    """privsynth AIM and MST (mean ± sd over seeds) and the best peer by 3-way TVD, at one epsilon."""
    epsilon = 1.0 if args.epsilon is None else args.epsilon
    rows = _ok_rows("bench_issue5")
    lines = _header("dataset", "method", "2-way TVD", "3-way TVD", "TSTR", "CPU s")
    for dataset in DATASETS:
        cell = [r for r in rows if r["dataset"] == dataset and r["epsilon"] == epsilon]
        for method in PRIVSYNTH_DP:
            runs = [r for r in cell if r["method"] == method]
            lines.append(
                _row(
                    [dataset, f"privsynth {method.upper()}"]
                    + [_mean_sd([r["metrics"][k] for r in runs]) for k in _FIDELITY]
                    + [_time(statistics.fmean(r["cpu_seconds"] for r in runs)) if runs else "-"]
                )
            )
        peers = [r for r in cell if r["method"] not in PRIVSYNTH_DP]
        if peers:
            best = min(peers, key=lambda r: r["metrics"]["fidelity.tvd_3way"])
            tstr = max(peers, key=lambda r: r["metrics"]["utility.tstr"])
            lines.append(
                _row(
                    [
                        dataset,
                        f"best peer ({best['method']}; TSTR: {tstr['method']})",
                        _f3(best["metrics"]["fidelity.tvd_2way"]),
                        _f3(best["metrics"]["fidelity.tvd_3way"]),
                        _f3(tstr["metrics"]["utility.tstr"]),
                        _time(best["cpu_seconds"]),
                    ]
                )
            )
        floor = [r for r in read_results(RESULTS / "bench_issue5" / "results.jsonl") if r["method"] == REFERENCE_METHOD]
        for r in floor:
            if r["dataset"] == dataset:
                metrics = r["metrics"]
                lines.append(_row([dataset, "real holdout (floor)"] + [_f3(metrics.get(k)) for k in _FIDELITY] + ["-"]))
    return "\n".join(lines)


_FIDELITY = ("fidelity.tvd_2way", "fidelity.tvd_3way", "utility.tstr")


def anonymeter(args: argparse.Namespace) -> str:
    """privsynth's attacks against anonymeter 1.1 (means over seeds, mean 95% interval in brackets)."""
    comparison = json.loads((RESULTS / "evaluate_anonymeter.json").read_text())["comparison"]

    def risk(entry: dict[str, Any] | None, side: str, interval: bool = True) -> str:
        if entry is None:
            return ""
        low, high = entry[f"{side}_interval_mean"]
        mean = entry[f"{side}_mean"]
        shown = interval and round(mean, 3) != 0
        return f"{mean:.3f}" + (f" ({_short(low)}-{_short(high)})" if shown else "")

    lines = _header(
        "case", "singling out, privsynth", "anonymeter (1.0 counting)", "as released: privsynth", "anonymeter 1.1",
        "linkability, privsynth", "anonymeter", "inference max diff", "agree",
    )  # fmt: skip
    for dataset in DATASETS:
        for case in ("copula", "copy", "copula-equal", "copy-equal"):
            attacks = comparison[f"{dataset}/{case}"]
            single, released = attacks["singling_out"], attacks["singling_out, anonymeter 1.1 as released"]
            link = attacks.get("linkability")
            inference = [v for k, v in attacks.items() if k.startswith("inference")]
            lines.append(
                _row(
                    [
                        f"{dataset}/{case}",
                        risk(single, "privsynth"),
                        risk(single, "anonymeter"),
                        risk(released, "privsynth", False),
                        risk(released, "anonymeter", False),
                        risk(link, "privsynth"),
                        risk(link, "anonymeter", False),
                        f"{max(abs(v['difference']) for v in inference):.3f}" if inference else "",
                        f"{sum(v['agree'] for v in inference)}/{len(inference)}" if inference else "",
                    ]
                )
            )
    return "\n".join(lines)


def ten_million(args: argparse.Namespace) -> str:
    """AIM and MST on the 10M-row Parquet file (``scale.py --schema nassCDS --output results/{aim,mst}_10m.json``;
    earlier files, from ``aim_10m.py``, hold the same fields under ``measured``): time, rounds, memory, fidelity."""
    lines = _header("method", "fit s", "CPU s", "rounds", "peak RSS GB", "1-way TVD", "2-way TVD", "3-way TVD")
    for method in ("aim", "mst"):
        path = RESULTS / f"{method}_10m.json"
        if not path.exists():
            continue
        document = json.loads(path.read_text())
        measured = document.get("measured", document)
        tvd = measured.get("fidelity_vs_200k_real_rows", {})
        lines.append(
            _row(
                [
                    method.upper(),
                    _time(measured.get("fit_seconds")),
                    _time(measured.get("fit_cpu_seconds")),
                    measured.get("rounds") or "-",
                    f"{measured['peak_rss_bytes'] / 1e9:.2f}" if "peak_rss_bytes" in measured else "-",
                    *(_f3(tvd.get(k)) for k in ("tvd_1way", "tvd_2way", "tvd_3way")),
                ]
            )
        )
    return "\n".join(lines)


def counts_parquet(args: argparse.Namespace) -> str:
    """``Source.counts`` on the Parquet file: fastest of the repeats, peak memory and the query's own memory."""
    result = json.loads((RESULTS / "counts_parquet.json").read_text())
    lines = _header("query", "columns", "cells", "seconds (best)", "peak RSS MiB", "query's own MiB")
    for name, query in result["queries"].items():
        peak, before = query["peak_rss_bytes"] / 2**20, query["rss_before_query_bytes"] / 2**20
        lines.append(
            _row(
                [
                    name,
                    ", ".join(query["columns"]),
                    query["cells"],
                    min(query["seconds"]),
                    f"{peak:.0f}",
                    f"{peak - before:.0f}",
                ]
            )
        )
    return "\n".join(lines)


TABLES: dict[str, Callable[[argparse.Namespace], str]] = {
    "bench_issue4": bench_issue4,
    "deep_vs_peers": deep_vs_peers,
    "bench_issue5": bench_issue5,
    "dp_vs_best_peer": dp_vs_best_peer,
    "anonymeter": anonymeter,
    "ten_million": ten_million,
    "counts_parquet": counts_parquet,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", choices=sorted(TABLES))
    parser.add_argument("--methods", help="bench_issue4: comma-separated methods to show (the reference row stays)")
    parser.add_argument("--epsilon", type=float, help="bench_issue5, dp_vs_best_peer: one epsilon only")
    args = parser.parse_args()
    if args.table is None:
        for name, make in TABLES.items():
            print(f"{name:16} {(make.__doc__ or '').splitlines()[0]}")
        return
    print(TABLES[args.table](args))


if __name__ == "__main__":
    main()
