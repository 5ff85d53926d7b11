"""The one place that wires the stages together: source -> schema -> fit -> sample -> release (+ card).

Each stage is usable alone; this package only chains them and records what happened, so that the CLI, the Python
API, the service and the benchmarks produce the same release and the same card: :mod:`.release` (a release and
its card, built from the fit's record), :mod:`.tabular` (tables) and :mod:`.text` (text corpora). It also keeps the
release's label attached: every written release is registered (in the privacy ledger's database), and a model
fitted on a known release makes a release one generation further from real data.
"""

from privsynth.pipeline.release import CARD_METRICS, RETENTION_POLICIES, TEXT_CARD_METRICS, Release, Retention
from privsynth.pipeline.tabular import check_schema, evaluate_release, sample_model, synthesize
from privsynth.pipeline.text import TEXT_METHODS, TEXT_OVERSAMPLE, TextModel, sample_text, synthesize_text

__all__ = [
    "CARD_METRICS",
    "RETENTION_POLICIES",
    "TEXT_CARD_METRICS",
    "TEXT_METHODS",
    "TEXT_OVERSAMPLE",
    "Release",
    "Retention",
    "TextModel",
    "check_schema",
    "evaluate_release",
    "sample_model",
    "sample_text",
    "synthesize",
    "synthesize_text",
]
