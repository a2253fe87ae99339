"""``aet bench ingest``: records/s into the bus through each way in, and the HTTP API's request latency.

Every stage publishes to a memory bus in a throwaway installation (SQLite for the
sources' state) and waits for its acknowledgement, as in production:

- **HTTP, batched**: ``POST /v1/messages`` with ``batch`` messages per request, one
  keep-alive client on loopback against the real server (uvicorn on a thread);
- **HTTP, one per request**: the same, one message a request; its p50/p99 latency is
  ``http_p50_ms`` / ``http_p99_ms`` (``http_batch_p99_ms`` for the batched requests);
- **RSS**: the feed poller (pipeline/sources/rss.py) on ``feeds`` feeds of ``items``
  items each, served by a local HTTP server, one poll of all of them;
- **files**: the file source (pipeline/sources/files.py) reading one JSONL file.

Messages are the example stream's texts, each with a unique id. The scorer's rate
(``aet bench score``'s worker number), when a champion is registered, gives
``http_batch_vs_scorer``: how many scorers' worth of input the batched API takes.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
from pydantic import SecretStr

from aet.pipeline.bench.data import EXAMPLES
from aet.pipeline.bench.report import environment, write_report
from aet.pipeline.bench.scratch import scratch_app
from aet.pipeline.config import FeedSettings, FilesSourceSettings, RssSourceSettings, Settings, WebSettings
from aet.pipeline.intake import MessageIntake
from aet.pipeline.ports import FeedFetcher, IngestState
from aet.pipeline.records import utcnow
from aet.pipeline.runtime import App
from aet.pipeline.sources.emit import Emitter
from aet.pipeline.sources.files import FileSource
from aet.pipeline.sources.rss import RssSource

TOKEN = "bench-ingest-token"


@dataclass
class IngestBenchEdges:
    """The concrete parts the benchmark runs on, handed over by the command line (the composition root)."""

    serve: Callable[[App, MessageIntake, WebSettings], AbstractContextManager[str]]  # yields the server's base URL
    state: Callable[[App], IngestState]
    fetcher: Callable[[RssSourceSettings], FeedFetcher]


def _texts() -> list[str]:
    rows = [json.loads(line) for line in (EXAMPLES / "stream.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows]


def _payloads(n: int, prefix: str) -> list[dict[str, Any]]:
    texts, now = _texts(), utcnow()
    return [
        {
            "text": texts[i % len(texts)],
            "source": "news" if i % 3 else "chat",
            "id": f"{prefix}-{i}",
            "ts": (now - timedelta(seconds=n - i)).isoformat(),
        }
        for i in range(n)
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def http_rates(base: str, *, batched: int, batch: int, single: int) -> dict[str, Any]:
    """Messages/s through ``POST /v1/messages``, batched and one per request, with request latencies."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        client.post("/v1/messages", json=_payloads(10, "warm")).raise_for_status()
        payloads = _payloads(batched, "batch")
        latencies: list[float] = []
        started = time.perf_counter()
        for i in range(0, batched, batch):
            t = time.perf_counter()
            client.post("/v1/messages", json={"messages": payloads[i : i + batch]}).raise_for_status()
            latencies.append(time.perf_counter() - t)
        batch_s = time.perf_counter() - started
        singles = _payloads(single, "single")
        one: list[float] = []
        started = time.perf_counter()
        for p in singles:
            t = time.perf_counter()
            client.post("/v1/messages", json=p).raise_for_status()
            one.append(time.perf_counter() - t)
        single_s = time.perf_counter() - started
    return {
        "http_batch_msgs_per_s": batched / batch_s,
        "http_batch_size": batch,
        "http_batch_p99_ms": 1000 * _percentile(latencies, 0.99),
        "http_single_msgs_per_s": single / single_s,
        "http_p50_ms": 1000 * statistics.median(one),
        "http_p99_ms": 1000 * _percentile(one, 0.99),
    }


