"""The service's configuration (:class:`ServiceConfig`) and the constants the routes, views and web UI share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from privsynth.service.jobs import DEFAULT_MAX_MINUTES, DEFAULT_MEMORY_MB

__all__ = ["CSRF_HEADER", "MAX_ROWS", "RELEASE_FILES", "ServiceConfig"]

MAX_ROWS: Final = 10_000_000
CSRF_HEADER: Final = "x-privsynth-csrf"
"""Requests signed in by the session cookie must echo the session's CSRF token in this header when they change
something (the cookie is also SameSite=strict); the web UI's script does."""
RELEASE_FILES: Final = {
    "data": ("synthetic.csv", "text/csv"),
    "card": ("synthetic.card.json", "application/json"),
    "card.html": ("synthetic.card.html", "text/html"),
    "report": ("report.html", "text/html"),
    "report.json": ("report.json", "application/json"),
}


@dataclass
class ServiceConfig:
    """Where the service keeps its files and database, and its limits."""

    data_dir: Path = field(default_factory=lambda: Path("~/.privsynth/service").expanduser())
    database_url: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body other than an upload (JSON: schemas, jobs)."""
    max_cells: int = 20_000_000
    """Largest upload in rows x columns, checked before it is read (a small Parquet file can hold many cells)."""
    heartbeat: float = 2.0
    stale_after: float = 60.0
    job_max_minutes: float = DEFAULT_MAX_MINUTES
    """Wall-clock limit of one job; a job past it is stopped and its reservation settled."""
    job_memory_mb: int = DEFAULT_MEMORY_MB
    """Address-space limit of one job's process."""
    sql_allow: tuple[str, ...] = ()
    """Database servers custodians may register tables from, as ``driver://host:port``; none by default."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set it whenever the service is behind HTTPS)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'service.sqlite'}"
