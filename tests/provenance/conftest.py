"""Every provenance test gets its own ledger/registry database, never the user's ~/.privsynth."""

from __future__ import annotations

from pathlib import Path

import pytest

from privsynth.privacy.ledger import LEDGER_ENV_VAR


@pytest.fixture(autouse=True)
def private_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.sqlite"
    monkeypatch.setenv(LEDGER_ENV_VAR, str(path))
    return path
