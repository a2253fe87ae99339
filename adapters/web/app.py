"""The one HTTP surface of AET (``aet serve``): Starlette behind uvicorn.

:func:`build_app` puts together the analysts' page and read API
(adapters/web/read_api.py), the ingest API (adapters/web/ingest.py), the chat
webhooks (adapters/web/webhooks.py), ``/healthz``, ``/readyz`` and the OpenAPI
page; :class:`WebServer` serves it on a thread (adapters/web/server.py).

Guards, outermost first: the Host allow-list (a request naming another host is a
400, so a DNS-rebound page cannot read the API), then the bearer tokens: reading
needs ``web.read_token`` when one is set (as ``Authorization: Bearer``, or the
``aet_token`` cookie that ``/?token=...`` sets, since a browser's event stream
cannot send headers), ingesting needs ``web.ingest_token``. Tokens are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from aet.adapters.web import openapi, read_api
from aet.adapters.web.feed import AlertFeed
from aet.adapters.web.ingest import Gate, Intake, error, post_messages
from aet.adapters.web.server import ServerThread
from aet.adapters.web.webhooks import WebhookDelivery
from aet.adapters.web.webhooks import routes as webhook_routes
from aet.pipeline.config import WebSettings
from aet.pipeline.ports import AlertQueries, AnalystNotes

Endpoint = Callable[[Request], Awaitable[Response]]
COOKIE = "aet_token"


def _presented(request: Request, *, cookie: bool) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) if cookie else None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def reading(endpoint: Endpoint) -> Endpoint:
    """Requires ``web.read_token`` (header or cookie) when one is configured."""

    async def guarded(request: Request) -> Response:
        token = request.app.state.settings.read_token
        if token is not None and not token_matches(_presented(request, cookie=True), token.get_secret_value()):
            return error(401, "a read token is required", headers={"WWW-Authenticate": "Bearer"})
        return await endpoint(request)

    return guarded


def ingesting(endpoint: Endpoint) -> Endpoint:
    """Requires ``web.ingest_token`` as a bearer token; without one configured the ingest API refuses everyone."""

    async def guarded(request: Request) -> Response:
        token = request.app.state.settings.ingest_token
        if token is None or not token_matches(_presented(request, cookie=False), token.get_secret_value()):
            return error(401, "a valid ingest bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        return await endpoint(request)

    return guarded


async def page(request: Request) -> Response:
    """The page; ``/?token=X`` (with the right read token) stores it in a cookie and drops it from the URL."""
    token = request.app.state.settings.read_token
    given = request.query_params.get("token")
    if token is not None and given is not None:
        if not token_matches(given, token.get_secret_value()):
            return error(401, "wrong read token")
        reply = RedirectResponse("/", status_code=303)
        reply.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
        return reply
    return await reading(read_api.page)(request)


async def healthz(request: Request) -> Response:
    """Liveness: the event loop answers."""
    return JSONResponse({"ok": True, "subscribers": request.app.state.feed.subscribers})


async def readyz(request: Request) -> Response:
    """Readiness: the alert feed is following the database and its last look succeeded."""
    feed: AlertFeed = request.app.state.feed
    ready = feed.is_alive() and feed.healthy
    return JSONResponse({"ready": ready, "feed_polls": feed.polls}, status_code=200 if ready else 503)


def build_app(
    store: AlertQueries,
    feed: AlertFeed,
    settings: WebSettings,
    *,
    intake: Intake | None = None,
    webhooks: WebhookDelivery | None = None,
    notes: AnalystNotes | None = None,
) -> Starlette:
    """The Starlette app; ``intake`` (a bus behind it) enables the ingest API, ``webhooks`` the chat webhooks."""
    routes = [
        Route("/", page),
        Route("/events", reading(read_api.events)),
        Route("/api/alerts", reading(read_api.api_alerts)),
        Route("/api/alerts/{alert_id}/ack", reading(read_api.acknowledge), methods=["POST"]),
        Route("/api/entities", reading(read_api.api_entities)),
        Route("/api/sentiment", reading(read_api.api_sentiment)),
        Route("/api/models", reading(read_api.api_models)),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/v1/messages", ingesting(post_messages), methods=["POST"]),
        Route("/openapi.json", openapi.schema_endpoint),
        Route("/docs", openapi.docs_page),
        *webhook_routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts, www_redirect=False)],
    )
    app.state.store, app.state.feed, app.state.settings = store, feed, settings
    app.state.intake, app.state.gate = intake, Gate(settings.max_in_flight, settings.queue_wait_s)
    app.state.webhooks, app.state.notes = webhooks, notes
    return app


class WebServer:
    """The whole HTTP surface on a thread: ``start``, ``url``, ``close``. Binds in the constructor (``OSError``)."""

    def __init__(
        self,
        store: AlertQueries,
        settings: WebSettings | None = None,
        *,
        intake: Intake | None = None,
        webhooks: WebhookDelivery | None = None,
        notes: AnalystNotes | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = (settings or WebSettings()).model_copy(update=overrides)
        self.feed = AlertFeed(store, poll_s=self.settings.feed_poll_s)
        self.app = build_app(store, self.feed, self.settings, intake=intake, webhooks=webhooks, notes=notes)
        try:
            self.thread = ServerThread(self.app, self.settings)
        except OSError:
            self.feed.close()
            raise

    @property
    def url(self) -> str:
        return self.thread.url

    @property
    def port(self) -> int:
        return self.thread.port

    def start(self) -> WebServer:
        self.feed.start()
        self.thread.start()
        return self

    def close(self) -> None:
        self.feed.close()  # ends every event stream first, so the server's shutdown does not wait on them
        self.thread.close()
