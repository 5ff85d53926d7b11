"""The report: dotted keys, JSON, terminal summary, and one offline HTML file with its plots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from privsynth.errors import OutputExistsError
from privsynth.evaluate import Report, evaluate, write_report
from privsynth.progress import ProgressEvent, listen

REQUIRED = [
    "fidelity.tvd_1way",
    "fidelity.tvd_2way",
    "fidelity.tvd_3way",
    "fidelity.detection_auc",
    "utility.tstr",
    "utility.trtr",
    "privacy.dcr_train_share",
    "privacy.exact_copy_rate",
    "privacy.mia_auc",
]


def test_dotted_keys_give_numbers_and_json_holds_them(real_sample_report: Report) -> None:
    data = json.loads(real_sample_report.to_json())
    for key in REQUIRED:
        value = real_sample_report[key]
        assert isinstance(value, float)
        section, name = key.split(".")
        assert data[section][name]["value"] == value
        assert data[section][name]["definition"]
    assert real_sample_report.values()["fidelity.tvd_2way"] == real_sample_report["fidelity.tvd_2way"]


def test_every_metric_has_a_one_line_definition(real_sample_report: Report) -> None:
    assert len(real_sample_report.metrics) >= 30
    for metric in real_sample_report.metrics.values():
        assert metric.definition and "\n" not in metric.definition
        assert metric.better in ("higher", "lower", "half")
        if metric.interval is not None:
            assert metric.interval[0] <= metric.interval[1]


def test_unknown_key_names_the_known_ones(real_sample_report: Report) -> None:
    with pytest.raises(KeyError, match=r"fidelity\.tvd_2way"):
        real_sample_report["fidelity.tvd_4way"]


def test_summary_is_short_plain_text_and_says_not_a_guarantee(real_sample_report: Report) -> None:
    text = real_sample_report.summary()
    assert len(text.splitlines()) < 40
    assert "[" not in text  # nothing rich would read as markup
    assert "not guarantees" in text
    assert "No differential-privacy budget" in text
    assert "2-way TVD" in text


def test_privacy_budget_is_shown(nass: dict[str, object]) -> None:
    report = evaluate(nass["real"], nass["other"], privacy_budget={"epsilon": 1, "delta": 1e-6})  # type: ignore[arg-type]
    assert "epsilon=1, delta=1e-06" in report.summary()
    assert report.to_dict()["report"]["privacy_budget"] == {"epsilon": 1, "delta": 1e-6}


def test_html_is_one_offline_file_with_plots(real_sample_report: Report, tmp_path: Path) -> None:
    html_path, json_path = write_report(real_sample_report, tmp_path / "report.html")
    assert json_path == tmp_path / "report.json"
    assert json.loads(json_path.read_text())["fidelity"]["tvd_2way"]["value"] == real_sample_report["fidelity.tvd_2way"]
    html = html_path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing loaded from the network
    images = re.findall(r'<img src="data:image/png;base64,', html)
    columns = len(real_sample_report.meta["columns"])
    assert len(images) >= columns + 5  # a plot per column, associations, utility, equity, DCR, attacks
    assert "not guarantees" in html
    assert "fidelity.tvd_3way" in html


def test_write_report_refuses_to_overwrite(real_sample_report: Report, tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"report\.json"):
        write_report(real_sample_report, tmp_path / "report.html")
    write_report(real_sample_report, tmp_path / "report.html", overwrite=True)
    assert json.loads((tmp_path / "report.json").read_text())["report"]["version"] == 1


def test_evaluate_reports_progress_per_section(nass: dict[str, object]) -> None:
    events: list[ProgressEvent] = []
    with listen(events.append):
        evaluate(nass["real"], nass["other"])  # type: ignore[arg-type]
    details = [e.detail for e in events if e.total is not None]
    assert details == ["fidelity", "diversity", "utility", "equity", "privacy", "done"]


def test_same_seed_same_report(nass: dict[str, object]) -> None:
    first = evaluate(nass["real"], nass["other"], seed=3)  # type: ignore[arg-type]
    second = evaluate(nass["real"], nass["other"], seed=3)  # type: ignore[arg-type]
    assert first.values() == second.values()
