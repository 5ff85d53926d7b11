"""`privsynth ledger show|cap|rename`: what has been spent on each dataset, by the name its budget is kept
under, and the cap that bounds it."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.table import Table

from privsynth.cli._app import app, console
from privsynth.errors import ParameterError
from privsynth.privacy.budget import epsilon_from_rho_delta
from privsynth.privacy.ledger import DatasetRecord, Ledger

ledger_app = typer.Typer(help="The privacy ledger: spends per dataset and their caps.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

LedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="Ledger database (SQLAlchemy URL or SQLite path; default $PRIVSYNTH_LEDGER)."),
]
DatasetArg = Annotated[str, typer.Argument(help="The dataset's name in the ledger (the --dataset NAME of its fits).")]


def _find(ledger: Ledger, dataset: str) -> DatasetRecord | None:
    """The ledger's record for DATASET by name; a dataset an older privsynth keyed by fingerprint is also found
    by the name it was registered with or by a prefix of its fingerprint."""
    records = ledger.datasets()
    for record in records:
        if record.name == dataset:
            return record
    older = [r for r in records if r.label is not None and (r.label == dataset or r.name.startswith(dataset))]
    if len(older) > 1:
        shown = ", ".join(f"{r.label} ({r.name[:12]})" for r in older)
        raise ParameterError(
            f"'{dataset}' matches {len(older)} datasets registered by fingerprint: {shown}; give more of the "
            "fingerprint, or name each with `privsynth ledger rename`"
        )
    return older[0] if older else None


def _shown(record: DatasetRecord) -> str:
    """How a dataset is named in tables: its name, or for one keyed by fingerprint its old name and key."""
    if record.label is None:
        return record.name
    return f"{record.label} (by fingerprint {record.name[:12]}; name it with `privsynth ledger rename`)"


def _orders(low: float | None, high: float | None) -> str:
    if (low is None or low <= 1) and (high is None or math.isinf(high)):
        return "all"
    return f"{low or 1:.4g}..{high if high is not None else math.inf:.4g}"


def _remaining_epsilon(record: DatasetRecord) -> str:
    """The remaining rho as epsilon at the delta that committed and reserved approximate deltas leave."""
    if record.cap is None:
        return "unbounded"
    left = record.cap.delta - record.spent_approx_delta - record.reserved_approx_delta
    if left <= 0 or record.remaining_rho <= 0:
        return "0"
    return f"{epsilon_from_rho_delta(record.remaining_rho, left):.4g}"


def _spent_epsilon(record: DatasetRecord, notes: list[str]) -> str:
    """Spent epsilon at the cap's delta; marked, with the reason added to ``notes``, when a spend's Rényi orders
    kept the conversion from its best order."""
    spent = record.spent_epsilon
    if spent is None:
        return "-"
    note = record.conversion_note
    if note is None:
        return f"{spent:.4g}"
    notes.append(note)
    return f"{spent:.4g} (*)"


@ledger_app.command("show")
def show(
    dataset: Annotated[str | None, typer.Argument(help="One dataset (by name) to list every spend of.")] = None,
    ledger: LedgerOpt = None,
) -> None:
    """List the datasets in the ledger with cap, spent and remaining budget; or every spend on one dataset."""
    book = Ledger(ledger)
    notes: list[str] = []
    if dataset is None:
        table = Table(
            "dataset", "cap (epsilon, delta)", "spent epsilon", "remaining epsilon", "rho", "approx delta", "orders"
        )
        for record in book.datasets():
            cap = f"({record.cap.epsilon:g}, {record.cap.delta:g})" if record.cap is not None else "no cap"
            table.add_row(
                _shown(record),
                cap,
                _spent_epsilon(record, notes),
                _remaining_epsilon(record),
                f"{record.spent_rho:.4g}",
                f"{record.spent_approx_delta:.4g}",
                _orders(record.min_order, record.max_order),
            )
        console.print(table)
        for note in notes:
            console.print(f"(*) {note}")
        console.print(f"ledger: {book!r}")
        return
    found = _find(book, dataset)
    if found is None:
        raise ParameterError(
            f"nothing has been spent on '{dataset}' yet: no dataset of that name is in the ledger "
            "(`privsynth ledger show` lists them)"
        )
    table = Table(
        "#", "when (UTC)", "mechanism", "purpose", "rho", "epsilon", "approx delta", "orders", "status", "release"
    )
    for spend in book.entries(found.name):
        table.add_row(
            str(spend.id),
            spend.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            spend.mechanism,
            spend.purpose,
            f"{spend.rho:.4g}",
            f"{spend.epsilon:.4g}" if spend.epsilon is not None else "-",
            f"{spend.approx_delta:.4g}",
            _orders(spend.min_order, spend.max_order),
            spend.status,
            spend.release_id or "",
        )
    console.print(table)
    cap = f"cap ({found.cap.epsilon:g}, {found.cap.delta:g}), " if found.cap is not None else "no cap, "
    console.print(
        f"{_shown(found)}: {cap}spent rho {found.spent_rho:.4g}, "
        f"approximate delta {found.spent_approx_delta:.4g}, epsilon {_spent_epsilon(found, notes)}"
    )
    for note in notes:
        console.print(f"(*) {note}")


@ledger_app.command("cap")
def cap(
    dataset: DatasetArg,
    epsilon: Annotated[float, typer.Option(help="Total epsilon allowed on this dataset, over all releases.")],
    delta: Annotated[float, typer.Option(help="The delta the cap is stated at.")] = 1e-6,
    ledger: LedgerOpt = None,
) -> None:
    """Cap the total privacy cost that may ever be spent on DATASET (registering the name if it is new)."""
    book = Ledger(ledger)
    found = _find(book, dataset)
    name = found.name if found is not None else book.register(dataset).name
    budget = book.set_cap(name, epsilon, delta)
    updated = book.dataset(name)
    console.print(
        f"capped {_shown(updated)} at epsilon {budget.epsilon:g}, delta {budget.delta:g} "
        f"(rho {budget.rho:.4g}); spent so far: rho {updated.spent_rho:.4g}, approximate delta "
        f"{updated.spent_approx_delta:.4g}, remaining rho {updated.remaining_rho:.4g}"
    )


@ledger_app.command("rename")
def rename(
    dataset: DatasetArg,
    new: Annotated[str, typer.Argument(help="The name to keep its budget under from now on.")],
    ledger: LedgerOpt = None,
) -> None:
    """Keep DATASET's budget (cap and spends) under the name NEW: how a dataset that an older privsynth
    registered by fingerprint gets a name to pass as --dataset."""
    book = Ledger(ledger)
    found = _find(book, dataset)
    if found is None:
        raise ParameterError(f"no dataset named '{dataset}' is in the ledger (`privsynth ledger show` lists them)")
    record = book.rename(found.name, new)
    console.print(f"dataset {found.label or found.name} is now {record.name}: pass --dataset {record.name}")
