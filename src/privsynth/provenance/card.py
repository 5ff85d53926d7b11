"""The data card written next to every synthetic release (``synth.csv`` -> ``synth.card.json``).

It records where the rows came from without holding any of the source's data: a fingerprint (hash) of the
source, the generator and its parameters, the seed, the schema the model saw, the columns left out and why, and
the privacy budget when there is one. Reference: Gebru et al., "Datasheets for Datasets", CACM 2021.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_VERSION = 1


@dataclass
class DataCard:
    """What a person needs to know before using a synthetic release."""

    release_file: str
    release_sha256: str
    rows: int
    columns: list[str]
    generator: dict[str, Any]
    source: dict[str, Any]
    schema: dict[str, Any]
    excluded_columns: list[dict[str, str]]
    privacy: dict[str, Any]
    created: str
    generation: int = 1
    parents: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"privsynth_card": CARD_VERSION, **asdict(self)}, indent=2, default=str)

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


def card_path(release_path: str | Path) -> Path:
    """``out/synth.csv`` -> ``out/synth.card.json``."""
    path = Path(release_path)
    return path.with_name(path.stem + ".card.json")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
