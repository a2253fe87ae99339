"""The live alert feed behind the analysts' event stream and ``aet alerts follow``.

The alerts table is the source of truth (every alert engine writes it, on any bus
backend), so :class:`AlertFeed` follows it and fans new or re-raised alerts out to
every subscriber: a thread's ``queue.Queue`` (the terminal follower) or an asyncio
queue of the web server's event loop (one per open event stream).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aet.pipeline.ports import AlertQueries
from aet.pipeline.records import Alert, utcnow

log = logging.getLogger(__name__)
#: What a subscriber is handed: an alert, an acknowledgement (event streams only), or None when the feed closes.
Deliver = Callable[[Alert | dict[str, Any] | None], None]


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
        self._subscribers: dict[object, Deliver] = {}
        self._streams: set[object] = set()  # the subscriptions that also hear acknowledgements
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str], datetime] = {}
        self._cursor = utcnow() - timedelta(seconds=overlap_s)
        self.polls = 0
        self.healthy = True  # the last look at the database succeeded (``/readyz``)
        self._poll(broadcast=False)  # what exists now is the page's initial list, not news

    def subscribe(self) -> queue.Queue[Alert | None]:
        """A thread's subscription: new alerts arrive on the returned queue (None: the feed closed)."""
        q: queue.Queue[Alert | None] = queue.Queue()
        self._add(q, q.put)  # type: ignore[arg-type]  # a thread's queue is never handed an acknowledgement
        return q

    def subscribe_async(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Alert | dict[str, Any] | None]:
        """An event loop's subscription (an event stream): alerts and acknowledgements, handed over with
        ``call_soon_threadsafe``."""
        q: asyncio.Queue[Alert | dict[str, Any] | None] = asyncio.Queue()

        def deliver(item: Alert | dict[str, Any] | None) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop closed: the stream is gone
                self.unsubscribe(q)

        self._add(q, deliver)
        with self._lock:
            self._streams.add(q)
        return q

    def announce(self, ack: dict[str, Any]) -> None:
        """Hand an acknowledgement made on this server to every open event stream (other servers' pages
        see it when they next list the alerts)."""
        with self._lock:
            streams = [d for h, d in self._subscribers.items() if h in self._streams]
        for deliver in streams:
            deliver(ack)

    def _add(self, handle: object, deliver: Deliver) -> None:
        with self._lock:
            self._subscribers[handle] = deliver

    def unsubscribe(self, handle: object) -> None:
        with self._lock:
            self._subscribers.pop(handle, None)
            self._streams.discard(handle)

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
                subscribers = list(self._subscribers.values())
            for deliver in subscribers:
                for a in fresh:
                    deliver(a)

    def run(self) -> None:
        while not self.stop.wait(self.poll_s):
            try:
                self._poll()
                self.healthy = True
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the feed
                self.healthy = False
                log.warning("alert feed: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            subscribers = list(self._subscribers.values())
        for deliver in subscribers:
            deliver(None)
        if self.is_alive():
            self.join()
