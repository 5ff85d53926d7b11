"""The ledger accounts for the delta of approximately zCDP mechanisms across runs (Bun and Steinke 2016, Section 8):
approximate deltas add up, the cap's epsilon is converted at the delta they leave, reservations hold both, old
ledger files gain the column, and racing processes cannot pass the cap on delta either."""

from __future__ import annotations

import multiprocessing
import sqlite3
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import optimize
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cli_support import run_cli
from privsynth.errors import BudgetExceeded
from privsynth.privacy import Accountant, Budget, Ledger, epsilon_from_rho_delta, rho_from_epsilon_delta
from privsynth.privacy.accountant import fit_accountant
from privsynth.privacy.budget import split_exactly

PROCESSES = 8
# As in test_ledger.py: racers start from a fresh interpreter (the forkserver), never forked from this process.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
if START_METHOD == "forkserver":
    multiprocessing.get_context(START_METHOD).set_forkserver_preload(["privsynth.privacy.ledger", __name__])
CAP_RHO = rho_from_epsilon_delta(1.0, 1e-6)  # 0.024356: the cap (1, 1e-6) with no approximate delta spent


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register("fp-covid")
    ledger.set_cap("fp-covid", 1.0, 1e-6)
    yield ledger
    ledger.close()


def _cks_delta(rho: float, epsilon: float) -> float:
    """The delta that rho-zCDP gives at epsilon (Canonne, Kamath and Steinke 2020, Corollary 13), minimised over
    the Rényi order by scipy: an independent check of the bisection in privsynth.privacy.budget."""

    def log_bound(alpha: float) -> float:
        return float((alpha - 1) * (alpha * rho - epsilon) + alpha * np.log1p(-1 / alpha) - np.log(alpha - 1))

    best = optimize.minimize_scalar(log_bound, bounds=(1.01, 1000.0), method="bounded", options={"xatol": 1e-12})
    return float(np.exp(best.fun))


def test_many_small_approximate_spends_are_refused_on_delta_with_rho_to_spare(ledger: Ledger) -> None:
    for _ in range(9):
        ledger.spend("fp-covid", 1e-4, delta=1e-7, mechanism="gaussian_threshold", purpose="domain of 'result'")
    with pytest.raises(BudgetExceeded) as refused:
        ledger.spend("fp-covid", 1e-4, delta=1e-7, mechanism="gaussian_threshold", purpose="tenth discovery")
    message = str(refused.value)
    assert "together rho=0.001 and approximate delta=1e-06" in message
    assert "The delta side binds" in message and "not below the cap's delta=1e-06" in message
    assert "Nothing was recorded or released" in message
    record = ledger.dataset("fp-covid")
    assert len(ledger.entries("fp-covid")) == 9
    assert record.spent_approx_delta == pytest.approx(9e-7, rel=1e-12)
    # Rho is far from exhausted: 9e-4 spent of the 0.02019 that epsilon=1 buys at the delta left (1e-7).
    assert record.remaining_rho == pytest.approx(rho_from_epsilon_delta(1.0, 1e-7) - 9e-4, rel=1e-9)
    assert record.remaining_rho == pytest.approx(0.019287, abs=1e-6)
    assert record.spent_epsilon == pytest.approx(epsilon_from_rho_delta(9e-4, 1e-7), rel=1e-12)
    # Spends without a delta of their own still fit, at the delta the approximate ones left.
    ledger.spend("fp-covid", 0.019, mechanism="gaussian", purpose="pure zCDP marginal")
    with pytest.raises(BudgetExceeded, match="The approximate deltas leave delta=1e-07"):
        ledger.spend("fp-covid", 0.001, mechanism="gaussian", purpose="over the reduced rho")


