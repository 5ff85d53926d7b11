"""Benchmarks: privsynth's and peer synthesizers over datasets x budgets x seeds, evaluated and ranked.

``run_bench`` writes one JSON line per run (``results.jsonl``), ``results.csv`` and an offline
``leaderboard.html`` with a privacy-utility plot; ``run_scaling`` measures utility against the number of
synthetic rows and fits a power law. Peers (SDV, smartnoise-synth, OpenDP) run in environments of their own
(:mod:`privsynth.bench.peers`).
"""
