"""Discord message objects (https://discord.com/developers/docs/resources/message), as a relay bot posts them.

One message object or a JSON array of them; each becomes a message with id
``discord:{message id}`` and a link to it; a bot's message or an empty one (an embed, a
sticker) is taken and publishes nothing. The event id is the message id.
"""

from __future__ import annotations

from typing import Any

from aet.pipeline.ingest import normalize
from aet.pipeline.records import Message
from aet.pipeline.webhooks.batch import WebhookBatch, event_id, field_of, normalized, obj_of, refuse


def _one(obj: Any, where: str) -> tuple[str, list[Message]]:
    if not isinstance(obj, dict):
        raise refuse(where, "not a JSON object")
    mid = event_id(field_of(obj, "id", (str, int)), f"{where}.id")
    channel = str(field_of(obj, "channel_id", (str, int)))
    author = obj_of(obj, "author")
    text = obj.get("content")
    if author.get("bot") or not isinstance(text, str) or not text.strip():
        return mid, []
    guild = obj.get("guild_id")
    meta = {
        "guild": guild,
        "author": author.get("username"),
        "author_id": author.get("id"),
        "url": f"https://discord.com/channels/{guild or '@me'}/{channel}/{mid}",
    }
    message = normalized(
        lambda: normalize(
            source="discord",
            text=text,
            ts=field_of(obj, "timestamp", str),
            channel=channel,
            platform_id=mid,
            meta={k: v for k, v in meta.items() if v is not None},
        ),
        where,
    )
    return mid, [message]


def parse(payload: Any) -> WebhookBatch:
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise refuse("body", "no messages")
    batch = WebhookBatch("discord")
    for i, obj in enumerate(items):
        mid, messages = _one(obj, f"[{i}]" if isinstance(payload, list) else "body")
        batch.events[mid] = messages
    return batch
