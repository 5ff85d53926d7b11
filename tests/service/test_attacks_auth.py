"""Attacks on the service's authentication and its boundary, run through HTTP against a real ``privsynth serve``.

Cast (issue #18): custodians carol and dave, analysts alan (granted carol's dataset) and bob (no grant). Each test
runs one attack of the security review and checks that it is refused, with a message that says why. The threat
model: analysts, and custodians beyond their own datasets, are adversaries; the admin and the service's OS account
are trusted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from itsdangerous import TimestampSigner
from service_support import free_port, make_service, quick_aim, serve
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from privsynth.service.store import Store

TIMEOUT = 60.0
"""Seconds an HTTP call may take: the machine running the tests may be slow and busy."""


@dataclass
class Server:
    base: str
    data_dir: Path
    tokens: dict[str, str]
    pid: int
    sql_url: str
    """A PostgreSQL database the admin allowed, without a password (empty when no server is available)."""

    def client(self, name: str | None = None) -> httpx.Client:
        headers = {} if name is None else {"authorization": f"Bearer {self.tokens[name]}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, nass_train: pd.DataFrame, request: pytest.FixtureRequest
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("attacks-service")
    store = Store(f"sqlite:///{data_dir / 'service.sqlite'}")
    tokens = {"admin": store.add_user("admin", "admin")[1]}
    for name, role in (("carol", "custodian"), ("dave", "custodian"), ("alan", "analyst"), ("bob", "analyst")):
        tokens[name] = store.add_user(name, role)[1]
    # An earlier version kept the session-signing key in this table, where a SQL source could read it.
    with sqlite3.connect(data_dir / "service.sqlite") as con:
        con.execute("INSERT INTO service_settings (key, value) VALUES ('session', 'key-of-an-older-version')")
    store.close()
    options: list[str] = []
    sql_url = ""
    try:
        postgres = make_url(request.getfixturevalue("postgres_url"))
    except pytest.skip.Exception:
        postgres = None
    if postgres is not None:
        nass_train.head(2000).to_sql("attack_crashes", create_engine(postgres), index=False, if_exists="replace")
        options += ["--allow-sql", f"postgresql://{postgres.host}:{postgres.port}"]
        sql_url = postgres.render_as_string(hide_password=False)
    port = free_port()
    process = serve(data_dir, port, *options)
    try:
        yield Server(f"http://127.0.0.1:{port}", data_dir, tokens, process.pid, sql_url)
    finally:
        process.terminate()
        process.communicate(timeout=60)


@pytest.fixture(scope="module")
def carols(server: Server, nass_train: pd.DataFrame) -> dict[str, Any]:
    """Carol's upload of 3,000 nassCDS rows, capped at epsilon 0.5 and granted to alan."""
    body = nass_train.head(3000).to_csv(index=False).encode()
    with server.client("carol") as carol:
        dataset = carol.post("/api/datasets", files={"file": ("nass.csv", body)}, data={"name": "nass"}).json()
        carol.put(f"/api/datasets/{dataset['id']}/cap", json={"epsilon": 0.5, "delta": 1e-6}).raise_for_status()
        carol.post(f"/api/datasets/{dataset['id']}/grants", json={"user": "alan", "role": "analyst"})
    return {**dataset, "csv": body}


