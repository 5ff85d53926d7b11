"""Synthesizers: the contract, the registry, and the methods (importing this package registers them)."""

from privsynth.synth import copula as _copula  # noqa: F401  (registers "copula")
from privsynth.synth.base import Synthesizer, available, create, register

__all__ = ["Synthesizer", "available", "create", "register"]
