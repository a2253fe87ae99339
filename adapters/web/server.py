"""uvicorn in a thread, with the connection limits uvicorn does not have on its own.

uvicorn closes an idle keep-alive connection, but a connection that never completes
its request headers (a slowloris client trickling a byte at a time, or a half-open
socket) is held forever. :class:`GuardedH11Protocol` gives every request a deadline
for its headers (from the connection's start, or from the previous response) and
closes connections beyond ``max_connections`` as soon as they are accepted. Request
bodies have their own deadline where they are read (adapters/web/ingest.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from aet.pipeline.config import WebSettings

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a request-header deadline and a cap on open connections."""

    header_timeout_s: float = 10.0
    max_connections: int = 256

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            log.warning(
                "web: %d connections open, over the limit of %d: closing", len(self.connections), self.max_connections
            )
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("web: no request headers within %.1fs: closing the connection", self.header_timeout_s)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the request's headers are in; its body has its own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this keep-alive connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it a
    # response written in two parts waits for the client's delayed ACK (~40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class ServerThread:
    """Serves an ASGI app with uvicorn on a thread of its own; ``start`` returns once it listens.

    The socket is bound in the constructor, so a busy port is an ``OSError`` there
    (``aet serve`` reports it), and port 0 picks a free port (:attr:`port`).
    """

    def __init__(self, app: Any, settings: WebSettings) -> None:
        self.settings = settings
        self.sock = _bind(settings.host, settings.port)
        protocol = type(
            "AetH11Protocol",
            (GuardedH11Protocol,),
            {"header_timeout_s": settings.header_timeout_s, "max_connections": settings.max_connections},
        )
        config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_keep_alive=settings.keep_alive_s,
            timeout_graceful_shutdown=2,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="aet-web", daemon=True)

    @property
    def host(self) -> str:
        return str(self.sock.getsockname()[0])

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)

    def close(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout_s)
        self.sock.close()