def _sign_in(server: Server, name: str) -> httpx.Client:
    client = httpx.Client(base_url=server.base, timeout=TIMEOUT)
    signed = client.post("/login", data={"name": name, "token": server.tokens[name]}, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    return client


def _cookie(key: str, data: dict[str, Any]) -> str:
    """A session cookie as Starlette's SessionMiddleware signs one with ``key``."""
    payload = base64.b64encode(json.dumps(data).encode())
    return TimestampSigner(key).sign(payload).decode()


# ---- 1: a custodian becomes admin through a SQL source ----------------------------------------------------------


def test_a_custodian_cannot_read_the_service_database_or_local_files_through_a_sql_source(server: Server) -> None:
    own = f"sqlite:///{server.data_dir / 'service.sqlite'}"
    planted = server.data_dir.parent / "planted.sqlite"
    attempts = [
        (own, "service_settings"),
        (own, "service_users"),
        (own, "service_datasets"),
        ("sqlite:////etc/passwd", "x"),
        (f"sqlite:///{planted}", "x"),
        (f"duckdb:///{server.data_dir / 'service.sqlite'}", "service_settings"),
    ]
    with server.client("carol") as carol:
        for url, table in attempts:
            refused = carol.post("/api/datasets/sql", json={"name": "probe", "url": url, "table": table})
            assert refused.status_code == 403, (url, refused.text)
            assert "does not open database files" in refused.json()["detail"]
            assert "not a database" not in refused.text and str(server.data_dir) not in refused.text
        # A port on this machine is not probed: the server is not one an admin allowed, nothing is connected to.
        probe = carol.post(
            "/api/datasets/sql",
            json={"name": "probe", "url": "postgresql://u:p@127.0.0.1:1/x", "table": "t"},
        )
        assert probe.status_code == 403 and "is not a database server this service may read" in probe.text
    assert not planted.exists()
    with sqlite3.connect(server.data_dir / "service.sqlite") as con:
        assert con.execute("SELECT count(*) FROM service_settings WHERE key = 'session'").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM service_datasets").fetchone()[0] >= 0


def test_a_forged_session_cookie_does_not_make_an_admin(server: Server) -> None:
    key_file = server.data_dir / "session.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    forged = [
        _cookie("key-of-an-older-version", {"user_id": 1}),  # the key an older database held
        _cookie("key-of-an-older-version", {"sid": "x", "csrf": "x"}),
        # Even the real key (read from the 0600 file) signs no session: a session is a row the server made.
        _cookie(key_file.read_text().strip(), {"user_id": 1}),
        _cookie(key_file.read_text().strip(), {"sid": "guessed", "csrf": "x"}),
    ]
    for cookie in forged:
        with httpx.Client(base_url=server.base, timeout=TIMEOUT, cookies={"privsynth_session": cookie}) as client:
            assert client.get("/api/me").status_code == 401
            made = client.post(
                "/api/users", json={"name": "mallory", "role": "admin"}, headers={"x-privsynth-csrf": "x"}
            )
            assert made.status_code == 401
    with server.client("admin") as admin:
        assert "mallory" not in {u["name"] for u in admin.get("/api/users").json()}


def test_sql_sources_need_an_allowed_server_and_explicit_credentials(server: Server) -> None:
    if not server.sql_url:
        pytest.skip("no PostgreSQL server (see the postgres_url fixture)")
    with server.client("carol") as carol:
        body = {"name": "crashes", "url": server.sql_url, "table": "attack_crashes"}
        no_password = carol.post("/api/datasets/sql", json=body)
        assert no_password.status_code == 403 and "explicit credentials" in no_password.text
        options = carol.post("/api/datasets/sql", json={**body, "url": server.sql_url + "?host=/tmp", "password": "s"})
        assert options.status_code == 403 and "connection options" in options.text
        missing = carol.post(
            "/api/datasets/sql", json={**body, "url": server.sql_url.rsplit("/", 1)[0] + "/nodb", "password": "s"}
        )
        assert missing.status_code == 400 and missing.json()["detail"].startswith("cannot connect to")
        assert not re.search(r"psycopg|FATAL|does not exist|Traceback", missing.text)
        made = carol.post("/api/datasets/sql", json={**body, "password": "s3cret-pw"})
        assert made.status_code == 201, made.text
        assert "s3cret" not in made.text
    with sqlite3.connect(server.data_dir / "service.sqlite") as con:
        (location,) = con.execute("SELECT location FROM service_datasets WHERE id = ?", (made.json()["id"],)).fetchone()
    assert "s3cret" not in location and "postgres@" in location
    secret = server.data_dir / "credentials" / made.json()["id"]
    assert secret.read_text() == "s3cret-pw" and oct(secret.stat().st_mode & 0o777) == "0o600"


# ---- 5: another custodian changes a dataset's cap ---------------------------------------------------------------


