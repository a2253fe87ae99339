"""The analysts' page, its event stream and the read API; every parameter is checked before a header is sent.

Endpoints: ``/`` (the page), ``/events`` (server-sent events: ``alert`` and ``ack``;
``?since=ISO`` replays alerts raised since then first), ``/api/alerts`` (each with its
evidence messages as text and its acknowledgement), ``POST /api/alerts/{id}/ack``,
``/api/entities``, ``/api/sentiment?entity=X`` (counts per bucket, shares with their
Wilson 95% interval), ``/api/models``. A bad parameter (``since=garbage``, a
``since`` past the year 9999, ``limit=-1``, ``limit`` over ``web.max_limit``) is a
400 with a JSON reason, never a traceback and never a 400 inside a 200 stream.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from aet.adapters.web.feed import AlertFeed
from aet.adapters.web.ingest import BodyTooLarge, BodyTooSlow, read_body
from aet.pipeline.config import WebSettings
from aet.pipeline.ports import AlertQueries, AnalystNotes
from aet.pipeline.records import ID_CHARS, Alert, parse_event_time

#: The page itself: HTML, CSS and script in one file, no external assets (it must work with no internet).
PAGE = (Path(__file__).resolve().parent / "analyst_page.html").read_text(encoding="utf-8")
SEVERITIES = ("info", "warning", "critical")
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class BadParam(ValueError):
    """A query parameter that cannot be used; the reply is a 400 naming it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > 12 or not raw.lstrip("-").isdigit():
        raise BadParam(name, f"not an integer: {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadParam(name, f"{value} is outside {low}..{high}")
    return value


def text_param(request: Request, name: str, choices: tuple[str, ...] | None = None) -> str | None:
    raw = request.query_params.get(name) or None
    if raw is None:
        return None
    if len(raw) > ID_CHARS or "\x00" in raw:
        raise BadParam(name, f"over {ID_CHARS} characters or holding NUL")
    if choices is not None and raw not in choices:
        raise BadParam(name, f"{raw[:40]!r} is not one of {', '.join(choices)}")
    return raw


def time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name) or None
    if raw is None:
        return None
    try:
        return parse_event_time(raw[:64])
    except (ValueError, OverflowError, TypeError) as exc:
        raise BadParam(name, f"not an ISO-8601 time: {raw[:40]!r} ({type(exc).__name__})") from None


def bad_param(exc: BadParam) -> JSONResponse:
    return JSONResponse({"error": exc.reason, "param": exc.name}, status_code=400)


def settings_of(request: Request) -> WebSettings:
    settings: WebSettings = request.app.state.settings
    return settings


def store_of(request: Request) -> AlertQueries:
    store: AlertQueries = request.app.state.store
    return store


def notes_of(request: Request) -> AnalystNotes | None:
    notes: AnalystNotes | None = request.app.state.notes
    return notes


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share k/n (95% by default): honest for small n, where a bucket of one
    message would otherwise read as 0% or 100%."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def described(alerts: list[Alert], notes: AnalystNotes | None) -> list[dict[str, Any]]:
    """Alerts as the page shows them: each with its evidence messages (text, source, time, link; a message no
    longer stored keeps only its id) and its acknowledgement."""
    ids = [m for a in alerts for m in a.example_ids]
    found = notes.evidence(ids) if notes is not None and ids else {}
    acks = notes.acks([a.id for a in alerts]) if notes is not None and alerts else {}
    out = []
    for a in alerts:
        row = a.model_dump(mode="json")
        row["evidence"] = [found.get(m, {"id": m, "text": None}) for m in a.example_ids]
        row["sources"] = sorted({e["source"] for e in row["evidence"] if e.get("source")})
        row["ack"] = acks.get(a.id)
        out.append(row)
    return out


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


async def api_alerts(request: Request) -> Response:
    try:
        limit = int_param(request, "limit", 100, low=1, high=settings_of(request).max_limit)
        entity = text_param(request, "entity")
        severity = text_param(request, "severity", SEVERITIES)
        since = time_param(request, "since")
    except BadParam as exc:
        return bad_param(exc)
    store, notes = store_of(request), notes_of(request)

    def query() -> list[dict[str, Any]]:
        return described(store.list_alerts(limit=limit, entity=entity, severity=severity, since=since), notes)

    return JSONResponse(await run_in_threadpool(query))


