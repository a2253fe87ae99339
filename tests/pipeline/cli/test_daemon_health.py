"""A real daemon (``aet dlq record`` in a subprocess) answers its probes: ready once subscribed with its database
reachable, not ready (and still live) while PostgreSQL is cut off by a TCP proxy, ready again once it is back;
and its ``--log-format json`` logs are JSON lines that name its role."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.cli_helpers import aet_env, start_aet, wait_until
from tests.tcp_proxy import TcpProxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


@pytest.mark.postgres
def test_readiness_follows_the_database_and_the_subscription(tmp_path: Path, postgres_url: str) -> None:
    proxy = TcpProxy(("127.0.0.1", make_url(postgres_url).port or 5432)).start()
    proxied = make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    env = aet_env(tmp_path / "home", AET_BUS__JOURNAL_DIR=str(tmp_path / "journal"), AET_DATABASE_URL=proxied)
    log = tmp_path / "daemon.log"
    proc = start_aet(["--log-format", "json", "dlq", "record", "--metrics-port", str(port)], env, log)
    try:
        wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, "the recorder ready", proc)
        body = probe(port, "/readyz")[1]
        assert body == {
            "role": "dead-letters",
            "status": "ready",
            "checks": {"database": None, "subscribed": None},
        }
        proxy.cut()
        wait_until(lambda: probe(port, "/readyz")[0] == 503, 30, "not ready with the database away", proc)
        checks = probe(port, "/readyz")[1]["checks"]
        assert isinstance(checks, dict) and checks["subscribed"] is None
        assert "OperationalError" in str(checks["database"])
        assert probe(port, "/healthz")[0] == 200, "a daemon waiting for its database is alive: no restart"
        proxy.restore()
        wait_until(lambda: probe(port, "/readyz")[0] == 200, 30, "ready again with the database back", proc)
    finally:
        proc.terminate()
        proc.wait(30)
        proxy.close()
    assert proc.returncode == 0, log.read_text()[-2000:]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line is JSON
    [stopped] = [entry for entry in lines if "stopped after" in entry["message"]]
    assert stopped["role"] == "dead-letters" and stopped["level"] == "INFO"
