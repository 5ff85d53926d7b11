"""What keeps the service's secrets and its boundary: keys and credentials outside the database, the SQL sources
an admin allowed, limits on request bodies, security headers, sign-in throttling, and the analyst's view of a card.

Threat model: an analyst, and a custodian acting beyond their own datasets, are adversaries; the admin and the
machine's OS account that runs the service are trusted. So nothing a custodian can reach through the API (a SQL
source, an upload) may read the service's own database or files, and the secrets that make someone admin (the
session-signing key, tokens) are not in that database in a usable form: the key is a 0600 file in the data folder
(or ``$PRIVSYNTH_SESSION_KEY``), tokens are stored as hashes, and SQL passwords are 0600 files beside the key.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import HTTPException
from sqlalchemy.engine import URL, make_url

from privsynth.errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = [
    "SESSION_KEY_ENV",
    "Credentials",
    "LoginThrottle",
    "SQLAllowList",
    "SecurityMiddleware",
    "analyst_card",
    "connect_options",
    "constant_time_equal",
    "private_folder",
    "scrub_paths",
    "session_key",
    "with_password",
    "without_password",
    "write_private",
]

SESSION_KEY_ENV: Final = "PRIVSYNTH_SESSION_KEY"
SESSION_KEY_FILE: Final = "session.key"
CREDENTIALS_DIR: Final = "credentials"
_FILE_DATABASES: Final = frozenset({"sqlite", "duckdb"})
_DEFAULT_PORTS: Final = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}
_TABLE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
"""The UI's own pages: scripts only from the app (no inline script), frames only of its own release files."""
SANDBOX_CSP: Final = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; frame-ancestors 'self'"
)
"""A release's HTML (report, card): written from the data, so shown as an inert document in an opaque origin
(no script, no cookies, no requests), whether it is framed or opened directly."""


# ---- secrets outside the database ------------------------------------------------------------------------------


def _create_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file ``path`` that only its owner can read (mode 0600 from the start);
    FileExistsError if it exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


def write_private(path: Path, text: str) -> Path:
    """Replace ``path`` with a file holding ``text`` that only its owner can read (mode 0600)."""
    path.unlink(missing_ok=True)
    _create_private(path, text)
    return path


def _private_file(path: Path, create: Callable[[], str]) -> str:
    """The text of ``path``, created with mode 0600 if missing (by one process, if several start at once);
    refuses a file that others can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = create()
    try:
        _create_private(path, value)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ParameterError(
                f"{path.name} in the service's data folder can be read by other users (mode {mode:o}); "
                f"run 'chmod 600 {path.name}' there and start again"
            ) from None
        return path.read_text(encoding="utf-8").strip()
    return value


def private_folder(path: Path) -> Path:
    """Make the service's data folder, mode 0700 (uploaded rows, releases, keys and passwords are for the service's
    OS account only); an existing folder keeps its mode, with a warning when other users can enter it."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        logger.warning("the service's data folder %s can be read by other users: run 'chmod 700' on it", path)
    return path


def session_key(data_dir: Path) -> str:
    """The key that signs the web UI's session cookies: ``$PRIVSYNTH_SESSION_KEY``, else ``session.key`` in the data
    folder (made on first start, mode 0600). Never in the database, so reading the database does not make an admin.
    """
    from_env = os.environ.get(SESSION_KEY_ENV, "").strip()
    if from_env:
        if len(from_env) < 32:
            raise ParameterError(f"${SESSION_KEY_ENV} must be at least 32 characters (a random string)")
        return from_env
    return _private_file(Path(data_dir) / SESSION_KEY_FILE, lambda: secrets.token_urlsafe(48))


