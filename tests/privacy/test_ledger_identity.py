"""Ledger identity: budgets are kept per dataset name the user declares; a content fingerprint is only a hint,
kept as an HMAC under a secret of the ledger's own; older ledgers keyed by fingerprint keep working."""

from __future__ import annotations

import hashlib
import hmac
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from cli_support import run_cli
from privsynth import load_dataset
from privsynth.data.sources import frame_source, load_source
from privsynth.errors import ParameterError
from privsynth.privacy import Budget, Ledger
from privsynth.privacy._ledger_tables import CONTENTS, SETTINGS
from privsynth.privacy.accountant import fit_accountant
from privsynth.privacy.ledger import LEDGER_ENV_VAR
from privsynth.synth.dp import open_fit


@pytest.fixture
def rows() -> pd.DataFrame:
    return load_dataset("nassCDS").head(100)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "identity.sqlite")
    yield ledger
    ledger.close()


def _secret(ledger: Ledger) -> bytes:
    with ledger.engine.connect() as connection:
        return bytes.fromhex(connection.execute(select(SETTINGS.c.value)).scalar_one())


def _contents_of(ledger: Ledger) -> set[tuple[str, str]]:
    with ledger.engine.connect() as connection:
        return {(row.content_hmac, row.dataset) for row in connection.execute(select(CONTENTS))}


def test_the_same_rows_in_four_formats_spend_from_the_one_budget_they_are_named_under(
    tmp_path: Path, rows: pd.DataFrame, ledger: Ledger
) -> None:
    rows.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "crlf.csv").write_bytes((tmp_path / "rows.csv").read_bytes().replace(b"\n", b"\r\n"))
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    sources = [
        frame_source(rows),
        load_source(tmp_path / "rows.csv"),
        load_source(tmp_path / "crlf.csv"),
        load_source(tmp_path / "rows.parquet"),
    ]
    assert len({source.fingerprint() for source in sources}) == 4  # content hashes tell them apart
    ledger.register("nass-100")
    ledger.set_cap("nass-100", 1.0, 1e-6)
    budget = Budget.from_epsilon_delta(0.25, 1e-6)
    for source in sources:
        with open_fit(budget, ledger, "nass-100", "MST fit", content=source.fingerprint()) as (accountant, cap):
            assert cap == Budget.from_epsilon_delta(1.0, 1e-6)
            accountant.spend(budget.rho, mechanism="gaussian", purpose="all of it")
    (record,) = ledger.datasets()
    assert record.name == "nass-100"
    assert record.spent_rho == pytest.approx(4 * budget.rho)
    assert record.remaining_rho == pytest.approx(Budget.from_epsilon_delta(1.0, 1e-6).rho - 4 * budget.rho)


def test_the_ledger_keeps_only_a_keyed_hash_of_the_content(tmp_path: Path, rows: pd.DataFrame) -> None:
    fingerprint = frame_source(rows).fingerprint()
    path = tmp_path / "hashes.sqlite"
    first, second = Ledger(path), Ledger(tmp_path / "other.sqlite")
    first.register("nass-100", content=fingerprint)
    second.register("nass-100", content=fingerprint)
    secret = _secret(first)
    assert len(secret) == 32 and secret != _secret(second)  # a random secret per ledger, made on first open
    assert Ledger(path).register("nass-100").name == "nass-100" and _secret(Ledger(path)) == secret
    expected = hmac.new(secret, fingerprint.encode(), hashlib.sha256).hexdigest()
    assert _contents_of(first) == {(expected, "nass-100")}
    assert _contents_of(second) != _contents_of(first)
    first.close()
    second.close()
    stored = path.read_bytes()
    assert (
        fingerprint.encode() not in stored and hashlib.sha256(fingerprint.encode()).hexdigest().encode() not in stored
    )


