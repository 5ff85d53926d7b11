"""What the marginal-method tests share: a schema with every domain declared public."""

from __future__ import annotations

import dataclasses

import pandas as pd

from privsynth.data.schema import Schema


def public(df: pd.DataFrame) -> Schema:
    """The schema of ``df`` with every domain declared public (the free path: no preprocessing budget)."""
    return Schema([dataclasses.replace(c, public=True) for c in Schema.infer(df).synthesized()])
