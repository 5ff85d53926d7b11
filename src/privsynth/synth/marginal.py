"""MST and AIM, the marginal methods: differentially private synthetic data from noisy marginals and a graphical
model. Each is a module of its own (:mod:`privsynth.synth.mst`, :mod:`privsynth.synth.aim`) on what they share
(:mod:`privsynth.synth.marginal_method`); this module names both, for ``from privsynth.synth.marginal import AIM,
MST`` and for models saved before the split, whose pickles name ``privsynth.synth.marginal``.
"""

from privsynth.synth.aim import AIM
from privsynth.synth.mst import MST

__all__ = ["AIM", "MST"]
