"""Noise mechanisms: OpenDP's vetted samplers, paid for through an :class:`Accountant` before any release.

- Gaussian mechanism on counts: the discrete Gaussian of Canonne, Kamath and Steinke, "The Discrete Gaussian
  for Differential Privacy" (NeurIPS 2020), which is rho-zCDP with rho = sensitivity² / (2 sigma²).
- Exponential mechanism (McSherry and Talwar, FOCS 2007) for selection, run as report-noisy-max with Gumbel
  noise; being epsilon-DP with bounded range it is epsilon²/8-zCDP (Cesar and Rogers, "Bounding,
  Concentrating, and Truncating", ALT 2021), the accounting AIM uses (McKenna et al., VLDB 2022).
- Laplace mechanism (Dwork, McSherry, Nissim and Smith, TCC 2006), discrete on integers; epsilon-DP implies
  epsilon²/2-zCDP (Bun and Steinke, TCC 2016, Proposition 1.4).
- Gaussian threshold mechanism for key discovery over an unknown domain: discrete Gaussian noise on the count of
  each key present, then only keys whose noisy count reaches a threshold are released (the stability-based
  histogram of Korolova, Kenthapadi, Mishra and Ntoulas, WWW 2009, and Bun, Nissim and Stemmer, PODS 2016, in
  the zCDP form of Rogers, "A Unifying Privacy Analysis Framework for Unknown Domain Algorithms in Differential
  Privacy", arXiv:2309.09170), OpenDP's ``make_gaussian_threshold``. It is delta-approximately rho-zCDP: delta
  is the chance that a key held by one record clears the threshold.

Each mechanism takes the rho to spend, sets the noise scale from it, and checks with OpenDP's own privacy map
that the measurement costs at most that rho, widening the scale by a hair when OpenDP's conservative rounding
would report a little more. It then charges the accountant, which records the spend in the ledger or refuses
it, and only then draws the noise.

Importing this module enables OpenDP's ``contrib`` feature for the whole process: in OpenDP 0.16 the
measurements used here (``make_gaussian``, ``make_noisy_max``, ``make_laplace``, ``make_gaussian_threshold``)
are ``contrib`` components,
whose proofs are published but not yet through OpenDP's formal vetting. No other feature is needed: in
particular ``floating-point`` is not, because float inputs are handled by OpenDP's exact samplers on a grid,
and ``honest-but-curious`` is not, because no user function is passed to OpenDP.

Every mechanism is calibrated to the accountant's privacy unit: the sensitivity a caller states is to one
record, and :meth:`Accountant.sensitivity` multiplies it by the contribution bound k, since a unit's k records
move a query by at most k times what one record does (triangle inequality, in the L1, L2 and L-infinity norms
used here). The threshold mechanism's input distance is the unit's (k keys, each count moved by up to k). A
charge says the unit in its ledger row.

For regression tests only, :func:`seeded_noise` (from :mod:`privsynth.privacy._seeded`) makes every draw here
reproducible; it voids the guarantee, and each spend made under it says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from statistics import NormalDist
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from privsynth.errors import ParameterError, PrivsynthError
from privsynth.privacy._seeded import add_noise, described, discrete_gaussian, seeded, seeded_noise
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import check_positive, gaussian_sigma

try:
    import opendp.prelude as dp
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("privsynth's noise mechanisms need OpenDP: pip install 'privsynth[dp]'.") from error

__all__ = [
    "exponential_mechanism",
    "gaussian_mechanism",
    "gaussian_threshold_mechanism",
    "laplace_mechanism",
    "seeded_noise",
]

logger = logging.getLogger(__name__)

dp.enable_features("contrib")

_CALIBRATION_STEP = 1e-12
"""Relative widening of the noise scale per step while OpenDP's map exceeds the rho being paid."""

_CALIBRATION_STEPS = 1000
"""Steps before giving up: OpenDP's rounding is a few ulps, so one or two steps are the norm."""

Vector = npt.NDArray[np.int64] | npt.NDArray[np.float64]


