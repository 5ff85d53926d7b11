"""`privsynth serve` makes an admin on first start, its token in a 0600 file (never in the log); `privsynth users
add|list|rotate|disable|enable` manage users (in-process, tests/cli_support.py; the server runs in its own process)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
from service_support import free_port, serve

from cli_support import run_cli
from privsynth.service.store import Store

_privsynth = run_cli


def test_users_add_prints_a_token_that_signs_in(tmp_path: Path) -> None:
    folder = ["--data-dir", str(tmp_path)]
    added = _privsynth("users", "add", "bea", "--role", "custodian", *folder)
    assert added.returncode == 0, added.stderr
    token = re.search(r"pst_\S+", added.stdout)
    assert token is not None
    store = Store(f"sqlite:///{tmp_path / 'service.sqlite'}")
    user = store.user_by_token(token.group(0))
    assert user is not None and (user.name, user.role) == ("bea", "custodian")
    store.close()
    twice = _privsynth("users", "add", "bea", "--role", "analyst", *folder)
    assert twice.returncode != 0 and "already exists" in twice.stderr
    bad = _privsynth("users", "add", "cy", "--role", "boss", *folder)
    assert bad.returncode != 0 and "role must be one of admin, custodian, analyst" in bad.stderr
    assert _privsynth("users", "list", *folder).stdout.split() == ["bea", "custodian"]


def test_serve_writes_the_first_admin_token_to_a_private_file_not_the_log(tmp_path: Path) -> None:
    port = free_port()
    server = serve(tmp_path, port)
    server.terminate()
    output, _ = server.communicate(timeout=30)
    assert "pst_" not in output
    assert str(tmp_path / "admin.token") in output.replace("\n", "")
    token_file = tmp_path / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "session.key").stat().st_mode) == 0o600
    token = re.search(r"pst_\S+", token_file.read_text())
    assert token is not None
    token_file.unlink()
    again = serve(tmp_path, port)
    try:
        me = httpx.get(
            f"http://127.0.0.1:{port}/api/me", headers={"authorization": f"Bearer {token.group(0)}"}, timeout=30
        )
        assert me.json() == {"id": 1, "name": "admin", "role": "admin"}
        assert httpx.get(f"http://127.0.0.1:{port}/login", timeout=30).status_code == 200
        assert "privsynth service" in httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=30).text
    finally:
        again.terminate()
        second_output, _ = again.communicate(timeout=30)
    assert "pst_" not in second_output and not token_file.exists()


def test_users_rotate_and_disable_end_the_old_token(tmp_path: Path) -> None:
    folder = ["--data-dir", str(tmp_path)]
    first = re.search(r"pst_\S+", _privsynth("users", "add", "cy", "--role", "analyst", *folder).stdout)
    rotated = _privsynth("users", "rotate", "cy", *folder)
    second = re.search(r"pst_\S+", rotated.stdout)
    assert first is not None and second is not None and first.group(0) != second.group(0), rotated.stderr
    store = Store(f"sqlite:///{tmp_path / 'service.sqlite'}")
    try:
        assert store.user_by_token(first.group(0)) is None
        assert store.user_by_token(second.group(0)) is not None
        assert _privsynth("users", "disable", "cy", *folder).returncode == 0
        assert store.user_by_token(second.group(0)) is None
        assert _privsynth("users", "list", *folder).stdout.split() == ["cy", "analyst", "disabled"]
        assert _privsynth("users", "enable", "cy", *folder).returncode == 0
        assert store.user_by_token(second.group(0)) is not None
    finally:
        store.close()


def test_the_cli_job_limits_default_to_the_workers_own() -> None:
    import inspect

    from privsynth.cli import service as cli
    from privsynth.service import jobs

    for command in (cli.serve, cli.worker_command):
        defaults = {k: v.default for k, v in inspect.signature(command).parameters.items()}
        assert defaults["job_max_minutes"] == jobs.DEFAULT_MAX_MINUTES
        assert defaults["job_memory_mb"] == jobs.DEFAULT_MEMORY_MB
