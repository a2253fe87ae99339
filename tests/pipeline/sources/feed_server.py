"""A local HTTP server for the feed tests: each path answers as a route says (a feed with validators, a status,
a redirect, a stall), and every request is recorded. Realistic feeds written for this project, never the internet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RSS_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>Wire Markets</title>
  <link>https://news.example.test/markets</link>
  <description>Market-moving headlines</description>
"""


def rss_item(guid: str, title: str, published: str, summary: str = "", link: str | None = None) -> str:
    """One RSS 2.0 item (``summary`` goes in a CDATA description, markup and all)."""
    link = link or f"https://news.example.test/a/{guid}"
    return (
        f"  <item><title>{title}</title><link>{link}</link>"
        f'<guid isPermaLink="false">{guid}</guid><pubDate>{published}</pubDate>'
        f"<description><![CDATA[{summary}]]></description><dc:creator>Desk</dc:creator></item>\n"
    )


def rss(*items: str) -> bytes:
    return (RSS_HEAD + "".join(items) + "</channel>\n</rss>\n").encode("utf-8")


def atom(*entries: tuple[str, str, str]) -> bytes:
    """An Atom 1.0 feed of (id, title with markup, updated) entries."""
    body = "".join(
        f'<entry><id>{i}</id><title type="html">{t}</title><updated>{u}</updated>'
        f'<link href="https://filings.example.test/{i.rsplit(":", 1)[-1]}"/></entry>'
        for i, t, u in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Filings</title><id>urn:filings</id><updated>2026-03-02T10:00:00Z</updated>{body}</feed>"
    ).encode()


@dataclass
class Route:
    """How one path answers: ``body`` with ``etag``/``last_modified`` (304 when the request's validators match),
    or a ``status``, or a ``redirect`` to another path, after ``delay_s``."""

    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    redirect: str | None = None
    delay_s: float = 0.0
    content_type: str = "application/rss+xml; charset=utf-8"
    chunked: bool = False  # no Content-Length: the body's size is known only by reading it
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    if_none_match: str | None
    if_modified_since: str | None
    status: int


@dataclass
class FeedServer:
    """The server's routes and the requests it answered."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]


def _fresh(route: Route, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Whether the client's copy is current (RFC 9110: If-None-Match wins over If-Modified-Since)."""
    if if_none_match is not None:
        return route.etag is not None and if_none_match == route.etag
    return route.last_modified is not None and if_modified_since == route.last_modified


def serve(server_state: FeedServer) -> Iterator[FeedServer]:
    """Run the server on a free loopback port until the generator is closed."""
    state = server_state

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = state.routes.get(self.path)
            status = 404 if route is None else route.status
            if route is not None and route.delay_s:
                time.sleep(route.delay_s)  # the server stalls: the client's timeout is what is tested
            inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
            if route is not None and route.redirect:
                status = 302
            elif route is not None and status == 200 and _fresh(route, inm, ims):
                status = 304
            state.requests.append(Seen(self.path, inm, ims, status))
            try:
                self.send_response(status)
                if route is not None and route.redirect:
                    self.send_header("Location", route.redirect)
                for name, value in route.headers.items() if route is not None else ():
                    self.send_header(name, value)
                body = route.body if route is not None and status == 200 else b""
                if route is not None and status in (200, 304):
                    if route.etag:
                        self.send_header("ETag", route.etag)
                    if route.last_modified:
                        self.send_header("Last-Modified", route.last_modified)
                if status == 200 and route is not None:
                    self.send_header("Content-Type", route.content_type)
                if route is not None and route.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 4096):
                        part = body[i : i + 4096]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
