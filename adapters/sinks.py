"""Alert sinks: where alerts go besides ``aet.alerts`` and the alerts table.

The alert engine publishes every alert to ``aet.alerts`` and stores it with the
batch that raised it (the worker's delivery contract). Every other sink is fed by a
:class:`SinkDispatcher` thread that reads the alerts table, so a slow or failing
sink never holds up the engine or the scorers, and nothing is lost when it is down:

- the alerts table is the durable queue; the dispatcher gives its sink an outbox row
  (``alert_deliveries``) for each new alert, delivers due rows, and keeps a failed
  one ``pending`` with exponential backoff (or ``rejected`` for a permanent refusal
  such as HTTP 400), across restarts;
- a delivery that timed out may have reached the receiver: it is sent again with
  the same ``Idempotency-Key`` (the alert id), which a receiver uses to keep the
  alert exactly once.

Sinks: :class:`WebhookSink` (HTTP JSON POST), :class:`StdoutSink` (JSON lines) and
:class:`BusSink` (forward to a topic of another bus).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import IO, Any, ClassVar, Protocol

from aet.pipeline import metrics
from aet.pipeline.config import AlertSettings
from aet.pipeline.ports import AlertOutbox, Publisher
from aet.pipeline.records import Alert, utcnow

log = logging.getLogger(__name__)
USER_AGENT = "aet-alerts/0.1"


class DeliveryError(RuntimeError):
    """A failed delivery; ``retryable`` says whether trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    """Somewhere alerts are delivered to, named for its outbox rows."""

    name: str

    def deliver(self, alert: Alert) -> None:
        """Deliver one alert or raise :class:`DeliveryError`."""


