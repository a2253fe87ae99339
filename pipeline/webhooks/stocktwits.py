"""StockTwits message objects (its API's ``messages``: one object, a list, or ``{"messages": [...]}``).

Each becomes a message with id ``stocktwits:{id}``, the message's symbols as
entities (``$AAPL``), a link, and the author's own Bullish/Bearish tag kept as a weak
label in meta (``meta.weak_label``: ``positive`` / ``negative``; ``meta.stocktwits_sentiment``
as given): a hint for analysts and evaluation, never a training label by itself. The
event id is the message id.
"""

from __future__ import annotations

from typing import Any

from aet.pipeline.ingest import normalize
from aet.pipeline.records import Message
from aet.pipeline.webhooks.batch import WebhookBatch, event_id, field_of, normalized, obj_of, refuse

WEAK_LABELS = {"Bullish": "positive", "Bearish": "negative"}


def _one(obj: Any, where: str) -> tuple[str, list[Message]]:
    if not isinstance(obj, dict):
        raise refuse(where, "not a JSON object")
    mid = event_id(field_of(obj, "id", (int, str)), f"{where}.id")
    user = obj_of(obj, "user")
    listed = obj.get("symbols")
    symbols: list[Any] = listed if isinstance(listed, list) else []
    entities = [f"${s['symbol']}" for s in symbols if isinstance(s, dict) and isinstance(s.get("symbol"), str)]
    tag = obj_of(obj_of(obj, "entities"), "sentiment").get("basic")
    username = user.get("username")
    meta = {
        "user": username,
        "user_id": user.get("id"),
        "stocktwits_sentiment": tag,
        "weak_label": WEAK_LABELS.get(tag) if isinstance(tag, str) else None,
        "url": f"https://stocktwits.com/{username}/message/{mid}" if isinstance(username, str) else None,
    }
    message = normalized(
        lambda: normalize(
            source="stocktwits",
            text=field_of(obj, "body", str),
            ts=field_of(obj, "created_at", str),
            channel=entities[0] if entities else "stream",
            platform_id=mid,
            entities=entities,
            meta={k: v for k, v in meta.items() if v is not None},
        ),
        where,
    )
    return mid, [message]


def parse(payload: Any) -> WebhookBatch:
    listed = payload.get("messages") if isinstance(payload, dict) and "messages" in payload else payload
    items = listed if isinstance(listed, list) else [listed]
    if not items:
        raise refuse("body", "no messages")
    batch = WebhookBatch("stocktwits")
    for i, obj in enumerate(items):
        mid, messages = _one(obj, f"messages.{i}" if isinstance(listed, list) else "body")
        batch.events[mid] = messages
    return batch
