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
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import IO, Any, ClassVar, Literal, Protocol
from urllib.parse import urljoin

import httpcore
import httpx

from aet.pipeline import metrics
from aet.pipeline.config import AlertSettings
from aet.pipeline.ports import AlertOutbox, Publisher
from aet.pipeline.records import Alert, utcnow
from aet.pipeline.redaction import endpoint_name, redact, redact_url, url_origin

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


class _RedactSecrets(logging.Filter):
    """Masks the webhooks' URLs and headers in what httpx logs (it logs every request's URL at INFO)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            redacted = redact(message, self.secrets)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


_REDACT = _RedactSecrets()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACT)


class _Deadline(threading.local):
    """The monotonic time by which the current attempt of this thread must be over (``None``: no deadline)."""

    at: float | None = None

    def bound(self, timeout: float | None) -> float | None:
        """``timeout`` shortened to what is left of the deadline; past it, a timeout at once."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the attempt's deadline has passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the attempt's deadline (a slow drip cannot stretch it)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.bound(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._deadline.bound(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, with every connection bound to the attempt's deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        self._backend, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, self._deadline.bound(timeout), local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, self._deadline.bound(timeout), socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool whose sockets keep the attempt's deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__(retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=4, network_backend=_DeadlineBackend(deadline)
        )


class WebhookSink:
    """POST each alert as JSON on a kept HTTP client; the alert id is the ``Idempotency-Key``.

    2xx is delivered. Connection errors, timeouts, 408, 425, 429 and 5xx are
    retried; any other status is a permanent refusal. A redirect (3xx) is a
    failed delivery, never followed as a GET elsewhere: with ``redirects="same-origin"``
    a 307 or 308 to the same scheme, host and port is followed (method, body and
    headers kept), anything else refused. Each attempt has a total deadline of
    ``timeout_s`` (connect, send and the whole reply: a reply dripped byte by byte
    cannot hold it longer) and reads at most ``max_response_bytes`` of the reply (the
    status decides; a flood of a body is cut off, not read whole).

    The URL and the headers are secrets: the sink is named by
    :func:`~aet.pipeline.redaction.endpoint_name` and no message it raises quotes them.
    """

    RETRY_STATUS: ClassVar[frozenset[int]] = frozenset({408, 425, 429})
    MAX_REDIRECTS: ClassVar[int] = 3

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
        name: str | None = None,
        max_response_bytes: int = 65536,
        redirects: Literal["none", "same-origin"] = "none",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {redact_url(url)!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.name = name or endpoint_name("webhook", url)
        self.max_response_bytes = max_response_bytes
        self.redirects = redirects
        self._secrets = [url, *self.headers.values()]
        _REDACT.secrets.update(v for v in self._secrets if v)
        self.reply_bytes = 0  # bytes of the last reply read (at most max_response_bytes plus one chunk)
        self._deadline = _Deadline()
        self._client = httpx.Client(
            transport=_DeadlineTransport(self._deadline),
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: its transport would not keep the deadline
            headers={"User-Agent": USER_AGENT},
        )

    def deliver(self, alert: Alert) -> None:
        body = json.dumps(alert.model_dump(mode="json")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": alert.id,
            "X-AET-Alert-Id": alert.id,
            **self.headers,
        }
        self._deadline.at = time.monotonic() + self.timeout_s
        try:
            url = self.url
            for _ in range(self.MAX_REDIRECTS + 1):
                status, reason, location = self._post(url, body, headers)
                if 200 <= status < 300:
                    return
                if not 300 <= status < 400:
                    retryable = status >= 500 or status in self.RETRY_STATUS
                    raise DeliveryError(f"HTTP {status} {reason}", retryable=retryable)
                url = self._redirect_target(url, status, location)
            raise DeliveryError(f"more than {self.MAX_REDIRECTS} redirects", retryable=False)
        except httpx.TimeoutException as exc:
            reason = f"no complete reply within the {self.timeout_s:g}s deadline ({type(exc).__name__})"
            raise DeliveryError(reason) from exc
        except httpx.HTTPError as exc:  # refused, unreachable, reset, protocol error
            raise DeliveryError(redact(f"{type(exc).__name__}: {exc}", self._secrets)) from exc
        finally:
            self._deadline.at = None

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, str | None]:
        """One POST: its status, reason and ``Location``; at most ``max_response_bytes`` of the reply are read.

        The status decides; the body is only drained (so the connection can be kept)
        up to the cap, past which the connection is dropped instead.
        """
        with self._client.stream("POST", url, content=body, headers=headers) as response:
            read = 0
            for chunk in response.iter_raw():  # raw: a compressed reply cannot expand past the cap
                read += len(chunk)
                if read > self.max_response_bytes:
                    log.debug("sink %s: reply longer than %d bytes; not read further", self.name, read)
                    break
            self.reply_bytes = read
            return response.status_code, response.reason_phrase, response.headers.get("Location")

    def _redirect_target(self, url: str, status: int, location: str | None) -> str:
        """Where a followed redirect goes, or a permanent :class:`DeliveryError` saying why it is not followed."""
        target = urljoin(url, location) if location else None
        where = url_origin(target) if target else "nowhere"
        if self.redirects != "same-origin":
            raise DeliveryError(f"HTTP {status} redirect to {where} not followed (redirects: none)", retryable=False)
        if status not in (307, 308) or target is None or url_origin(target) != url_origin(url):
            raise DeliveryError(
                f"HTTP {status} redirect to {where} not followed (redirects: same-origin, 307/308 only)",
                retryable=False,
            )
        return target

    def close(self) -> None:
        self._client.close()


