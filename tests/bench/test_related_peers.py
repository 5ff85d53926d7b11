"""Related-table peers: privsynth's metadata to SDV PAR's one table of sequences and back, a peer's tables back to
privsynth's keys and dtypes (on real pbc patients and visits), and SDV HMA end to end in its environment."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from privsynth.bench.peers import PeerError
from privsynth.bench.related_peers import (
    PARENT_PREFIX,
    RELATED_PEER_METHODS,
    from_par_table,
    related_peer_status,
    restore_tables,
    run_related_peer,
    sequence_relationship,
    to_par_table,
)
from privsynth.errors import ParameterError
from privsynth.relational import RELATED_DATASETS, RelatedMetadata, load_related
from privsynth.relational.evaluate import children_per_parent, evaluate_related, referential_integrity

Tables = dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def pbc40() -> tuple[Tables, RelatedMetadata]:
    """40 patients of pbc, the first 32 (trial patients, with visits) and the last 8 (without), and their visits."""
    tables, metadata = load_related("pbc")
    ids = pd.concat([tables["pbc"]["id"].head(32), tables["pbc"]["id"].tail(8)])
    return {name: frame[frame["id"].isin(ids)].reset_index(drop=True) for name, frame in tables.items()}, metadata


def test_the_sequence_relationship_is_visits_of_patients_and_flights_have_none() -> None:
    rel = sequence_relationship(RELATED_DATASETS["pbc"].metadata())
    assert (rel.parent, rel.child, rel.child_key, rel.order_by) == ("pbc", "pbcseq", ("id",), "day")
    with pytest.raises(ParameterError, match="exactly one relationship with order_by"):
        sequence_relationship(RELATED_DATASETS["nycflights13"].metadata())


def test_par_table_carries_the_patient_as_context_and_splits_back(pbc40: tuple[Tables, RelatedMetadata]) -> None:
    tables, metadata = pbc40
    rel = sequence_relationship(metadata)
    joined, context = to_par_table(tables, rel)
    with_visits = tables["pbc"][tables["pbc"]["id"].isin(tables["pbcseq"]["id"])]
    assert len(joined) == len(tables["pbcseq"]) == 230
    # Every patient column is context, and so are the visit columns that never change within a patient (sex, age at
    # entry, treatment, follow-up time, status); the lab values and the day vary, so they are the sequence.
    assert context[:19] == [PARENT_PREFIX + c for c in tables["pbc"].columns if c != "id"]
    assert set(context[19:]) == {"futime", "status", "trt", "age", "sex"}
    assert "day" not in context and "bili" not in context
    back = from_par_table(joined, rel, list(tables["pbc"].columns), list(tables["pbcseq"].columns))
    pd.testing.assert_frame_equal(back["pbcseq"], tables["pbcseq"], check_column_type=False)
    parents = back["pbc"].sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        parents, with_visits.reset_index(drop=True), check_dtype=False, check_column_type=False
    )
    assert len(parents) == 32  # PAR cannot represent the 8 patients without visits


def _as_peer_output(tables: Tables) -> Tables:
    """The tables as a peer returns them: text keys of its own, nullable dtypes, columns in another order, rows of
    the child grouped differently."""
    ids = {i: f"mostly-{i * 7919 % 1000:03d}-{i}" for i in tables["pbc"]["id"]}
    parent = tables["pbc"].assign(id=tables["pbc"]["id"].map(ids)).convert_dtypes()
    child = tables["pbcseq"].assign(id=tables["pbcseq"]["id"].map(ids)).convert_dtypes()
    return {"pbc": parent[[*parent.columns[1:], "id"]], "pbcseq": child.sample(frac=1.0, random_state=1)}


def test_restored_tables_have_new_keys_the_real_dtypes_and_the_same_structure(
    pbc40: tuple[Tables, RelatedMetadata],
) -> None:
    tables, metadata = pbc40
    rel = metadata.relationships[0]
    restored = restore_tables(_as_peer_output(tables), tables, metadata)
    for name in ("pbc", "pbcseq"):
        assert list(restored[name].columns) == list(tables[name].columns)
        assert restored[name].dtypes.astype(str).to_dict() == tables[name].dtypes.astype(str).to_dict()
    assert restored["pbc"]["id"].tolist() == list(range(1, 41))
    assert referential_integrity(restored, rel) == 1.0
    # The same patients with the same visits: the counts per patient and every cross-table metric match exactly.
    assert sorted(children_per_parent(restored, rel)) == sorted(children_per_parent(tables, rel))
    report = evaluate_related(tables, restored, metadata)[rel.describe()]
    assert report == {"integrity": 1.0, **dict.fromkeys(list(report)[1:], 0.0)}


def test_a_visit_of_no_synthetic_patient_stays_an_orphan(pbc40: tuple[Tables, RelatedMetadata]) -> None:
    tables, metadata = pbc40
    peer = _as_peer_output(tables)
    peer["pbcseq"].loc[peer["pbcseq"].index[:10], "id"] = "nobody"
    restored = restore_tables(peer, tables, metadata)
    assert (restored["pbcseq"]["id"] == 41).sum() == 10  # a fresh key after the 40 patients
    assert referential_integrity(restored, metadata.relationships[0]) == pytest.approx(1 - 10 / 230)


def test_unknown_peer_and_missing_environment_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pbc40: tuple[Tables, RelatedMetadata]
) -> None:
    tables, metadata = pbc40
    with pytest.raises(ParameterError, match="unknown related-table peer 'sdv-gan'; peers: sdv-hma"):
        run_related_peer("sdv-gan", tables, metadata)
    monkeypatch.setenv("PRIVSYNTH_PEERS_DIR", str(tmp_path))
    assert set(RELATED_PEER_METHODS) == {"sdv-hma", "sdv-par", "mostlyai-argn", "mostlyai-argn-cpu"}
    assert "privsynth bench peers setup mostlyai" in (related_peer_status("mostlyai-argn") or "")
    with pytest.raises(PeerError, match="privsynth bench peers setup sdv"):
        run_related_peer("sdv-hma", tables, metadata)


_HMA = related_peer_status("sdv-hma")


@pytest.mark.slow  # about 10 CPU s (SDV's import, HMA fit and sample), 30-60 s of wall on a busy machine
@pytest.mark.skipif(_HMA is not None, reason=_HMA or "")
def test_sdv_hma_makes_patients_with_visits_that_belong_to_them(pbc40: tuple[Tables, RelatedMetadata]) -> None:
    tables, metadata = pbc40
    result = run_related_peer("sdv-hma", tables, metadata, seed=0, timeout=600)
    synthetic = result.tables
    assert len(synthetic["pbc"]) == 40
    assert synthetic["pbc"]["id"].tolist() == list(range(1, 41))
    for name in ("pbc", "pbcseq"):
        assert synthetic[name].dtypes.astype(str).to_dict() == tables[name].dtypes.astype(str).to_dict()
    report = evaluate_related(tables, synthetic, metadata)["pbcseq.id -> pbc.id"]
    assert report["integrity"] == 1.0
    assert 0.0 <= report["gaps"] <= 1.0 and 0.0 <= report["association"] <= 1.0
    assert result.details["model"] == "HMASynthesizer" and result.details["sdtypes"]["pbc"]["id"] == "id"
    assert 0 < result.fit_cpu_seconds <= result.process_cpu_seconds
