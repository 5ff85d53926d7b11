"""Cross-table metrics on real tables: two halves of pbc split by patient are close on every metric; keys shuffled
among the patients keep integrity but break the ties between a patient and the visits, and keys drawn from other
patients break integrity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privsynth.errors import DataError
from privsynth.relational import RelatedMetadata, Relationship, load_related
from privsynth.relational.evaluate import evaluate_related, gap_tvd, referential_integrity, transition_tvd, tvd

Tables = dict[str, pd.DataFrame]
VISITS = "pbcseq.id -> pbc.id"


@pytest.fixture(scope="module")
def halves() -> tuple[Tables, Tables, Tables, RelatedMetadata]:
    """Odd and even patients with their visits, and the whole set."""
    tables, metadata = load_related("pbc")
    odd = {name: frame[frame["id"] % 2 == 1] for name, frame in tables.items()}
    even = {name: frame[frame["id"] % 2 == 0] for name, frame in tables.items()}
    return odd, even, tables, metadata


def test_tvd_is_half_the_l1_distance() -> None:
    assert tvd(pd.Series(["a", "a", "b", "b"]), pd.Series(["a", "b", "b", "b"])) == pytest.approx(0.25)
    assert tvd(pd.Series([1, 2]), pd.Series([3, 4])) == 1.0
    assert tvd(pd.Series([1.0, np.nan]), pd.Series([np.nan, 1.0])) == 0.0


def test_two_halves_of_pbc_are_close(halves: tuple[Tables, Tables, Tables, RelatedMetadata]) -> None:
    odd, even, _, metadata = halves
    report = evaluate_related(odd, even, metadata)[VISITS]
    assert report["integrity"] == 1.0
    assert report == pytest.approx(
        {
            "integrity": 1.0,
            "children_per_parent": 0.110,
            "association": 0.141,
            "length": 0.154,
            "gaps": 0.041,
            "transitions": 0.058,
        },
        abs=0.002,
    )


def test_keys_shuffled_among_patients_break_association_gaps_and_transitions(
    halves: tuple[Tables, Tables, Tables, RelatedMetadata],
) -> None:
    odd, even, _, metadata = halves
    real = evaluate_related(odd, even, metadata)[VISITS]
    rng = np.random.default_rng(0)
    shuffled = {**even, "pbcseq": even["pbcseq"].assign(id=rng.permutation(even["pbcseq"]["id"].to_numpy()))}
    broken = evaluate_related(odd, shuffled, metadata)[VISITS]
    assert broken["integrity"] == 1.0
    assert broken["children_per_parent"] == real["children_per_parent"]  # the same ids, so the same counts
    assert broken["association"] > real["association"] + 0.1
    assert broken["gaps"] > real["gaps"] + 0.4
    assert broken["transitions"] > real["transitions"] + 0.2


def test_keys_drawn_from_other_patients_break_integrity_and_counts(
    halves: tuple[Tables, Tables, Tables, RelatedMetadata],
) -> None:
    odd, even, tables, metadata = halves
    real = evaluate_related(odd, even, metadata)[VISITS]
    rng = np.random.default_rng(0)
    visits = even["pbcseq"].assign(id=rng.choice(tables["pbc"]["id"].to_numpy(), len(even["pbcseq"])))
    broken = evaluate_related(odd, {**even, "pbcseq": visits}, metadata)[VISITS]
    assert broken["integrity"] == pytest.approx(0.49, abs=0.01)  # about half the ids are odd patients'
    assert broken["children_per_parent"] > real["children_per_parent"] + 0.3
    assert broken["length"] > real["length"] + 0.2


def test_integrity_ignores_missing_keys_and_counts_composite_ones() -> None:
    tables, metadata = load_related("nycflights13", "holdout")
    weather = next(r for r in metadata.relationships if r.parent == "weather")
    assert referential_integrity(tables, weather) == 1.0
    flights = tables["flights"].copy()
    flights.loc[flights.index[:100], "time_hour"] = "1999-01-01T00:00:00Z"
    flights.loc[flights.index[100:200], "origin"] = None
    share = referential_integrity({**tables, "flights": flights}, weather)
    assert share == pytest.approx(1 - 100 / (len(flights) - 100))


def test_flight_metrics_between_splits_are_small_where_the_split_keeps_shape() -> None:
    train, metadata = load_related("nycflights13", "train")
    holdout, _ = load_related("nycflights13", "holdout")
    report = evaluate_related(train, holdout, metadata)
    assert set(report) == {r.describe() for r in metadata.relationships}
    assert all(m["integrity"] == 1.0 for m in report.values())
    assert report["flights.origin -> airports.faa"]["association"] < 0.01
    assert report["flights.dest -> airports.faa"]["association"] < 0.01
    assert "gaps" not in report["flights.tailnum -> planes.tailnum"]  # a plane's flights are not a sequence


def test_sequence_metrics_need_an_order(halves: tuple[Tables, Tables, Tables, RelatedMetadata]) -> None:
    odd, even, _, _ = halves
    unordered = Relationship("pbc", "pbcseq", ("id",), ("id",))
    with pytest.raises(DataError, match=r"pbcseq.id -> pbc.id has no order_by"):
        gap_tvd(odd, even, unordered)
    with pytest.raises(DataError, match=r"has no order_by"):
        transition_tvd(odd, even, unordered)
    ordered = Relationship("pbc", "pbcseq", ("id",), ("id",), "day")
    assert transition_tvd(odd, odd, ordered, "stage") == 0.0
