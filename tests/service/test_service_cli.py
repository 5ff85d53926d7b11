"""`privsynth serve` prints an admin token on first start only; `privsynth users add|list` manage users."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
from service_support import free_port, serve

from privsynth.service.store import Store


def _privsynth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privsynth", *args], capture_output=True, text=True, timeout=120, check=False
    )


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


def test_serve_prints_the_admin_token_on_first_start_only(tmp_path: Path) -> None:
    port = free_port()
    server = serve(tmp_path, port)
    server.terminate()
    output, _ = server.communicate(timeout=30)
    token = re.search(r"pst_\S+", output)
    assert token is not None, output
    again = serve(tmp_path, port)
    try:
        me = httpx.get(f"http://127.0.0.1:{port}/api/me", headers={"authorization": f"Bearer {token.group(0)}"})
        assert me.json() == {"id": 1, "name": "admin", "role": "admin"}
        assert httpx.get(f"http://127.0.0.1:{port}/login").status_code == 200
        assert "privsynth service" in httpx.get(f"http://127.0.0.1:{port}/openapi.json").text
    finally:
        again.terminate()
        second_output, _ = again.communicate(timeout=30)
    assert "pst_" not in second_output