class SinkDispatcher(threading.Thread):
    """Feeds one sink from the alerts table through the outbox, retrying with exponential backoff.

    ``since``: alerts raised before this (or before ``retention_s`` ago) are not
    offered to the sink (its history starts here); rows already in the outbox are
    retried whatever their age, until ``max_attempts`` attempts or ``max_age_s``
    seconds, after which the row is marked ``failed`` (logged and counted). Rows
    that are done (delivered, rejected, failed) are purged ``retention_s`` after
    they were created. Every row is claimed with a lease and the lease is renewed
    just before its delivery, so a delivery never runs on an expired lease (the
    lease is longer than one attempt's deadline); a row whose lease was lost to
    another dispatcher meanwhile is left to it.
    """

    HOUSEKEEPING_S: ClassVar[float] = 60.0  # how often rows are expired and purged

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
        max_age_s: float = 0.0,
        retention_s: float = 7 * 86400.0,
        lease_s: float | None = None,
        claim_limit: int = 20,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"aet-sink-{sink.name}", daemon=True)
        self.outbox, self.sink = outbox, sink
        self.since = since or utcnow() - timedelta(days=1)
        self.poll_s, self.backoff_s, self.max_backoff_s = poll_s, backoff_s, max_backoff_s
        self.max_attempts, self.max_age_s, self.retention_s = max_attempts, max_age_s, retention_s
        self.lease_s = lease_s if lease_s is not None else float(getattr(sink, "timeout_s", 10.0)) + 30.0
        self.claim_limit = claim_limit
        self.stop = stop or threading.Event()
        self.delivered = 0
        self.failures = 0
        self.gave_up = 0  # rows marked failed (attempts or age exhausted)
        self.purged = 0
        self.lost_leases = 0
        self.error: BaseException | None = None
        self._rng = random.Random()
        self._housekept_at = -float("inf")

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: doubling from ``backoff_s``, capped, ±10% jitter."""
        delay = min(self.backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s)
        return delay * self._rng.uniform(0.9, 1.1)

    def housekeeping(self) -> None:
        """Mark rows older than ``max_age_s`` failed and purge finished rows older than ``retention_s``."""
        now = utcnow()
        self._housekept_at = time.monotonic()
        if self.max_age_s > 0:
            expired = self.outbox.expire(
                self.sink.name, now - timedelta(seconds=self.max_age_s), f"not delivered within {self.max_age_s:g}s"
            )
            if expired:
                self.gave_up += expired
                metrics.SINK_DELIVERIES.labels(self.sink.name, "failed").inc(expired)
                log.error(
                    "sink %s: %d alert(s) not delivered within max_age_s=%g; marked failed",
                    self.sink.name,
                    expired,
                    self.max_age_s,
                )
        purged = self.outbox.purge(self.sink.name, now - timedelta(seconds=self.retention_s))
        if purged:
            self.purged += purged
            log.info(
                "sink %s: purged %d finished outbox row(s) older than %gs", self.sink.name, purged, self.retention_s
            )

    def run_once(self) -> int:
        """Enqueue new alerts and attempt every due delivery once; returns the attempts made."""
        if time.monotonic() - self._housekept_at >= self.HOUSEKEEPING_S:
            self.housekeeping()
        since = max(self.since, utcnow() - timedelta(seconds=self.retention_s))  # purged rows are not enqueued again
        metrics.OUTBOX_ENQUEUED.labels(self.sink.name).inc(self.outbox.enqueue_missing(self.sink.name, since))
        attempted = 0
        for claimed in self.outbox.claim_due(self.sink.name, limit=self.claim_limit, lease_s=self.lease_s):
            d = self.outbox.renew(claimed, lease_s=self.lease_s)  # the claim may be old by now: a fresh lease or none
            if d is None:
                self.lost_leases += 1
                log.info("sink %s: alert %s was taken over by another dispatcher", self.sink.name, claimed.alert.id)
                continue
            attempted += 1
            attempts = d.attempts + 1
            try:
                self.sink.deliver(d.alert)
            except DeliveryError as exc:
                self.failures += 1
                exhausted = bool(self.max_attempts) and attempts >= self.max_attempts
                give_up = not exc.retryable or exhausted
                retry_at = None if give_up else utcnow() + timedelta(seconds=self.backoff(attempts))
                outcome = "retry" if not give_up else ("rejected" if not exc.retryable else "failed")
                metrics.SINK_DELIVERIES.labels(self.sink.name, outcome).inc()
                log.log(
                    logging.WARNING if outcome == "retry" else logging.ERROR,
                    "sink %s: alert %s attempt %d failed (%s)%s",
                    self.sink.name,
                    d.alert.id,
                    attempts,
                    exc,
                    f"; retrying at {retry_at:%H:%M:%S}"
                    if retry_at
                    else f"; giving up, marked {outcome}"
                    + (f" after max_attempts={self.max_attempts}" if outcome == "failed" else ""),
                )
                if outcome == "failed":
                    self.gave_up += 1
                self.outbox.mark_failed(
                    d.alert.id, self.sink.name, attempts, str(exc), retry_at=retry_at, status=outcome
                )
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
        """Stop the thread (and release the sink's connections); with ``drain_s``, first keep delivering what is
        due for up to that long."""
        try:
            self.stop.set()
            if self.is_alive():
                self.join()
            if drain_s > 0:
                self._drain(drain_s)
        finally:
            close = getattr(self.sink, "close", None)
            if close is not None:
                close()

    def _drain(self, drain_s: float) -> None:
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            try:
                if not self.run_once():
                    return
            except Exception as exc:  # noqa: BLE001
                log.warning("sink %s: %s", self.sink.name, exc)
                return


def build_sinks(settings: AlertSettings, stream: IO[str] | None = None) -> list[tuple[Sink, dict[str, Any]]]:
    """The sinks configured in ``AlertSettings`` with each one's dispatcher options."""
    sinks: list[tuple[Sink, dict[str, Any]]] = []
    retention = {"retention_s": settings.outbox_retention_s}
    if settings.stdout:
        sinks.append((StdoutSink(stream), {"backoff_s": 1.0, "max_backoff_s": 30.0, **retention}))
    for hook in settings.webhooks:
        sink = WebhookSink(
            hook.url.get_secret_value(),
            timeout_s=hook.timeout_s,
            headers={k: v.get_secret_value() for k, v in hook.headers.items()},
            name=hook.sink_name,
            max_response_bytes=hook.max_response_bytes,
            redirects=hook.redirects,
        )
        options = {
            "backoff_s": hook.backoff_s,
            "max_backoff_s": hook.max_backoff_s,
            "max_attempts": hook.max_attempts,
            "max_age_s": hook.max_age_s,
            **retention,
        }
        sinks.append((sink, options))
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