def test_data_registered_under_a_second_name_gets_a_hint_naming_the_first(
    ledger: Ledger, rows: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    fingerprint = frame_source(rows).fingerprint()
    caplog.set_level(logging.WARNING, logger="privsynth.privacy.ledger")
    ledger.register("nass-100", content=fingerprint)
    ledger.register("nass-100", content=fingerprint)
    assert caplog.records == []  # the same name again is no look-alike
    copy = ledger.register("nass-copy", content=fingerprint)
    (warning,) = caplog.records
    message = warning.getMessage()
    assert "this data looks like dataset 'nass-100' in the ledger" in message
    assert "pass --dataset nass-100 to spend from its budget" in message
    assert fingerprint not in message
    assert copy.spent_rho == 0.0 and len(ledger.datasets()) == 2  # a hint, not the key
    caplog.clear()
    ledger.register("nass-other", content=frame_source(rows.head(99)).fingerprint())
    assert caplog.records == []


def test_register_refuses_an_empty_name(ledger: Ledger) -> None:
    with pytest.raises(ParameterError, match="dataset name must be a non-empty string"):
        ledger.register("  ")


_OLD_SCHEMA = """
CREATE TABLE privsynth_datasets (
    fingerprint VARCHAR(256) NOT NULL, name VARCHAR(256) NOT NULL, cap_rho DOUBLE, cap_epsilon DOUBLE,
    cap_delta DOUBLE, created_at DATETIME NOT NULL, PRIMARY KEY (fingerprint)
);
CREATE TABLE privsynth_spends (
    id INTEGER NOT NULL, dataset VARCHAR(256) NOT NULL, rho DOUBLE NOT NULL, epsilon DOUBLE, delta DOUBLE,
    mechanism VARCHAR(256) NOT NULL, purpose TEXT NOT NULL, status VARCHAR(16) NOT NULL, reservation_id INTEGER,
    release_id VARCHAR(256), created_at DATETIME NOT NULL, approx_delta DOUBLE NOT NULL DEFAULT 0, PRIMARY KEY (id),
    FOREIGN KEY(dataset) REFERENCES privsynth_datasets (fingerprint),
    FOREIGN KEY(reservation_id) REFERENCES privsynth_spends (id)
);
"""


def _fingerprint_keyed_ledger(path: Path, fingerprint: str) -> None:
    """A ledger as privsynth wrote it when budgets were kept per fingerprint: nassCDS capped at (1, 1e-6), with
    one committed spend of rho 0.01."""
    cap = Budget.from_epsilon_delta(1.0, 1e-6)
    with sqlite3.connect(path) as connection:
        connection.executescript(_OLD_SCHEMA)
        connection.execute(
            "INSERT INTO privsynth_datasets VALUES (?, 'train.csv', ?, 1.0, 1e-6, '2026-01-02 03:04:05.000000')",
            (fingerprint, cap.rho),
        )
        connection.execute(
            "INSERT INTO privsynth_spends (dataset, rho, mechanism, purpose, status, created_at) "
            "VALUES (?, 0.01, 'gaussian', 'MST 1-way marginal', 'committed', '2026-01-02 03:04:06.000000')",
            (fingerprint,),
        )
    connection.close()


def test_a_fingerprint_keyed_ledger_keeps_working_and_its_dataset_can_be_named(
    tmp_path: Path, rows: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    fingerprint = frame_source(rows).fingerprint()
    path = tmp_path / "old.sqlite"
    _fingerprint_keyed_ledger(path, fingerprint)
    ledger = Ledger(path)
    (old,) = ledger.datasets()
    assert (old.name, old.label, old.spent_rho) == (fingerprint, "train.csv", 0.01)
    ledger.spend(fingerprint, 0.002, mechanism="gaussian", purpose="an older caller, still by fingerprint")
    caplog.set_level(logging.WARNING, logger="privsynth.privacy.ledger")
    ledger.register("nassCDS", content=fingerprint)
    (warning,) = caplog.records
    message = warning.getMessage()
    assert "registered by content fingerprint before budgets were kept by name" in message
    assert "'train.csv'" in message and "privsynth ledger rename train.csv NAME" in message
    assert fingerprint not in message and fingerprint[:12] not in message
    renamed = ledger.rename(fingerprint, "nassCDS-2026")
    assert (renamed.name, renamed.label, renamed.spent_rho) == ("nassCDS-2026", None, pytest.approx(0.012))
    assert renamed.cap == Budget.from_epsilon_delta(1.0, 1e-6)
    assert [entry.dataset for entry in ledger.entries()] == ["nassCDS-2026", "nassCDS-2026"]
    with pytest.raises(ParameterError, match="is not in the privacy ledger"):
        ledger.dataset(fingerprint)
    with pytest.raises(ParameterError, match="already in the ledger; choose another name"):
        ledger.rename("nassCDS", "nassCDS-2026")
    caplog.clear()
    ledger.register("nass-again", content=fingerprint)
    hints = sorted(record.getMessage().split(" in the ledger")[0] for record in caplog.records)
    assert hints == ["this data looks like dataset 'nassCDS'", "this data looks like dataset 'nassCDS-2026'"]
    ledger.close()
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(privsynth_spends)")}
    connection.close()
    assert {"min_order", "max_order"} <= columns


def test_a_fit_on_a_dataset_without_a_cap_warns_once_how_to_set_one(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="privsynth.privacy.accountant")
    budget = Budget.from_epsilon_delta(0.5, 1e-6)
    for _ in range(2):
        with open_fit(budget, ledger, "uncapped-survey", "MST fit") as (accountant, cap):
            assert cap is None
            accountant.spend(0.001, mechanism="gaussian", purpose="one marginal")
    (warning,) = caplog.records
    message = warning.getMessage()
    assert "dataset 'uncapped-survey' has no privacy cap" in message
    assert "privsynth ledger cap uncapped-survey --epsilon E [--delta D]" in message
    assert "Ledger.set_cap('uncapped-survey', epsilon, delta)" in message
    caplog.clear()
    ledger.register("capped-survey")
    ledger.set_cap("capped-survey", 2.0, 1e-6)
    with open_fit(budget, ledger, "capped-survey", "MST fit") as (accountant, cap):
        accountant.spend(0.001, mechanism="gaussian", purpose="one marginal")
    assert caplog.records == []


def test_an_older_caller_of_fit_accountant_keeps_its_key_and_label(ledger: Ledger) -> None:
    budget = Budget.from_epsilon_delta(0.5, 1e-6)
    with fit_accountant(budget, ledger, "3fa9c0", "train.csv", "MST fit") as (accountant, _):
        accountant.spend(0.001, mechanism="gaussian", purpose="one marginal")
    (record,) = ledger.datasets()
    assert (record.name, record.label, record.spent_rho) == ("3fa9c0", "train.csv", budget.rho)
    with pytest.raises(ParameterError, match="needs the purpose of the fit"), fit_accountant(budget, ledger, "3fa9c0"):
        pass


def test_open_fit_records_in_the_default_ledger_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEDGER_ENV_VAR, str(tmp_path / "default.sqlite"))
    budget = Budget.from_epsilon_delta(0.5, 1e-6)
    with open_fit(budget, None, "python-api", "MST fit") as (accountant, _):
        accountant.spend(0.001, mechanism="gaussian", purpose="one marginal")
    with open_fit(budget, False, "python-api", "MST fit") as (accountant, cap):
        assert accountant.ledger is None and cap is None
        accountant.spend(0.001, mechanism="gaussian", purpose="not recorded")
    default = Ledger(tmp_path / "default.sqlite")
    assert default.spent("python-api") == budget.rho
    assert [entry.purpose for entry in default.entries("python-api")] == ["MST fit", "one marginal"]
    default.close()


def test_ledger_cap_registers_a_new_name_and_show_lists_it_by_name(tmp_path: Path) -> None:
    path = str(tmp_path / "cli.sqlite")
    capped = run_cli("ledger", "cap", "clinic-visits", "--epsilon", "3", "--ledger", path)
    assert capped.returncode == 0, capped.stderr
    assert "capped clinic-visits at epsilon 3, delta 1e-06" in " ".join(capped.stdout.split())
    book = Ledger(path)
    assert book.dataset("clinic-visits").cap == Budget.from_epsilon_delta(3.0, 1e-6)
    book.spend("clinic-visits", 0.01, mechanism="gaussian", purpose="1-way marginal of 'visits'")
    book.close()
    listing = run_cli("ledger", "show", "--ledger", path)
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if "clinic-visits" in line]
    assert "(3, 1e-06)" in row
    detail = run_cli("ledger", "show", "clinic-visits", "--ledger", path)
    assert detail.returncode == 0 and "1-way marginal of 'visits'" in detail.stdout
    unknown = run_cli("ledger", "show", "clinic", "--ledger", path)
    assert unknown.returncode == 2  # a ParameterError, in one line
    assert "nothing has been spent on 'clinic' yet" in " ".join(unknown.stderr.split())


def test_ledger_rename_names_a_fingerprint_keyed_dataset_by_its_old_name(tmp_path: Path, rows: pd.DataFrame) -> None:
    fingerprint = frame_source(rows).fingerprint()
    path = tmp_path / "old.sqlite"
    _fingerprint_keyed_ledger(path, fingerprint)
    listing = run_cli("ledger", "show", "--ledger", str(path))
    assert listing.returncode == 0 and "train.csv (by fingerprint" in listing.stdout
    renamed = run_cli("ledger", "rename", "train.csv", "nassCDS", "--ledger", str(path))
    assert renamed.returncode == 0, renamed.stderr
    assert "dataset train.csv is now nassCDS: pass --dataset nassCDS" in " ".join(renamed.stdout.split())
    capped = run_cli("ledger", "cap", "nassCDS", "--epsilon", "2", "--ledger", str(path))
    assert capped.returncode == 0, capped.stderr
    ledger = Ledger(path)
    (record,) = ledger.datasets()
    assert (record.name, record.spent_rho, record.cap) == ("nassCDS", 0.01, Budget.from_epsilon_delta(2.0, 1e-6))
    ledger.close()