def test_refusal_numbers_checked_by_hand(ledger: Ledger) -> None:
    """Cap (1, 1e-6); rho 0.0215 spent without delta; a discovery asks rho 0.0005 and delta 8e-7.

    Together R = 0.022 and D = 8e-7. Without the delta, 0.022 < 0.024356 would fit. With it, rho is converted at
    1e-6 - 8e-7 = 2e-7, where epsilon=1 buys only rho = 0.021290: refused, and the delta side binds.
    """
    ledger.spend("fp-covid", 0.0215, mechanism="gaussian", purpose="marginals")
    with pytest.raises(BudgetExceeded) as refused:
        ledger.spend("fp-covid", 0.0005, delta=8e-7, mechanism="gaussian_threshold", purpose="domain of 'result'")
    message = str(refused.value)
    allowed = rho_from_epsilon_delta(1.0, 2e-7)
    assert allowed == pytest.approx(0.0212895, abs=1e-7)
    assert _cks_delta(allowed, 1.0) == pytest.approx(2e-7, rel=1e-6)
    assert _cks_delta(0.022, 1.0) == pytest.approx(3.017e-7, rel=1e-3)  # 0.022-zCDP is not (1, 2e-7)-DP
    assert _cks_delta(0.022, 1.0) <= 1e-6  # but it is (1, 1e-6)-DP: only the approximate delta makes it fail
    assert "spent or reserved so far rho=0.0215 and approximate delta=0" in message
    assert "this request rho=0.0005 and approximate delta=8e-07" in message
    assert "together rho=0.022 and approximate delta=8e-07" in message
    assert "leave delta=2e-07 of the cap's to convert rho at, where epsilon=1 buys rho=0.02129" in message
    assert f"epsilon={epsilon_from_rho_delta(0.022, 2e-7):.4g} at delta=1e-06" in message
    assert "together this is epsilon=1.018 at delta=1e-06" in message
    assert "The delta side binds: without approximate deltas the cap would allow rho=0.02436" in message
    assert len(ledger.entries("fp-covid")) == 1
    # The same rho with a delta that leaves enough fits: at 1e-6 - 4e-7, epsilon=1 buys rho 0.022514.
    ledger.spend("fp-covid", 0.0005, delta=4e-7, mechanism="gaussian_threshold", purpose="domain of 'result'")


def test_reservation_holds_rho_and_delta(ledger: Ledger) -> None:
    job = ledger.reserve("fp-covid", 0.01, delta=2e-7, purpose="MST fit with key discovery")
    record = ledger.dataset("fp-covid")
    assert (record.reserved_rho, record.reserved_approx_delta) == (0.01, 2e-7)
    assert record.remaining_rho == pytest.approx(rho_from_epsilon_delta(1.0, 8e-7) - 0.01, rel=1e-9)
    for column in ("result", "gender"):
        ledger.spend("fp-covid", 0.001, delta=1e-7, mechanism="gaussian_threshold", purpose=column, reservation=job)
    with pytest.raises(BudgetExceeded, match=r"delta=2e-07 of the approximate delta=2e-07 reserved"):
        ledger.spend("fp-covid", 0.001, delta=1e-9, mechanism="gaussian_threshold", purpose="x", reservation=job)
    ledger.spend("fp-covid", 0.005, mechanism="gaussian", purpose="marginal", reservation=job)
    # Outside the reservation the cap sees 2e-7 held: 8e-7 more would use the whole delta.
    with pytest.raises(BudgetExceeded, match="The delta side binds"):
        ledger.reserve("fp-covid", 0.001, delta=8e-7, purpose="second job")
    ledger.commit(job)
    record = ledger.dataset("fp-covid")
    assert (record.spent_rho, record.spent_approx_delta, record.reserved_approx_delta) == (0.01, 2e-7, 0.0)
    assert record.spent_epsilon == pytest.approx(epsilon_from_rho_delta(0.01, 8e-7), rel=1e-12)
    assert record.spent_epsilon == pytest.approx(0.62860, abs=1e-5)
    assert [entry.approx_delta for entry in ledger.entries("fp-covid")] == [2e-7, 1e-7, 1e-7, 0.0]


