"""The CLI as a user runs it, in-process (tests/cli_support.py): files, messages and exit codes. The end-to-end
cases, in a fresh interpreter, are the ones that call ``run_cli_process``."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cli_support import run_cli, run_cli_process
from privsynth.privacy import Ledger
from privsynth.synth import base

run = run_cli


def test_demo_releases_a_dp_table_and_a_deep_one_and_compares_them(tmp_path: Path) -> None:
    result = run("demo", "--rows", "3000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "privsynth-demo"
    assert len(pd.read_csv(out / "dp.csv")) == len(pd.read_csv(out / "deep.csv")) == 3000
    dp_card = json.loads((out / "dp.card.json").read_text())
    assert dp_card["privacy"]["differentially_private"] is True and dp_card["privacy"]["epsilon"] == 1.0
    assert dp_card["metrics"] == {}  # the evaluation stays with the custodian
    assert json.loads((out / "deep.card.json").read_text())["generator"]["method"] == "deep"
    ledger = Ledger(out / "ledger.sqlite").dataset("nassCDS")
    assert ledger.cap is not None and ledger.cap.epsilon == 3.0
    assert ledger.spent_rho == pytest.approx(dp_card["privacy"]["rho"], rel=1e-9)
    summary = (out / "summary.md").read_text()
    assert "| report metric | dp | deep |" in summary and "DCR train share" in summary
    for name in ("dp", "deep"):
        report = json.loads((out / f"{name}.report.json").read_text())
        assert 0.0 < report["fidelity"]["tvd_2way"]["value"] < 0.15
        assert "<img" in (out / f"{name}.report.html").read_text()
    assert run("demo", "--rows", "500", cwd=tmp_path).returncode == 0  # the demo replaces its own files, ledger too


def test_export_infer_generate_round_trip(tmp_path: Path) -> None:
    assert run("datasets", "export", "covid_testing", "-o", "covid.csv", cwd=tmp_path).returncode == 0
    result = run("schema", "infer", "covid.csv", "-o", "schema.yaml", "--target", "result", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    assert schema["target"] == "result"
    refused = run("schema", "infer", "covid.csv", "-o", "other.yaml", "--target", "outcome", cwd=tmp_path)
    assert refused.returncode != 0 and "target 'outcome' is not one of its columns" in refused.stderr
    assert not (tmp_path / "other.yaml").exists()
    excluded = {c["name"] for c in schema["columns"] if not c["synthesize"]}
    assert excluded == {"subject_id", "fake_first_name", "fake_last_name"}
    args = ["generate", "covid.csv", "--method", "copula", "--schema", "schema.yaml", "--rows", "300"]
    result = run(*args, "-o", "syn.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "left out 'fake_first_name'" in result.stderr
    assert len(pd.read_csv(tmp_path / "syn.csv")) == 300


def test_condition_option_fixes_the_column(tmp_path: Path) -> None:
    """End to end: `python -m privsynth generate` on a bundled dataset, in a fresh interpreter."""
    args = ["generate", "nassCDS", "--method", "copula", "--condition", "dead=dead", "--rows", "200", "-o", "d.csv"]
    result = run_cli_process(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (pd.read_csv(tmp_path / "d.csv")["dead"] == "dead").all()


def test_param_option_sets_the_method_s_hyperparameters(tmp_path: Path) -> None:
    args = ["generate", "nassCDS", "--method", "mst", "--epsilon", "1", "--ledger", "l.sqlite", "--rows", "50"]
    result = run(*args, "--param", "numeric_bins=uniform", "--param", "iters=100", "-o", "m.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parameters = json.loads((tmp_path / "m.card.json").read_text())["generator"]["parameters"]
    assert parameters["numeric_bins"] == "uniform" and parameters["iters"] == 100


def test_rebalance_option_generates_the_requested_class_mix(tmp_path: Path) -> None:
    args = ["generate", "covid_testing", "--method", "deep", "--rows", "400", "--seed", "3", "-o", "r.csv"]
    result = run(*args, "--rebalance", "result", "--mix", "positive=0.5", "--mix", "negative=0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = pd.read_csv(tmp_path / "r.csv")["result"].value_counts().to_dict()
    assert counts == {"positive": 200, "negative": 200}  # the real share of positive tests is 5.7%
    card = json.loads((tmp_path / "r.card.json").read_text())
    assert card["generator"]["rebalance"] == {"column": "result", "mix": {"positive": 0.5, "negative": 0.5}}


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            {},
            ["generate", "nassCDS", "--method", "copula", "--rebalance", "dead", "-o", "o.csv"],
            "method 'copula' cannot rebalance 'dead': use one that draws exact conditionals (deep, dp-deep)",
        ),
        (
            {},
            ["generate", "nassCDS", "--method", "copula", "--mix", "dead=0.5", "-o", "o.csv"],
            "--mix needs --rebalance COLUMN",
        ),
        (
            {},
            ["generate", "nassCDS", "--method", "deep", "--rebalance", "dead", "--mix", "dead=half", "-o", "o.csv"],
            "--mix takes VALUE=SHARE with a number as the share",
        ),
        ({}, ["generate", "missing.csv", "--method", "copula", "-o", "o.csv"], "file 'missing.csv' does not exist"),
        ({"empty.csv": ""}, ["generate", "empty.csv", "--method", "copula", "-o", "o.csv"], "'empty.csv' is empty"),
        (
            {"h.csv": "a,b\n"},
            ["generate", "h.csv", "--method", "copula", "-o", "o.csv"],
            "'h.csv' has a header but no rows",
        ),
        (
            {"semi.csv": "a;b\n1;2\n3;4\n"},
            ["generate", "semi.csv", "--method", "copula", "--delimiter", ",", "-o", "o.csv"],
            "pass --delimiter ';'",
        ),
        ({}, ["generate", "nassCDS", "--method", "gan", "-o", "o.csv"], "unknown method 'gan'"),
        (
            {"o.csv": "keep me\n"},
            ["generate", "nassCDS", "--method", "copula", "-o", "o.csv"],
            "'o.csv' exists already",
        ),
        (
            {"s.yaml": "columns:\n  - name: speed\n    kind: float\n"},
            ["generate", "nassCDS", "--method", "copula", "--schema", "s.yaml", "-o", "o.csv"],
            "the schema names column(s) ['speed'] that the data lacks",
        ),
        (
            {},
            [
                "generate",
                "postgresql+psycopg://nobody@127.0.0.1:9/none",
                "--method",
                "copula",
                "--table",
                "t",
                "-o",
                "o.csv",
            ],
            "cannot connect to postgresql+psycopg://nobody@127.0.0.1:9/none",
        ),
        (
            {},
            ["generate", "nassCDS", "--method", "copula", "--condition", "dead", "-o", "o.csv"],
            "--condition takes COLUMN=VALUE",
        ),
        (
            {},
            ["generate", "nassCDS", "--method", "copula", "--param", "rounds", "-o", "o.csv"],
            "--param takes KEY=VALUE",
        ),
        (
            {},
            ["generate", "nassCDS", "--method", "mst", "--epsilon", "1", "--param", "speed=3", "-o", "o.csv"],
            "bad parameter for 'mst'",
        ),
        (
            {},
            ["generate", "nassCDS", "--method", "aim", "--epsilon", "1", "--param", "max_minutes=0", "-o", "o.csv"],
            "max_minutes must be a finite number > 0",
        ),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path: Path, setup: dict[str, str], args: list[str], message: str) -> None:
    for name, text in setup.items():
        (tmp_path / name).write_text(text)
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    if "o.csv" in setup:
        assert (tmp_path / "o.csv").read_text() == "keep me\n"


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    """End to end: the error-exit path of a fresh interpreter (a privsynth error, then Python's traceback)."""
    plain = run_cli_process("generate", "missing.csv", "--method", "copula", "-o", "o.csv", cwd=tmp_path)
    assert plain.returncode == 1 and plain.stderr.startswith("error: file 'missing.csv' does not exist")
    assert "Traceback" not in plain.stderr
    result = run_cli_process("--debug", "generate", "missing.csv", "-o", "o.csv", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_evaluate_writes_html_and_json_with_the_bundled_holdout(tmp_path: Path) -> None:
    assert (
        run(
            "generate", "nassCDS", "--method", "copula", "--rows", "3000", "--seed", "3", "-o", "syn.csv", cwd=tmp_path
        ).returncode
        == 0
    )
    result = run("evaluate", "--real", "nassCDS", "--synthetic", "syn.csv", "-o", "report.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["report"]["holdout_rows"] == 5243  # nassCDS's holdout split, used by default
    assert report["report"]["target"] == "dead" and report["report"]["sensitive"] == "sex"
    for key in ("tvd_1way", "tvd_2way", "tvd_3way", "detection_auc"):
        assert report["fidelity"][key]["value"] is not None
    assert report["utility"]["tstr"]["value"] < report["utility"]["trtr"]["value"]
    assert "membership attack AUC" in result.stdout
    again = run("evaluate", "--real", "nassCDS", "--synthetic", "syn.csv", "-o", "report.html", cwd=tmp_path)
    assert again.returncode != 0 and "exists already" in " ".join(again.stderr.split())


def test_evaluate_refuses_an_output_that_is_not_html(tmp_path: Path) -> None:
    result = run("evaluate", "--real", "nassCDS", "--synthetic", "x.csv", "-o", "report.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert "--output must end in .html" in " ".join(result.stderr.split())


def test_ledger_cap_then_show(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.sqlite")
    result = run("ledger", "cap", "nassCDS", "--epsilon", "2", "--delta", "1e-6", "--ledger", ledger, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "capped nassCDS at epsilon" in " ".join(result.stdout.split())
    book = Ledger(ledger)
    (record,) = book.datasets()
    assert record.cap is not None and record.cap.epsilon == 2
    book.spend(record.fingerprint, 0.01, mechanism="gaussian", purpose="1-way marginal of 'dead'")
    listing = run("ledger", "show", "--ledger", ledger, cwd=tmp_path)
    assert listing.returncode == 0 and record.fingerprint[:12] in listing.stdout
    detail = run("ledger", "show", record.fingerprint[:8], "--ledger", ledger, cwd=tmp_path)
    assert detail.returncode == 0, detail.stderr
    assert "1-way marginal of 'dead'" in detail.stdout and "0.01" in detail.stdout
    unknown = run("ledger", "show", "covid_testing", "--ledger", ledger, cwd=tmp_path)
    assert unknown.returncode == 2 and "nothing has been spent" in " ".join(unknown.stderr.split())


def test_sample_releases_more_rows_from_a_saved_model(tmp_path: Path) -> None:
    args = ["generate", "nafld1", "--method", "copula", "--rows", "50", "--save-model", "m.model"]
    fitted = run(*args, "-o", "first.csv", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    result = run("sample", "m.model", "--rows", "120", "--seed", "1", "-o", "more.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sampling spent nothing" in " ".join(result.stdout.split())
    assert len((tmp_path / "more.csv").read_text().splitlines()) == 121
    assert (tmp_path / "more.card.json").is_file()


def test_generate_defaults_to_the_deep_synthesizer_where_it_is_installed_and_says_why(tmp_path: Path) -> None:
    args = ["generate", "covid_testing", "--rows", "60", "--seed", "0", "--param", "epochs=1"]
    result = run(*args, "-o", "d.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reason = "default: the best installed; `--method copula` for the fast one"
    assert f"method: deep ({reason})" in result.stdout
    generator = json.loads((tmp_path / "d.card.json").read_text())["generator"]
    assert (generator["method"], generator["chosen"], generator["method_reason"]) == ("deep", "default", reason)
    assert reason in (tmp_path / "d.card.html").read_text()
    chosen = run("generate", "covid_testing", "--method", "copula", "--rows", "60", "-o", "c.csv", cwd=tmp_path)
    assert chosen.returncode == 0 and "method:" not in chosen.stdout
    generator = json.loads((tmp_path / "c.card.json").read_text())["generator"]
    assert generator["chosen"] == "user" and "method_reason" not in generator
    assert "by the user" in (tmp_path / "c.card.html").read_text()


def test_generate_without_the_deep_extra_defaults_to_the_copula_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch hidden as on an install without the deep extra: importing it fails, deep is not registered."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "privsynth.synth.deep", raising=False)
    for name in ("deep", "dp-deep"):
        monkeypatch.delitem(base._REGISTRY, name, raising=False)
    assert base.default_method() == ("copula", "default; install privsynth[deep] for the deep synthesizer")
    result = run("generate", "covid_testing", "--rows", "60", "--seed", "0", "-o", "c.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "method: copula (default; install privsynth[deep] for the deep synthesizer)" in result.stdout
    generator = json.loads((tmp_path / "c.card.json").read_text())["generator"]
    assert (generator["method"], generator["chosen"]) == ("copula", "default")
    assert generator["method_reason"] == "default; install privsynth[deep] for the deep synthesizer"
