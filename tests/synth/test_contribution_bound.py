"""Person-level DP in the marginal family: with ``contribution_bound=k`` every mechanism is calibrated to k rows.

The noise of a measurement is k times the row-level noise at the same rho (sampled, not only claimed), the
selections' and key discovery's scales grow with k, the ledger, the fit record and the card name the unit and k,
a spend calibrated to one record is refused when k > 1, and an MST fit of pbcseq bounded to 4 visits per patient
spends exactly its budget.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest

import privsynth as ps
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant, check_unit
from privsynth.privacy.budget import Budget, gaussian_sigma
from privsynth.privacy.ledger import Ledger
from privsynth.privacy.mechanisms import exponential_mechanism, gaussian_threshold_mechanism, laplace_mechanism
from privsynth.provenance.card import card_html_path, card_path, card_schema
from privsynth.relational.datasets import load_related
from privsynth.relational.person import bound_contributions
from privsynth.synth.aim import AIM
from privsynth.synth.dp import resolve_budget
from privsynth.synth.marginal_method import measure
from privsynth.synth.mst import MST
from privsynth.synth.privbayes import PrivBayes


def _accountant(k: int) -> Accountant:
    budget = Budget.from_rho(100.0, 1e-6, approx_delta=1e-6 / 2)
    return Accountant(budget, contribution_bound=k, unit="row" if k == 1 else "person")


@pytest.mark.parametrize("k", [1, 4])
def test_a_measurement_draws_noise_k_times_the_row_level_sigma(k: int) -> None:
    """40,000 draws of the Gaussian measurement of one fixed marginal: their standard deviation is the sigma the
    measurement claims (within 2%, about four standard errors) and that sigma is k times the k=1 sigma."""
    exact = np.arange(40_000, dtype=np.int64).reshape(200, 200) % 17
    (noisy,) = measure([("a", "b")], lambda _: exact, Budget.from_rho(0.5, 1e-6), _accountant(k))
    row_sigma = gaussian_sigma(0.5, 1.0)
    assert noisy.sigma == pytest.approx(k * row_sigma, rel=1e-12)
    draws = noisy.values - exact.ravel()
    assert abs(draws.mean()) < 4 * noisy.sigma / math.sqrt(draws.size)
    assert draws.std() == pytest.approx(noisy.sigma, rel=0.02)


def test_every_mechanism_scales_its_sensitivity_by_k() -> None:
    """Selection (Gumbel scale), Laplace (scale) and key discovery (sigma, threshold at least k) at k = 1 and
    k = 3, each read from the ledger description of its charge."""

    def number(text: str, name: str) -> float:
        found = re.search(rf"{name}=([0-9.e+-]+)", text)
        assert found, text
        return float(found.group(1))

    described: dict[int, list[str]] = {}
    for k in (1, 3):
        accountant = _accountant(k)
        exponential_mechanism(np.arange(5.0), sensitivity=2.0, rho=0.1, accountant=accountant, purpose="select")
        laplace_mechanism(np.zeros(3), sensitivity=1.0, rho=0.1, accountant=accountant, purpose="sum")
        counts = {"=a": 500, "=b": 400}
        gaussian_threshold_mechanism(counts, rho=0.1, delta=1e-7, accountant=accountant, purpose="keys")
        described[k] = [c.mechanism for c in accountant.charges]
    (select1, laplace1, keys1), (select3, laplace3, keys3) = described[1], described[3]
    assert number(select3, "gumbel_scale") == pytest.approx(3 * number(select1, "gumbel_scale"), rel=1e-5)
    assert number(select3, "linf_sensitivity") == 6.0
    assert number(laplace3, "scale") == pytest.approx(3 * number(laplace1, "scale"), rel=1e-5)
    assert number(keys3, "sigma") == pytest.approx(3 * number(keys1, "sigma"), rel=1e-5)
    # A key held by one person's 3 rows clears the threshold no more easily than a key of one row did: the gap
    # between the threshold and what the unit holds is at least as many sigmas (less the k=1 rounding up).
    gap1 = (number(keys1, "threshold") - 1 - 1) / number(keys1, "sigma")
    assert (number(keys3, "threshold") - 3) / number(keys3, "sigma") > gap1
    assert all(m.endswith("per person (at most 3 rows each)") for m in described[3])
    assert not any("per " in m for m in described[1])


def test_a_spend_calibrated_to_one_record_is_refused_for_a_person() -> None:
    """DP-SGD (or any mechanism outside privsynth.privacy.mechanisms) spends without per_unit: refused at k > 1,
    before anything is recorded."""
    accountant = _accountant(4)
    with pytest.raises(ParameterError, match="calibrated to one record"):
        accountant.spend(0.1, mechanism="dp-sgd", purpose="training")
    assert accountant.charges == () and accountant.spent == 0.0
    _accountant(1).spend(0.1, mechanism="dp-sgd", purpose="training")


@pytest.mark.parametrize("bad", [0, -2, 2.5, 4.0, True, "4", None])
@pytest.mark.parametrize("method", [MST, AIM, PrivBayes])
def test_a_bad_contribution_bound_is_refused_with_a_clear_error(method: type, bad: Any) -> None:
    with pytest.raises(ParameterError, match=r"contribution_bound must be a whole number \(an int\) >= 1"):
        method(contribution_bound=bad, unit="person")


def test_a_bound_above_one_needs_a_unit_other_than_the_row() -> None:
    with pytest.raises(ParameterError, match="needs a privacy unit other than 'row'"):
        MST(contribution_bound=2)
    with pytest.raises(ParameterError, match="non-empty name"):
        MST(unit=" ")
    assert check_unit(" patient ", 3) == ("patient", 3)
    assert MST().get_params()["contribution_bound"] == 1 and MST().get_params()["unit"] == "row"


@pytest.fixture(scope="module")
def visits() -> pd.DataFrame:
    """pbcseq's visits, the first 4 of each patient by day (the rule fixed before the data is read), without
    the patient id (an identifier, never synthesized)."""
    table = load_related("pbc").tables["pbcseq"]
    kept = ["status", "trt", "sex", "ascites", "edema", "stage", "bili", "albumin", "platelet"]
    return bound_contributions(table, "id", 4, "day")[kept].reset_index(drop=True)


def test_mst_on_visits_bounded_to_four_per_patient_spends_exactly_its_budget(
    visits: pd.DataFrame, ledger: Ledger
) -> None:
    """End to end: every domain learned under DP (nothing declared public), k = 4, unit = patient; the spends add
    up to the budget's rho, each one is recorded in the ledger with the unit, and the synthetic rows come back."""
    schema = Schema.infer(visits)
    model = MST(contribution_bound=4, unit="patient").fit(
        visits, schema=schema, epsilon=2.0, ledger=ledger, dataset="pbcseq-patients"
    )
    record = model.record_
    assert record.unit == "patient" and record.contribution_bound == 4
    assert record.epsilon == 2.0 and record.rho == resolve_budget("mst", 2.0, None, schema).rho
    assert record.rho_spent == pytest.approx(record.rho, rel=1e-9)
    entries = [e for e in ledger.entries("pbcseq-patients") if e.reservation_id is not None]
    assert len(entries) == len(record.spends)
    assert math.fsum(e.rho for e in entries) == pytest.approx(record.rho, rel=1e-9)
    assert all(e.mechanism.endswith("per patient (at most 4 rows each)") for e in entries)
    (reservation,) = [e for e in ledger.entries("pbcseq-patients") if e.reservation_id is None]
    assert reservation.purpose.endswith("privacy unit: one patient (at most 4 rows each)")
    synthetic = model.sample(500, seed=0)
    assert list(synthetic.columns) == list(visits.columns) and len(synthetic) == 500