def test_reservation_without_delta_refuses_an_approximate_spend(ledger: Ledger) -> None:
    job = ledger.reserve("fp-covid", 0.01, purpose="fit reserved in rho only")
    with pytest.raises(BudgetExceeded, match=r"reserve the delta .* Ledger.reserve\(..., delta=budget.approx_delta\)"):
        ledger.spend("fp-covid", 0.001, delta=1e-8, mechanism="gaussian_threshold", purpose="x", reservation=job)
    assert len(ledger.entries("fp-covid")) == 1


def test_fit_accountant_reserves_the_budget_delta_and_a_run_at_the_cap_fits(ledger: Ledger) -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7)
    with fit_accountant(budget, ledger, "fp-covid", "covid_testing", "MST fit") as (accountant, cap):
        assert cap == Budget.from_epsilon_delta(1.0, 1e-6)
        [reservation] = ledger.entries("fp-covid")
        assert (reservation.rho, reservation.approx_delta, reservation.status) == (budget.rho, 1e-7, "reserved")
        thirds = split_exactly(budget.rho, [Fraction(1, 3)] * 3)
        deltas = split_exactly(budget.approx_delta, [Fraction(1, 3)] * 3)
        for rho, delta in zip(thirds, deltas, strict=True):
            accountant.spend(rho, delta=delta, mechanism="gaussian_threshold", purpose="a third")
    record = ledger.dataset("fp-covid")
    assert [entry.approx_delta for entry in ledger.entries("fp-covid")[1:]] == deltas
    assert record.spent_approx_delta == 1e-7
    assert record.spent_epsilon == pytest.approx(1.0, rel=1e-9)
    assert record.remaining_rho == 0.0
    with pytest.raises(BudgetExceeded):
        ledger.reserve("fp-covid", 1e-9, purpose="anything more")


def test_accountant_without_reservation_records_its_delta_in_the_ledger(ledger: Ledger) -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=5e-7)
    accountant = Accountant(budget, ledger=ledger, dataset="fp-covid")
    accountant.spend(0.002, delta=5e-7, mechanism="gaussian_threshold", purpose="domain of 'result'")
    [entry] = ledger.entries("fp-covid")
    assert (entry.rho, entry.approx_delta, entry.reservation_id) == (0.002, 5e-7, None)
    other = Accountant(budget, ledger=ledger, dataset="fp-covid")  # a second run on the same dataset
    with pytest.raises(BudgetExceeded, match="The delta side binds"):
        other.spend(0.002, delta=5e-7, mechanism="gaussian_threshold", purpose="domain of 'result'")
    assert other.charges == () and len(ledger.entries("fp-covid")) == 1


_OLD_SQLITE_SCHEMA = """
CREATE TABLE privsynth_datasets (
    fingerprint VARCHAR(256) NOT NULL, name VARCHAR(256) NOT NULL, cap_rho DOUBLE, cap_epsilon DOUBLE,
    cap_delta DOUBLE, created_at DATETIME NOT NULL, PRIMARY KEY (fingerprint)
);
CREATE TABLE privsynth_spends (
    id INTEGER NOT NULL, dataset VARCHAR(256) NOT NULL, rho DOUBLE NOT NULL, epsilon DOUBLE, delta DOUBLE,
    mechanism VARCHAR(256) NOT NULL, purpose TEXT NOT NULL, status VARCHAR(16) NOT NULL, reservation_id INTEGER,
    release_id VARCHAR(256), created_at DATETIME NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(dataset) REFERENCES privsynth_datasets (fingerprint),
    FOREIGN KEY(reservation_id) REFERENCES privsynth_spends (id)
);
CREATE INDEX ix_privsynth_spends_reservation_id ON privsynth_spends (reservation_id);
CREATE INDEX ix_privsynth_spends_dataset ON privsynth_spends (dataset);
"""


