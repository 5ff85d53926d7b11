"""`privsynth ledger show|cap`: what has been spent on each dataset, and the cap that bounds it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from privsynth.cli._app import app, console, open_data
from privsynth.errors import ParameterError
from privsynth.privacy.budget import epsilon_from_rho_delta
from privsynth.privacy.ledger import DatasetRecord, Ledger

ledger_app = typer.Typer(help="The privacy ledger: spends per dataset and their caps.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

LedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="Ledger database (SQLAlchemy URL or SQLite path; default $PRIVSYNTH_LEDGER)."),
]
DatasetArg = Annotated[
    str, typer.Argument(help="A data file, URL or bundled name; or a fingerprint (prefix) or name in the ledger.")
]


def _find(ledger: Ledger, dataset: str, register: bool) -> DatasetRecord:
    """The ledger's record for DATASET, matched by fingerprint prefix or name, else by opening it as data."""
    records = ledger.datasets()
    matches = [r for r in records if r.fingerprint.startswith(dataset) or r.name == dataset]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(f"{r.name} ({r.fingerprint[:12]})" for r in matches)
        raise ParameterError(f"'{dataset}' matches {len(matches)} datasets in the ledger: {shown}; give more of it")
    source = open_data(dataset)
    fingerprint = source.fingerprint()
    known = [r for r in records if r.fingerprint == fingerprint]
    if known:
        return known[0]
    if not register:
        raise ParameterError(f"nothing has been spent on '{dataset}' yet (fingerprint {fingerprint[:12]})")
    return ledger.register(fingerprint, source.name)


def _remaining_epsilon(record: DatasetRecord) -> str:
    """The remaining rho as epsilon at the delta that committed and reserved approximate deltas leave."""
    if record.cap is None:
        return "unbounded"
    left = record.cap.delta - record.spent_approx_delta - record.reserved_approx_delta
    if left <= 0 or record.remaining_rho <= 0:
        return "0"
    return f"{epsilon_from_rho_delta(record.remaining_rho, left):.4g}"


def _spent_epsilon(record: DatasetRecord) -> str:
    spent = record.spent_epsilon
    return "-" if spent is None else f"{spent:.4g}"


@ledger_app.command("show")
def show(
    dataset: Annotated[str | None, typer.Argument(help="One dataset to list every spend of.")] = None,
    ledger: LedgerOpt = None,
) -> None:
    """List the datasets in the ledger with cap, spent and remaining budget; or every spend on one dataset."""
    book = Ledger(ledger)
    if dataset is None:
        table = Table(
            "dataset",
            "fingerprint",
            "cap (epsilon, delta)",
            "spent epsilon",
            "remaining epsilon",
            "rho",
            "approx delta",
        )
        for record in book.datasets():
            cap = f"({record.cap.epsilon:g}, {record.cap.delta:g})" if record.cap is not None else "no cap"
            table.add_row(
                record.name,
                record.fingerprint[:12],
                cap,
                _spent_epsilon(record),
                _remaining_epsilon(record),
                f"{record.spent_rho:.4g}",
                f"{record.spent_approx_delta:.4g}",
            )
        console.print(table)
        console.print(f"ledger: {book!r}")
        return
    record = _find(book, dataset, register=False)
    table = Table("#", "when (UTC)", "mechanism", "purpose", "rho", "epsilon", "approx delta", "status", "release")
    for spend in book.entries(record.fingerprint):
        table.add_row(
            str(spend.id),
            spend.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            spend.mechanism,
            spend.purpose,
            f"{spend.rho:.4g}",
            f"{spend.epsilon:.4g}" if spend.epsilon is not None else "-",
            f"{spend.approx_delta:.4g}",
            spend.status,
            spend.release_id or "",
        )
    console.print(table)
    cap = f"cap ({record.cap.epsilon:g}, {record.cap.delta:g}), " if record.cap is not None else "no cap, "
    console.print(
        f"{record.name} ({record.fingerprint[:12]}): {cap}spent rho {record.spent_rho:.4g}, "
        f"approximate delta {record.spent_approx_delta:.4g}, epsilon {_spent_epsilon(record)}"
    )


@ledger_app.command("cap")
def cap(
    dataset: DatasetArg,
    epsilon: Annotated[float, typer.Option(help="Total epsilon allowed on this dataset, over all releases.")],
    delta: Annotated[float, typer.Option(help="The delta the cap is stated at.")] = 1e-6,
    ledger: LedgerOpt = None,
) -> None:
    """Cap the total privacy cost that may ever be spent on DATASET."""
    book = Ledger(ledger)
    record = _find(book, dataset, register=True)
    budget = book.set_cap(record.fingerprint, epsilon, delta)
    updated = book.dataset(record.fingerprint)
    console.print(
        f"capped {updated.name} ({updated.fingerprint[:12]}) at epsilon {budget.epsilon:g}, delta {budget.delta:g} "
        f"(rho {budget.rho:.4g}); spent so far: rho {updated.spent_rho:.4g}, approximate delta "
        f"{updated.spent_approx_delta:.4g}, remaining rho {updated.remaining_rho:.4g}"
    )
