"""The analysts' page, its event stream and the read API; every parameter is checked before a header is sent.

Endpoints: ``/`` (the page), ``/events`` (server-sent events; ``?since=ISO`` replays
alerts raised since then first), ``/api/alerts``, ``/api/entities``,
``/api/sentiment?entity=X``, ``/api/models``. A bad parameter (``since=garbage``, a
``since`` past the year 9999, ``limit=-1``, ``limit`` over ``web.max_limit``) is a
400 with a JSON reason, never a traceback and never a 400 inside a 200 stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from aet.adapters.web.feed import AlertFeed
from aet.pipeline.config import WebSettings
from aet.pipeline.ports import AlertQueries
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


def alert_json(a: Alert) -> dict[str, Any]:
    return a.model_dump(mode="json")


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
    alerts = await run_in_threadpool(
        store_of(request).list_alerts, limit=limit, entity=entity, severity=severity, since=since
    )
    return JSONResponse([alert_json(a) for a in alerts])


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
        return {
            "entity": entity,
            "buckets": store.sentiment(entity),
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


def _event(a: Alert) -> bytes:
    return f"id: {a.id}\nevent: alert\ndata: {json.dumps(alert_json(a))}\n\n".encode()


async def events(request: Request) -> Response:
    """Server-sent events: the backlog since ``since``, then each new alert; a comment line when idle."""
    try:
        since = time_param(request, "since")
    except BadParam as exc:
        return bad_param(exc)
    feed: AlertFeed = request.app.state.feed
    settings = settings_of(request)
    subscription = feed.subscribe_async(asyncio.get_running_loop())  # before the backlog: nothing falls between
    try:
        backlog = await run_in_threadpool(store_of(request).alerts_raised_since, since) if since else []
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
                yield _event(item)
        finally:
            feed.unsubscribe(subscription)

    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), headers=headers)
