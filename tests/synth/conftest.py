"""Fixtures the synthesizer tests share."""

from __future__ import annotations

import pytest

from privsynth.privacy.ledger import Ledger


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """A ledger of the test module's own."""
    return Ledger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite")