def test_two_custodians_with_the_same_bytes_keep_two_budgets(server: Server, carols: dict[str, Any]) -> None:
    with server.client("dave") as dave:
        copy = dave.post("/api/datasets", files={"file": ("same.csv", carols["csv"])}, data={"name": "same"}).json()
        assert dave.put(f"/api/datasets/{copy['id']}/cap", json={"epsilon": 100, "delta": 1e-6}).status_code == 200
        # Dave cannot reach carol's dataset, so he cannot change its cap.
        assert dave.put(f"/api/datasets/{carols['id']}/cap", json={"epsilon": 100, "delta": 1e-6}).status_code == 404
    with server.client("carol") as carol:
        budget = carol.get(f"/api/datasets/{carols['id']}").json()["budget"]
    assert budget["cap"] == {"epsilon": 0.5, "delta": 1e-6}
    if server.sql_url:
        tables = []
        for name in ("carol", "dave"):
            with server.client(name) as client:
                body = {"name": "t", "url": server.sql_url, "table": "attack_crashes", "password": "pw"}
                made = client.post("/api/datasets/sql", json=body).json()
                client.put(
                    f"/api/datasets/{made['id']}/cap", json={"epsilon": 0.5 if name == "carol" else 100, "delta": 1e-6}
                )
                tables.append(client.get(f"/api/datasets/{made['id']}").json()["budget"]["cap"])
        assert [cap and cap["epsilon"] for cap in tables] == [0.5, 100]


# ---- 6: the card an analyst reads -------------------------------------------------------------------------------


