"""The service in a real browser: headless Chromium (Debian's ``chromium``, driven by playwright) against a running
``privsynth serve``.

A custodian signs in, uploads nassCDS, sets a cap of epsilon 2 and shares the dataset with an analyst. The analyst
requests AIM at epsilon 1 from the job form, follows the job page to the end, opens the release (report and card
embedded) and downloads the rows. Budgets compose in zero-concentrated DP, so a cap of epsilon 2 holds three AIM
jobs at epsilon 1 (rho 0.0241 each, of 0.0882): the analyst's requests are accepted until one no longer fits,
which is refused on the form with the budget left. Screenshots go to ``test-artifacts/service/`` (or
``$PRIVSYNTH_ARTIFACTS``). Skips, saying why, without playwright or a Chromium binary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from service_support import free_port, quick_aim, serve

from privsynth.service.store import Store

VIEWPORT = {"width": 1280, "height": 1000}


def _artifacts() -> Path:
    folder = Path(os.environ.get("PRIVSYNTH_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "service"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Running:
    base: str
    tokens: dict[str, str]
    store: Store
    data_dir: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("browser-service")
    store = Store(f"sqlite:///{data_dir / 'service.sqlite'}")
    tokens = {name: store.add_user(name, name)[1] for name in ("custodian", "analyst")}
    port = free_port()
    server = serve(data_dir, port)
    try:
        yield Running(f"http://127.0.0.1:{port}", tokens, store, data_dir)
    finally:
        server.kill()
        server.wait(30)
        store.close()


def _sign_in(page: Any, base: str, name: str, token: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#name", name)
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/datasets")


def test_custodian_uploads_analyst_requests_until_the_budget_is_spent(
    running: Running, nass_train: pd.DataFrame, tmp_path: Path, playwright_chromium: tuple[ModuleType, str]
) -> None:
    sync_api, chromium = playwright_chromium
    shots = _artifacts()
    csv = tmp_path / "nassCDS.csv"
    nass_train.to_csv(csv, index=False)
    base = running.base
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            errors: list[str] = []
            custodian = browser.new_page(viewport=VIEWPORT)
            custodian.on("pageerror", lambda error: errors.append(str(error)))
            _sign_in(custodian, base, "custodian", running.tokens["custodian"])
            custodian.fill("#upload-name", "nassCDS")
            custodian.set_input_files("#upload-file", str(csv))
            custodian.click("#upload-form button[type=submit]")
            custodian.wait_for_url(f"{base}/datasets/*")
            dataset_id = custodian.url.rsplit("/", 1)[1]
            assert custodian.locator("#schema tr[data-column]").count() == nass_train.shape[1]
            custodian.fill("#cap-epsilon", "2")
            custodian.fill("#cap-delta", "1e-6")
            with custodian.expect_navigation():  # each form reloads the page once the API accepted it
                custodian.click("#cap-form button[type=submit]")
            assert "Cap ε 2 at δ 1e-06" in custodian.locator("#budget").inner_text()
            custodian.select_option("#target", "dead")
            custodian.check("input[name=reports_visible]")  # reports are private until the custodian shares them
            with custodian.expect_navigation():
                custodian.click("#settings-form button[type=submit]")
            custodian.fill("#grant-user", "analyst")
            custodian.fill("#grant-share", "1")  # the whole cap (an analyst's default share is a quarter of it)
            with custodian.expect_navigation():
                custodian.click("#grant-form button[type=submit]")
            custodian.wait_for_selector("td:text-is('analyst')")
            custodian.screenshot(path=str(shots / "1-custodian-dataset.png"), full_page=True)

            analyst = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            analyst.on("pageerror", lambda error: errors.append(str(error)))
            _sign_in(analyst, base, "analyst", running.tokens["analyst"])
            analyst.click("text=nassCDS")
            analyst.wait_for_url(f"{base}/datasets/{dataset_id}")
            assert "categories" not in analyst.locator("#schema").inner_text()
            params = json.dumps(quick_aim(list(nass_train.columns)))

            def request_aim() -> Any:
                analyst.goto(f"{base}/datasets/{dataset_id}")
                analyst.select_option("#job-method", "aim")
                analyst.fill("#job-epsilon", "1")
                analyst.fill("#job-rows", "2000")
                analyst.fill("#job-seed", "0")
                analyst.fill("#job-params", params)
                analyst.click("#job-form button[type=submit]")

            request_aim()
            analyst.wait_for_url(f"{base}/jobs/*")
            analyst.wait_for_selector("#status.status-done", timeout=180_000)
            analyst.screenshot(path=str(shots / "2-analyst-job-done.png"), full_page=True)
            analyst.click("text=Open the release")
            analyst.wait_for_url(f"{base}/releases/*")
            report = analyst.frame_locator("#report")
            report.locator("h2").first.wait_for()
            assert report.locator("img").count() > 0
            card = analyst.frame_locator("#card")  # a DP release's card: no metrics on the real rows at all
            card.locator("h1").first.wait_for()
            assert "Data card" in card.locator("body").inner_text()
            assert "evaluated" not in card.locator("body").inner_text().lower()
            analyst.locator("#card").scroll_into_view_if_needed()
            analyst.wait_for_timeout(500)  # a frame scrolled into view paints on the next frames
            analyst.locator("#card").screenshot(path=str(shots / "3-analyst-card.png"))
            with analyst.expect_download() as download:
                analyst.click("#download-data")
            rows = pd.read_csv(download.value.path())
            assert rows.shape == (2000, nass_train.shape[1])
            analyst.screenshot(path=str(shots / "3-analyst-release.png"), full_page=True)

            accepted, refusal = 1, ""
            while not refusal and accepted < 10:
                request_aim()
                analyst.wait_for_function(
                    "() => location.pathname.startsWith('/jobs/') || "
                    "document.querySelector('#job-form .error').textContent.length > 0"
                )
                if analyst.url.startswith(f"{base}/jobs/"):
                    accepted += 1
                else:
                    refusal = analyst.locator("#job-form .error").inner_text()
            analyst.screenshot(path=str(shots / "4-analyst-refused.png"), full_page=True)
        finally:
            browser.close()
    assert accepted == 3, "zCDP: a cap of epsilon 2 holds three AIM jobs at epsilon 1"
    assert "does not fit in the budget left" in refusal and "of a cap of epsilon=2" in refusal
    assert errors == []
    dataset = running.store.dataset(dataset_id)
    assert dataset is not None
    record = running.store.budget(dataset)
    assert record.cap is not None and record.spent_rho + record.reserved_rho <= record.cap.rho
