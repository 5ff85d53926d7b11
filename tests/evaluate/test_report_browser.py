"""The HTML report in a real browser: headless Chromium opens it without errors and shows every plot.

A copula fitted on 2,000 nassCDS rows is evaluated against the real rows and a holdout, the report is written with
``write_report`` and opened from disk by the system Chromium (Debian package ``chromium``) through playwright.
The tests skip, saying why, when playwright or a Chromium binary is missing; ``PRIVSYNTH_CHROMIUM`` names the
binary when it is not on the PATH.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from privsynth.evaluate import Report, evaluate, write_report
from privsynth.evaluate.html import REAL_COLOUR, SYNTHETIC_COLOUR
from privsynth.evaluate.verdicts import headline, privacy_checks, summary_panels
from privsynth.synth import create

ROWS = 2000
VIEWPORT = {"width": 1280, "height": 900}


@dataclass(frozen=True)
class Opened:
    """What the browser saw: console messages, uncaught page errors, every image and the screenshots."""

    console: list[tuple[str, str]]
    page_errors: list[str]
    images: list[dict[str, Any]]  # alt, naturalWidth, complete, section (id of the h2 above it)
    summary_bottom: float  # lowest pixel of the verdict panels, from the top of the page
    first_screen_text: str
    screenshot: Path
    columns: int


@pytest.fixture(scope="module")
def opened(
    nass: dict[str, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
    playwright_chromium: tuple[ModuleType, str],
) -> Opened:
    sync_api, chromium = playwright_chromium
    real = nass["real"].iloc[:ROWS].reset_index(drop=True)
    synthetic = create("copula").fit(real).sample(ROWS, seed=0)
    report = evaluate(real, synthetic, nass["holdout"], target="dead", sensitive="sex", seed=0)
    folder = tmp_path_factory.mktemp("browser")
    html, _ = write_report(report, folder / "report.html")
    screenshot = folder / "report.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            console: list[tuple[str, str]] = []
            page_errors: list[str] = []
            page.on("console", lambda message: console.append((message.type, message.text)))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(html.as_uri(), wait_until="load")
            images = page.evaluate(
                """() => {
                    let section = null;
                    const out = [];
                    for (const node of document.querySelectorAll("h2, img")) {
                        if (node.tagName === "H2") { section = node.id; continue; }
                        out.push({alt: node.alt, naturalWidth: node.naturalWidth, complete: node.complete, section});
                    }
                    return out;
                }"""
            )
            summary_bottom = page.evaluate(
                "() => Math.max(...Array.from(document.querySelectorAll('.verdict, .panel'), "
                "e => e.getBoundingClientRect().bottom + window.scrollY))"
            )
            first_screen_text = page.evaluate(
                """() => Array.from(document.querySelectorAll('.verdict, .panel, .note'))
                        .filter(e => e.getBoundingClientRect().bottom <= window.innerHeight)
                        .map(e => e.innerText).join('\\n')"""
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return Opened(
        console, page_errors, images, summary_bottom, first_screen_text, screenshot, len(report.meta["columns"])
    )


def test_report_opens_without_console_errors(opened: Opened) -> None:
    assert opened.page_errors == []
    assert [text for kind, text in opened.console if kind in ("error", "warning")] == []


def test_every_image_loads(opened: Opened) -> None:
    assert len(opened.images) >= opened.columns + 5
    broken = [image["alt"] for image in opened.images if not image["complete"] or image["naturalWidth"] == 0]
    assert broken == []


def test_each_section_shows_its_plots(opened: Opened) -> None:
    by_section: dict[str, list[str]] = {}
    for image in opened.images:
        by_section.setdefault(image["section"], []).append(image["alt"])
    histograms = [alt for alt in by_section["fidelity"] if alt.startswith("real and synthetic distribution of")]
    assert len(histograms) == opened.columns
    assert sum(alt.startswith("association matrices") for alt in by_section["fidelity"]) == 1
    assert any("TSTR and TRTR" in alt for alt in by_section["utility"])
    assert any("subgroup" in alt for alt in by_section["equity"])
    assert any("distance to closest record" in alt for alt in by_section["privacy"])
    assert any("attack risks" in alt for alt in by_section["privacy"])


def test_summary_fits_the_first_screen_and_says_not_a_guarantee(opened: Opened) -> None:
    assert opened.summary_bottom <= VIEWPORT["height"]
    text = opened.first_screen_text
    for title in ("Fidelity", "Utility", "Privacy (empirical)", "Differential privacy"):
        assert title in text
    assert "not guarantees" in text
    assert "No budget declared" in text


def test_screenshot_shows_the_plots(opened: Opened) -> None:
    image = np.asarray(Image.open(opened.screenshot).convert("RGB"))
    assert image.shape[1] == VIEWPORT["width"]
    assert image.shape[0] > 3 * VIEWPORT["height"]  # the whole page, not one screen
    pixels = image[::2, ::2].reshape(-1, 3).astype(np.int16)  # every 4th pixel is plenty and 4x faster
    assert pixels.std() > 20  # not a blank page
    packed = (pixels[:, 0].astype(np.int32) << 16) | (pixels[:, 1].astype(np.int32) << 8) | pixels[:, 2]
    assert len(np.unique(packed)) > 500  # plots and heatmaps, not only text on white
    for colour in (REAL_COLOUR, SYNTHETIC_COLOUR):
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        painted = int((np.abs(pixels - rgb).sum(axis=1) <= 12).sum())
        assert painted > 12_000, f"only {painted} sampled pixels of {colour}: the bars are not on screen"


def test_summary_verdict_tells_a_fresh_sample_from_a_copy(real_sample_report: Report, copy_report: Report) -> None:
    fresh = summary_panels(real_sample_report, privacy_checks(real_sample_report))
    assert [p.level for p in fresh] == ["good", "good", "good", "none"]
    assert headline(fresh)[0] == "good"
    copied = summary_panels(copy_report, privacy_checks(copy_report))
    level, text = headline(copied)
    assert (level, copied[2].level) == ("poor", "poor")
    assert text.startswith("Do not release")
    assert "100.0% of synthetic rows are exact copies" in text
    assert "far below chance" in copied[0].verdict  # detection AUC < 0.5 read as copying, not as bad fidelity
