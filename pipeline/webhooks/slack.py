"""Slack Events API payloads (https://api.slack.com/apis/events-api).

``url_verification`` is answered with its challenge; an ``event_callback`` whose event
is a message (``message`` without a subtype, ``thread_broadcast``, ``app_mention``)
becomes one message with id ``slack:{channel}/{ts}``; any other event (an edit, a join,
a bot's message) is taken (its id remembered) and publishes nothing. The request's
signature is checked before this runs (adapters/web/webhooks.py).
"""

from __future__ import annotations

from typing import Any

from aet.pipeline.ingest import normalize
from aet.pipeline.webhooks.batch import WebhookBatch, epoch, event_id, field_of, normalized, refuse

MESSAGE_SUBTYPES = {None, "thread_broadcast", "file_share"}


def parse(payload: Any) -> WebhookBatch:
    if not isinstance(payload, dict):
        raise refuse("body", "not a JSON object")
    kind = field_of(payload, "type", str)
    if kind == "url_verification":
        return WebhookBatch("slack", reply={"challenge": field_of(payload, "challenge", str)})
    if kind != "event_callback":
        raise refuse("type", f"unsupported Slack payload type {kind[:40]!r}")
    eid = event_id(field_of(payload, "event_id", str), "event_id")
    event = field_of(payload, "event", dict)
    etype = field_of(event, "type", str)
    is_message = (etype == "message" and event.get("subtype") in MESSAGE_SUBTYPES) or etype == "app_mention"
    if not is_message or event.get("bot_id") or not (event.get("text") or "").strip():
        return WebhookBatch("slack", events={eid: []})
    channel = field_of(event, "channel", str)
    ts = field_of(event, "ts", str)
    meta = {
        "team": payload.get("team_id"),
        "user": event.get("user"),
        "event_id": eid,
        "thread_ts": event.get("thread_ts"),
    }
    message = normalized(
        lambda: normalize(
            source="slack",
            text=field_of(event, "text", str),
            ts=epoch(ts, "event.ts"),
            channel=channel,
            platform_id=f"{channel}/{ts}",
            meta={k: v for k, v in meta.items() if v is not None},
        ),
        "event",
    )
    return WebhookBatch("slack", events={eid: [message]})
