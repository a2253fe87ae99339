"""Liveness and readiness of a daemon, served beside ``/metrics``, and systemd's notify protocol.

Every daemon (``aet score``, ``aet monitor``, ``aet train``, ``aet alert``,
``aet fast-path``, ``aet dlq record``) answers on its metrics port:

- ``/healthz`` (live): 200 while the process serves, with the worker loop's
  state (``ok`` or ``degraded`` while a transient failure is retried). A
  degraded worker is alive: it recovers by itself, so restarting it would only
  lose its batch in flight.
- ``/readyz`` (ready): 200 once every check of its :class:`Readiness` passes,
  503 with the failing checks otherwise. The checks are the role's: its
  consumer has polled its topics (subscribed), its model is loaded (roles with
  one), the database answers.

Under systemd (``Type=notify``, ``$NOTIFY_SOCKET``) the daemon sends
``READY=1`` once ready and, with ``WatchdogSec=`` (``$WATCHDOG_USEC``),
``WATCHDOG=1`` at half the interval while the process is live, so systemd
restarts a daemon that hangs. The protocol is one datagram per state; it is
written here rather than taken from a package.

Which workers are subscribed is process-wide state, like the Prometheus
metrics: :meth:`Worker.run <aet.pipeline.worker.Worker.run>` marks its role
once its first poll returns, wherever the worker was built.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from aet.pipeline.redaction import redact

log = logging.getLogger(__name__)

#: A readiness check: ``None`` when it passes, else what is missing. An exception counts as a failure.
Check = Callable[[], str | None]

_subscribed: set[str] = set()
_subscribed_lock = threading.Lock()


def mark_subscribed(role: str, subscribed: bool = True) -> None:
    """Record that ``role``'s consumer polls its topics (or, with ``False``, no longer does)."""
    with _subscribed_lock:
        if subscribed:
            _subscribed.add(role)
        else:
            _subscribed.discard(role)


def is_subscribed(role: str) -> bool:
    """Whether a worker of ``role`` in this process has polled its topics and not stopped."""
    with _subscribed_lock:
        return role in _subscribed


@dataclass(frozen=True)
class Report:
    """The outcome of the checks: whether all passed, and each check's problem (``None`` when it passed)."""

    ok: bool
    checks: dict[str, str | None]

    def to_json(self, role: str, status: str) -> bytes:
        body = {"role": role, "status": status if self.ok else "not ready", "checks": self.checks}
        return json.dumps(body).encode()


class Readiness:
    """The named checks a daemon passes once it can do its job; :meth:`report` runs them all."""

    def __init__(self, role: str, *, secrets: list[str] | None = None) -> None:
        self.role = role
        self._checks: dict[str, Check] = {}
        self._secrets = secrets or []
        self._alive: Callable[[], str | None] = lambda: None

    def require(self, name: str, check: Check) -> None:
        """Add a check; a later one of the same name replaces it."""
        self._checks[name] = check

    def require_subscribed(self, role: str | None = None) -> None:
        """Ready only once a worker of ``role`` (default: this daemon's) has polled its topics."""
        role = role or self.role

        def subscribed() -> str | None:
            return None if is_subscribed(role) else f"the {role} consumer has not polled its topics yet"

        self.require("subscribed", subscribed)

    def flag(self, name: str, waiting: str) -> threading.Event:
        """A check that passes once the returned event is set (e.g. the model is loaded); ``waiting`` until then."""
        event = threading.Event()
        self.require(name, lambda: None if event.is_set() else waiting)
        return event

    def liveness(self, check: Callable[[], str | None]) -> None:
        """What makes the process not live (``None``: live); by default it always is."""
        self._alive = check

    def report(self) -> Report:
        """Run every check (an exception is a failure, its message redacted)."""
        results = {name: self._run(check) for name, check in self._checks.items()}
        return Report(all(problem is None for problem in results.values()), results)

    def live(self) -> Report:
        problem = self._run(self._alive)
        return Report(problem is None, {"process": problem})

    def _run(self, check: Check) -> str | None:
        try:
            return check()
        except Exception as exc:  # noqa: BLE001 - a check that raises has found its problem
            return redact(
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", self._secrets
            )


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1`` ...) to systemd's ``$NOTIFY_SOCKET``; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", address.lstrip("\0"), exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's ``WatchdogSec`` for this process, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.5)
    except ValueError:
        return None


class SystemdNotifier(threading.Thread):
    """Tells systemd ``READY=1`` once the readiness checks pass, then pets its watchdog while the process is live."""

    def __init__(self, readiness: Readiness, *, poll_s: float = 1.0) -> None:
        super().__init__(name="aet-sd-notify", daemon=True)
        self.readiness = readiness
        self.poll_s = poll_s
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = watchdog_interval_s()
        ready = False
        while not self.stopped.is_set():
            if not ready and self.readiness.report().ok:
                ready = notify(f"READY=1\nSTATUS={self.readiness.role} ready")
            if interval is not None and self.readiness.live().ok:
                notify("WATCHDOG=1")
            self.stopped.wait(min(self.poll_s, interval) if interval is not None else self.poll_s)
            if ready and interval is None:
                return

    def close(self) -> None:
        self.stopped.set()
