"""What secure sampling of DP-SGD's noise would cost dp-deep: time to draw one step's Gaussian noise.

One DP-SGD step adds Gaussian noise to every parameter of the network. dp-deep draws it with opacus's
``secure_mode`` (four torch Gaussian draws per coordinate, against floating-point attacks on a single draw); the
alternatives are plain torch (one draw), floats from the operating system's cryptographic generator (Box-Muller
on ``os.urandom`` bits: a secure source, but still a floating-point transform) and OpenDP's exact Gaussian
sampler (a secure source and no floating-point gap). Each is timed for the parameter count of dp-deep's default
network on nassCDS, and compared with the time of a whole DP-SGD step of that network (measured on a fit).

Run: ``.venv/bin/python benchmarks/dp_sgd_noise.py`` (writes ``benchmarks/results/dp_sgd_noise.json``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privsynth.bench.run_info import with_run

RESULT = Path(__file__).parent / "results" / "dp_sgd_noise.json"
REPEATS = 20
OPENDP_SAMPLE = 5_000  # coordinates drawn per OpenDP timing (it is linear in the count; scaled up)


def network_and_step() -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The parameters of dp-deep's default network fitted on nassCDS (epsilon 1), and the time of its DP-SGD steps."""
    import privsynth.synth.deep as deep
    from privsynth.data.datasets import load_dataset
    from privsynth.synth.deep import DPDeepSynthesizer

    train = deep.fit_dp_sgd  # timed where dp-deep calls it
    timing: dict[str, float] = {}

    def timed(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        train(*args, **kwargs)
        timing["seconds"] = time.perf_counter() - start
        timing["steps"] = kwargs["steps"]

    deep.fit_dp_sgd = timed
    try:
        model = DPDeepSynthesizer(epochs=1).fit(load_dataset("nassCDS"), epsilon=1.0, ledger=False)
    finally:
        deep.fit_dp_sgd = train
    assert isinstance(model, DPDeepSynthesizer)
    parameters = [p.detach() for p in model.net_.parameters()]
    steps_default = math.ceil(DPDeepSynthesizer().epochs / model.privacy_["sample_rate"])
    return parameters, {
        "parameters": int(sum(p.numel() for p in parameters)),
        "tensors": len(parameters),
        "hidden": model.hidden,
        "depth": model.depth,
        "dp_sgd_step_seconds": timing["seconds"] / timing["steps"],
        "steps_measured": int(timing["steps"]),
        "steps_at_default_epochs": steps_default,
    }


def best_of(draw: Callable[[], object], repeats: int = REPEATS) -> dict[str, float]:
    """Median and minimum wall time of ``draw`` over ``repeats`` runs (after one warm-up)."""
    draw()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw()
        times.append(time.perf_counter() - start)
    return {"median_seconds": statistics.median(times), "min_seconds": min(times)}


def urandom_gaussian(count: int, std: float) -> np.ndarray:
    """Box-Muller on 53-bit uniforms from ``os.urandom``: a cryptographic source, a floating-point transform."""
    bits = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(2, count) >> np.uint64(11)
    u1 = (bits[0].astype(float) + 1.0) / 2.0**53  # in (0, 1]
    u2 = bits[1].astype(float) / 2.0**53
    return np.asarray(std * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))


def main() -> None:
    from opacus.optimizers.optimizer import _generate_noise  # type: ignore[import-untyped]

    torch.set_num_threads(1)
    parameters, network = network_and_step()
    count = network["parameters"]
    std = 1.0
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))

    def torch_plain() -> None:
        for p in parameters:
            _generate_noise(std, p, generator, secure_mode=False)

    def torch_secure_mode() -> None:
        for p in parameters:
            _generate_noise(std, p, generator, secure_mode=True)

    def os_urandom() -> None:
        urandom_gaussian(count, std)

    import opendp.prelude as dp

    dp.enable_features("contrib")
    exact = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T=float, nan=False), size=OPENDP_SAMPLE), dp.l2_distance(T=float), scale=std
    )
    zeros = [0.0] * OPENDP_SAMPLE

    def opendp_part() -> None:
        exact(zeros)

    methods: dict[str, dict[str, Any]] = {
        "torch (opacus default)": best_of(torch_plain),
        "torch, opacus secure_mode (dp-deep)": best_of(torch_secure_mode),
        "os.urandom + Box-Muller (numpy)": best_of(os_urandom),
    }
    part = best_of(opendp_part, repeats=3)
    scale = count / OPENDP_SAMPLE
    methods["OpenDP exact Gaussian (make_gaussian)"] = {
        "median_seconds": part["median_seconds"] * scale,
        "min_seconds": part["min_seconds"] * scale,
        "note": f"timed on {OPENDP_SAMPLE} coordinates and scaled linearly to {count}",
    }
    step = network["dp_sgd_step_seconds"]
    steps = network["steps_at_default_epochs"]
    for row in methods.values():
        row["per_fit_seconds_at_default_epochs"] = row["median_seconds"] * steps
        row["share_of_a_dp_sgd_step"] = row["median_seconds"] / step
    result = {
        "what": "time to draw one DP-SGD step's Gaussian noise for dp-deep's default network on nassCDS",
        "torch_threads": torch.get_num_threads(),
        "network": network,
        "noise_per_step": methods,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(with_run(result), indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
