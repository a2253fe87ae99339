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
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.sinks import DeliveryError, SinkDispatcher, StdoutSink, WebhookSink, start_dispatchers
from aet.pipeline.config import AlertSettings, TopicSettings, WebhookSettings
from aet.pipeline.ports import Delivery
from aet.pipeline.records import Alert, Probs, ScoredMessage, utcnow
from aet.pipeline.roles.alerts import AlertWorker
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database
from aet.storage.store import ResultStore
from aet.storage.tables import AlertDeliveryRow, AlertRow
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


# ---------------------------------------------------------------------------- hostile receivers (issue 13)


class Hostile:
    """A raw HTTP endpoint that misbehaves on purpose: redirects, drips its reply, floods, or fails then recovers.

    ``mode`` per request: ``redirect`` (302 or 307 to ``location``), ``drip-body`` (headers at once, then one
    body byte every 0.2 s for 7 s), ``drip-headers`` (the status line, then one header byte every 0.2 s),
    ``flood`` (200 with a 50 MB body, written until the client goes away), ``500``, ``ok``.
    """

    def __init__(self, modes: list[str], *, location: str = "", status: int = 302) -> None:
        self.modes, self.location, self.status = list(modes), location, status
        self.requests: list[dict[str, Any]] = []
        self.flood_sent = 0
        self.done = threading.Event()  # a misbehaving reply has stopped (client gone or finished)
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> str:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                mode = hostile.modes.pop(0) if len(hostile.modes) > 1 else hostile.modes[0]
                hostile.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                return mode

            def do_GET(self) -> None:
                self._record()
                self._reply(200, b"")

            def do_POST(self) -> None:
                mode = self._record()
                try:
                    if mode == "redirect":
                        self.send_response(hostile.status)
                        self.send_header("Location", hostile.location)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif mode == "drip-body":
                        self.send_response(200)
                        self.send_header("Content-Length", "35")
                        self.end_headers()
                        self.wfile.flush()
                        for _ in range(35):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)  # the misbehaviour under test: a reply dripped over 7 s
                    elif mode == "drip-headers":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        for byte in b"X-Slow: " + b"y" * 27 + b"\r\nContent-Length: 0\r\n\r\n":
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    elif mode == "flood":
                        self.send_response(200)
                        self.send_header("Content-Length", str(50 * 2**20))
                        self.end_headers()
                        chunk = b"z" * 65536
                        while hostile.flood_sent < 50 * 2**20:
                            self.wfile.write(chunk)
                            hostile.flood_sent += len(chunk)
                    else:
                        self._reply(500 if mode == "500" else 200, b"{}")
                except OSError:
                    pass  # the client hung up: what the deadline and the byte cap are for
                finally:
                    hostile.done.set()

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    made: list[Hostile] = []

    def make(modes: list[str], **kw: Any) -> Hostile:
        made.append(Hostile(modes, **kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_a_redirect_to_another_host_is_a_failed_delivery_and_leaks_no_credentials(
    database: Database, outbox: AlertStore, hostile: Callable[..., Hostile]
) -> None:
    elsewhere = hostile(["ok"])
    hook = hostile(["redirect"], location=f"{elsewhere.base}/collect?stolen=1")
    alert = make_alert(40)
    ResultStore(database).write(alerts=[alert])
    sink = WebhookSink(f"{hook.base}/hook", timeout_s=2, headers={"Authorization": "Bearer s3cr3t-t0ken"})
    dispatcher(outbox, sink).run_once()
    final = row(outbox, alert.id, sink.name)
    assert final.status == "rejected" and final.delivered_at is None  # not counted as delivered
    assert "HTTP 302 redirect" in final.last_error and elsewhere.base in final.last_error
    assert "stolen" not in final.last_error  # the target's path and query are not echoed
    assert elsewhere.requests == []  # nothing, and no Authorization header, went to the other host
    assert len(hook.requests) == 1 and hook.requests[0]["headers"]["Authorization"] == "Bearer s3cr3t-t0ken"


def test_same_origin_redirects_are_followed_only_when_configured_and_keep_the_post(
    hostile: Callable[..., Hostile],
) -> None:
    hook = hostile(["redirect", "ok"], status=307, location="/moved")
    follows = WebhookSink(f"{hook.base}/hook", timeout_s=2, redirects="same-origin")
    follows.deliver(make_alert(41))
    assert [(r["method"], r["path"]) for r in hook.requests] == [("POST", "/hook"), ("POST", "/moved")]
    assert Alert.model_validate_json(hook.requests[1]["body"]).id == make_alert(41).id
    other = hostile(["ok"])
    cross = hostile(["redirect"], status=307, location=f"{other.base}/hook")
    with pytest.raises(DeliveryError, match="not followed") as refused:
        WebhookSink(f"{cross.base}/hook", timeout_s=2, redirects="same-origin").deliver(make_alert(42))
    assert not refused.value.retryable and other.requests == []


@pytest.mark.parametrize("mode", ["drip-body", "drip-headers"])
def test_a_dripped_reply_cannot_hold_an_attempt_past_its_deadline(hostile: Callable[..., Hostile], mode: str) -> None:
    hook = hostile([mode])
    sink = WebhookSink(f"{hook.base}/hook", timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="deadline") as failed:
        sink.deliver(make_alert(43))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"{mode}: the 1 s attempt took {elapsed:.1f}s (the reply drips for 7 s)"
    assert failed.value.retryable
    sink.close()


def test_a_flood_of_a_reply_is_cut_off_at_the_byte_cap(hostile: Callable[..., Hostile]) -> None:
    hook = hostile(["flood"])
    sink = WebhookSink(f"{hook.base}/hook", timeout_s=10, max_response_bytes=4096)
    sink.deliver(make_alert(44))  # 200: delivered; the body is not what counts
    assert sink.reply_bytes <= 4096 + 65536  # the cap, plus at most one chunk in flight
    sink.close()  # the connection is dropped, not drained
    wait_until(hook.done.is_set, 10, "the server to notice the client left")
    assert hook.flood_sent < 50 * 2**20


def test_attempts_are_bounded_by_default_and_a_row_that_runs_out_is_marked_failed(
    database: Database, outbox: AlertStore, hostile: Callable[..., Hostile]
) -> None:
    defaults = WebhookSettings(url="http://127.0.0.1/")
    assert defaults.max_attempts > 0 and defaults.max_age_s > 0  # bounded unless someone opts out
    hook = hostile(["500"])
    alert = make_alert(45)
    ResultStore(database).write(alerts=[alert])
    sink = WebhookSink(f"{hook.base}/hook", timeout_s=2)
    before = _metric(sink.name, "failed")
    d = dispatcher(outbox, sink, backoff_s=0.01, max_backoff_s=0.01, max_attempts=3)
    wait_until(lambda: (d.run_once(), row(outbox, alert.id, sink.name).status)[1] == "failed", 10, "give-up")
    final = row(outbox, alert.id, sink.name)
    assert final.attempts == 3 and "HTTP 500" in final.last_error and len(hook.requests) == 3
    assert d.gave_up == 1 and _metric(sink.name, "failed") == before + 1
    assert d.run_once() == 0 and len(hook.requests) == 3  # never tried again


def test_a_row_older_than_max_age_is_failed_and_finished_rows_are_purged_after_retention(
    database: Database, outbox: AlertStore, hostile: Callable[..., Hostile]
) -> None:
    hook = hostile(["ok"])
    stale, done = make_alert(46), make_alert(47)
    ResultStore(database).write(alerts=[stale, done])
    sink = WebhookSink(f"{hook.base}/hook", timeout_s=2)
    outbox.enqueue_missing(sink.name, T0 - timedelta(days=3650))
    with database.session() as s, s.begin():  # the stale alert has waited two days, the done one was delivered
        s.execute(
            update(AlertDeliveryRow)
            .where(AlertDeliveryRow.alert_id == stale.id)
            .values(created_at=utcnow() - timedelta(days=2), next_attempt_at=utcnow() + timedelta(days=1))
        )
    dispatcher(outbox, sink).run_once()
    assert row(outbox, done.id, sink.name).status == "delivered"
    d = dispatcher(outbox, sink, max_age_s=86400, retention_s=7 * 86400)
    d.run_once()
    assert (
        row(outbox, stale.id, sink.name).status == "failed"
        and "not delivered within" in row(outbox, stale.id, sink.name).last_error
    )
    assert d.gave_up == 1
    with database.session() as s, s.begin():  # eight days on: both rows (and their alerts) are past retention
        s.execute(update(AlertDeliveryRow).values(created_at=utcnow() - timedelta(days=8)))
        s.execute(update(AlertRow).values(raised_at=utcnow() - timedelta(days=8)))
    later = dispatcher(outbox, sink, retention_s=7 * 86400)
    later.run_once()
    assert outbox.deliveries(sink.name) == [] and later.purged == 2
    later.run_once()
    assert outbox.deliveries(sink.name) == [] and len(hook.requests) == 1  # purged alerts are not offered again


def test_a_claim_outlived_by_its_lease_is_not_delivered_twice(database: Database, outbox: AlertStore) -> None:
    alerts = [make_alert(50 + i, entity=f"$L{i}") for i in range(5)]
    ResultStore(database).write(alerts=alerts)
    taken_over: list[str] = []

    class Recording:
        def __init__(self, name: str, on_first: Callable[[], None] | None = None) -> None:
            self.name, self.on_first, self.sent = name, on_first, []

        def deliver(self, alert: Alert) -> None:
            self.sent.append(alert.id)
            if self.on_first is not None and len(self.sent) == 1:
                self.on_first()  # the first delivery is slow: the rest of the claim's lease runs out meanwhile

    second = Recording("shared")

    def slow_first_delivery() -> None:
        # The row in flight holds a lease longer than an attempt (lease_s is the deadline plus 30 s in production);
        # the rest of the claim holds the claim's short one, which runs out while this delivery is slow.
        in_flight = first.sent[0]
        (held,) = [r for r in outbox.deliveries("shared") if r.alert_id == in_flight]
        assert outbox.renew(Delivery(make_alert(0), "shared", 0, held.claimed_until), lease_s=1) is None  # not ours
        with database.session() as s, s.begin():
            s.execute(
                update(AlertDeliveryRow)
                .where(AlertDeliveryRow.alert_id == in_flight)
                .values(claimed_until=utcnow() + timedelta(seconds=30))
            )
        claims = [r.claimed_until for r in outbox.deliveries("shared") if r.alert_id != in_flight]
        wait_until(lambda: utcnow() > max(c for c in claims if c is not None), 5, "the claim's lease to run out")
        other = AlertStore(Database(database.url))  # a second dispatcher's process takes the expired rows
        taken_over.extend(d.alert.id for d in other.claim_due("shared", lease_s=30))
        for alert_id in taken_over:
            second.deliver(next(a for a in alerts if a.id == alert_id))
            other.mark_delivered(alert_id, "shared", 1)

    first = Recording("shared", slow_first_delivery)
    d = dispatcher(outbox, first, lease_s=0.3)
    d.run_once()
    assert len(taken_over) == 4  # the four rows still waiting in the first claim were taken over
    sent = first.sent + second.sent
    assert sorted(sent) == sorted(a.id for a in alerts)  # each alert once: the first dispatcher re-checked its lease
    assert d.lost_leases == 4


def test_a_lease_is_renewed_only_by_its_holder(database: Database, outbox: AlertStore) -> None:
    ResultStore(database).write(alerts=[make_alert(60)])
    outbox.enqueue_missing("s", T0 - timedelta(days=3650))
    (mine,) = outbox.claim_due("s", lease_s=0.2)
    renewed = outbox.renew(mine, lease_s=0.2)
    assert renewed is not None and renewed.lease is not None and mine.lease is not None
    assert renewed.lease > mine.lease
    assert outbox.renew(mine, lease_s=60) is None  # the old token no longer holds
    wait_until(lambda: utcnow() > renewed.lease, 5, "the lease to run out")
    (theirs,) = AlertStore(Database(database.url)).claim_due("s", lease_s=60)
    assert outbox.renew(renewed, lease_s=60) is None and theirs.alert.id == "al-test-0060"


def test_a_webhook_token_never_shows_in_logs_thread_names_metrics_or_the_outbox(
    database: Database, outbox: AlertStore, hostile: Callable[..., Hostile], caplog: pytest.LogCaptureFixture
) -> None:
    token, header = "tok-9f8e7d6c5b4a", "Bearer hdr-1a2b3c4d5e"
    hook = hostile(["500"])
    refused = f"http://127.0.0.1:{free_port()}"
    settings = AlertSettings(
        webhooks=[
            {"url": f"{hook.base}/hooks/{token}?api_key={token}", "headers": {"Authorization": header}},
            {"url": f"{refused}/services/{token}", "max_attempts": 1},
        ]
    )
    assert token not in repr(settings) and header not in repr(settings) and token not in str(settings.model_dump())
    ResultStore(database).write(alerts=[make_alert(70)])
    caplog.set_level(logging.DEBUG)
    stop = threading.Event()
    running = start_dispatchers(outbox, settings, stop)
    try:
        wait_until(
            lambda: (
                {r.status for r in outbox.deliveries()} == {"pending", "failed"}
                and all(r.attempts >= 1 for r in outbox.deliveries())
            ),
            20,
            "an attempt at each webhook",
        )
        names = [t.name for t in threading.enumerate()]
    finally:
        for d in running:
            d.close()
    rows = outbox.deliveries()
    assert len(rows) == 2 and {d.sink.name for d in running} == {r.sink for r in rows}
    printed = [
        caplog.text,
        *names,
        *(r.sink for r in rows),
        *(r.last_error or "" for r in rows),
        *_sink_label_values(),
    ]
    for text in printed:
        assert token not in text and header not in text and "hdr-1a2b3c4d5e" not in text, text
    assert any(r.sink.startswith(f"webhook:{hook.base}#") for r in rows)  # still tells the endpoints apart
    assert "HTTP 500" in caplog.text and "refused" in caplog.text.lower()


def _metric(sink: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("aet_alert_deliveries_total", {"sink": sink, "outcome": outcome}) or 0.0


def _sink_label_values() -> list[str]:
    return [
        s.labels["sink"]
        for family in REGISTRY.collect()
        if family.name == "aet_alert_deliveries"
        for s in family.samples
    ]
