"""privsynth: synthetic data with a proven privacy cost, a measured quality and a data card.

The small public API is re-exported here::

    import privsynth as ps
    train = ps.load_dataset("nassCDS")
    release = ps.synthesize(train, method="copula", seed=0)
    release.write("synth.csv")
"""

from privsynth._version import __version__
from privsynth.data.datasets import dataset_names, load_dataset
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import (
    BudgetExceeded,
    DataError,
    OutputExistsError,
    ParameterError,
    PrivsynthError,
    SchemaError,
    SourceError,
)
from privsynth.evaluate import Report, evaluate, write_report
from privsynth.pipeline import Release, synthesize
from privsynth.privacy import Ledger
from privsynth.synth import Synthesizer, available, create

__all__ = [
    "BudgetExceeded",
    "Column",
    "DataError",
    "Kind",
    "Ledger",
    "OutputExistsError",
    "ParameterError",
    "PrivsynthError",
    "Release",
    "Report",
    "Schema",
    "SchemaError",
    "Source",
    "SourceError",
    "Synthesizer",
    "__version__",
    "available",
    "create",
    "dataset_names",
    "evaluate",
    "load_dataset",
    "load_source",
    "synthesize",
    "write_report",
]
