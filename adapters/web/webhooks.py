"""Chat platforms' webhooks on the HTTP surface: who sent the request is checked here, before any parsing.

``POST /v1/webhooks/slack``: Slack's request signature, ``v0=`` + HMAC-SHA256 of
``v0:{X-Slack-Request-Timestamp}:{body}`` with the app's signing secret, compared in
constant time, and a timestamp within ``web.slack_replay_window_s`` of now (else a
captured request could be replayed later); a bad or stale signature is a 401 and
nothing is published. ``/v1/webhooks/telegram``: the ``X-Telegram-Bot-Api-Secret-Token``
header set with ``setWebhook``. ``/v1/webhooks/discord`` and ``/v1/webhooks/stocktwits``:
a bearer ``web.webhook_token`` (a relay posts them). An endpoint whose secret is not
configured answers 404.

A request that passes is parsed by the pipeline's platform parser and delivered
(:class:`WebhookDelivery`): the messages of events not seen before are published and
acknowledged, then the event ids are remembered, so a platform's retry of an event
already taken publishes nothing (200, ``duplicates``). Platforms want a 200, not a 202.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aet.adapters.web.ingest import BodyTooLarge, BodyTooSlow, Refused, error, parse_json, read_body, refusal_errors
from aet.pipeline.config import WebSettings
from aet.pipeline.ports import BusError

log = logging.getLogger(__name__)
PLATFORMS = ("slack", "telegram", "discord", "stocktwits")


class Parsed(Protocol):
    """A parsed webhook request: a handshake ``reply``, or events with their messages."""

    @property
    def reply(self) -> dict[str, Any] | None: ...

    @property
    def events(self) -> Mapping[str, list[Any]]: ...


class WebhookDelivery(Protocol):
    """What the webhooks need from the pipeline (:class:`aet.pipeline.webhooks.WebhookIntake`)."""

    def parse(self, platform: str, payload: Any) -> Parsed:
        """The request's events, or a ``ValueError`` with an ``errors`` list."""
        ...

    def deliver(self, batch: Any, timeout_s: float) -> tuple[int, int]:
        """Publish new events' messages (acknowledged, else ``BusError``); (published, already seen)."""
        ...


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_verified(settings: WebSettings, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """None when the request is Slack's and fresh, else why not (for the log; the reply says only 401)."""
    assert settings.slack_signing_secret is not None
    timestamp = headers.get("x-slack-request-timestamp", "")
    given = headers.get("x-slack-signature", "")
    if not timestamp.isdigit() or len(timestamp) > 12:
        return "no or bad X-Slack-Request-Timestamp"
    if abs(now - int(timestamp)) > settings.slack_replay_window_s:
        return "timestamp outside the replay window"
    expected = slack_signature(settings.slack_signing_secret.get_secret_value(), timestamp, body)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "signature does not match"
    return None


def _secret_of(settings: WebSettings, platform: str) -> str | None:
    secret = {
        "slack": settings.slack_signing_secret,
        "telegram": settings.telegram_secret_token,
        "discord": settings.webhook_token,
        "stocktwits": settings.webhook_token,
    }[platform]
    return secret.get_secret_value() if secret is not None else None


def _authentic(platform: str, settings: WebSettings, request: Request, body: bytes) -> str | None:
    secret = _secret_of(settings, platform)
    assert secret is not None
    if platform == "slack":
        return slack_verified(settings, request.headers, body, time.time())
    if platform == "telegram":
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        return None if hmac.compare_digest(given.encode(), secret.encode()) else "wrong secret token header"
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret.encode())
    return None if ok else "no or wrong bearer token"


def endpoint(platform: str) -> Route:
    async def receive(request: Request) -> Response:
        state = request.app.state
        settings: WebSettings = state.settings
        delivery: WebhookDelivery | None = state.webhooks
        if delivery is None or _secret_of(settings, platform) is None:
            return error(404, f"the {platform} webhook is not configured")
        try:
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        except (BodyTooLarge, BodyTooSlow) as exc:
            status = 413 if isinstance(exc, BodyTooLarge) else 408
            return error(status, "body over the size or time limit", headers={"Connection": "close"})
        why = _authentic(platform, settings, request, body)  # on the raw bytes, before any parsing
        if why is not None:
            log.warning("webhook %s: refused a request: %s", platform, why)
            return error(401, "request not authenticated", headers={"WWW-Authenticate": "Bearer"})
        try:
            payload = parse_json(body)
            batch = await run_in_threadpool(delivery.parse, platform, payload)
        except Refused as exc:
            return error(400, "bad request body", errors=exc.errors)
        except ValueError as exc:
            return error(400, f"unreadable {platform} payload: nothing was published", errors=refusal_errors(exc))
        if batch.reply is not None:
            return JSONResponse(batch.reply)
        retry = {"Retry-After": str(settings.retry_after_s)}
        if not await state.gate.enter():
            return error(429, "too many requests are publishing; retry later", headers=retry)
        try:
            published, duplicates = await run_in_threadpool(delivery.deliver, batch, settings.publish_timeout_s)
        except BusError as exc:
            log.warning("webhook %s: the bus did not acknowledge: %s", platform, exc)
            return error(503, "the bus did not acknowledge the messages; retry later", headers=retry)
        finally:
            state.gate.leave()
        return JSONResponse({"ok": True, "published": published, "duplicates": duplicates})

    return Route(f"/v1/webhooks/{platform}", receive, methods=["POST"])


def routes() -> list[Route]:
    return [endpoint(p) for p in PLATFORMS]
