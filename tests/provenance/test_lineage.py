"""Lineage: a release used as a source makes the next generation, however it is recognised."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import privsynth as ps
from privsynth.data.schema import Kind, Schema
from privsynth.data.sources import Source
from privsynth.privacy import Budget, Ledger
from privsynth.privacy.mechanisms import gaussian_mechanism
from privsynth.provenance.card import card_path, file_sha256, read_card
from privsynth.provenance.lineage import PARQUET_KEY, Registry, read_parquet_provenance
from privsynth.synth import base
from privsynth.synth.dp import FitRecord, open_fit, resolve_budget


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return ps.load_dataset("nassCDS").head(3000)


def test_fitting_on_releases_makes_generations_2_and_3_with_a_warning(
    real: pd.DataFrame, tmp_path: Path, private_ledger: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = ps.synthesize(real, rows=800, seed=1).write(tmp_path / "gen1.csv")
    with caplog.at_level(logging.WARNING, logger="privsynth.pipeline"):
        second = ps.synthesize(first, rows=800, seed=2)
    assert second.generation == 2
    assert any("generation 2: the model was fitted on synthetic data" in r.message for r in caplog.records)
    second.write(tmp_path / "gen2.csv")
    third = ps.synthesize(tmp_path / "gen2.csv", rows=800, seed=3)
    assert third.generation == 3
    third.write(tmp_path / "gen3.parquet")

    cards = [read_card(tmp_path / name) for name in ("gen1.csv", "gen2.csv", "gen3.parquet")]
    assert [c["generation"] for c in cards] == [1, 2, 3]
    assert cards[0]["notes"] == [] and cards[0]["parents"] == []
    for child, parent in zip(cards[1:], cards[:2], strict=True):
        assert child["parents"][0]["release_id"] == parent["release_id"]
        assert child["parents"][0]["found_by"] == "registry"
        assert child["source"]["fingerprint_sha256"] == parent["release_sha256"]
        assert child["notes"][0].startswith(f"generation {child['generation']}: the model was fitted on synthetic")
    answers = {e["id"]: e["answer"] for e in cards[2]["datasheet"]["collection_process"]}
    assert answers["collection_process.lineage"].startswith("Yes: generation 3.")

    registry = Registry(private_ledger)
    releases = {r.release_id: r for r in registry.releases()}
    assert [releases[c["release_id"]].generation for c in cards] == [1, 2, 3]
    assert releases[cards[2]["release_id"]].parents == (cards[1]["release_id"],)
    assert registry.find(file_sha256(tmp_path / "gen3.parquet")) == releases[cards[2]["release_id"]]
    # a frame read back from a CSV release is recognised by its content
    again = ps.synthesize(pd.read_csv(tmp_path / "gen2.csv"), rows=100, seed=4)
    assert again.generation == 3 and again.ancestry.parents[0].found_by == "registry"


def test_a_copied_release_is_recognised_by_its_card_or_parquet_metadata(real: pd.DataFrame, tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    release = ps.synthesize(real, rows=500, seed=5)
    release.write(made / "s.csv")
    release.write(made / "p.parquet")
    elsewhere = tmp_path / "elsewhere"  # another machine: a fresh registry that knows none of them
    elsewhere.mkdir()
    for name in ("s.csv", "s.card.json", "p.parquet"):
        shutil.copy(made / name, elsewhere / name)
    fresh = elsewhere / "registry.sqlite"

    by_card = ps.synthesize(elsewhere / "s.csv", rows=100, seed=0, registry=fresh)
    assert by_card.generation == 2
    assert [(p.release_id, p.found_by) for p in by_card.ancestry.parents] == [(release.release_id, "card")]

    meta = read_parquet_provenance(elsewhere / "p.parquet")
    assert meta is not None and meta["release_id"] == release.release_id and meta["generation"] == 1
    by_metadata = ps.synthesize(elsewhere / "p.parquet", rows=100, seed=0, registry=fresh)
    assert [(p.release_id, p.found_by) for p in by_metadata.ancestry.parents] == [
        (release.release_id, "parquet metadata")
    ]
    frame = pd.read_parquet(elsewhere / "p.parquet")  # pandas restores the label as a frame attribute
    by_attrs = ps.synthesize(frame, rows=100, seed=0, registry=False)
    assert by_attrs.generation == 2 and by_attrs.ancestry.parents[0].found_by == "frame attributes"
    assert by_attrs.ancestry.parents[0].release_id == release.release_id

    edited = elsewhere / "s.csv"
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join([*lines, lines[1]]) + "\n")  # one row duplicated
    changed = ps.synthesize(edited, rows=100, seed=0, registry=fresh)
    assert changed.generation == 2
    assert "differs from the release its card 's.card.json' describes" in changed.ancestry.notes[0]


def test_real_data_is_generation_1_and_parquet_releases_carry_metadata(real: pd.DataFrame, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    real.to_csv(tmp_path / "real.csv", index=False)
    release = ps.synthesize(tmp_path / "real.csv", rows=50, seed=0)
    assert release.generation == 1 and release.ancestry.parents == ()
    path = release.write(tmp_path / "out.parquet")
    metadata = pq.read_schema(path).metadata
    label = json.loads(metadata[PARQUET_KEY])
    assert label["generation"] == 1 and label["release_id"] == release.release_id
    assert file_sha256(tmp_path / "real.csv") not in json.dumps(label)  # no hash of the source in the label


def test_registry_lives_in_the_ledger_database(real: pd.DataFrame, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    ledger = Ledger(url)
    release = ps.synthesize(real, rows=50, seed=0, registry=url)
    release.write(tmp_path / "r.csv")
    from sqlalchemy import create_engine, inspect

    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"privsynth_datasets", "privsynth_spends", "privsynth_releases", "privsynth_release_fingerprints"} <= tables
    assert Registry(ledger.url).get(release.release_id) is not None


class _NoisyHistograms(base.Synthesizer):
    """Independent Gaussian-noised histograms of public-domain categorical columns (a small real DP method)."""

    name = "test-noisy-histograms"
    differentially_private = True

    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        budget = resolve_budget(self.name, epsilon, delta, schema)
        with open_fit(budget, ledger, self.dataset_, "noisy histograms") as (accountant, _):
            frame = source.to_pandas(schema.names)
            self.shares_: dict[str, np.ndarray] = {}
            for column, share in zip(schema, budget.split([1 / len(schema)] * len(schema)), strict=True):
                counts = frame[column.name].value_counts().reindex(column.categories, fill_value=0).to_numpy()
                noisy = gaussian_mechanism(
                    counts,
                    sensitivity=1.0,
                    rho=share.rho,
                    accountant=accountant,
                    purpose=f"1-way marginal {column.name}",
                )
                clipped = np.clip(noisy, 0, None).astype(float) + 1e-9
                self.shares_[column.name] = clipped / clipped.sum()
        self.record_ = FitRecord.of(self.name, {}, budget=budget, accountant=accountant, dataset=self.dataset_)

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return pd.DataFrame(
            {c.name: rng.choice(np.array(c.categories, dtype=object), n, p=self.shares_[c.name]) for c in self.schema_}
        )


def test_ledger_passes_through_to_a_dp_method_and_its_spends_reach_the_card(
    real: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_ledger: Path
) -> None:
    monkeypatch.setitem(base._REGISTRY, _NoisyHistograms.name, _NoisyHistograms)
    inferred = Schema.infer(real)
    schema = Schema(
        [
            dataclasses.replace(c, public=True)
            if c.kind is Kind.CATEGORICAL
            else dataclasses.replace(c, synthesize=False, reason="not modelled")
            for c in inferred
        ]
    )
    url = f"sqlite:///{tmp_path / 'explicit.sqlite'}"
    release = ps.synthesize(
        real, _NoisyHistograms.name, rows=200, schema=schema, epsilon=1.0, delta=1e-6, ledger=url, seed=0
    )
    release.write(tmp_path / "dp.csv")
    card = json.loads(card_path(tmp_path / "dp.csv").read_text())
    privacy = card["privacy"]
    categorical = [c.name for c in schema.synthesized()]
    assert privacy["differentially_private"] is True and privacy["ledger"] == url
    assert [s["purpose"] for s in privacy["spends"]] == [f"1-way marginal {c}" for c in categorical]
    assert privacy["rho_spent"] == pytest.approx(Budget.from_epsilon_delta(1.0, 1e-6).rho, rel=1e-9)
    entries = Ledger(url).entries(privacy["dataset"])
    entries = [e for e in entries if e.reservation_id is not None]  # the spends under the fit's reservation
    assert [e.purpose for e in entries] == [s["purpose"] for s in privacy["spends"]]
    assert [e.rho for e in entries] == [s["rho"] for s in privacy["spends"]]
    # the registry defaulted to the ledger's database
    assert Registry(url).get(release.release_id) is not None
    assert card["schema"]["columns"][0]["categories"] == sorted(real["dvcat"].unique())
    # without a ledger a DP method records in the default one; ledger=False records nothing
    default = ps.synthesize(real, _NoisyHistograms.name, rows=10, schema=schema, epsilon=0.5, delta=1e-6)
    assert default.ledger_url == f"sqlite:///{private_ledger.resolve()}"
    recorded = len(Ledger(private_ledger).entries())
    assert recorded == len(categorical) + 1  # the reservation and its spends
    unrecorded = ps.synthesize(
        real, _NoisyHistograms.name, rows=10, schema=schema, epsilon=0.5, delta=1e-6, ledger=False, registry=False
    )
    assert len(unrecorded.fit.spends) == len(categorical) and unrecorded.ledger_url is None
    assert len(Ledger(private_ledger).entries()) == recorded
