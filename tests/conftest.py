"""Shared fixtures: a private ledger per test, a throwaway PostgreSQL server for the database tests, and the
headless Chromium the browser tests drive."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_PG_HELP = (
    "install PostgreSQL (Debian: `apt-get install postgresql`) and psycopg (`pip install 'psycopg[binary]'`) "
    "to run the PostgreSQL tests"
)


@pytest.fixture(scope="session")
def playwright_chromium() -> tuple[ModuleType, str]:
    """Playwright's sync API and a Chromium to drive with it ($PRIVSYNTH_CHROMIUM, else one on PATH); skips
    with what to install when either is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright; it is in the dev extra)"
    )
    named = os.environ.get("PRIVSYNTH_CHROMIUM")
    found = (named if Path(named).exists() else None) if named else None
    for name in () if named else ("chromium", "chromium-browser", "google-chrome"):
        found = found or shutil.which(name)
    if found is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set PRIVSYNTH_CHROMIUM to its path)")
    return sync_api, found


@pytest.fixture(autouse=True)
def _private_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI subprocess it starts) records spends and releases in its own ledger file."""
    monkeypatch.setenv("PRIVSYNTH_LEDGER", str(tmp_path / "ledger.sqlite"))


def _pg_bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries: on PATH, else under /usr/lib/postgresql/<version>/bin (Debian)."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).parent] if on_path else []
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versioned, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)], reverse=True)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the test session; yields a SQLAlchemy URL to its `postgres` database.

    The cluster lives in a temporary folder, listens on 127.0.0.1 at a free port with trust authentication, runs
    without fsync, and is stopped and deleted at the end. PostgreSQL refuses to run as root, so under root the
    server runs as the `postgres` OS user. Skipped, with the reason, when the binaries, psycopg or (under root)
    the `postgres` user are missing.
    """
    pytest.importorskip("psycopg", reason=f"psycopg is not installed; {_PG_HELP}")
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; {_PG_HELP}")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"running as root and there is no `postgres` OS user to run the server as; {_PG_HELP}")
        user = owner.pw_name
    folder = Path(tempfile.mkdtemp(prefix="privsynth-pg-"))
    if user is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log, port = folder / "data", folder / "server.log", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run(
            [str(bin_dir / args[0]), *args[1:]], user=user, cwd=folder, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stdout}{done.stderr}{server_log}")

    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N", "--no-instructions")
        run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options, "start")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