def _old_sqlite_ledger(path: Path) -> None:
    """A ledger file as privsynth wrote it before approximate deltas were recorded: one capped dataset, one
    committed spend of rho 0.01."""
    with sqlite3.connect(path) as connection:
        connection.executescript(_OLD_SQLITE_SCHEMA)
        connection.execute(
            "INSERT INTO privsynth_datasets VALUES ('fp-old', 'nassCDS', ?, 1.0, 1e-6, '2026-01-02 03:04:05.000000')",
            (CAP_RHO,),
        )
        connection.execute(
            "INSERT INTO privsynth_spends (dataset, rho, epsilon, delta, mechanism, purpose, status, created_at) "
            "VALUES ('fp-old', 0.01, ?, 1e-6, 'gaussian', 'MST 1-way marginal', 'committed', "
            "'2026-01-02 03:04:06.000000')",
            (epsilon_from_rho_delta(0.01, 1e-6),),
        )
    connection.close()


def _check_migrated(url: str) -> None:
    ledger = Ledger(url)
    [entry] = ledger.entries("fp-old")
    assert (entry.rho, entry.approx_delta, entry.mechanism) == (0.01, 0.0, "gaussian")
    ledger.spend("fp-old", 0.001, delta=5e-7, mechanism="gaussian_threshold", purpose="domain of 'airbag'")
    record = ledger.dataset("fp-old")
    assert (record.spent_rho, record.spent_approx_delta) == (pytest.approx(0.011), 5e-7)
    assert record.remaining_rho == pytest.approx(rho_from_epsilon_delta(1.0, 5e-7) - 0.011, rel=1e-9)
    ledger.close()
    again = Ledger(url)  # opening a migrated ledger changes nothing
    assert [entry.approx_delta for entry in again.entries("fp-old")] == [0.0, 5e-7]
    again.close()


