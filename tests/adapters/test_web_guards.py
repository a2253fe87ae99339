"""The HTTP surface against hostile clients, on a real uvicorn server on loopback.

A rebound DNS name in ``Host``, half-open and slowloris connections, too many
connections, bodies over the limit (declared, and streamed without a length), and
garbage query parameters: each gets a clear 4xx or a closed socket, never a
traceback, a hang or a 200 stream holding an error.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.web import WebServer
from aet.pipeline.config import TopicSettings, WebSettings
from aet.pipeline.intake import MessageIntake
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database

HEADER_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('guards') / 'web.db'}")
    settings = WebSettings(
        port=0,
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=1.0,
        max_connections=20,
        max_body_bytes=4096,
        max_limit=500,
        read_token="reader-secret",
        ingest_token="ingest-secret",
    )
    bus = MemoryBus(partitions=3)
    srv = WebServer(AlertStore(db), settings, intake=MessageIntake(bus, TopicSettings())).start()
    yield srv
    srv.close()
    bus.close()
    db.dispose()


READ = {"Authorization": "Bearer reader-secret"}


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_a_host_not_allowed_is_refused(server: WebServer) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    r = httpx.get(server.url + "api/alerts", headers={**READ, "Host": "evil.example:8765"})
    assert r.status_code == 400
    assert httpx.get(server.url + "api/alerts", headers={**READ, "Host": f"localhost:{server.port}"}).status_code == 200


def test_reading_needs_the_token_when_one_is_set(server: WebServer) -> None:
    assert httpx.get(server.url + "api/alerts").status_code == 401
    assert httpx.get(server.url + "api/alerts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(server.url + "events").status_code == 401
    assert httpx.get(server.url).status_code == 401
    # The page's ?token= sets a cookie (a browser's EventSource cannot send a header) and leaves the URL.
    with httpx.Client(base_url=server.url, follow_redirects=True) as browser:
        r = browser.get("/?token=reader-secret")
        assert r.status_code == 200 and "<title>" in r.text and r.url.params.get("token") is None
        assert browser.get("/api/alerts").status_code == 200
    assert httpx.get(server.url + "?token=wrong").status_code == 401
    assert httpx.get(server.url + "healthz").status_code == 200  # liveness is open


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("events?since=garbage", "since"),
        ("events?since=99999999999999999999", "since"),
        ("events?since=9999-12-31T23:59:59%2B99:00", "since"),
        ("api/alerts?limit=-1", "limit"),
        ("api/alerts?limit=501", "limit"),
        ("api/alerts?limit=1e9", "limit"),
        ("api/alerts?limit=99999999999999999999999999", "limit"),
        ("api/alerts?since=garbage", "since"),
        ("api/alerts?severity=urgent", "severity"),
        ("api/entities?limit=0", "limit"),
        ("api/sentiment?entity=" + "x" * 300, "entity"),
    ],
)
def test_garbage_parameters_are_a_400_before_any_header(server: WebServer, path: str, param: str) -> None:
    with httpx.stream("GET", server.url + path, headers=READ, timeout=5) as r:
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/json"
        body = r.read()
    assert httpx.Response(400, content=body).json()["param"] == param


def test_limit_is_capped_and_honoured(server: WebServer) -> None:
    assert httpx.get(server.url + "api/alerts?limit=500", headers=READ).json() == []


def test_half_open_connections_are_closed_by_the_header_deadline(server: WebServer) -> None:
    """Connections that send nothing, or headers a byte at a time (slowloris), are closed."""
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET /api/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    for _ in range(int(HEADER_TIMEOUT_S * 10)):  # a header line every 0.1 s: never done
        slow.sendall(b"X-a: b\r\n")
        time.sleep(0.1)
    try:
        assert all(closed_within(s, 5) for s in [*idle, slow])
        assert time.monotonic() - started < 5
    finally:
        for s in [*idle, slow]:
            s.close()
    assert httpx.get(server.url + "healthz").status_code == 200  # and the server still answers


def test_a_keep_alive_connection_that_starts_a_request_and_stalls_is_closed(server: WebServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request's headers never end
        assert closed_within(s, 5)


def test_connections_over_the_limit_are_closed(server: WebServer) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.port))
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        extra.settimeout(5)
        try:
            reply = extra.recv(4096)
        except ConnectionResetError:
            reply = b""
        assert reply == b""
        extra.close()
    finally:
        for s in held:
            s.close()


def test_oversized_bodies_are_a_413_while_reading(server: WebServer) -> None:
    auth = {"Authorization": "Bearer ingest-secret"}
    r = httpx.post(server.url + "v1/messages", content=b"x" * 5000, headers=auth)
    assert r.status_code == 413
    # Without a Content-Length (chunked), the cap is enforced as the bytes arrive.
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(1000):
            sent.append(1024)
            yield b"[" + b" " * 1022 + b"]"

    r = httpx.post(server.url + "v1/messages", content=chunks(), headers=auth)
    assert r.status_code == 413
    assert sum(sent) < 1000 * 1024  # refused long before the client was done


def test_a_body_that_trickles_is_cut_off(server: WebServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ingest-secret\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 408")


def test_keep_alive_requests_do_not_wait_for_delayed_acks(server: WebServer) -> None:
    """Responses go out at once (TCP_NODELAY on accepted sockets): without it every request on a kept-alive
    connection waited ~40 ms for the client's delayed ACK."""
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(5)
        took = []
        for _ in range(21):
            started = time.perf_counter()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = b""
            while not reply.endswith(b"}"):
                reply += s.recv(4096)
            took.append(time.perf_counter() - started)
    assert sorted(took)[10] < 0.03


def test_errors_are_json_without_tracebacks(server: WebServer, tmp_path: Path) -> None:
    r = httpx.get(server.url + "nope", headers=READ)
    assert r.status_code == 404 and "Traceback" not in r.text
    r = httpx.post(server.url + "api/alerts", headers=READ)
    assert r.status_code == 405
