"""File fingerprints live under data/: sources, releases and cards hash files the same way, and data/ never
imports the layers above it (provenance used to lend it this function)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import privsynth
from privsynth.data.hashing import file_sha256
from privsynth.provenance import card

DATA = Path(privsynth.__file__).parent / "data"


def test_file_sha256_matches_hashlib_across_the_block_boundary(tmp_path: Path) -> None:
    payload = bytes(range(256)) * (3 * 4096 + 17)  # 3 MiB + 4352 bytes: several 1 MiB blocks and a partial one
    path = tmp_path / "rows.csv"
    path.write_bytes(payload)
    assert file_sha256(path) == hashlib.sha256(payload).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)
    (tmp_path / "empty.csv").write_bytes(b"")
    assert file_sha256(tmp_path / "empty.csv") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_cards_and_sources_share_one_file_hash() -> None:
    assert card.file_sha256 is file_sha256


def test_data_imports_nothing_from_the_layers_above_it() -> None:
    above = ("privsynth.provenance", "privsynth.synth", "privsynth.evaluate", "privsynth.pipeline", "privsynth.text")
    found = []
    for path in sorted(DATA.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.name}: {m}" for m in modules if m.startswith(above)]
    assert found == []