def _as_vector(values: npt.ArrayLike, name: str) -> tuple[Vector, Any]:
    """``values`` as int64 or float64, and the OpenDP vector domain that holds them."""
    array = np.asarray(values)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64), dp.vector_domain(dp.atom_domain(T="i64"))
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ParameterError(f"{name} must be finite; found NaN or infinite values.")
        return array.astype(np.float64), dp.vector_domain(dp.atom_domain(T="f64", nan=False))
    raise ParameterError(f"{name} must hold integers or floats, got dtype {array.dtype}.")


def _release(measurement: Any, array: Vector) -> Vector:
    """Run ``measurement`` on the flattened ``array``; the output has the input's shape and dtype."""
    noisy = np.asarray(measurement(array.ravel().tolist()), dtype=array.dtype)
    return cast(Vector, noisy.reshape(array.shape))


def _calibrate(
    make: Callable[[float], Any],
    scale: float,
    sensitivity: Any,
    rho: float,
    cost: Callable[[Any], Fraction],
) -> tuple[Any, float]:
    """The measurement at the smallest scale from ``scale`` up whose OpenDP privacy map is within ``rho``.

    ``cost`` turns the map's output at ``sensitivity`` (the input distance, a number or a tuple) into rho,
    exactly, so the comparison has no rounding.
    """
    for _ in range(_CALIBRATION_STEPS):
        measurement = make(scale)
        if cost(measurement.map(sensitivity)) <= Fraction(rho):
            return measurement, scale
        scale *= 1 + _CALIBRATION_STEP
    raise PrivsynthError(f"OpenDP reports more than rho={rho!r} at every scale tried near {scale!r}.")


def gaussian_mechanism(
    counts: npt.ArrayLike,
    *,
    sensitivity: float,
    rho: float,
    accountant: Accountant,
    purpose: str,
) -> Vector:
    """Release ``counts`` plus Gaussian noise, charging ``rho`` first.

    Measures: an array of any shape (a marginal, say), added to element-wise. Integer arrays get discrete
    Gaussian noise and stay integers; float arrays get OpenDP's exact Gaussian sampler on a fine grid.
    Sensitivity: ``sensitivity`` is the L2 distance between the arrays of neighbouring datasets (1 for a
    histogram when one record is added or removed, sqrt(2) when one is replaced); with a contribution bound k
    (``accountant.contribution_bound``) the noise is calibrated to k times it, a unit's k records (all k may
    fall in one cell of a histogram).
    Cost: rho-zCDP, with sigma = k sensitivity / sqrt(2 rho) (:func:`~privsynth.privacy.budget.gaussian_sigma`).
    Returns an array of the same shape, int64 or float64.
    """
    array, domain = _as_vector(counts, "counts")
    sensitivity = accountant.sensitivity(check_positive("sensitivity", sensitivity))
    rho = check_positive("rho", rho)
    sigma = gaussian_sigma(rho, sensitivity)
    metric = dp.l2_distance(T=float)
    measurement, sigma = _calibrate(
        lambda scale: dp.m.make_gaussian(domain, metric, scale=scale), sigma, sensitivity, rho, Fraction
    )
    mechanism = described(f"gaussian(sigma={sigma:.6g}, l2_sensitivity={sensitivity:g})")
    accountant.spend(rho, mechanism=mechanism, purpose=purpose, per_unit=True)
    logger.debug("gaussian mechanism releases %d values with sigma=%.6g", array.size, sigma)
    rng = seeded()
    return _release(measurement, array) if rng is None else cast(Vector, add_noise(rng, array, sigma, "gaussian"))