class Credentials:
    """Passwords of SQL sources, one 0600 file per dataset in ``<data dir>/credentials`` (mode 0700), never in the
    database: a stored URL names the user and the server, and a worker adds the password when it connects."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / CREDENTIALS_DIR

    def _path(self, dataset_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", dataset_id):
            raise ParameterError(f"not a dataset id: {dataset_id!r}")
        return self.folder / dataset_id

    def put(self, dataset_id: str, password: str) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self._path(dataset_id), password)

    def get(self, dataset_id: str) -> str | None:
        path = self._path(dataset_id)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def delete(self, dataset_id: str) -> None:
        self._path(dataset_id).unlink(missing_ok=True)


def with_password(location: str, password: str | None) -> str:
    """A stored (password-free) SQL URL with ``password`` put back, for connecting."""
    if not password:
        return location
    return make_url(location).set(password=password).render_as_string(hide_password=False)


def without_password(location: str) -> tuple[str, str | None]:
    """``location`` without its password, and the password."""
    url = make_url(location)
    return url._replace(password=None).render_as_string(hide_password=False), url.password


# ---- SQL sources -----------------------------------------------------------------------------------------------


def _server(url: URL) -> tuple[str, str, int | None]:
    backend = url.get_backend_name()
    return backend, (url.host or "").lower(), url.port or _DEFAULT_PORTS.get(backend)


@dataclass(frozen=True)
class SQLAllowList:
    """The database servers custodians may register tables from, as an admin configured them
    (``privsynth serve --allow-sql postgresql://host:port``); local database files (SQLite, DuckDB) never, and
    never the service's own database."""

    servers: tuple[str, ...]
    service_url: str

    def __post_init__(self) -> None:
        for entry in self.servers:
            url = make_url(entry)
            if url.get_backend_name() in _FILE_DATABASES or not url.host:
                raise ParameterError(
                    f"--allow-sql {entry!r}: give a database server as driver://host:port (for example "
                    "postgresql://db.internal:5432); local database files cannot be allowed"
                )

    def check(self, url_text: str, table: str, user: str | None, password: str | None) -> tuple[URL, str]:
        """The URL to connect with (explicit user and password, nothing else from the request) and how to name
        it to people (no password, no driver); :class:`~privsynth.errors.ParameterError` naming what is refused
        otherwise."""
        try:
            url = make_url(url_text)
        except Exception:
            raise ParameterError("that is not a database URL; give driver://user@host:port/database") from None
        backend, host, port = _server(url)
        if backend in _FILE_DATABASES or not host:
            raise ParameterError(
                "the service does not open database files (SQLite, DuckDB) or local sockets: upload the table as "
                "CSV or Parquet, or register a table on a database server an admin allowed"
            )
        allowed = {_server(make_url(entry)) for entry in self.servers}
        if (backend, host, port) not in allowed:
            shown = ", ".join(self.servers) or "none"
            raise ParameterError(
                f"{backend}://{host}:{port} is not a database server this service may read (allowed: {shown}); "
                "an admin allows one with 'privsynth serve --allow-sql driver://host:port'"
            )
        if url.query:
            raise ParameterError("connection options in the URL are not accepted; give driver://host:port/database")
        own = make_url(self.service_url)
        if _server(own) == (backend, host, port) and (own.database or "") == (url.database or ""):
            raise ParameterError("that is the service's own database; register a table of another database")
        user = user or url.username
        password = password or url.password
        if not user or not password:
            raise ParameterError(
                "give the database user and password this dataset connects with (fields 'user' and 'password'): "
                "the service connects with explicit credentials only, never its own"
            )
        if not _TABLE.match(table):
            raise ParameterError(f"{table!r} is not a table name; give table or schema.table (letters, digits, _)")
        url = url.set(username=user, password=password)
        return url, f"{backend}://{user}@{host}:{port}/{url.database or ''}"


def connect_options(url: URL) -> URL:
    """``url`` with a short connect timeout (a server that does not answer fails fast, the same for every case)."""
    if url.get_backend_name() == "postgresql":
        return url.update_query_dict({"connect_timeout": "10"})
    return url


# ---- requests --------------------------------------------------------------------------------------------------


def constant_time_equal(given: str | None, expected: str | None) -> bool:
    """Whether two secrets match, in time that does not depend on where they differ."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def scrub_paths(message: str, roots: Sequence[str | Path]) -> str:
    """``message`` without the server's folders (they tell an attacker where things are)."""
    for root in sorted({str(r) for r in roots if str(r) not in ("", "/")}, key=len, reverse=True):
        message = message.replace(root.rstrip("/") + "/", "").replace(root, "<server>")
    return message


class LoginThrottle:
    """At most ``attempts`` failed sign-ins per ``window`` seconds from one address, and as many for one user name,
    so tokens cannot be guessed online nor the audit log flooded (one audit row when a throttle starts)."""

    def __init__(self, attempts: int = 10, window: float = 300.0) -> None:
        self.attempts, self.window = attempts, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, *keys: str) -> float:
        """Seconds until these keys may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = [
                failures[0] + self.window - now
                for failures in (self._recent(key, now) for key in keys)
                if len(failures) >= self.attempts
            ]
        return max(waits, default=0.0)

    def fail(self, *keys: str) -> bool:
        """Count a failure; True when it is the one that starts a throttle (audit that one)."""
        now = time.monotonic()
        started = False
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            for key in keys:
                failures = self._recent(key, now)
                failures.append(now)
                started |= len(failures) == self.attempts
        return started


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityMiddleware:
    """Security headers on every response, a size limit on every request body (checked on Content-Length before
    anything is read, and again while reading), and no body read at all from a request to the API that does not
    authenticate (``authenticate(scope)`` returns an error response, or None to go on)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        upload_limit: int,
        body_limit: int,
        authenticate: Callable[[Scope], Awaitable[tuple[int, str, dict[str, str]] | None]],
        sandboxed: Callable[[str], bool],
        secure: bool = False,
    ) -> None:
        self.app, self.upload_limit, self.body_limit = app, upload_limit, body_limit
        self.authenticate, self.sandboxed, self.secure = authenticate, sandboxed, secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        csp = SANDBOX_CSP if self.sandboxed(path) else PAGE_CSP

        async def send_secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"SAMEORIGIN"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if self.secure:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        has_body = "content-length" in headers or "transfer-encoding" in headers
        if scope["method"] in ("GET", "HEAD", "OPTIONS") or not has_body:
            await self.app(scope, receive, send_secured)
            return
        limit = self.upload_limit + 64 * 1024 if path == "/api/datasets" else self.body_limit
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = limit + 1
        if declared > limit:
            await _json(send_secured, 413, f"the request body is {declared:,} bytes; the limit is {limit:,}")
            return
        if path.startswith("/api/"):
            refused = await self.authenticate(scope)
            if refused is not None:
                status, detail, extra_headers = refused
                await _json(send_secured, status, detail, extra_headers)
                return
        received = 0
        started = False

        async def counted() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes an HTTPException raised while it reads a body on as it is (any other
                    # exception becomes a 400), so the client is told 413 whichever route was reading.
                    raise HTTPException(413, f"the request body is over the limit of {limit:,} bytes")
            return message

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send_secured(message)

        try:
            await self.app(scope, counted, tracked)
        except HTTPException as exc:
            if started or exc.status_code != 413:
                raise
            await _json(send_secured, 413, str(exc.detail))


async def _json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ---- what an analyst may see of a card ---------------------------------------------------------------------------

_WITHHELD: Final = "withheld from analysts: "


def analyst_card(card: dict[str, Any]) -> dict[str, Any]:
    """A data card as an analyst may see it: without the sections computed on the real rows (evaluation metrics
    with exact real row counts and category coverage, mixing counts), the server's ledger location and the
    fingerprints of the real data. What the release is, how it was made and its privacy cost stay."""
    out = dict(card)
    withheld = []
    if out.get("metrics"):
        out["metrics"] = {"note": _WITHHELD + "measured on the real rows; the custodian shares them in the report"}
        withheld.append("evaluation metrics")
    if out.pop("mix", None) is not None:
        withheld.append("mixing counts of real rows")
    if isinstance(out.get("privacy"), dict):
        privacy = {k: v for k, v in out["privacy"].items() if k != "dataset_fingerprint_sha256"}
        if privacy.get("ledger"):
            privacy["ledger"] = "the service's privacy ledger"
        out["privacy"] = privacy
    if isinstance(out.get("source"), dict):
        out["source"] = {k: v for k, v in out["source"].items() if k != "fingerprint_sha256"}
    if withheld:
        out["notes"] = [*(out.get("notes") or []), _WITHHELD + ", ".join(withheld)]
    return out
