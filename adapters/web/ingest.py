"""``POST /v1/messages``: messages in over HTTP, answered 202 only once the bus has acknowledged them.

The request body is read with a byte cap and a deadline (413 as soon as it grows
past ``web.max_body_bytes``, 408 if it trickles), the whole batch is validated
before anything is published (400 with every field error, nothing half-written),
and at most ``web.max_in_flight`` requests publish at once: one that finds no slot
within ``web.queue_wait_s`` gets 429, and a bus that does not acknowledge within
``web.publish_timeout_s`` gives 503, both with ``Retry-After``.

Turning JSON into message records is the pipeline's business (the ingest contract,
:mod:`aet.pipeline.intake`); this module only speaks HTTP, so it sees it through the
:class:`Intake` protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aet.pipeline.config import WebSettings
from aet.pipeline.ports import BusError
from aet.pipeline.records import Message

log = logging.getLogger(__name__)


class Refused(ValueError):
    """A request body that cannot become messages; ``errors`` lists every problem (index, field, message)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


def refusal_errors(exc: ValueError) -> list[dict[str, Any]]:
    """The errors a refusal carries (an ``errors`` list, as the intake raises), else its message."""
    errors = getattr(exc, "errors", None)
    return errors if isinstance(errors, list) else [{"loc": ["body"], "msg": str(exc)}]


class Intake(Protocol):
    """What the HTTP API needs from the pipeline: parse a JSON body into messages, publish them."""

    def parse(self, payload: Any) -> list[Message]:
        """Every message of ``payload`` (one object, a list, or ``{"messages": [...]}``); a ``ValueError`` with an
        ``errors`` list (index, loc, msg) when any of them is invalid, so nothing of the batch is published."""
        ...

    def publish(self, messages: Sequence[Message], timeout_s: float) -> None:
        """Publish and wait for the bus's acknowledgement; :class:`BusError` if it does not come."""
        ...

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of the request body (for the OpenAPI page)."""
        ...


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


def error(status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A JSON error reply: ``{"error": message, ...}``."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused while it is read once it passes ``limit`` bytes or ``timeout_s`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body as JSON, or :class:`Refused` saying where it stopped being JSON."""
    try:
        return json.loads(body)
    except RecursionError:
        raise Refused([{"loc": ["body"], "msg": "JSON nested too deep"}]) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise Refused([{"loc": ["body"], "msg": f"not JSON: {exc}"}]) from None


class Gate:
    """At most ``size`` requests publishing at once; the rest wait up to ``wait_s`` for a slot."""

    def __init__(self, size: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(size)
        self.wait_s = wait_s

    async def enter(self) -> bool:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            return False
        return True

    def leave(self) -> None:
        self._slots.release()


async def publish_reply(
    messages: list[Message], intake: Intake, gate: Gate, settings: WebSettings, *, extra: dict[str, Any] | None = None
) -> Response:
    """Publish through the gate: 202 once acknowledged, 429 without a slot, 503 if the bus did not acknowledge."""
    retry = {"Retry-After": str(settings.retry_after_s)}
    if not await gate.enter():
        return error(429, "too many requests are publishing; retry later", headers=retry)
    try:
        await run_in_threadpool(intake.publish, messages, settings.publish_timeout_s)
    except BusError as exc:
        log.warning("ingest: the bus did not acknowledge %d message(s): %s", len(messages), exc)
        return error(503, "the bus did not acknowledge the messages; retry later", headers=retry)
    finally:
        gate.leave()
    return JSONResponse({"accepted": len(messages), "ids": [m.id for m in messages], **(extra or {})}, status_code=202)


async def read_json(request: Request, settings: WebSettings) -> tuple[bytes, Any] | Response:
    """Read and decode a JSON body under the size and time limits, or the error reply."""
    try:
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    except BodyTooLarge:
        return error(413, f"body over {settings.max_body_bytes} bytes", headers={"Connection": "close"})
    except BodyTooSlow:
        return error(408, f"body not received within {settings.body_timeout_s:g}s", headers={"Connection": "close"})
    try:
        return body, parse_json(body)
    except Refused as exc:
        return error(400, "bad request body", errors=exc.errors)


async def post_messages(request: Request) -> Response:
    """``POST /v1/messages``: one message, a JSON array of them, or ``{"messages": [...]}``."""
    state = request.app.state
    settings: WebSettings = state.settings
    intake: Intake | None = state.intake
    if intake is None:
        return error(404, "this server has no ingest API (no bus)")
    read = await read_json(request, settings)
    if isinstance(read, Response):
        return read
    try:
        messages = await run_in_threadpool(intake.parse, read[1])
    except ValueError as exc:
        return error(400, "invalid messages: nothing was published", errors=refusal_errors(exc))
    return await publish_reply(messages, intake, state.gate, settings)