def test_an_analyst_card_has_no_real_counts_coverage_or_server_paths(server: Server, carols: dict[str, Any]) -> None:
    columns = [c["name"] for c in carols["schema"]["columns"]]
    with server.client("alan") as alan:
        job = alan.post(
            f"/api/datasets/{carols['id']}/jobs",
            json={"method": "aim", "epsilon": 0.2, "rows": 200, "seed": 1, "params": quick_aim(columns)},
        )
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 600
        while (state := alan.get(f"/api/jobs/{job.json()['id']}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, state
            time.sleep(1)
        assert state["status"] == "done", state
        card = alan.get(f"/api/releases/{state['release_id']}/card").json()
        page = alan.get(f"/api/releases/{state['release_id']}/card.html")
    text = json.dumps(card)
    assert not card.get("metrics") and "category_coverage" not in text and "real_rows" not in text
    assert card["privacy"]["ledger"] == "the service's privacy ledger" and "dataset_fingerprint_sha256" not in text
    assert str(server.data_dir) not in text and "sqlite" not in text
    assert "sandbox" in page.headers["content-security-policy"] and "category_coverage" not in page.text
    with server.client("carol") as carol:
        # a DP release's card carries no real-data metrics even for its custodian (#17); the report holds them
        assert not carol.get(f"/api/releases/{state['release_id']}/card").json().get("metrics")
        assert carol.get(f"/api/releases/{state['release_id']}/report.json").status_code == 200


# ---- 7 and 9: bodies read before authentication, files that unpack to gigabytes -------------------------------


def _raw_request(server: Server, head: str) -> str:
    """Send only the head of a request (no body) and return the status line the server answers with."""
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())
        return sock.recv(4096).decode(errors="replace").splitlines()[0]


def test_an_anonymous_upload_is_refused_before_its_body_is_read(server: Server) -> None:
    head = (
        "POST /api/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {300 * 1024 * 1024}\r\n\r\n"
    )
    # The server answers while the 300 MB body is still unsent: it read none of it.
    assert _raw_request(server, head).startswith("HTTP/1.1 401")
    signed = head.replace("Host: x", f"Host: x\r\nAuthorization: Bearer {server.tokens['carol']}")
    signed = signed.replace(str(300 * 1024 * 1024), str(600 * 1024 * 1024))
    assert _raw_request(server, signed).startswith("HTTP/1.1 413")
    json_head = (
        f"PUT /api/datasets/x/schema HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.tokens['carol']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    assert _raw_request(server, json_head).startswith("HTTP/1.1 413")
    assert not list(server.data_dir.glob("upload-*"))


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(server: Server, carols: dict[str, Any]) -> None:
    port = int(server.base.rsplit(":", 1)[1])
    head = (
        f"PUT /api/datasets/{carols['id']}/schema HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.tokens['carol']}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b" " * 1024 * 1024)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())
        try:
            while sent < 64:  # the limit for a request other than an upload is 16 MB
                sock.sendall(chunk)
                sent += 1
        except OSError:
            pass  # the server answered and closed the connection
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "over the limit of 16,777,216 bytes" in answer


def _peak_memory_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def test_a_small_parquet_file_of_many_cells_is_refused_from_its_footer(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "zeros.parquet"
    zeros = pa.table({"a": pa.array([0] * 1_000_000, pa.int64()), "b": pa.array([0] * 1_000_000, pa.int64())})
    with pq.ParquetWriter(path, zeros.schema) as writer:
        for _ in range(30):
            writer.write_table(zeros)
    assert path.stat().st_size < 2_000_000  # 30M x 2 zeros
    before = _peak_memory_kb(server.pid) if Path(f"/proc/{server.pid}/status").exists() else None
    with server.client("carol") as carol:
        refused = carol.post("/api/datasets", files={"file": ("zeros.parquet", path.read_bytes())})
        corrupt = carol.post("/api/datasets", files={"file": ("bad.parquet", b"PAR1 not really PAR1")})
    assert refused.status_code == 413, refused.text
    assert "30,000,000 rows x 2 columns" in refused.json()["detail"]
    if before is not None:  # the serve process is python -m privsynth itself
        assert _peak_memory_kb(server.pid) - before < 200_000
    assert corrupt.status_code == 400 and str(server.data_dir) not in corrupt.text and "/tmp" not in corrupt.text
    with server.client("carol") as carol:
        odd = carol.post("/api/datasets", files={"file": ("odd.csv", b"a,b\n1,2\n1,2\n1,2\nxxxxxxxxxx")})
    assert odd.status_code == 400 and "cannot read odd.csv: 'odd.csv'" in odd.text, odd.text
    assert "upload-" not in odd.text and str(server.data_dir) not in odd.text


# ---- 10: sessions, tokens and users -----------------------------------------------------------------------------


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(server: Server, carols: dict[str, Any]) -> None:
    browser = _sign_in(server, "alan")
    stolen = browser.cookies["privsynth_session"]
    assert browser.get("/api/me").json()["name"] == "alan"
    browser.post("/logout", follow_redirects=False)
    with httpx.Client(base_url=server.base, timeout=TIMEOUT, cookies={"privsynth_session": stolen}) as replay:
        assert replay.get("/api/me").status_code == 401
        job = replay.post(
            f"/api/datasets/{carols['id']}/jobs",
            json={"method": "aim", "epsilon": 0.1, "rows": 10},
            headers={"x-privsynth-csrf": "anything"},
        )
        assert job.status_code == 401
    browser.close()


def test_an_admin_rotates_a_token_and_disables_a_user(server: Server) -> None:
    browser = _sign_in(server, "bob")
    with server.client("admin") as admin:
        rotated = admin.post("/api/users/bob/token")
        assert rotated.status_code == 200
        new = rotated.json()["token"]
        with server.client("bob") as old:
            assert old.get("/api/me").status_code == 401
        assert browser.get("/api/me").status_code == 401  # rotating ends the web sessions too
        headers = {"authorization": f"Bearer {new}"}
        assert httpx.get(f"{server.base}/api/me", headers=headers, timeout=TIMEOUT).status_code == 200
        assert admin.patch("/api/users/bob", json={"disabled": True}).json()["disabled"] is True
        assert httpx.get(f"{server.base}/api/me", headers=headers, timeout=TIMEOUT).status_code == 401
        assert admin.patch("/api/users/admin", json={"disabled": True}).status_code == 400
        admin.patch("/api/users/bob", json={"disabled": False})
        assert httpx.get(f"{server.base}/api/me", headers=headers, timeout=TIMEOUT).status_code == 200
    server.tokens["bob"] = new
    browser.close()


# ---- 11: headers, frames, docs, the admin token ------------------------------------------------------------------


def test_pages_send_security_headers_and_docs_load_nothing_from_outside(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as client:
        login = client.get("/login")
        docs = client.get("/docs")
    csp = login.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
    assert login.headers["x-content-type-options"] == "nosniff"
    assert login.headers["x-frame-options"] == "SAMEORIGIN"
    assert docs.status_code == 200 and "/api/datasets/sql" in docs.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", docs.text), "docs must not load from a CDN"
    assert "pst_" not in (server.data_dir / "service.sqlite").read_bytes().decode(errors="replace")


def test_release_html_is_served_sandboxed(server: Server) -> None:
    template = Path(__file__).parents[2] / "src/privsynth/service/templates/release.html.j2"
    assert template.read_text().count('sandbox=""') == 2
    with server.client("carol") as carol:
        missing = carol.get("/api/releases/0123/report")
    assert "sandbox" in missing.headers["content-security-policy"]


def test_an_admin_disables_a_user_and_gives_a_new_token_in_the_browser(
    server: Server, playwright_chromium: tuple[ModuleType, str]
) -> None:
    sync_api, chromium = playwright_chromium
    with server.client("admin") as admin:
        admin.post("/api/users", json={"name": "eve", "role": "analyst"}).raise_for_status()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if "Refused" in message.text else None)
            page.goto(f"{server.base}/login")
            page.fill("#name", "admin")
            page.fill("#token", server.tokens["admin"])
            page.click("button[type=submit]")
            page.goto(f"{server.base}/users")
            page.click("#disable-eve button")
            page.wait_for_selector("#disable-eve button:has-text('Enable')")
            assert "disabled" in page.locator("tr", has=page.locator("#disable-eve")).inner_text()
            page.click("#rotate-eve button")
            page.wait_for_selector("#rotate-eve [data-result]:has-text('pst_')")
            token = page.locator("#rotate-eve [data-result]").inner_text().split("token: ")[1]
            page.click("#disable-eve button")
            page.wait_for_selector("#disable-eve button:has-text('Disable')")
            assert not errors, errors  # the Content-Security-Policy blocked nothing the page needs
        finally:
            browser.close()
    me = httpx.get(f"{server.base}/api/me", headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert me.json()["name"] == "eve"


def test_failed_sign_ins_are_throttled_and_audited_once(server: Server) -> None:
    """Last in this module: it throttles this test client's address."""
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as client:
        answers = [
            client.post("/login", data={"name": "carol", "token": f"pst_guess{i}"}, follow_redirects=False).status_code
            for i in range(12)
        ]
        right = client.post("/login", data={"name": "carol", "token": server.tokens["carol"]}, follow_redirects=False)
    assert answers == [401] * 10 + [429] * 2
    assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
    with server.client("admin") as admin:
        audit = admin.get("/api/audit").json()
    sign_ins = [row for row in audit if row["action"] == "sign in" and row["outcome"] == "denied"]
    assert len(sign_ins) == 1 and "throttled" in sign_ins[0]["detail"]


def test_the_session_key_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from privsynth.errors import ParameterError
    from privsynth.service.security import SESSION_KEY_ENV, session_key

    monkeypatch.setenv(SESSION_KEY_ENV, "k" * 40)
    assert session_key(tmp_path) == "k" * 40 and not (tmp_path / "session.key").exists()
    monkeypatch.delenv(SESSION_KEY_ENV)
    key = session_key(tmp_path)
    assert len(key) >= 48 and session_key(tmp_path) == key
    os.chmod(tmp_path / "session.key", 0o644)
    with pytest.raises(ParameterError, match="chmod 600"):
        session_key(tmp_path)


def test_the_service_database_on_an_allowed_server_is_still_refused(
    postgres_url: str, tmp_path: Path, nass_train: pd.DataFrame
) -> None:
    server = make_url(postgres_url)
    with create_engine(server, isolation_level="AUTOCOMMIT").connect() as con:
        con.exec_driver_sql("DROP DATABASE IF EXISTS attack_service")
        con.exec_driver_sql("CREATE DATABASE attack_service")
    own = server.set(database="attack_service").render_as_string(hide_password=False)
    service = make_service(
        tmp_path / "service", database_url=own, sql_allow=(f"postgresql://{server.host}:{server.port}",)
    )
    try:
        for table in ("service_users", "service_datasets", "ledger_datasets"):
            refused = service.client.post(
                "/api/datasets/sql",
                headers=service.headers("custodian"),
                json={"name": "own", "url": own, "table": table, "password": "x"},
            )
            assert refused.status_code == 403 and "the service's own database" in refused.text
    finally:
        service.client.close()
        service.store.close()


def test_secure_cookies_are_sent_over_https_only(tmp_path: Path) -> None:
    service = make_service(tmp_path / "service", secure_cookies=True)
    try:
        signed = service.client.post(
            "/login", data={"name": "analyst", "token": service.tokens["analyst"]}, follow_redirects=False
        )
        cookie = signed.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert signed.headers["strict-transport-security"].startswith("max-age=")
    finally:
        service.client.close()
        service.store.close()


def test_a_csv_file_over_the_cell_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    service = make_service(tmp_path / "service", max_cells=1_000)
    try:
        for separator in (",", ";"):
            body = f"a{separator}b\n" + f"0{separator}0\n" * 600
            refused = service.client.post(
                "/api/datasets", headers=service.headers("custodian"), files={"file": ("zeros.csv", body.encode())}
            )
            assert refused.status_code == 413, refused.text
            assert "600 rows x 2 columns" in refused.json()["detail"]
    finally:
        service.client.close()
        service.store.close()


def test_datasets_that_shared_a_fingerprint_budget_get_their_own_on_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'service.sqlite'}"
    store = Store(url)
    owner = store.add_user("carol", "custodian")[0]
    first, second = (
        store.add_dataset(
            name=name, kind="file", location="x", table_name=None, fingerprint="f" * 64, schema={}, owner=owner
        )
        for name in ("first", "second")
    )
    # As an older version kept them: one budget under the data's fingerprint, capped and spent on.
    store.ledger.rename(first.ledger_key, "f" * 64)
    store.ledger.rename(second.ledger_key, "unused")
    store.ledger.set_cap("f" * 64, 1.0, 1e-6)
    store.ledger.spend("f" * 64, 0.01, mechanism="test", purpose="a spend before the upgrade")
    store.close()
    upgraded = Store(url)
    try:
        old = upgraded.budget(first)
        assert old.cap is not None and old.cap.epsilon == 1.0 and old.spent_rho == pytest.approx(0.01)
        assert upgraded.budget(second).cap is None and upgraded.budget(second).spent_rho == 0
    finally:
        upgraded.close()


def test_an_analyst_card_leaves_out_what_was_measured_on_the_real_rows() -> None:
    """A card with evaluation metrics (a non-DP release a custodian published) as an analyst is served it."""
    from privsynth.service.security import analyst_card

    card = {
        "metrics": {"summary": {"diversity.category_coverage": 0.93}, "evaluated_rows": {"real_rows": 16_779}},
        "mix": {"real_rows": 5_000, "synthetic_rows": 100},
        "privacy": {"epsilon": 1.0, "ledger": "sqlite:////srv/service.sqlite", "dataset_fingerprint_sha256": "ab"},
        "source": {"name": "nass", "fingerprint_sha256": "cd"},
        "notes": ["a note"],
    }
    seen = analyst_card(card)
    text = json.dumps(seen)
    assert "16779" not in text and "5000" not in text and "category_coverage" not in text
    assert "/srv/" not in text and '"ab"' not in text and '"cd"' not in text
    assert seen["privacy"]["epsilon"] == 1.0 and seen["source"]["name"] == "nass"
    assert seen["notes"] == ["a note", "withheld from analysts: evaluation metrics, mixing counts of real rows"]


def test_the_data_folder_is_made_for_the_service_account_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from privsynth.service.security import private_folder

    made = make_service(tmp_path / "fresh" / "service")
    made.client.close()
    made.store.close()
    assert oct((tmp_path / "fresh" / "service").stat().st_mode & 0o777) == "0o700"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    private_folder(shared)
    assert "can be read by other users" in caplog.text


def test_a_store_opened_by_url_only_finds_the_sql_passwords(tmp_path: Path) -> None:
    """A job's process opens the store by its URL: it must still connect with the dataset's password."""
    url = f"sqlite:///{tmp_path / 'service.sqlite'}"
    service = Store(url, data_dir=tmp_path)
    owner = service.add_user("carol", "custodian")[0]
    made = service.add_dataset(
        name="t",
        kind="sql",
        location="postgresql://carol:s3cret@db.internal:5432/warehouse",
        table_name="t",
        fingerprint="f",
        schema={},
        owner=owner,
    )
    service.close()
    by_url = Store(url)
    try:
        found = by_url.dataset(made.id)
        assert found is not None and make_url(found.location).password == "s3cret"
    finally:
        by_url.close()
    with sqlite3.connect(tmp_path / "service.sqlite") as con:
        assert "s3cret" not in json.dumps(con.execute("SELECT * FROM service_datasets").fetchall())
