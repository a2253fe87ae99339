"""``aet serve``: the analysts' web page, on the standard library's HTTP server.

One page, no external assets (it must work with no internet): the live alert
feed (server-sent events), an entity's sentiment over time drawn as inline SVG,
and the model version history with drift events marked. Bound to 127.0.0.1 by
default; it only reads the database.

Endpoints: ``/`` (the page), ``/events`` (SSE; ``?since=ISO`` replays alerts
raised since then first), ``/api/alerts``, ``/api/entities``,
``/api/sentiment?entity=X``, ``/api/models``, ``/healthz``.

The alerts table is the source of truth (every alert engine writes it, on any
bus backend), so :class:`AlertFeed` follows it and fans new or re-raised alerts
out to every open event stream.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from aet.pipeline.ports import AlertQueries
from aet.pipeline.records import Alert, parse_event_time, utcnow

log = logging.getLogger(__name__)
#: The page itself: HTML, CSS and script in one file, no external assets.
PAGE = (Path(__file__).resolve().parent / "analyst_page.html").read_text(encoding="utf-8")


class AlertFeed(threading.Thread):
    """Follows the alerts table (by ``raised_at``) and hands each new alert to every subscriber.

    The query overlaps the previous one by ``overlap_s`` so an alert whose
    transaction committed late is still seen; (id, raised_at) pairs already sent
    are skipped.
    """

    def __init__(self, store: AlertQueries, *, poll_s: float = 0.25, overlap_s: float = 120.0) -> None:
        super().__init__(name="aet-alert-feed", daemon=True)
        self.store, self.poll_s, self.overlap_s = store, poll_s, overlap_s
        self.stop = threading.Event()
        self._subscribers: set[queue.Queue[Alert | None]] = set()
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str], datetime] = {}
        self._cursor = utcnow() - timedelta(seconds=overlap_s)
        self.polls = 0
        self._poll(broadcast=False)  # what exists now is the page's initial list, not news

    def subscribe(self) -> queue.Queue[Alert | None]:
        q: queue.Queue[Alert | None] = queue.Queue()
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[Alert | None]) -> None:
        with self._lock:
            self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _poll(self, broadcast: bool = True) -> None:
        alerts = self.store.alerts_raised_since(self._cursor - timedelta(seconds=self.overlap_s))
        self.polls += 1
        fresh = []
        for a in alerts:
            key = (a.id, a.raised_at.isoformat())
            if key in self._sent:
                continue
            self._sent[key] = a.raised_at
            fresh.append(a)
            if a.raised_at > self._cursor:
                self._cursor = a.raised_at
        horizon = self._cursor - timedelta(seconds=2 * self.overlap_s)
        self._sent = {k: v for k, v in self._sent.items() if v >= horizon}
        if broadcast and fresh:
            with self._lock:
                subscribers = list(self._subscribers)
            for q in subscribers:
                for a in fresh:
                    q.put(a)

    def run(self) -> None:
        while not self.stop.wait(self.poll_s):
            try:
                self._poll()
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the feed
                log.warning("alert feed: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            for q in self._subscribers:
                q.put(None)
        if self.is_alive():
            self.join()


def _alert_json(a: Alert) -> dict[str, Any]:
    return a.model_dump(mode="json")


class _Handler(BaseHTTPRequestHandler):
    server: AnalystServer
    server_version = "aet-serve/0.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/":
                self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif url.path == "/events":
                self._events(q.get("since"))
            elif url.path == "/api/alerts":
                limit = min(int(q.get("limit", 100)), 1000)
                alerts = self.server.store.list_alerts(limit=limit, entity=q.get("entity") or None)
                self._json([_alert_json(a) for a in alerts])
            elif url.path == "/api/entities":
                self._json(self.server.store.top_entities(limit=int(q.get("limit", 30))))
            elif url.path == "/api/sentiment":
                entity = q.get("entity", "")
                alerts = self.server.store.list_alerts(limit=200, entity=entity) if entity else []
                self._json(
                    {
                        "entity": entity,
                        "buckets": self.server.store.sentiment(entity) if entity else [],
                        "alerts": [
                            {"id": a.id, "kind": a.kind, "severity": a.severity, "window_end": a.window_end.isoformat()}
                            for a in alerts
                        ],
                    }
                )
            elif url.path == "/api/models":
                self._json(self.server.store.model_history())
            elif url.path == "/healthz":
                self._json({"ok": True, "subscribers": self.server.feed.subscribers})
            else:
                self._send(404, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except ValueError as exc:
            self._send(400, f"bad request: {exc}\n".encode(), "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any) -> None:
        self._send(200, json.dumps(data, default=str).encode("utf-8"), "application/json")

    def _events(self, since: str | None) -> None:
        feed = self.server.feed
        sub = feed.subscribe()  # before the backlog query, so nothing falls in between
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n: connected\n\n")
            self.wfile.flush()
            if since:
                for a in self.server.store.alerts_raised_since(parse_event_time(since)):
                    self._event(a)
            while not self.server.closing.is_set():
                try:
                    item = sub.get(timeout=self.server.heartbeat_s)
                except queue.Empty:
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    continue
                if item is None:
                    break
                self._event(item)
        finally:
            feed.unsubscribe(sub)

    def _event(self, a: Alert) -> None:
        data = json.dumps(_alert_json(a))
        self.wfile.write(f"id: {a.id}\nevent: alert\ndata: {data}\n\n".encode())
        self.wfile.flush()


class AnalystServer(ThreadingHTTPServer):
    """The page's HTTP server; ``serve_forever`` in a thread, ``close`` to stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        store: AlertQueries,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        poll_s: float = 0.25,
        heartbeat_s: float = 15.0,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.closing = threading.Event()
        self.feed = AlertFeed(store, poll_s=poll_s)
        self.feed.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}/"

    def close(self) -> None:
        self.closing.set()
        self.feed.close()
        self.shutdown()
        self.server_close()
