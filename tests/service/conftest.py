"""Fixtures of the service tests (helpers live in service_support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the service needs the 'service' extra (pip install 'privsynth[service]')")

from service_support import Service, make_service

from privsynth.data.datasets import load_dataset


@pytest.fixture(scope="module")
def nass_train() -> pd.DataFrame:
    return load_dataset("nassCDS", "train")


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def factory(**config: Any) -> Service:
        made.append(make_service(tmp_path / f"service{len(made)}", **config))
        return made[-1]

    yield factory
    for service in made:
        service.client.close()
        service.store.close()
