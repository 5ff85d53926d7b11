"""Provenance: where every release came from, and guards against training on synthetic data unawares.

- :mod:`~privsynth.provenance.card`: the data card (JSON + HTML) written next to every release, and its schema;
- :mod:`~privsynth.provenance.datasheet`: the Datasheets-for-Datasets questions a card answers;
- :mod:`~privsynth.provenance.lineage`: the release registry, generations, and recognising a release used as a
  source;
- :mod:`~privsynth.provenance.mix`: training sets of real plus capped synthetic rows.

Nothing is imported here: :mod:`privsynth.data.sources` imports the card module, and the others import sources.
"""
