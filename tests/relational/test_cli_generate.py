"""`privsynth generate FOLDER -o OUT_FOLDER`: related synthetic tables with a card each, the metadata for review and
the cross-table evaluation; the input folder is never written to."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import sqlalchemy as sa

from cli_support import run_cli
from privsynth.provenance.card import card_schema
from privsynth.relational import RelatedMetadata, load_related


def _pbc_folder(folder: Path) -> Path:
    tables, _ = load_related("pbc")
    folder.mkdir()
    tables["pbc"].to_csv(folder / "pbc.csv", index=False)
    tables["pbcseq"].to_parquet(folder / "pbcseq.parquet")
    return folder


def test_generate_folder_writes_related_tables_cards_metadata_and_evaluation(tmp_path: Path) -> None:
    folder = _pbc_folder(tmp_path / "pbc")
    out = tmp_path / "synthetic"
    result = run_cli("generate", str(folder), "--method", "deep", "--param", "epochs=3", "-o", str(out), "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 related synthetic tables (deep)" in result.stdout
    assert "sequential child" in result.stdout and "integrity 1.000" in result.stdout
    assert "the metadata was inferred from the data" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "pbc.card.html",
        "pbc.card.json",
        "pbc.csv",
        "pbcseq.card.html",
        "pbcseq.card.json",
        "pbcseq.csv",
        "related.yaml",
        "related_evaluation.json",
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["pbc.csv", "pbcseq.parquet"]  # the input is untouched
    metadata = RelatedMetadata.load(out / "related.yaml")
    assert metadata.tables["pbc"].primary_key == ("id",) and metadata.tables["pbcseq"].source == "pbcseq.csv"
    assert [(r.describe(), r.order_by) for r in metadata.relationships] == [("pbcseq.id -> pbc.id", "day")]
    patients, visits = pd.read_csv(out / "pbc.csv"), pd.read_csv(out / "pbcseq.csv")
    assert len(patients) == 418 and set(visits["id"]) <= set(patients["id"])
    assert (visits.groupby("id")["day"].first() == 0).all() and (visits.groupby("id")["day"].diff().dropna() > 0).all()
    for name, role in (("pbc", "root"), ("pbcseq", "sequential child")):
        card = json.loads((out / f"{name}.card.json").read_text())
        jsonschema.validate(card, card_schema())
        assert card["generator"]["method"] == "deep" and card["generator"]["related"]["role"] == role
        assert card["generator"]["related"]["relationships"] == ["pbcseq.id -> pbc.id"]
        assert card["privacy"]["differentially_private"] is False
    evaluation = json.loads((out / "related_evaluation.json").read_text())
    metrics = evaluation["relationships"]["pbcseq.id -> pbc.id"]
    assert metrics["integrity"] == 1.0 and 0 <= metrics["children_per_parent"] < 0.5
    assert set(metrics) == {"integrity", "children_per_parent", "association", "length", "gaps", "transitions"}


def test_generate_bundled_related_set_with_rows_and_reviewed_metadata(tmp_path: Path) -> None:
    _, metadata = load_related("pbc")
    metadata.save(tmp_path / "reviewed.yaml")
    out = tmp_path / "out"
    result = run_cli(
        "generate", "pbc", "--method", "copula", "--rows", "50", "--metadata", str(tmp_path / "reviewed.yaml"),
        "-o", str(out), "--seed", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "inferred" not in result.stderr
    patients, visits = pd.read_csv(out / "pbc.csv"), pd.read_csv(out / "pbcseq.csv")
    assert len(patients) == 50 and set(visits["id"]) <= set(patients["id"])
    again = run_cli("generate", "pbc", "--method", "copula", "-o", str(out))
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_generate_refuses_to_write_into_its_input_folder(tmp_path: Path) -> None:
    folder = _pbc_folder(tmp_path / "pbc")
    for output in (folder, folder / "synthetic", tmp_path):
        result = run_cli("generate", str(folder), "--method", "copula", "-o", str(output))
        assert result.returncode == 1
        assert "another folder" in result.stderr, output
    assert sorted(p.name for p in folder.iterdir()) == ["pbc.csv", "pbcseq.parquet"]


def test_generate_folder_with_bad_metadata_says_what_is_wrong(tmp_path: Path) -> None:
    folder = _pbc_folder(tmp_path / "pbc")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "privsynth_related: 1\ntables:\n  pbc: {primary_key: id}\n  pbcseq: {}\n"
        "relationships:\n- {parent: pbc, child: pbcseq, child_key: patient}\n"
    )
    result = run_cli("generate", str(folder), "--method", "copula", "--metadata", str(bad), "-o", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "table 'pbcseq' has no column 'patient'" in result.stderr
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(
        "tables:\n  pbc: {primary_key: id}\n  pbcseq: {primary_key: id}\n"
        "relationships:\n- {parent: pbc, child: pbcseq, child_key: id}\n- {parent: pbcseq, child: pbc, child_key: id}\n"
    )
    result = run_cli("generate", str(folder), "--method", "copula", "--metadata", str(cycle), "-o", str(tmp_path / "o"))
    assert result.returncode == 1 and "the relationships form a cycle" in result.stderr


def test_generate_bundled_pbc_with_person_level_dp_writes_tables_and_dp_cards_only(tmp_path: Path) -> None:
    out, ledger = tmp_path / "dp", tmp_path / "ledger.db"
    result = run_cli(
        "generate", "pbc", "--method", "mst", "--epsilon", "1", "--max-children", "4", "--param", "iters=100",
        "--rows", "100", "--ledger", str(ledger), "-o", str(out), "--seed", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(1, 1e-06)-DP with one person as the unit (k given)" in result.stdout
    assert "recorded in the ledger under dataset 'pbc'" in result.stdout
    assert "sequential child (k=4)" in result.stdout and "integrity" not in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [  # no evaluation of the real tables in a DP release
        "pbc.card.html",
        "pbc.card.json",
        "pbc.csv",
        "pbcseq.card.html",
        "pbcseq.card.json",
        "pbcseq.csv",
        "related.yaml",
    ]
    patients, visits = pd.read_csv(out / "pbc.csv"), pd.read_csv(out / "pbcseq.csv")
    assert len(patients) == 100 and set(visits["id"]) <= set(patients["id"])
    assert visits.groupby("id").size().max() <= 4
    assert (visits.groupby("id")["day"].diff().dropna() > 0).all()
    rhos = []
    for name, role in (("pbc", "entity"), ("pbcseq", "sequential child")):
        card = json.loads((out / f"{name}.card.json").read_text())
        jsonschema.validate(card, card_schema())
        privacy = card["privacy"]
        assert privacy["differentially_private"] is True and privacy["unit"] == "person"
        assert privacy["contribution_bound"] == 4 and privacy["epsilon"] == 1 and privacy["dataset"] == "pbc"
        assert card["generator"]["related"]["role"] == role and "timings_seconds" not in card["generator"]
        assert any("person-level DP" in note for note in card["notes"])
        assert "fingerprint_sha256" not in json.dumps(card)
        rhos.append(sum(s["rho"] for s in privacy["spends"]))
        assert rhos[-1] <= privacy["rho"] * (1 + 1e-12) and rhos[-1] == pytest.approx(privacy["rho"], rel=1e-9)
    assert json.loads((out / "pbcseq.card.json").read_text())["generator"]["related"]["contribution_bound"] == 4
    assert rhos[0] == rhos[1]  # one budget, the same spends on every card


def test_generate_related_dp_refusals_say_what_to_do(tmp_path: Path) -> None:
    folder = _pbc_folder(tmp_path / "pbc")
    result = run_cli("generate", str(folder), "--method", "mst", "--epsilon", "1", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "give the reviewed metadata" in result.stderr  # a usage error
    result = run_cli("generate", str(folder), "--method", "copula", "--epsilon", "1", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "--epsilon applies to DP methods" in result.stderr
    result = run_cli(
        "generate", "pbc", "--method", "mst", "--epsilon", "1", "--param", "max_children=0", "-o", str(tmp_path / "o")
    )
    assert result.returncode == 2 and "max_children must be a whole number (an int) >= 1" in result.stderr
    result = run_cli(
        "generate", "pbc", "--method", "mst", "--epsilon", "1", "--max-children", "4", "--param", "max_children=4",
        "-o", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.returncode == 2 and "give k once" in result.stderr
    result = run_cli("generate", "nafld1", "--max-children", "4", "-o", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and "--max-children apply to related tables" in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_generate_reads_related_tables_from_a_database_url(tmp_path: Path) -> None:
    """A database of several tables (here SQLite; PostgreSQL is read the same way, see test_metadata.py) is related
    tables when no --table is given: its metadata inferred, the tables written to the output folder."""
    tables, _ = load_related("pbc")
    url = f"sqlite:///{tmp_path / 'clinic.sqlite'}"
    engine = sa.create_engine(url)
    for name, frame in tables.items():
        frame.to_sql(name, engine, index=False)
    engine.dispose()
    out = tmp_path / "synthetic"
    result = run_cli("generate", url, "--method", "copula", "--rows", "40", "-o", str(out), "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 related synthetic tables (copula)" in result.stdout and "integrity 1.000" in result.stdout
    metadata = RelatedMetadata.load(out / "related.yaml")
    assert [r.describe() for r in metadata.relationships] == ["pbcseq.id -> pbc.id"]
    patients, visits = pd.read_csv(out / "pbc.csv"), pd.read_csv(out / "pbcseq.csv")
    assert len(patients) == 40 and set(visits["id"]) <= set(patients["id"])
    single = run_cli(
        "generate", url, "--table", "pbc", "--method", "copula", "--rows", "5", "-o", str(tmp_path / "one.csv")
    )
    assert single.returncode == 0, single.stderr  # with --table it is one table, as before
