"""The persistent ledger: caps, additive composition in rho, reservations, and no overspending under races."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy import Budget, Ledger
from privsynth.privacy.budget import epsilon_from_rho_delta
from privsynth.privacy.ledger import LEDGER_ENV_VAR

PROCESSES = 8
# The racers are never forked from the test process, which may have loaded JAX or torch for other tests (forking
# a multithreaded process can deadlock the child): they start from a fresh interpreter, the forkserver, which
# imports the ledger and this module once and forks each racer from there. Plain spawn imports them in every racer,
# about 10 s each on a busy 2-core machine (8 minutes for the race tests of this file and test_ledger_delta.py).
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
if START_METHOD == "forkserver":
    multiprocessing.get_context(START_METHOD).set_forkserver_preload(["privsynth.privacy.ledger", __name__])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register("adult")
    yield ledger
    ledger.close()


@pytest.fixture
def cap(ledger: Ledger) -> Budget:
    return ledger.set_cap("adult", 1.0, 1e-6)


def test_ledger_url_comes_from_argument_then_environment_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(LEDGER_ENV_VAR, raising=False)
    default = Ledger()
    assert default.url == f"sqlite:///{tmp_path / 'home' / '.privsynth' / 'ledger.sqlite'}"
    assert (tmp_path / "home" / ".privsynth" / "ledger.sqlite").is_file()
    monkeypatch.setenv(LEDGER_ENV_VAR, str(tmp_path / "env.sqlite"))
    assert Ledger().url == f"sqlite:///{tmp_path / 'env.sqlite'}"
    assert Ledger(f"sqlite:///{tmp_path / 'arg.sqlite'}").url == f"sqlite:///{tmp_path / 'arg.sqlite'}"
    default.close()


def test_ledger_persists_across_instances(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "ledger.sqlite")
    first.register("census")
    first.set_cap("census", 2.0, 1e-7)
    first.spend("census", 0.01, mechanism="gaussian", purpose="MST 1-way marginal (age)")
    first.close()
    second = Ledger(tmp_path / "ledger.sqlite")
    [record] = second.datasets()
    assert (record.name, record.spent_rho) == ("census", 0.01)
    assert record.cap == Budget.from_epsilon_delta(2.0, 1e-7)
    second.close()


def test_ledger_records_each_spend_with_its_epsilon_at_the_cap_delta(ledger: Ledger, cap: Budget) -> None:
    spend = ledger.spend(
        "adult", 0.005, mechanism="gaussian(sigma=10)", purpose="MST 2-way marginal measurement", release_id="r1"
    )
    [entry] = ledger.entries("adult")
    assert entry == spend
    assert (entry.rho, entry.delta, entry.status, entry.release_id) == (0.005, 1e-6, "committed", "r1")
    assert entry.epsilon == pytest.approx(epsilon_from_rho_delta(0.005, 1e-6))
    assert entry.epsilon == pytest.approx(0.42994, abs=1e-5)
    assert entry.purpose == "MST 2-way marginal measurement"
    assert entry.created_at.tzinfo is not None


def test_ledger_composes_spends_additively_in_rho(ledger: Ledger, cap: Budget) -> None:
    for rho in (0.004, 0.006, 0.002):
        ledger.spend("adult", rho, mechanism="gaussian", purpose="marginal")
    assert ledger.spent("adult") == pytest.approx(0.012)
    assert ledger.remaining("adult") == pytest.approx(cap.rho - 0.012)
    [record] = ledger.datasets()
    assert record.spent_epsilon == pytest.approx(epsilon_from_rho_delta(0.012, 1e-6))
    assert record.spent_epsilon == pytest.approx(0.68513, abs=1e-5)


def test_ledger_refuses_overspend_and_writes_nothing(ledger: Ledger, cap: Budget) -> None:
    ledger.spend("adult", 0.6 * cap.rho, mechanism="gaussian", purpose="first fit")
    with pytest.raises(BudgetExceeded) as refused:
        ledger.spend("adult", 0.5 * cap.rho, mechanism="gaussian", purpose="second fit")
    message = str(refused.value)
    assert "spent or reserved so far epsilon=0.7" in message
    assert "this request epsilon=0.6" in message
    assert "cap epsilon=1 at delta=1e-06" in message
    assert "Nothing was recorded or released" in message
    assert len(ledger.entries("adult")) == 1
    assert ledger.spent("adult") == pytest.approx(0.6 * cap.rho)


def test_ledger_accepts_a_cap_spent_in_tenths_exactly(ledger: Ledger, cap: Budget) -> None:
    for share in cap.split([0.1] * 10):
        ledger.spend("adult", share.rho, mechanism="gaussian", purpose="tenth")
    assert ledger.remaining("adult") == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(BudgetExceeded):
        ledger.spend("adult", cap.rho * 1e-6, mechanism="gaussian", purpose="one too many")


def test_ledger_accepts_naive_float_shares_of_its_cap(ledger: Ledger, cap: Budget) -> None:
    for _ in range(10):
        ledger.spend("adult", cap.rho * 0.1, mechanism="gaussian", purpose="tenth computed in floats")
    assert len(ledger.entries("adult")) == 10


def test_ledger_without_cap_records_every_spend(ledger: Ledger) -> None:
    ledger.spend("adult", 5.0, mechanism="gaussian", purpose="no cap set")
    assert ledger.spent("adult") == 5.0
    assert ledger.remaining("adult") == float("inf")
    assert ledger.entries()[0].epsilon is None


def test_ledger_refuses_unregistered_dataset(ledger: Ledger) -> None:
    with pytest.raises(ParameterError, match="not in the privacy ledger; register it"):
        ledger.spend("fp-unknown", 0.1, mechanism="gaussian", purpose="x")


@pytest.mark.parametrize("rho", [0.0, -0.1, float("nan"), float("inf")])
def test_ledger_refuses_invalid_rho(ledger: Ledger, rho: float) -> None:
    with pytest.raises(ParameterError, match="rho must be a finite number > 0"):
        ledger.spend("adult", rho, mechanism="gaussian", purpose="x")


def test_register_twice_keeps_the_cap(ledger: Ledger, cap: Budget) -> None:
    record = ledger.register("adult")
    assert (record.name, record.label, record.cap) == ("adult", None, cap)
    assert len(ledger.datasets()) == 1


def test_register_with_a_fingerprint_and_a_name_is_refused_with_the_new_call(ledger: Ledger) -> None:
    with pytest.raises(ParameterError, match=r"takes the dataset's name only .* Ledger.register\(name\)"):
        ledger.register("3fa9c0ffee", "adult")  # type: ignore[misc]
    assert [record.name for record in ledger.datasets()] == ["adult"]


def test_lowering_the_cap_below_spending_refuses_further_spends(ledger: Ledger, cap: Budget) -> None:
    ledger.spend("adult", 0.5 * cap.rho, mechanism="gaussian", purpose="x")
    ledger.set_cap("adult", 0.1, 1e-6)
    assert ledger.remaining("adult") == 0.0
    with pytest.raises(BudgetExceeded):
        ledger.spend("adult", 1e-6, mechanism="gaussian", purpose="y")


def test_reservation_counts_against_the_cap_until_cancelled(ledger: Ledger, cap: Budget) -> None:
    job = ledger.reserve("adult", 0.7 * cap.rho, purpose="service job 42")
    assert ledger.spent("adult") == 0.0
    assert ledger.remaining("adult") == pytest.approx(0.3 * cap.rho)
    with pytest.raises(BudgetExceeded, match="spent or reserved so far epsilon="):
        ledger.spend("adult", 0.5 * cap.rho, mechanism="gaussian", purpose="concurrent fit")
    ledger.cancel(job)
    assert ledger.remaining("adult") == pytest.approx(cap.rho)
    assert ledger.entries("adult")[0].status == "cancelled"
    ledger.spend("adult", 0.5 * cap.rho, mechanism="gaussian", purpose="after the cancellation")


def test_spends_under_a_reservation_draw_on_it_not_on_the_cap(ledger: Ledger, cap: Budget) -> None:
    job = ledger.reserve("adult", 0.5 * cap.rho, purpose="service job 7")
    for _ in range(5):
        ledger.spend("adult", 0.1 * cap.rho, mechanism="gaussian", purpose="measure", reservation=job)
    assert ledger.remaining("adult") == pytest.approx(0.5 * cap.rho)
    with pytest.raises(BudgetExceeded, match=f"under reservation {job}"):
        ledger.spend("adult", 0.01 * cap.rho, mechanism="gaussian", purpose="measure", reservation=job)
    with pytest.raises(ParameterError, match="Commit it instead"):
        ledger.cancel(job)
    ledger.commit(job, release_id="release-7")
    entries = ledger.entries("adult")
    assert entries[0].status == "committed"
    assert entries[0].release_id == "release-7"
    assert all(entry.reservation_id == job for entry in entries[1:])
    assert ledger.spent("adult") == pytest.approx(0.5 * cap.rho)
    with pytest.raises(ParameterError, match="not an open reservation"):
        ledger.spend("adult", 0.01 * cap.rho, mechanism="gaussian", purpose="late", reservation=job)


def test_reservation_is_refused_when_the_cap_cannot_hold_it(ledger: Ledger, cap: Budget) -> None:
    ledger.reserve("adult", 0.6 * cap.rho, purpose="job 1")
    with pytest.raises(BudgetExceeded):
        ledger.reserve("adult", 0.6 * cap.rho, purpose="job 2")
    with pytest.raises(ParameterError, match="does not exist"):
        ledger.commit(12345)


def test_settle_commits_a_reservation_noise_was_drawn_under_and_cancels_one_without(
    ledger: Ledger, cap: Budget
) -> None:
    idle = ledger.reserve("adult", 0.3 * cap.rho, purpose="job that never started")
    used = ledger.reserve("adult", 0.3 * cap.rho, purpose="job killed mid-fit")
    ledger.spend("adult", 0.1 * cap.rho, mechanism="gaussian", purpose="measure", reservation=used)
    assert ledger.settle(idle) == "cancelled"
    assert ledger.settle(used) == "committed"
    assert ledger.settle(used) is None  # exactly once: the second sweeper finds it closed
    assert ledger.settle(idle) is None
    assert ledger.spent("adult") == pytest.approx(0.3 * cap.rho)
    assert ledger.remaining("adult") == pytest.approx(0.7 * cap.rho)
    with pytest.raises(ParameterError, match="does not exist"):
        ledger.settle(999)


def test_a_reservation_in_the_callers_transaction_rolls_back_with_it(ledger: Ledger, cap: Budget) -> None:
    def reserve_then_fail() -> None:
        with ledger.begin() as connection:
            ledger.reserve("adult", 0.5 * cap.rho, purpose="job row failed to insert", connection=connection)
            raise RuntimeError("the caller's own insert failed")

    with pytest.raises(RuntimeError):
        reserve_then_fail()
    assert ledger.entries("adult") == []
    with ledger.begin() as connection:
        job = ledger.reserve("adult", 0.5 * cap.rho, purpose="job", connection=connection)
    with ledger.begin() as connection:
        ledger.commit(job, release_id="r1", connection=connection)
    (entry,) = ledger.entries("adult")
    assert (entry.status, entry.release_id) == ("committed", "r1")


def _spend_at_once(url: str, fingerprint: str, rho: float, reserve: bool, barrier: Any, results: Any) -> None:
    """One of several processes that try to spend on the same dataset at the same moment."""
    ledger = Ledger(url)
    barrier.wait()
    try:
        if reserve:
            ledger.reserve(fingerprint, rho, purpose="race")
        else:
            ledger.spend(fingerprint, rho, mechanism="gaussian", purpose="race")
        results.put("spent")
    except BudgetExceeded:
        results.put("refused")
    except Exception as error:  # reported to the test instead of hanging it
        results.put(repr(error))
    finally:
        ledger.close()


def _race(url: str, reserve: bool) -> tuple[list[str], Ledger, str, Budget]:
    """Eight processes each ask for 0.3 of the cap at once; returns who succeeded and the ledger."""
    ledger = Ledger(url)
    fingerprint = f"fp-race-{uuid.uuid4().hex}"
    ledger.register(fingerprint)
    cap = ledger.set_cap(fingerprint, 1.0, 1e-6)
    ledger.close()  # no pooled connection may cross the fork
    context = multiprocessing.get_context(START_METHOD)
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(target=_spend_at_once, args=(url, fingerprint, 0.3 * cap.rho, reserve, barrier, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return outcomes, ledger, fingerprint, cap


@pytest.mark.parametrize("reserve", [False, True], ids=["spend", "reserve"])
def test_concurrent_processes_cannot_pass_the_cap_on_sqlite(tmp_path: Path, reserve: bool) -> None:
    outcomes, ledger, fingerprint, cap = _race(f"sqlite:///{tmp_path / 'ledger.sqlite'}", reserve)
    assert sorted(outcomes) == ["refused"] * (PROCESSES - 3) + ["spent"] * 3
    assert len(ledger.entries(fingerprint)) == 3
    used = ledger.spent(fingerprint) + ledger.dataset(fingerprint).reserved_rho
    assert used == pytest.approx(0.9 * cap.rho)
    assert used <= cap.rho
    ledger.close()


def test_concurrent_processes_cannot_pass_the_cap_on_postgresql(postgres_url: str) -> None:
    outcomes, ledger, fingerprint, cap = _race(postgres_url, reserve=False)
    assert sorted(outcomes) == ["refused"] * (PROCESSES - 3) + ["spent"] * 3
    assert len(ledger.entries(fingerprint)) == 3
    assert ledger.spent(fingerprint) == pytest.approx(0.9 * cap.rho)
    ledger.close()


def _parent(results: Any) -> None:
    results.put(os.getppid())


def test_racers_never_start_from_the_test_process() -> None:
    """The racers' parent is the forkserver, not this process (whose JAX and torch threads a fork would copy in a
    state that can deadlock the child). The forkserver is one per process and the first user's preload wins: when
    the service's job tests started it first, it has imported privsynth (and so JAX) too, without computing."""
    pytest.importorskip("jax")  # the test process now holds JAX's threads
    context = multiprocessing.get_context(START_METHOD)
    results = context.Queue()
    racer = context.Process(target=_parent, args=(results,))
    racer.start()
    assert results.get(timeout=120) != os.getpid()
    racer.join(timeout=60)
    assert racer.exitcode == 0
