"""`privsynth metadata infer` and `check` on a folder of related tables."""

from __future__ import annotations

from pathlib import Path

from cli_support import run_cli
from privsynth.relational import RelatedMetadata, load_related


def _pbc_folder(folder: Path) -> Path:
    tables, _ = load_related("pbc")
    folder.mkdir()
    tables["pbc"].to_csv(folder / "pbc.csv", index=False)
    tables["pbcseq"].to_parquet(folder / "pbcseq.parquet")
    return folder


def test_metadata_infer_writes_reviewable_yaml_that_check_accepts(tmp_path: Path) -> None:
    folder = _pbc_folder(tmp_path / "pbc")
    out = tmp_path / "related.yaml"
    result = run_cli("metadata", "infer", str(folder), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote the metadata to" in result.stdout and "pbcseq" in result.stdout
    metadata = RelatedMetadata.load(out)
    assert metadata.tables["pbc"].primary_key == ("id",)
    assert metadata.tables["pbc"].source == "pbc.csv" and metadata.tables["pbcseq"].source == "pbcseq.parquet"
    assert metadata.tables["pbcseq"].schema is not None and "day" in metadata.tables["pbcseq"].schema
    assert [(r.describe(), r.order_by) for r in metadata.relationships] == [("pbcseq.id -> pbc.id", "day")]
    checked = run_cli("metadata", "check", str(folder), "-m", str(out))
    assert checked.returncode == 0, checked.stderr
    assert "fits" in checked.stdout and "(2 tables, 1 relationships)" in checked.stdout
    again = run_cli("metadata", "infer", str(folder), "-o", str(out))
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_metadata_check_names_orphans(tmp_path: Path) -> None:
    folder = _pbc_folder(tmp_path / "pbc")
    _, metadata = load_related("pbc")
    metadata.save(tmp_path / "related.yaml")
    tables, _ = load_related("pbc")
    tables["pbc"][tables["pbc"]["id"] != 5].to_csv(folder / "pbc.csv", index=False)
    result = run_cli("metadata", "check", str(folder), "-m", str(tmp_path / "related.yaml"))
    assert result.returncode == 1
    visits_of_5 = int((tables["pbcseq"]["id"] == 5).sum())
    assert f"error: {visits_of_5} row(s) of table 'pbcseq' name a parent that table 'pbc' lacks" in result.stderr


def test_metadata_infer_on_a_file_that_is_not_a_folder_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("a,b\n1,2\n")
    result = run_cli("metadata", "infer", str(path), "-o", str(tmp_path / "r.yaml"))
    assert result.returncode == 1
    assert "is neither a folder, a DuckDB file (.duckdb) nor a database URL" in result.stderr
