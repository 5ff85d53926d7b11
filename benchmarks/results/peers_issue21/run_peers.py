"""Issue #21: one peer group on nassCDS at epsilon 1 (DP peers) or defaults, through the bench harness.

Usage: ``python run_peers.py GROUP METHOD[,METHOD...] TIMEOUT_SECONDS``; rows go to ``peers_issue21/GROUP/``
(``results.jsonl``, ``run.json``, ...). A finished run is skipped when the script runs again.
"""

import logging
import sys

from privsynth.bench.harness import run_bench

logging.basicConfig(level=logging.WARNING)
group, methods = sys.argv[1], sys.argv[2].split(",")
rows = run_bench(
    ["nassCDS"],
    methods,
    epsilons=(1.0,),
    seeds=1,
    out_dir=f"benchmarks/results/peers_issue21/{group}",
    resume=True,
    timeout=float(sys.argv[3]),
)
for row in rows:
    print(row.get("method"), row.get("status"), row.get("cpu_seconds"), row.get("fit_seconds"), row.get("error"))
