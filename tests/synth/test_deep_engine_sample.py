"""dp-deep on rows that stay in their engine: each block of DP-SGD steps draws its Poisson samples there
(``block_poisson_steps``), distributed exactly as the per-step Poisson samples of rows held in memory, which is
what the accountant assumes. Checked on a real DuckDB source: each step's size, each row's count over the steps,
the rate of a row in two consecutive steps (independence), and the same at every position of a block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.data.source_base import Source
from privsynth.data.sources import load_source
from privsynth.synth._deep_net import block_poisson_steps
from privsynth.synth.deep import DPDeepSynthesizer


@pytest.fixture(scope="module")
def nass_parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = load_dataset("nassCDS", "all")
    path = tmp_path_factory.mktemp("deep-engine") / "nass.parquet"
    frame.to_parquet(path)
    return path, frame


def test_block_poisson_steps_are_independent_poisson_samples(tmp_path: Path) -> None:
    n, rate, steps, block = 5_000, 0.01, 400, 37
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"row": np.arange(n)}).to_parquet(path)
    source = load_source(path)
    keeps: list[float] = []

    def draw(keep: float) -> torch.Tensor:
        keeps.append(keep)
        return torch.from_numpy(np.array(source.poisson_sample(keep, ["row"])["row"], dtype=np.int64))

    secret = torch.Generator().manual_seed(7)
    taken = np.zeros((steps, n), dtype=bool)
    for step, rows in enumerate(block_poisson_steps(draw, rate, steps, block, secret)):
        assert len(np.unique(rows.numpy())) == len(rows)
        taken[step, rows.numpy()] = True
    assert len(keeps) == -(-steps // block)  # one engine query per block
    assert keeps[0] == pytest.approx(1 - (1 - rate) ** block) and keeps[-1] == pytest.approx(1 - (1 - rate) ** 30)
    sizes = taken.sum(axis=1)
    assert abs(sizes.mean() - n * rate) < 5 * np.sqrt(n * rate / steps)
    assert abs(sizes.var() / (n * rate * (1 - rate)) - 1) < 0.35
    per_row = taken.sum(axis=0)  # Binomial(steps, rate)
    assert abs(per_row.var() / (steps * rate * (1 - rate)) - 1) < 0.1
    # a row in two consecutive steps (inside a block or across): rate squared, as for independent steps
    both = (taken[1:] & taken[:-1]).sum()
    expected = n * (steps - 1) * rate**2
    assert abs(both - expected) < 5 * np.sqrt(expected)
    # every position of a block samples at the rate (the first step of a block is not favoured)
    positions = np.arange(steps) % block
    for position in (0, block - 1):
        mean = sizes[positions == position].mean()
        count = (positions == position).sum()
        assert abs(mean - n * rate) < 5 * np.sqrt(n * rate / count)


def test_dp_deep_above_in_memory_rows_trains_on_samples_drawn_by_the_engine(
    nass_parquet: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, frame = nass_parquet
    columns = ["dvcat", "weight", "dead", "airbag", "seatbelt", "frontal", "sex", "ageOFocc"]
    draws: list[float] = []
    poisson = Source.poisson_sample

    def counted(self: Source, rate: float, names: list[str] | None = None) -> pd.DataFrame:
        draws.append(rate)
        return poisson(self, rate, names)

    def no_rows(*args: object, **kwargs: object) -> None:
        raise AssertionError("dp-deep loaded every row although the table is above in_memory_rows")

    monkeypatch.setattr(Source, "poisson_sample", counted)
    monkeypatch.setattr(Source, "to_pandas", no_rows)
    schema = Schema.infer(frame[columns]).synthesized()
    synth = DPDeepSynthesizer(epochs=1, batch_size=256, in_memory_rows=5_000, hidden=32)
    synth.fit(load_source(path), schema, epsilon=4.0, ledger=False)
    steps, rate = synth.record_.released["steps"], synth.record_.released["sample_rate"]
    block = 5_000 // 256
    assert len(draws) == -(-steps // block)  # one engine query per block of steps
    assert draws[0] == pytest.approx(1 - (1 - rate) ** block)
    out = synth.sample(2_000, seed=0)
    assert list(out.columns) == columns
    assert set(out["dead"].dropna()) <= {"alive", "dead"}
