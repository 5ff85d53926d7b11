#!/bin/bash
# Issue #5's benchmark as committed in benchmarks/results/bench_issue5/: privsynth mst and aim 3 runs per cell,
# the four peers 1 run each (2,400 s timeout), delta 1e-6; epsilon 1 first, then 0.3 and 3; then the 10M-row runs.
# One process at a time; every step resumes (finished cells are skipped), so running this again continues.
# A full run from scratch takes days on 2 shared cores (the peers' AIM alone 10-40 minutes a cell).
set -e
cd "$(dirname "$0")/.." || exit 1
.venv/bin/python benchmarks/dp_bench_issue5.py --epsilons 1 --seeds 3 --peer-seeds 1 --timeout 2400
.venv/bin/python benchmarks/dp_bench_issue5.py --epsilons 0.3 3 --seeds 3 --peer-seeds 1 --timeout 2400
[ -f benchmarks/results/aim_10m.json ] || .venv/bin/python benchmarks/aim_10m.py --method aim --max-minutes 45
[ -f benchmarks/results/mst_10m.json ] || .venv/bin/python benchmarks/aim_10m.py --method mst
