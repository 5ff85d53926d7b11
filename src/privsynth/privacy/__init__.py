"""Privacy accounting for privsynth: budgets in zCDP, the persistent ledger, and the accountant.

The noise mechanisms live in :mod:`privsynth.privacy.mechanisms` and are not re-exported here, because they
need OpenDP (the ``dp`` extra) while the ledger and the accounting do not.
"""

from privsynth.privacy.accountant import Accountant, Charge
from privsynth.privacy.budget import (
    Budget,
    check_delta,
    epsilon_from_rho_delta,
    gaussian_rho,
    gaussian_sigma,
    rho_from_epsilon_delta,
)
from privsynth.privacy.ledger import DatasetRecord, Ledger, Spend

__all__ = [
    "Accountant",
    "Budget",
    "Charge",
    "DatasetRecord",
    "Ledger",
    "Spend",
    "check_delta",
    "epsilon_from_rho_delta",
    "gaussian_rho",
    "gaussian_sigma",
    "rho_from_epsilon_delta",
]
