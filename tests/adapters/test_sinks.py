"""Alert sinks against a real HTTP receiver on 127.0.0.1: failures are retried, delivery is exactly once.

The receiver behaves like a well-written webhook consumer: it keeps each alert
once by its ``Idempotency-Key`` and answers a repeated key with 200. Failures
are scripted per request: connection refused (nothing listening yet), HTTP 500,
and a response slower than the client's timeout (the receiver has the alert, the
sender does not know it).
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.sinks import DeliveryError, SinkDispatcher, StdoutSink, WebhookSink
from aet.pipeline.config import AlertSettings, TopicSettings
from aet.pipeline.records import Alert, Probs, ScoredMessage
from aet.pipeline.roles.alerts import AlertWorker
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.cli_helpers import wait_until

T0 = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


class Receiver:
    """A webhook endpoint with scripted failures and an idempotent store of alerts."""

    def __init__(self, port: int = 0, script: list[str] | None = None) -> None:
        self.script = list(script or [])  # per request: "500", "slow", "400"; then "ok"
        self.requests: list[dict[str, Any]] = []  # what arrived, in order
        self.accepted: dict[str, dict[str, Any]] = {}  # idempotency key -> alert, the receiver's truth
        self.release = threading.Event()  # lets a "slow" response finish (at teardown)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key")
                with receiver.lock:
                    action = receiver.script.pop(0) if receiver.script else "ok"
                    receiver.requests.append(
                        {"key": key, "action": action, "body": body, "content_type": self.headers.get("Content-Type")}
                    )
                    if action in ("ok", "slow"):
                        receiver.accepted.setdefault(key, body)  # processed once per key
                if action == "slow":
                    receiver.release.wait(30)  # the sender times out long before
                status = {"500": 500, "400": 400}.get(action, 200)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A port nothing listens on (so connecting to it is refused until a receiver binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_alert(i: int = 0, entity: str = "$XYZ") -> Alert:
    end = T0 + timedelta(minutes=5 * (i + 1))
    return Alert(
        id=f"al-test-{i:04d}",
        entity=entity,
        kind="negative_surge",
        window_start=end - timedelta(hours=1),
        window_end=end,
        counts={"total": 12, "negative": 11, "neutral": 1, "positive": 0},
        shares={"negative": 11 / 12, "neutral": 1 / 12, "positive": 0.0},
        baseline={"mean": 0.3, "std": 0.1, "sigma": 0.15, "windows": 0.0},
        z=4.2,
        severity="warning",
        example_ids=["m1", "m2"],
        model_version="v0001",
    )


@pytest.fixture
def outbox(database: Database) -> AlertStore:
    return AlertStore(database)


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def dispatcher(outbox: AlertStore, sink: Any, **kw: Any) -> SinkDispatcher:
    options: dict[str, Any] = {
        "poll_s": 0.05,
        "backoff_s": 0.05,
        "max_backoff_s": 0.2,
        "since": T0 - timedelta(days=3650),
    }
    options.update(kw)
    return SinkDispatcher(outbox, sink, **options)


def row(outbox: AlertStore, alert_id: str, sink: str) -> Any:
    rows = [r for r in outbox.deliveries(sink) if r.alert_id == alert_id]
    return rows[0] if rows else None


def test_refused_500_and_timeout_are_retried_and_delivered_exactly_once(
    database: Database, outbox: AlertStore, receivers: list[Receiver]
) -> None:
    alert = make_alert()
    ResultStore(database).write(alerts=[alert])
    port = free_port()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=0.5)
    d = dispatcher(outbox, sink)
    d.start()
    try:
        # 1. Nothing listens: connection refused, kept pending with the reason.
        wait_until(
            lambda: (r := row(outbox, alert.id, sink.name)) is not None and r.attempts >= 1, 10, "a refused attempt"
        )
        first = row(outbox, alert.id, sink.name)
        assert first.status == "pending" and "refused" in first.last_error.lower()
        # 2. The endpoint comes up, answers 500, then too slowly, then recovers.
        receivers.append(Receiver(port, script=["500", "slow"]))
        wait_until(lambda: row(outbox, alert.id, sink.name).status == "delivered", 20, "delivery")
    finally:
        d.close()
    receiver = receivers[0]
    assert [r["action"] for r in receiver.requests] == ["500", "slow", "ok"]
    assert {r["key"] for r in receiver.requests} == {alert.id}  # one idempotency key for every attempt
    assert list(receiver.accepted) == [alert.id]  # the receiver kept it exactly once
    assert Alert.model_validate(receiver.accepted[alert.id]) == alert
    assert receiver.requests[0]["content_type"] == "application/json"
    final = row(outbox, alert.id, sink.name)
    assert final.attempts >= 4 and final.delivered_at is not None and final.last_error is None
    assert d.delivered == 1


def test_undelivered_alerts_survive_a_restart(
    database: Database, outbox: AlertStore, receivers: list[Receiver]
) -> None:
    alert = make_alert(1)
    ResultStore(database).write(alerts=[alert])
    port = free_port()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=0.5)
    before = dispatcher(outbox, sink)
    assert before.run_once() == 1  # refused
    assert row(outbox, alert.id, sink.name).status == "pending"
    # A new process: a fresh store on the same database, the endpoint back; the alert is still owed.
    receivers.append(Receiver(port))
    after = dispatcher(
        AlertStore(Database(database.url)), WebhookSink(sink.url, timeout_s=0.5), since=datetime.now(UTC)
    )  # its own history starts now...
    wait_until(
        lambda: after.run_once() == 0 and row(outbox, alert.id, sink.name).status == "delivered",
        10,
        "delivery after the restart",
    )  # ...but the outbox row is retried
    assert list(receivers[0].accepted) == [alert.id]


def test_a_permanent_refusal_is_not_retried_and_does_not_block_others(
    database: Database, outbox: AlertStore, receivers: list[Receiver]
) -> None:
    receivers.append(Receiver(script=["400"]))
    sink = WebhookSink(receivers[0].url, timeout_s=2)
    ResultStore(database).write(alerts=[make_alert(2)])
    d = dispatcher(outbox, sink)
    d.run_once()
    ResultStore(database).write(alerts=[make_alert(3)])
    d.run_once()
    d.run_once()
    assert row(outbox, "al-test-0002", sink.name).status == "rejected"
    assert "HTTP 400" in row(outbox, "al-test-0002", sink.name).last_error
    assert row(outbox, "al-test-0003", sink.name).status == "delivered"
    assert [r["key"] for r in receivers[0].requests] == ["al-test-0002", "al-test-0003"]


def test_two_dispatchers_share_the_work_without_sending_twice(
    database: Database, outbox: AlertStore, receivers: list[Receiver]
) -> None:
    receivers.append(Receiver())
    alerts = [make_alert(10 + i, entity=f"$E{i}") for i in range(20)]
    ResultStore(database).write(alerts=alerts)
    pair = [dispatcher(AlertStore(Database(database.url)), WebhookSink(receivers[0].url)) for _ in range(2)]
    for d in pair:
        d.start()
    try:
        wait_until(
            lambda: len(receivers[0].requests) >= 20 and all(r.status == "delivered" for r in outbox.deliveries()),
            20,
            "all delivered",
        )
    finally:
        for d in pair:
            d.close()
    keys = [r["key"] for r in receivers[0].requests]
    assert sorted(keys) == sorted(a.id for a in alerts)  # each once: the outbox lease kept them apart


def test_a_hanging_webhook_never_blocks_the_alert_engine(database: Database, receivers: list[Receiver]) -> None:
    receivers.append(Receiver(script=["slow"] * 100))
    topics = TopicSettings()
    bus = MemoryBus(partitions=1)
    bus.create_topics(topics.all())
    for i in range(12):
        m = ScoredMessage(
            id=f"h{i}",
            source="chat",
            text=f"$XYZ tanks, day {i}",
            ts=T0 + timedelta(minutes=i),
            entities=[],
            label="negative",
            probs=Probs(negative=0.9, neutral=0.05, positive=0.05),
            score=-0.85,
            model_version="v0001",
        )
        bus.publish(topics.scored, m.to_bytes(), key="$XYZ")
    settings = AlertSettings(min_count=5, min_z=1.0, webhooks=[{"url": receivers[0].url, "timeout_s": 30}])
    db = database
    store = AlertStore(db)
    d = dispatcher(store, WebhookSink(receivers[0].url, timeout_s=30))
    d.start()
    try:
        worker = AlertWorker(bus, ResultStore(db), topics, settings, state=store)
        done = threading.Event()
        runner = threading.Thread(target=lambda: (worker.run(threading.Event(), drain=True), done.set()))
        runner.start()
        wait_until(lambda: len(receivers[0].requests) == 1, 20, "the webhook to be called (and hang)")
        wait_until(done.is_set, 20, "the alert worker to drain while the webhook hangs")
        assert len(bus.read_all(topics.alerts)) == 1 and len(store.list_alerts()) == 1
        assert receivers[0].accepted == {} or len(receivers[0].accepted) == 1
    finally:
        receivers[0].release.set()
        d.close()
        bus.close()


def test_stdout_sink_prints_json_lines(database: Database, outbox: AlertStore) -> None:
    out = io.StringIO()
    ResultStore(database).write(alerts=[make_alert(5), make_alert(6)])
    d = dispatcher(outbox, StdoutSink(out))
    d.run_once()
    d.run_once()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(x["id"] for x in lines) == ["al-test-0005", "al-test-0006"]


def test_webhook_errors_are_classified() -> None:
    with pytest.raises(ValueError):
        WebhookSink("ftp://example.invalid/")
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/", timeout_s=0.5)
    with pytest.raises(DeliveryError) as refused:
        sink.deliver(make_alert())
    assert refused.value.retryable
    backoff = SinkDispatcher(None, sink, backoff_s=1.0, max_backoff_s=8.0)  # type: ignore[arg-type]
    for attempts, expected in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (9, 8)]:
        assert 0.9 * expected <= backoff.backoff(attempts) <= 1.1 * expected
