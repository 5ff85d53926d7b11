#!/bin/bash
# Issue #4's (and #6's) benchmark as committed in benchmarks/results/bench_issue4/: on nassCDS, covid_testing and
# nafld1, one run each of copula, SDV CTGAN and TVAE (their defaults, and CTGAN at 30 epochs, TVAE at 60),
# smartnoise-synth MST at epsilon 1 and dp-deep at epsilon 1 and 3 (delta 1e-6), and deep with 3 seeds.
# Every step resumes (finished runs are skipped). The peers need `privsynth bench peers setup sdv` and
# `... setup smartnoise` first; SDV's models take 2-40 minutes a run on 2 shared cores.
set -e
cd "$(dirname "$0")/.." || exit 1
OUT=benchmarks/results/bench_issue4
DATA=nassCDS,covid_testing,nafld1
run() { .venv/bin/privsynth bench run --datasets "$DATA" --delta 1e-6 -o "$OUT" --resume "$@"; }
run --methods copula,sdv-ctgan,sdv-tvae,smartnoise-mst --epsilon 1 --seeds 1
run --methods sdv-ctgan --seeds 1 --peer-option sdv-ctgan.epochs=30
run --methods sdv-tvae --seeds 1 --peer-option sdv-tvae.epochs=60
run --methods deep --seeds 3
run --methods dp-deep --epsilon 1,3 --seeds 1
