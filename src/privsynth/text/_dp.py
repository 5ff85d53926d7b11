"""What the two private text methods share at the release boundary: the name a fit's budget is kept under, and
which label values count as given."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from privsynth.errors import ParameterError
from privsynth.synth.dp import LedgerArg


def corpus_name(dataset: str | None, ledger: LedgerArg, method: str) -> str:
    """The ledger key of a DP fit: the dataset name the user declares, never one computed from the texts (a
    hash of the data would itself be a release). Without a ledger (``ledger=False``) nothing is recorded and a
    placeholder name does."""
    if dataset is not None:
        if not isinstance(dataset, str) or not dataset.strip():
            raise ParameterError(f"dataset must be a non-empty name, not {dataset!r}")
        return dataset.strip()
    if ledger is False:
        return "unrecorded"
    raise ParameterError(
        f"name the corpus whose budget this '{method}' fit spends: dataset='NAME' (the privacy ledger keeps one "
        "budget per name; use the same name every time you fit on these texts), or ledger=False for an experiment "
        "that records nothing"
    )


def present(value: Any) -> bool:
    """Whether a private label value is given (not None, NaN or ``pd.NA``): a missing one casts no vote and trains
    on nothing, silently, like any label outside the declared set."""
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))
