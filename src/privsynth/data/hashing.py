"""Content fingerprints of files: one SHA-256 for sources read from disk, releases and cards alike.

It lives under ``data`` because a file source needs it to fingerprint what it reads, and ``provenance``
(cards, lineage, mixes) sits above ``data`` and imports it from here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks so a large file never sits in memory whole."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