async def acknowledge(request: Request) -> Response:
    """``POST /api/alerts/{id}/ack`` with ``{"by": "name", "note": "..."}``: stored, pushed to open pages."""
    notes = notes_of(request)
    if notes is None:
        return JSONResponse({"error": "this server does not store acknowledgements"}, status_code=404)
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        return JSONResponse({"error": "cross-origin acknowledgement refused"}, status_code=403)
    alert_id = request.path_params["alert_id"]
    try:
        body = json.loads(await read_body(request, 4096, settings_of(request).body_timeout_s))
    except (BodyTooLarge, BodyTooSlow, ValueError, RecursionError):
        body = None
    by = body.get("by") if isinstance(body, dict) else None
    note = body.get("note", "") if isinstance(body, dict) else None
    if not isinstance(by, str) or not 0 < len(by.strip()) <= 128 or not isinstance(note, str) or len(note) > 1000:
        return JSONResponse({"error": "expected JSON {by: 1-128 characters, note: up to 1000}"}, status_code=400)
    if len(alert_id) > 128 or not await run_in_threadpool(notes.has_alert, alert_id):
        return JSONResponse({"error": "no such alert"}, status_code=404)
    ack = await run_in_threadpool(notes.acknowledge, alert_id, by.strip(), note.strip())
    request.app.state.feed.announce(ack)
    return JSONResponse(ack)


async def api_entities(request: Request) -> Response:
    try:
        limit = int_param(request, "limit", 30, low=1, high=settings_of(request).max_limit)
    except BadParam as exc:
        return bad_param(exc)
    return JSONResponse(await run_in_threadpool(store_of(request).top_entities, limit=limit))


async def api_sentiment(request: Request) -> Response:
    try:
        entity = text_param(request, "entity")
    except BadParam as exc:
        return bad_param(exc)
    store = store_of(request)

    def query() -> dict[str, Any]:
        if not entity:
            return {"entity": "", "buckets": [], "alerts": []}
        alerts = store.list_alerts(limit=200, entity=entity)
        buckets = store.sentiment(entity)
        for b in buckets:
            b["negative_lo"], b["negative_hi"] = wilson(b["negative"], b["n"])
            b["positive_lo"], b["positive_hi"] = wilson(b["positive"], b["n"])
        return {
            "entity": entity,
            "buckets": buckets,
            "alerts": [
                {
                    "id": a.id,
                    "kind": a.kind,
                    "severity": a.severity,
                    "window_start": a.window_start.isoformat(),
                    "window_end": a.window_end.isoformat(),
                }
                for a in alerts
            ],
        }

    return JSONResponse(await run_in_threadpool(query), headers={"Cache-Control": "no-store"})


async def api_models(request: Request) -> Response:
    return JSONResponse(json.loads(json.dumps(await run_in_threadpool(store_of(request).model_history), default=str)))


def _event(row: dict[str, Any]) -> bytes:
    return f"id: {row['id']}\nevent: alert\ndata: {json.dumps(row)}\n\n".encode()


def _ack_event(ack: dict[str, Any]) -> bytes:
    return f"event: ack\ndata: {json.dumps(ack)}\n\n".encode()


async def events(request: Request) -> Response:
    """Server-sent events: the backlog since ``since``, then each new alert; a comment line when idle."""
    try:
        since = time_param(request, "since")
    except BadParam as exc:
        return bad_param(exc)
    feed: AlertFeed = request.app.state.feed
    settings = settings_of(request)
    notes = notes_of(request)
    subscription = feed.subscribe_async(asyncio.get_running_loop())  # before the backlog: nothing falls between
    try:
        found = await run_in_threadpool(store_of(request).alerts_raised_since, since) if since else []
        backlog = await run_in_threadpool(described, found, notes) if found else []
    except Exception:
        feed.unsubscribe(subscription)
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n: connected\n\n"
            for a in backlog:
                yield _event(a)
            while True:
                try:
                    item = await asyncio.wait_for(subscription.get(), settings.heartbeat_s)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                if item is None:
                    return
                if isinstance(item, dict):
                    yield _ack_event(item)
                    continue
                (row,) = await run_in_threadpool(described, [item], notes)
                yield _event(row)
        finally:
            feed.unsubscribe(subscription)

    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), headers=headers)
