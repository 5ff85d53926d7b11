"""The data card written next to every release (``synth.csv`` -> ``synth.card.json`` and ``synth.card.html``).

It records where the rows came from without holding any of the source's data: a fingerprint (hash) of the
source, the generator and its parameters, the seed, the schema with every non-public domain redacted, the
columns left out and why, the privacy budget and its ledger entries, the evaluation summary when one was made,
the generation (how many synthesizers stand between these rows and real data), and what happened to the
fitted model. The Datasheets-for-Datasets questions that apply to a synthetic release are answered from those
facts, or by the user. Reference: Gebru et al., "Datasheets for Datasets", CACM 2021.

Cards validate against the JSON Schema shipped as ``card.schema.json`` in this package.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from privsynth.data.hashing import file_sha256
from privsynth.errors import DataError
from privsynth.render import environment, plain

__all__ = [
    "CARD_VERSION",
    "DataCard",
    "card_html_path",
    "card_path",
    "card_schema",
    "file_sha256",
    "plain",
    "read_card",
    "render_card_html",
]

CARD_VERSION: Final = 2
SCHEMA_FILE: Final = "card.schema.json"


@dataclass
class DataCard:
    """What a person needs to know before using a synthetic release (or a training set mixed from one).

    ``kind`` is ``synthetic`` (sampled from a model) or ``mix`` (real rows plus capped synthetic rows).
    ``generation`` is 1 for rows sampled from a model fitted on real data and parent + 1 for a model fitted on
    an earlier release; a mix has the highest generation among its synthetic rows (0 with none). ``parents``
    lists the known releases the rows descend from. ``datasheet`` holds the answered questions by section.
    """

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
    kind: str = "synthetic"
    release_id: str = ""
    generation: int = 1
    parents: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    retention: dict[str, Any] = field(default_factory=dict)
    datasheet: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    mix: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    canaries: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, versioned by ``privsynth_card``."""
        out: dict[str, Any] = plain({"privsynth_card": CARD_VERSION, **asdict(self)})
        for optional in ("mix", "filters", "canaries"):
            if out[optional] is None:
                del out[optional]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def write(self, path: Path) -> Path:
        """Write the card as JSON to ``path``."""
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def write_html(self, path: Path) -> Path:
        """Write the card as one self-contained HTML page to ``path``."""
        path.write_text(render_card_html(self.to_dict()), encoding="utf-8")
        return path

    def write_beside(self, release_path: Path) -> tuple[Path, Path]:
        """Write ``<name>.card.json`` and ``<name>.card.html`` next to the release file."""
        return self.write(card_path(release_path)), self.write_html(card_html_path(release_path))


def card_path(release_path: str | Path) -> Path:
    """``out/synth.csv`` -> ``out/synth.card.json``."""
    path = Path(release_path)
    return path.with_name(path.stem + ".card.json")


def card_html_path(release_path: str | Path) -> Path:
    """``out/synth.csv`` -> ``out/synth.card.html``."""
    path = Path(release_path)
    return path.with_name(path.stem + ".card.html")


def read_card(path: str | Path) -> dict[str, Any]:
    """The card of a release, given the release file or the card file itself (``.card.json``)."""
    path = Path(path)
    card_file = path if path.name.endswith(".card.json") else card_path(path)
    if not card_file.is_file():
        raise DataError(f"no data card at '{card_file}': privsynth writes one next to each release it makes")
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"'{card_file}' is not a privsynth data card: {exc}") from None
    if not isinstance(card, dict) or "privsynth_card" not in card:
        raise DataError(f"'{card_file}' is not a privsynth data card (it has no 'privsynth_card' field)")
    return card


def card_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every card validates against."""
    text = resources.files("privsynth.provenance").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def render_card_html(card: dict[str, Any]) -> str:
    """One self-contained HTML page (inline style, no scripts, no external resources) showing ``card``."""
    # Metrics read as in the report, the leaderboard and the CLI. Imported here, not at the top: importing the
    # catalogue loads the evaluation package (scikit-learn, matplotlib), which reading and writing JSON cards,
    # lineage and mixes do not need.
    from privsynth.evaluate.catalogue import format_metric

    pages = environment("privsynth.provenance", metric=format_metric, filters={"domain": _format_domain})
    return pages.get_template("card.html.j2").render(card=card, json=json.dumps(card, indent=2))


def _format_domain(column: dict[str, Any]) -> str:
    """The domain as the card holds it: listed only when public, else its size or 'redacted'."""
    if "categories" in column:
        return ", ".join(map(str, column["categories"]))
    if "categories_count" in column:
        return f"{column['categories_count']} categories (not public: redacted)"
    if "bounds" in column:
        low, high = column["bounds"]
        return f"{low} to {high}"
    if column.get("kind") in ("integer", "float", "datetime"):
        return "bounds not public: redacted"
    return "-"
