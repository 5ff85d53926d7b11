"""Provenance: the data card written next to every release."""
