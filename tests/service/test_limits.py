"""The parameters an analyst may set, per DP method, and their bounds (checked before a job is queued)."""

from __future__ import annotations

import pytest

from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.service.limits import ANALYST_PARAMS, check_analyst_params
from privsynth.synth.base import available


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.infer(load_dataset("nafld1"))


def test_every_dp_method_has_an_analyst_allow_list() -> None:
    dp = {name for name, cls in available().items() if cls.differentially_private}
    assert dp <= set(ANALYST_PARAMS), f"DP methods without analyst bounds: {sorted(dp - set(ANALYST_PARAMS))}"


def test_privbayes_degree_and_theta_are_bounded(schema: Schema) -> None:
    check_analyst_params("privbayes", {"degree": 2, "theta": 4.0, "bins": 16}, schema)
    with pytest.raises(ParameterError, match="degree"):
        check_analyst_params("privbayes", {"degree": 9}, schema)
    with pytest.raises(ParameterError, match="theta"):
        check_analyst_params("privbayes", {"theta": 0}, schema)
    with pytest.raises(ParameterError, match="cannot set the parameter 'rounds'"):
        check_analyst_params("privbayes", {"rounds": 10}, schema)
