"""The seeded noise backend: reproducible DP noise for regression tests, and never private.

Differential privacy needs noise nobody can predict, so by default every mechanism draws from OpenDP's secure
samplers and DP-SGD from a generator seeded by the operating system. A test of a DP code path (a fit, a card, a
ledger row, an audit's power) then sees different numbers on every run, and a test that checks them must allow
for chance. Inside :func:`seeded_noise` the same draws come from numpy and torch generators seeded by the test, so
the path gives the same numbers on every run.

Only Python code can select it, with the context manager: no CLI option, service parameter or environment
variable does. The choice lives in a context variable, so it holds in the block that set it (and asyncio tasks
started there), not in other threads: a service's worker threads never see it. Every spend paid for inside the
block says so in its mechanism description (:data:`SEEDED`), which the accountant, the ledger rows and a DP
card's spends all carry, so a release made with predictable noise cannot pass for a private one.

The samplers keep each mechanism's distribution (discrete Gaussian and discrete Laplace on integers, Gaussian,
Laplace and Gumbel on floats) so a test sees noise of the scale the budget pays for; they are plain floating-point
samplers, not OpenDP's exact ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import numpy.typing as npt

from privsynth.errors import ParameterError

logger = logging.getLogger(__name__)

SEEDED = "noise: seeded for testing, not private"
"""Appended to the mechanism description of every spend paid for under :func:`seeded_noise`."""

_generator: ContextVar[np.random.Generator | None] = ContextVar("privsynth_seeded_noise", default=None)


@contextmanager
def seeded_noise(seed: int) -> Iterator[None]:
    """For tests only: inside the block, DP noise is drawn from generators seeded with ``seed``.

    This voids the privacy guarantee of everything released inside the block: whoever knows the seed can
    subtract the noise. The budget is still spent and checked as usual, and each spend is described with
    ``"noise: seeded for testing, not private"``. Use it to make a regression test of a DP code path
    deterministic, never to produce a release; the noise mechanisms' own tests check the default (secure) noise.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, not {seed!r}")
    token = _generator.set(np.random.default_rng(int(seed)))
    logger.warning("DP noise is seeded for testing inside this block: nothing released here is private")
    try:
        yield
    finally:
        _generator.reset(token)


def seeded() -> np.random.Generator | None:
    """The generator of the enclosing :func:`seeded_noise` block, or None (the default: secure noise)."""
    return _generator.get()


def described(mechanism: str) -> str:
    """``mechanism`` as a spend records it: marked :data:`SEEDED` inside a :func:`seeded_noise` block."""
    return mechanism if seeded() is None else f"{mechanism}; {SEEDED}"


def discrete_gaussian(rng: np.random.Generator, sigma: float, size: int) -> npt.NDArray[np.int64]:
    """``size`` draws of the discrete Gaussian of scale ``sigma``: P(x) proportional to exp(-x² / (2 sigma²)).

    Rejection from the discrete Laplace of scale t = floor(sigma) + 1 (Canonne, Kamath and Steinke, NeurIPS
    2020, Algorithm 3), in floating point.
    """
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        y = discrete_laplace(rng, t, todo.size)
        accept = rng.random(todo.size) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


def discrete_laplace(rng: np.random.Generator, scale: float, size: int) -> npt.NDArray[np.int64]:
    """``size`` draws of the discrete Laplace of ``scale``: P(x) proportional to exp(-|x| / scale), the
    difference of two geometric draws."""
    p = -math.expm1(-1 / scale)
    return np.asarray(rng.geometric(p, size) - rng.geometric(p, size), dtype=np.int64)


def add_noise(rng: np.random.Generator, array: Any, scale: float, kind: str) -> Any:
    """``array`` plus seeded ``kind`` noise ("gaussian" or "laplace") of ``scale``, with its shape and dtype:
    discrete noise on integers, continuous noise on floats."""
    flat = np.asarray(array).ravel()
    if np.issubdtype(flat.dtype, np.integer):
        draw = discrete_gaussian if kind == "gaussian" else discrete_laplace
        noise: Any = draw(rng, scale, flat.size)
    else:
        noise = rng.normal(0.0, scale, flat.size) if kind == "gaussian" else rng.laplace(0.0, scale, flat.size)
    return (flat + noise).astype(flat.dtype).reshape(np.shape(array))
