"""Benchmarks: privsynth's and peer synthesizers over datasets x budgets x seeds, evaluated and ranked.

``harness.run_bench`` writes one JSON line per run (``results.jsonl``), ``results.csv`` (:mod:`.results`) and an
offline ``leaderboard.html`` with a privacy-utility plot (:mod:`.leaderboard`); ``scaling.run_scaling`` measures
utility against the number of synthetic rows and fits a power law; :mod:`.collapse` is the model-collapse lab.
Peers (SDV, smartnoise-synth, OpenDP) run in environments of their own (:mod:`privsynth.bench.peers`).
"""