def _feed_xml(feed: int, items: int) -> bytes:
    texts, now = _texts(), utcnow()
    entries = "".join(
        f"<item><title>{escape(texts[(feed * items + i) % len(texts)])}</title>"
        f"<link>http://feeds.local/{feed}/{i}</link><guid>feed{feed}-item{i}</guid>"
        f"<pubDate>{format_datetime(now - timedelta(seconds=i))}</pubDate></item>"
        for i in range(items)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>bench feed {feed}</title>'
        f"<link>http://feeds.local/{feed}</link><description>bench</description>{entries}</channel></rss>"
    ).encode()


@contextmanager
def feed_server(feeds: int, items: int) -> Iterator[str]:
    """A local HTTP server with ``feeds`` RSS feeds at ``/feed/N.xml``; yields its base URL."""
    bodies = {f"/feed/{f}.xml": _feed_xml(f, items) for f in range(feeds)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, fmt: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def rss_rate(app: App, edges: IngestBenchEdges, *, feeds: int, items: int) -> dict[str, Any]:
    """Items/s of one poll of ``feeds`` local feeds by the RSS source, into the bus."""
    with feed_server(feeds, items) as base:
        settings = RssSourceSettings(feeds=[FeedSettings(url=f"{base}/feed/{f}.xml") for f in range(feeds)])
        source = RssSource(settings, edges.fetcher(settings), edges.state(app), Emitter(app.bus, app.settings.topics))
        started = time.perf_counter()
        stats = source.poll_once()
        seconds = time.perf_counter() - started
    if stats.published != feeds * items:
        raise RuntimeError(f"the RSS source published {stats.published} of {feeds * items} items: {stats}")
    return {"rss_items_per_s": stats.published / seconds, "rss_items": stats.published, "rss_feeds": feeds}


def file_rate(app: App, edges: IngestBenchEdges, *, n: int, home: Path) -> dict[str, Any]:
    """Messages/s of the file source reading one JSONL file of ``n`` messages, into the bus."""
    path = home / "bench-input.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in _payloads(n, "file")))
    old = time.time() - 3600
    os.utime(path, (old, old))  # settled: the source leaves files still being written for later
    settings = FilesSourceSettings(paths=[path], watch=False)
    source = FileSource(settings, edges.state(app), Emitter(app.bus, app.settings.topics))
    started = time.perf_counter()
    stats = source.scan_once()
    seconds = time.perf_counter() - started
    if stats.published != n:
        raise RuntimeError(f"the file source published {stats.published} of {n} messages: {stats}")
    return {"file_msgs_per_s": n / seconds, "file_msgs": n}


def run(
    settings: Settings,
    edges: IngestBenchEdges,
    *,
    batched: int = 20_000,
    batch: int = 500,
    single: int = 2_000,
    feeds: int = 20,
    items: int = 200,
    file_msgs: int = 20_000,
    scorer: dict[str, Any] | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run every stage in a throwaway installation; returns (and writes under ``out``) the report."""
    report: dict[str, Any] = {"environment": environment()}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        app = scratch_app(settings, home)
        try:
            web = WebSettings(
                port=0, ingest_token=SecretStr(TOKEN), max_batch=max(batch, 1), max_body_bytes=64 * 1024 * 1024
            )
            intake = MessageIntake(app.bus, app.settings.topics, max_batch=web.max_batch)
            with edges.serve(app, intake, web) as base:
                report.update(http_rates(base, batched=batched, batch=batch, single=single))
            report.update(rss_rate(app, edges, feeds=feeds, items=items))
            report.update(file_rate(app, edges, n=file_msgs, home=home))
        finally:
            app.close()
    if scorer is not None:
        report["scorer_msgs_per_s"] = scorer["messages_per_s"]
        report["scorer"] = scorer
        report["http_batch_vs_scorer"] = report["http_batch_msgs_per_s"] / scorer["messages_per_s"]
    else:
        report["scorer_msgs_per_s"] = None
        report["http_batch_vs_scorer"] = "to be measured: no champion registered (aet bench score gives the rate)"
    if out is not None:
        write_report(report, out, "ingest")
    return report
