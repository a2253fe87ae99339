"""Readiness checks, the daemon endpoints (real HTTP on loopback) and systemd notify (a real socket)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aet.pipeline import health
from aet.pipeline.health import Readiness, SystemdNotifier
from aet.pipeline.metrics import CONSUMED, MetricsServer


def get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_readiness_passes_only_when_every_check_does_and_names_each_failure() -> None:
    readiness = Readiness("scorer", secrets=["hunter2-secret"])
    loaded = readiness.flag("model", "loading the champion")
    readiness.require("database", lambda: (_ for _ in ()).throw(OSError("password hunter2-secret refused\nmore")))
    report = readiness.report()
    assert not report.ok
    assert report.checks["model"] == "loading the champion"
    assert report.checks["database"] == "OSError: password *** refused", "first line only, the secret masked"
    loaded.set()
    readiness.require("database", lambda: None)
    assert readiness.report().ok


def test_subscription_is_marked_per_role_and_cleared() -> None:
    readiness = Readiness("unit-role")
    readiness.require_subscribed()
    assert readiness.report().checks["subscribed"] == "the unit-role consumer has not polled its topics yet"
    health.mark_subscribed("unit-role")
    try:
        assert readiness.report().ok
    finally:
        health.mark_subscribed("unit-role", False)
    assert not readiness.report().ok


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[MetricsServer, threading.Event]]:
    readiness = Readiness("scorer")
    loaded = readiness.flag("model", "loading the champion")
    srv = MetricsServer(0, "127.0.0.1", readiness)
    try:
        yield srv, loaded
    finally:
        srv.close()


def test_metrics_healthz_and_readyz_share_one_port(server: tuple[MetricsServer, threading.Event]) -> None:
    srv, loaded = server
    base = f"http://127.0.0.1:{srv.port}"
    CONSUMED.labels("scorer").inc(0)
    status, body = get(f"{base}/metrics")
    assert status == 200 and b"aet_consumed_records_total" in body
    status, body = get(f"{base}/healthz")
    assert status == 200 and json.loads(body) == {"role": "scorer", "status": "alive", "checks": {"process": None}}
    status, body = get(f"{base}/readyz")
    assert status == 503
    assert json.loads(body)["checks"] == {"model": "loading the champion"}
    loaded.set()
    status, body = get(f"{base}/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's, named by ``$NOTIFY_SOCKET``."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def test_notify_is_a_no_op_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert health.notify("READY=1") is False


def test_systemd_hears_ready_once_ready_then_the_watchdog(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1: pet it every 0.5 s
    readiness = Readiness("monitor")
    loaded = readiness.flag("model", "loading")
    notifier = SystemdNotifier(readiness, poll_s=0.05)
    notifier.start()
    try:
        assert notify_socket.recv(256) == b"WATCHDOG=1", "live before ready: the watchdog is petted already"
        loaded.set()
        messages = [notify_socket.recv(256) for _ in range(3)]
        assert b"READY=1\nSTATUS=monitor ready" in messages
        assert messages.count(b"WATCHDOG=1") >= 1
    finally:
        notifier.close()
        notifier.join(5)
