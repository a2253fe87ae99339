"""Telegram Bot API updates (https://core.telegram.org/bots/api#update), as its webhook posts them.

A ``message`` or ``channel_post`` with text (or a media caption) becomes a message with
id ``telegram:{chat id}/{message id}`` and, for a public chat, a ``t.me`` link; other
updates (edits, joins, callbacks) are taken and publish nothing. The event id is
``update_id``.
"""

from __future__ import annotations

from typing import Any

from aet.pipeline.ingest import normalize
from aet.pipeline.webhooks.batch import WebhookBatch, epoch, event_id, field_of, normalized, obj_of, refuse


def parse(payload: Any) -> WebhookBatch:
    if not isinstance(payload, dict):
        raise refuse("body", "not a JSON object")
    uid = event_id(field_of(payload, "update_id", int), "update_id")
    key = "message" if isinstance(payload.get("message"), dict) else "channel_post"
    post = payload.get(key)
    if not isinstance(post, dict):
        return WebhookBatch("telegram", events={uid: []})
    text = post.get("text") or post.get("caption")
    if not isinstance(text, str) or not text.strip():
        return WebhookBatch("telegram", events={uid: []})
    chat = field_of(post, "chat", dict)
    chat_id = str(field_of(chat, "id", int))
    message_id = str(field_of(post, "message_id", int))
    sender = obj_of(post, "from")
    username = chat.get("username")
    meta = {
        "chat_title": chat.get("title"),
        "chat_type": chat.get("type"),
        "from": sender.get("username"),
        "update_id": uid,
        "url": f"https://t.me/{username}/{message_id}" if isinstance(username, str) else None,
    }
    message = normalized(
        lambda: normalize(
            source="telegram",
            text=text,
            ts=epoch(field_of(post, "date", int), f"{key}.date"),
            channel=str(username or chat_id),
            platform_id=f"{chat_id}/{message_id}",
            meta={k: v for k, v in meta.items() if v is not None},
        ),
        key,
    )
    return WebhookBatch("telegram", events={uid: [message]})