class StdoutSink:
    """Every alert as one JSON line on a stream (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None, name: str = "stdout") -> None:
        self.stream = stream
        self.name = name

    def deliver(self, alert: Alert) -> None:
        stream = self.stream or sys.stdout
        stream.write(alert.model_dump_json() + "\n")
        stream.flush()


class BusSink:
    """Forward alerts to a topic (keyed by entity), e.g. on another bus."""

    def __init__(self, bus: Publisher, topic: str, name: str | None = None) -> None:
        self.bus, self.topic = bus, topic
        self.name = name or f"bus:{topic}"

    def deliver(self, alert: Alert) -> None:
        try:
            self.bus.publish(self.topic, alert.to_bytes(), key=alert.entity)
            self.bus.flush()
        except Exception as exc:
            raise DeliveryError(f"bus: {exc}") from exc


class WebhookSink:
    """POST each alert as JSON; the alert id is the ``Idempotency-Key``.

    2xx is delivered. Connection errors, timeouts, 408, 425, 429 and 5xx are
    retried; any other status is a permanent refusal.
    """

    RETRY_STATUS: ClassVar[frozenset[int]] = frozenset({408, 425, 429})

    def __init__(
        self, url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None, name: str | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.name = name or f"webhook:{url}"

    def deliver(self, alert: Alert) -> None:
        body = json.dumps(alert.model_dump(mode="json")).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Idempotency-Key": alert.id,
                "X-AET-Alert-Id": alert.id,
                **self.headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            retryable = exc.code >= 500 or exc.code in self.RETRY_STATUS
            raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retryable=retryable) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, reset
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{type(reason).__name__}: {reason}") from exc


class SinkDispatcher(threading.Thread):
    """Feeds one sink from the alerts table through the outbox, retrying with exponential backoff.

    ``since``: alerts raised before this are not offered to the sink (its history
    starts here); rows already in the outbox are retried whatever their age.
    """

    def __init__(
        self,
        outbox: AlertOutbox,
        sink: Sink,
        *,
        since: datetime | None = None,
        poll_s: float = 0.5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        max_attempts: int = 0,
        lease_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"aet-sink-{sink.name}", daemon=True)
        self.outbox, self.sink = outbox, sink
        self.since = since or utcnow() - timedelta(days=1)
        self.poll_s, self.backoff_s, self.max_backoff_s = poll_s, backoff_s, max_backoff_s
        self.max_attempts = max_attempts
        self.lease_s = lease_s if lease_s is not None else float(getattr(sink, "timeout_s", 10.0)) + 30.0
        self.stop = stop or threading.Event()
        self.delivered = 0
        self.failures = 0
        self.error: BaseException | None = None
        self._rng = random.Random()

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: doubling from ``backoff_s``, capped, ±10% jitter."""
        delay = min(self.backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s)
        return delay * self._rng.uniform(0.9, 1.1)

    def run_once(self) -> int:
        """Enqueue new alerts and attempt every due delivery once; returns the attempts made."""
        self.outbox.enqueue_missing(self.sink.name, self.since)
        attempted = 0
        for d in self.outbox.claim_due(self.sink.name, lease_s=self.lease_s):
            attempted += 1
            attempts = d.attempts + 1
            try:
                self.sink.deliver(d.alert)
            except DeliveryError as exc:
                self.failures += 1
                give_up = not exc.retryable or (self.max_attempts and attempts >= self.max_attempts)
                retry_at = None if give_up else utcnow() + timedelta(seconds=self.backoff(attempts))
                metrics.SINK_DELIVERIES.labels(self.sink.name, "rejected" if give_up else "retry").inc()
                log.warning(
                    "sink %s: alert %s attempt %d failed (%s)%s",
                    self.sink.name,
                    d.alert.id,
                    attempts,
                    exc,
                    "; giving up" if give_up else f"; retrying at {retry_at:%H:%M:%S}",
                )
                self.outbox.mark_failed(d.alert.id, self.sink.name, attempts, str(exc), retry_at=retry_at)
                continue
            self.delivered += 1
            metrics.SINK_DELIVERIES.labels(self.sink.name, "delivered").inc()
            self.outbox.mark_delivered(d.alert.id, self.sink.name, attempts)
        return attempted

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                attempted = self.run_once()
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the sink
                log.warning("sink %s: %s: %s; retrying", self.sink.name, type(exc).__name__, exc)
                attempted = 0
            if not attempted:
                self.stop.wait(self.poll_s)

    def close(self, drain_s: float = 0.0) -> None:
        """Stop the thread; with ``drain_s``, first keep delivering what is due for up to that long."""
        if drain_s > 0 and self.is_alive():
            deadline = threading.Event()
            timer = threading.Timer(drain_s, deadline.set)
            timer.start()
            try:
                self.stop.set()
                self.join()
                while not deadline.is_set():
                    try:
                        if not self.run_once():
                            break
                    except Exception as exc:  # noqa: BLE001
                        log.warning("sink %s: %s", self.sink.name, exc)
                        break
            finally:
                timer.cancel()
            return
        self.stop.set()
        if self.is_alive():
            self.join()


def build_sinks(settings: AlertSettings, stream: IO[str] | None = None) -> list[tuple[Sink, dict[str, Any]]]:
    """The sinks configured in ``AlertSettings`` with each one's dispatcher options."""
    sinks: list[tuple[Sink, dict[str, Any]]] = []
    if settings.stdout:
        sinks.append((StdoutSink(stream), {"backoff_s": 1.0, "max_backoff_s": 30.0}))
    for hook in settings.webhooks:
        sink = WebhookSink(hook.url, timeout_s=hook.timeout_s, headers=hook.headers, name=hook.sink_name)
        sinks.append(
            (
                sink,
                {"backoff_s": hook.backoff_s, "max_backoff_s": hook.max_backoff_s, "max_attempts": hook.max_attempts},
            )
        )
    return sinks


def start_dispatchers(
    outbox: AlertOutbox, settings: AlertSettings, stop: threading.Event | None = None, stream: IO[str] | None = None
) -> list[SinkDispatcher]:
    """Start one dispatcher thread per configured sink."""
    out = []
    for sink, options in build_sinks(settings, stream):
        d = SinkDispatcher(outbox, sink, poll_s=settings.dispatch_poll_s, stop=stop, **options)
        d.start()
        out.append(d)
    return out
