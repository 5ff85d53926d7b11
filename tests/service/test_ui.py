"""The web UI writes numbers as the card, the report and the leaderboard do (the metric catalogue's formatter)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from service_support import Service

from privsynth.evaluate.catalogue import format_number


def test_the_budget_on_the_pages_reads_as_on_the_card(
    service_factory: Callable[..., Service], nass_train: pd.DataFrame
) -> None:
    service = service_factory()
    dataset = service.upload(nass_train.head(300), "nass")
    capped = service.client.put(
        f"/api/datasets/{dataset['id']}/cap",
        headers=service.headers("custodian"),
        json={"epsilon": 1.23456, "delta": 1e-6},
    )
    assert capped.status_code == 200, capped.text

    listing = service.client.get("/datasets", headers=service.headers("custodian"))
    page = service.client.get(f"/datasets/{dataset['id']}", headers=service.headers("custodian"))

    assert listing.status_code == page.status_code == 200
    # three decimals (the card's 1.235), not three significant digits (1.23); a small delta in two digits
    assert (format_number(1.23456), format_number(1e-6)) == ("1.235", "1e-06")
    assert "ε 1.235, δ 1e-06" in listing.text
    assert "Cap <strong>ε 1.235</strong> at δ 1e-06" in page.text