def exponential_mechanism(
    scores: npt.ArrayLike,
    *,
    sensitivity: float,
    rho: float,
    accountant: Accountant,
    purpose: str,
    monotonic: bool = False,
) -> int:
    """Select an index with probability proportional to exp(epsilon score / (2 sensitivity)); costs ``rho``.

    Measures: a 1-d vector of finite scores (one per candidate, higher is better); returns the index chosen,
    as the arg-max of the scores plus Gumbel noise of scale 2 sensitivity / epsilon.
    Sensitivity: ``sensitivity`` bounds how much any one score changes between neighbouring datasets
    (L-infinity), calibrated to k times it for a contribution bound k. With ``monotonic=True`` the caller
    asserts that all scores move in the same direction when one record is added or removed, which halves the
    noise needed; they then also do when a unit's k records are.
    Cost: epsilon-DP with epsilon = sqrt(8 rho), hence rho-zCDP by bounded range: the same trade as AIM's
    selection step.
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ParameterError(f"scores must be a non-empty 1-d vector, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ParameterError("scores must be finite; found NaN or infinite values.")
    sensitivity = accountant.sensitivity(check_positive("sensitivity", sensitivity))
    rho = check_positive("rho", rho)
    domain = dp.vector_domain(dp.atom_domain(T="f64", nan=False))
    metric = dp.linf_distance(T=float, monotonic=monotonic)
    scale = sensitivity / math.sqrt(2 * rho) / (2 if monotonic else 1)
    measurement, scale = _calibrate(
        lambda scale: dp.m.make_noisy_max(domain, metric, dp.zero_concentrated_divergence(), scale=scale),
        scale,
        sensitivity,
        rho,
        Fraction,
    )
    accountant.spend(
        rho,
        mechanism=described(
            f"exponential(gumbel_scale={scale:.6g}, linf_sensitivity={sensitivity:g}, monotonic={monotonic})"
        ),
        purpose=purpose,
        per_unit=True,
    )
    rng = seeded()
    if rng is not None:
        return int(np.argmax(array + rng.gumbel(0.0, scale, array.size)))
    return int(measurement(array.tolist()))


def laplace_mechanism(
    values: npt.ArrayLike,
    *,
    sensitivity: float,
    rho: float,
    accountant: Accountant,
    purpose: str,
) -> Vector:
    """Release ``values`` plus Laplace noise, charging ``rho``; for steps that need pure differential privacy.

    Measures: an array of any shape, added to element-wise; integers get discrete Laplace noise and stay
    integers, floats get OpenDP's exact Laplace sampler on a fine grid.
    Sensitivity: ``sensitivity`` is the L1 distance between the arrays of neighbouring datasets, calibrated to
    k times it for a contribution bound k.
    Cost: epsilon-DP with epsilon = sqrt(2 rho) and noise scale k sensitivity / epsilon, hence rho-zCDP. Under
    zCDP the Gaussian mechanism is usually the better buy.
    Returns an array of the same shape, int64 or float64.
    """
    array, domain = _as_vector(values, "values")
    sensitivity = accountant.sensitivity(check_positive("sensitivity", sensitivity))
    rho = check_positive("rho", rho)
    metric = dp.l1_distance(T=float)
    measurement, scale = _calibrate(
        lambda scale: dp.m.make_laplace(domain, metric, scale=scale),
        sensitivity / math.sqrt(2 * rho),
        sensitivity,
        rho,
        lambda epsilon: Fraction(epsilon) ** 2 / 2,
    )
    mechanism = described(f"laplace(scale={scale:.6g}, l1_sensitivity={sensitivity:g})")
    accountant.spend(rho, mechanism=mechanism, purpose=purpose, per_unit=True)
    logger.debug("laplace mechanism releases %d values with scale=%.6g", array.size, scale)
    rng = seeded()
    return _release(measurement, array) if rng is None else cast(Vector, add_noise(rng, array, scale, "laplace"))


_MAX_THRESHOLD = 2**62
"""Upper end of the search for a threshold: no count in an int64 histogram can reach it."""


def gaussian_threshold_mechanism(
    counts: Mapping[str, int],
    *,
    rho: float,
    delta: float,
    accountant: Accountant,
    purpose: str,
) -> dict[str, int]:
    """Release the keys of ``counts`` whose count plus discrete Gaussian noise reaches a threshold, with
    their noisy counts; charges ``rho`` and ``delta`` first.

    Measures: a histogram over an unknown set of keys (the distinct values of a column, say), given as the
    keys present with their counts; keys absent from the data are never released.
    Sensitivity: one record adds 1 to one key (L0 1, L2 1, L-infinity 1 under add/remove-one): a histogram of
    one column. A key held by a single record exists in one neighbouring dataset only; the threshold makes its
    release improbable. With a contribution bound k, one unit's k records touch at most k keys and move each
    by at most k, their L2 norm at most k (all in one key): the input distance is (k, k, k), which OpenDP's map
    prices exactly (both rho and the chance that a key held by one unit clears the threshold).
    Cost: delta-approximately rho-zCDP (Rogers 2023), with sigma = k / sqrt(2 rho) and the smallest integer
    threshold at which OpenDP's map puts the chance that a key held by one unit is released, P(k + Z >=
    threshold) over its up to k keys, at most ``delta``. Roughly, threshold = k + sigma * z(1 - delta / k).
    """
    if not isinstance(counts, Mapping):
        raise ParameterError(f"counts must map keys to counts, got {type(counts).__name__}.")
    table: dict[str, int] = {}
    for key, count in counts.items():
        if not isinstance(key, str) or isinstance(count, bool) or not isinstance(count, int | np.integer):
            raise ParameterError(f"counts must map strings to integers; got {key!r}: {count!r}.")
        table[key] = int(count)
    rho = check_positive("rho", rho)
    delta = check_positive("delta", delta)
    if delta >= 1:
        raise ParameterError(f"delta must be below 1, got {delta!r}.")
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))
    k = accountant.contribution_bound
    d_in = (k, k, k)

    def make(scale: float, threshold: int) -> Any:
        return dp.m.make_gaussian_threshold(domain, metric, scale=scale, threshold=threshold)

    measurement, sigma = _calibrate(
        lambda scale: make(scale, _MAX_THRESHOLD),
        gaussian_sigma(rho, accountant.sensitivity(1.0)),
        d_in,
        rho,
        lambda out: Fraction(out[0]),
    )
    # Binary search between k (the map refuses thresholds below the L-infinity sensitivity) and the first
    # doubling of the normal-tail guess that is enough.
    high = max(k + 1, math.ceil(k + sigma * NormalDist().inv_cdf(1 - delta / k)))
    while make(sigma, high).map(d_in)[1] > delta:
        if high >= _MAX_THRESHOLD:  # pragma: no cover - only for a delta below what a float can hold
            raise PrivsynthError(f"no threshold keeps delta at {delta!r} with sigma={sigma!r}.")
        high = min(2 * high, _MAX_THRESHOLD)
    low = k
    while low < high:
        middle = (low + high) // 2
        if make(sigma, middle).map(d_in)[1] <= delta:
            high = middle
        else:
            low = middle + 1
    measurement = make(sigma, low)
    spent_rho, spent_delta = measurement.map(d_in)
    if Fraction(spent_rho) > Fraction(rho) or spent_delta > delta:  # pragma: no cover - guards OpenDP's map
        raise PrivsynthError(f"OpenDP reports (rho={spent_rho!r}, delta={spent_delta!r}) for this threshold.")
    accountant.spend(
        rho,
        delta=delta,
        mechanism=described(
            f"gaussian_threshold(sigma={sigma:.6g}, threshold={low}, delta={delta:.3g}, l2_sensitivity={k})"
        ),
        purpose=purpose,
        per_unit=True,
    )
    logger.debug("threshold mechanism over %d keys with sigma=%.6g, threshold=%d", len(table), sigma, low)
    rng = seeded()
    if rng is not None:  # draws in key order: the same noise per key whatever order an engine returned the keys in
        keys = sorted(table)
        noisy = np.fromiter((table[key] for key in keys), dtype=np.int64, count=len(keys)) + discrete_gaussian(
            rng, sigma, len(keys)
        )
        return {key: int(value) for key, value in zip(keys, noisy, strict=True) if value >= low}
    released = measurement(table)
    return {str(key): int(value) for key, value in released.items()}