def test_ledger_file_from_the_old_schema_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _old_sqlite_ledger(path)
    _check_migrated(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        columns = {row[1]: row for row in connection.execute("PRAGMA table_info(privsynth_spends)")}
    connection.close()
    _, _, kind, not_null, default, _ = columns["approx_delta"]
    assert (kind, not_null, default) == ("DOUBLE", 1, "0")


def _open_at_once(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        Ledger(url).close()
        results.put("opened")
    except Exception as error:  # reported to the test instead of hanging it
        results.put(repr(error))


def test_processes_opening_an_old_ledger_at_once_add_the_column_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _old_sqlite_ledger(path)
    context = multiprocessing.get_context(START_METHOD)
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_open_at_once, args=(f"sqlite:///{path}", barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    assert [results.get(timeout=120) for _ in workers] == ["opened"] * 4
    for worker in workers:
        worker.join(timeout=60)
    _check_migrated(f"sqlite:///{path}")


def test_postgresql_ledger_from_the_old_schema_gains_the_column(postgres_url: str) -> None:
    database = f"ledger_old_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    admin.dispose()
    url = make_url(postgres_url).set(database=database).render_as_string(hide_password=False)
    old = create_engine(url)
    with old.begin() as connection:
        for statement in _OLD_SQLITE_SCHEMA.replace("DOUBLE", "DOUBLE PRECISION").split(";"):
            sql = statement.replace("id INTEGER NOT NULL,", "id SERIAL NOT NULL,").replace("DATETIME", "TIMESTAMPTZ")
            if sql.strip():
                connection.execute(text(sql))
        connection.execute(
            text("INSERT INTO privsynth_datasets VALUES ('fp-old', 'nassCDS', :rho, 1.0, 1e-6, now())"),
            {"rho": CAP_RHO},
        )
        connection.execute(
            text(
                "INSERT INTO privsynth_spends (dataset, rho, epsilon, delta, mechanism, purpose, status, created_at) "
                "VALUES ('fp-old', 0.01, 0.56, 1e-6, 'gaussian', 'MST 1-way marginal', 'committed', now())"
            )
        )
    old.dispose()
    _check_migrated(url)


def _reserve_at_once(url: str, fingerprint: str, barrier: Any, results: Any) -> None:
    """One of several processes that reserve a little rho and much approximate delta at the same moment."""
    ledger = Ledger(url)
    barrier.wait()
    try:
        ledger.reserve(fingerprint, 0.001, delta=3e-7, purpose="race on delta")
        results.put("reserved")
    except BudgetExceeded:
        results.put("refused")
    except Exception as error:  # reported to the test instead of hanging it
        results.put(repr(error))
    finally:
        ledger.close()


def _race_on_delta(url: str) -> tuple[list[str], Ledger, str]:
    """Eight processes each reserve delta 3e-7 of the cap's 1e-6 at once: three fit, on delta, not on rho."""
    ledger = Ledger(url)
    fingerprint = f"fp-race-{uuid.uuid4().hex}"
    ledger.register(fingerprint)
    ledger.set_cap(fingerprint, 1.0, 1e-6)
    ledger.close()  # no pooled connection may cross the fork
    context = multiprocessing.get_context(START_METHOD)
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(target=_reserve_at_once, args=(url, fingerprint, barrier, results)) for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return outcomes, ledger, fingerprint


def test_concurrent_reservations_cannot_pass_the_cap_on_delta_on_sqlite(tmp_path: Path) -> None:
    outcomes, ledger, fingerprint = _race_on_delta(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    assert sorted(outcomes) == ["refused"] * (PROCESSES - 3) + ["reserved"] * 3
    record = ledger.dataset(fingerprint)
    assert record.reserved_approx_delta == pytest.approx(9e-7, rel=1e-12)
    assert record.reserved_rho == pytest.approx(0.003)  # rho was never the limit
    ledger.close()


def test_concurrent_reservations_cannot_pass_the_cap_on_delta_on_postgresql(postgres_url: str) -> None:
    outcomes, ledger, fingerprint = _race_on_delta(postgres_url)
    assert sorted(outcomes) == ["refused"] * (PROCESSES - 3) + ["reserved"] * 3
    assert ledger.dataset(fingerprint).reserved_approx_delta == pytest.approx(9e-7, rel=1e-12)
    ledger.close()


def test_ledger_show_reports_the_approximate_delta_spent(tmp_path: Path) -> None:
    path = tmp_path / "cli.sqlite"
    ledger = Ledger(path)
    ledger.register("covid_testing")
    ledger.set_cap("covid_testing", 1.0, 1e-6)
    ledger.spend("covid_testing", 0.01, delta=2e-7, mechanism="gaussian_threshold", purpose="domain of 'result'")
    ledger.close()
    listing = run_cli("ledger", "show", "--ledger", str(path))
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if "covid_testing" in line]
    cells = [cell.strip() for cell in row.split("│")]
    # epsilons at the delta the approximate spend leaves, 1e-6 - 2e-7; then rho and approximate delta spent
    remaining = epsilon_from_rho_delta(rho_from_epsilon_delta(1.0, 8e-7) - 0.01, 8e-7)
    assert cells[3:7] == [f"{epsilon_from_rho_delta(0.01, 8e-7):.4g}", f"{remaining:.4g}", "0.01", "2e-07"]
    assert cells[3] == "0.6286"


def test_mst_with_learned_categories_reserves_and_records_their_delta(tmp_path: Path) -> None:
    """DP key discovery spends delta inside a fit's reservation: the reservation must hold it (a regression)."""
    pytest.importorskip("mbi")
    from privsynth import load_dataset
    from privsynth.data.schema import Schema
    from privsynth.synth import create

    covid = load_dataset("covid_testing")[["result", "gender", "demo_group"]]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    model = create("mst").fit(covid, Schema.infer(covid), epsilon=1.0, delta=1e-6, ledger=ledger)
    (record,) = ledger.datasets()
    spent_delta = sum(c["delta"] for c in model.spends_)
    assert spent_delta > 0
    assert record.spent_approx_delta >= spent_delta
    assert record.spent_rho == pytest.approx(sum(c["rho"] for c in model.spends_), rel=1e-9)
