"""Evaluation of synthetic data: fidelity, diversity, utility, equity and privacy risk, in one report.

``evaluate(real, synthetic, holdout=..., target=..., sensitive=...)`` returns a :class:`Report`; every metric
carries a one-line definition and, where cheap, a bootstrap or confidence interval. The privacy metrics are
empirical checks against particular attacks, not guarantees.
"""

from privsynth.evaluate.html import write_report
from privsynth.evaluate.metric import Metric
from privsynth.evaluate.report import Report
from privsynth.evaluate.run import evaluate
from privsynth.evaluate.text import evaluate_text

__all__ = ["Metric", "Report", "evaluate", "evaluate_text", "write_report"]
