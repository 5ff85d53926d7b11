"""Rare categories and long tails under DP preprocessing (#22): what the release does with values discovery
could not release, how the preprocessing budget is shared, and how spikes and value grids decode."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from privsynth import load_dataset
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import load_source
from privsynth.privacy import Accountant, Budget
from privsynth.synth.domain import learn_domains
from privsynth.synth.marginal import MST


@pytest.fixture(scope="module")
def clinics() -> pd.DataFrame:
    """Half the rows in one big clinic, half spread over 400 clinics of 10 rows (too rare for DP key discovery),
    and a flag that is 1 exactly in the big clinic."""
    rare = [f"clinic {i}" for i in range(400) for _ in range(10)]
    site = np.array(["big"] * 4000 + rare, dtype=object)
    return pd.DataFrame({"site": site, "flag": (site == "big").astype(np.int64)})


def test_rows_of_never_released_categories_keep_the_other_columns_distribution(clinics: pd.DataFrame) -> None:
    schema = Schema(
        [
            Column("site", Kind.CATEGORICAL, "object"),
            Column("flag", Kind.CATEGORICAL, "int64", categories=[0, 1], public=True),
        ]
    )
    model = MST().fit(clinics, schema, epsilon=1.0, ledger=False)
    assert model.domains_["site"].binning.values == ("big",)  # type: ignore[union-attr]
    fake = model.sample(20_000, seed=0)
    # Rows drawn in the never-released 'other' cell of site are kept (their flag is 0) and get a released site:
    # conditioning them away, as before, left flag = 1 in every row.
    assert fake["flag"].mean() == pytest.approx(0.5, abs=0.03)
    assert set(fake["site"]) == {"big"}


@pytest.fixture(scope="module")
def covid() -> pd.DataFrame:
    return load_dataset("covid_testing", "train")


def test_categorical_columns_of_a_few_frequent_values_leave_their_budget_to_rare_categories(
    covid: pd.DataFrame,
) -> None:
    """Four binary columns and clinic_name (86 clinics, half the rows outside the two biggest): after the first
    passes, clinic_name gets the rest of the budget, and a clinic of 428 rows is released (its second pass's
    threshold is about 250, 3.7 standard deviations below; equal shares put it at about 500, and release it in
    about one fit in five). Spends sum to rho exactly."""
    names = ["gender", "drive_thru_ind", "orderset", "test_id", "clinic_name"]
    schema = Schema([Column(n, Kind.CATEGORICAL, str(covid[n].dtype)) for n in names])
    rho = 3e-4
    spender = Accountant(Budget.from_epsilon_delta(10.0, 1e-6, approx_delta=1e-7))
    domains = learn_domains(load_source(covid[names]), schema, spender, rho=rho)
    spent = {n: sum(Fraction(c.rho) for c in spender.charges if f"'{n}'" in c.purpose) for n in names}
    assert sum(spent.values()) <= Fraction(rho) and float(sum(spent.values())) == pytest.approx(rho, rel=1e-12)
    assert spent["clinic_name"] > 0.7 * rho  # 1/5 (its equal share) + the 3/4 of the others' shares it needs
    assert all(spent[n] == spent["gender"] for n in names[:4])  # a first pass each, nothing more
    assert "oncology day hosp" in domains["clinic_name"].binning.values  # type: ignore[union-attr]
    assert sum(c.delta for c in spender.charges) == pytest.approx(1e-7, rel=1e-12)


def test_a_spike_decodes_to_the_value_its_rows_share() -> None:
    """90% of the rows at exactly 45.0 (a test's 'not detected' reading), the rest spread below: the spike's
    cell decodes to 45.0 itself, not to numbers spread around it (which fall on both sides of 45 in any binning
    of the real values)."""
    rng = np.random.default_rng(0)
    values = np.where(rng.random(10_000) < 0.9, 45.0, np.round(rng.uniform(10, 40, 10_000), 2))
    frame = pd.DataFrame({"ct": values})
    schema = Schema([Column("ct", Kind.FLOAT, "float64")])
    spender = Accountant(Budget.from_epsilon_delta(10.0, 1e-6))
    domain = learn_domains(load_source(frame), schema, spender, rho=0.01)["ct"]
    assert "1 of 1 spike(s) located at a point" in domain.cost
    decoded = domain.decode(domain.encode(frame["ct"]), np.random.default_rng(1))
    assert (decoded == 45.0).mean() == pytest.approx(0.9, abs=0.01)
    assert float(sum(Fraction(c.rho) for c in spender.charges)) == pytest.approx(0.01, rel=1e-12)


def test_a_spike_on_a_public_upper_bound_decodes_to_the_bound() -> None:
    """covid_testing's ct_result with its range declared public, [14.26, 45.0]: 94% of the rows read 45.0, the
    upper bound itself. The domain's last cell is closed, so the spike search splits it up to just above the bound;
    it used to stop at the bound, the 45.0 rows fell in the padding cell above, no spike was found and the cell
    decoded to numbers spread below 45 (1-way TVD 0.94 on the scorer's cells, 3-way 0.32 for the whole table)."""
    covid = load_dataset("covid_testing", "train")[["ct_result"]]
    schema = Schema([Column("ct_result", Kind.FLOAT, "float64", nullable=True, bounds=(14.26, 45.0), public=True)])
    spender = Accountant(Budget.from_epsilon_delta(10.0, 1e-6))
    domain = learn_domains(load_source(covid), schema, spender, rho=1e-3)["ct_result"]
    assert "1 of 1 spike(s) located at a point" in domain.cost
    decoded = domain.decode(domain.encode(covid["ct_result"]), np.random.default_rng(1))
    assert (decoded == 45.0).sum() / covid["ct_result"].notna().sum() == pytest.approx(0.942, abs=0.01)
    assert decoded.max() == 45.0
    assert float(sum(Fraction(c.rho) for c in spender.charges)) == pytest.approx(1e-3, rel=1e-12)


def test_values_recorded_to_a_decimal_decode_to_it_and_continuous_ones_stay_spread() -> None:
    """covid_testing's col_rec_tat is recorded to one decimal (91% of rows; 9% are whole numbers), nafld1's bmi is
    a ratio of measurements (any decimals). A bin's cells used to decode to any number inside it, so 0.3 and 0.35
    were as likely, and the scorer's cut at 0.4 (a recorded value) split them wrongly; the noisy grid histogram
    lets col_rec_tat decode to one decimal and leaves bmi spread. The grid costs its share of rho, no more."""
    tat = load_dataset("covid_testing", "train")[["col_rec_tat"]]
    bmi = load_dataset("nafld1", "train")[["bmi"]].dropna()
    for frame, recorded in ((tat, True), (bmi, False)):
        name = frame.columns[0]
        schema = Schema([Column(name, Kind.FLOAT, "float64")])
        spender = Accountant(Budget.from_epsilon_delta(10.0, 1e-6))
        domain = learn_domains(load_source(frame), schema, spender, rho=1e-3)[name]
        assert domain.grid is not None and domain.grid.unit == 0.01
        assert sum("the grid its values are recorded on" in c.purpose for c in spender.charges) == 1
        assert float(sum(Fraction(c.rho) for c in spender.charges)) == pytest.approx(1e-3, rel=1e-12)
        decoded = domain.decode(domain.encode(frame[name]), np.random.default_rng(1)).to_numpy(dtype=float)
        on_tenths = np.isclose(decoded * 10, np.round(decoded * 10), atol=1e-6).mean()
        if recorded:
            assert on_tenths > 0.85  # 0.1 when spread evenly, as before
            assert np.isclose(decoded, np.round(decoded)).mean() == pytest.approx(0.089, abs=0.04)
        else:
            assert on_tenths < 0.2  # 0.1 when spread evenly
