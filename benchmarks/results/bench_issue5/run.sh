#!/bin/bash
# Issue #5's benchmark: every method at epsilon 1, then epsilon 0.3 and 3, then the 10M-row AIM run.
# One process at a time; each step resumes (finished cells are skipped), so running this again continues.
cd "$(dirname "$0")/../../.." || exit 1
.venv/bin/python benchmarks/dp_bench_issue5.py --epsilons 1
.venv/bin/python benchmarks/dp_bench_issue5.py --epsilons 0.3 3
[ -f benchmarks/results/aim_10m.json ] || .venv/bin/python benchmarks/aim_10m.py