def test_the_card_says_the_unit_and_the_bound(visits: pd.DataFrame, tmp_path: Path) -> None:
    """The card (JSON, valid against its schema, and HTML) states the unit and k, the user's parameters."""
    release = ps.synthesize(
        visits,
        "mst",
        rows=100,
        schema=Schema.infer(visits),
        epsilon=1.0,
        params={"contribution_bound": 4, "unit": "person"},
        ledger=False,
        seed=0,
    )
    written = release.write(tmp_path / "visits.csv")
    card = json.loads(card_path(written).read_text())
    jsonschema.validate(card, card_schema())
    assert card["privacy"]["unit"] == "person" and card["privacy"]["contribution_bound"] == 4
    assert card["generator"]["parameters"]["contribution_bound"] == 4
    assert all(s["mechanism"].endswith("per person (at most 4 rows each)") for s in card["privacy"]["spends"])
    assert "one person (at most 4 rows each)" in card_html_path(written).read_text()


def test_every_noise_scale_read_after_a_measurement_is_calibrated_to_the_unit() -> None:
    """The synthesizers compute sigma (for merges, thresholds, model weights) only through the accountant's unit:
    a ``gaussian_sigma(rho, 1.0)`` would be the row-level sigma, k times too small at person level."""
    synth = Path(ps.__file__).parent / "synth"
    calls = [
        (path.name, line.strip())
        for path in sorted(synth.glob("*.py"))
        for line in path.read_text().splitlines()
        if "gaussian_sigma(" in line and not line.lstrip().startswith(("from ", "import ", "#"))
    ]
    assert calls, "no noise scale found: the scan is looking in the wrong place"
    unscaled = [(name, line) for name, line in calls if "accountant.sensitivity(" not in line]
    assert unscaled == []
