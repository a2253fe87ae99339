"""Chat platforms' webhook payloads into message records, each platform a plain function, plus their delivery.

:mod:`.slack` (Events API), :mod:`.discord` (message objects a relay bot posts),
:mod:`.telegram` (Bot API updates) and :mod:`.stocktwits` (message objects) each turn
one request's JSON into a :class:`WebhookBatch`: the platform's event ids, each with
the messages it carries (made by the ingest contract,
:func:`aet.pipeline.ingest.normalize`), or a handshake reply. Checking who sent the
request (signatures, secret headers) is the HTTP layer's job (adapters/web/webhooks.py);
:class:`WebhookIntake` publishes what is new and remembers the event ids, so that a
platform's retry of an event already taken is not published twice, across restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aet.pipeline.ports import Publisher, SeenEvents
from aet.pipeline.records import Message
from aet.pipeline.webhooks import discord, slack, stocktwits, telegram
from aet.pipeline.webhooks.batch import WebhookBatch, WebhookRefused

PARSERS: dict[str, Callable[[Any], WebhookBatch]] = {
    "slack": slack.parse,
    "discord": discord.parse,
    "telegram": telegram.parse,
    "stocktwits": stocktwits.parse,
}

__all__ = ["PARSERS", "WebhookBatch", "WebhookIntake", "WebhookRefused"]


class WebhookIntake:
    """Parses a platform's payload, publishes the messages of events not seen before, then marks them seen.

    Seen is marked only after the bus acknowledged: a crash in between lets the
    platform's retry publish the same messages again, with the same ids (stored once).
    """

    def __init__(self, bus: Publisher, topic: str, seen: SeenEvents) -> None:
        self.bus, self.topic, self.seen = bus, topic, seen

    def parse(self, platform: str, payload: Any) -> WebhookBatch:
        """The batch of one request; :class:`WebhookRefused` (a ``ValueError`` with ``errors``) if it is unusable."""
        return PARSERS[platform](payload)

    def deliver(self, batch: WebhookBatch, timeout_s: float) -> tuple[int, int]:
        """Publish the messages of the batch's new events and wait for the acknowledgement (``BusError``);
        returns (messages published, events already seen)."""
        ids = list(batch.events)
        old = self.seen.seen_events(batch.platform, ids) if ids else set()
        fresh = [e for e in ids if e not in old]
        messages: Sequence[Message] = [m for e in fresh for m in batch.events[e]]
        for m in messages:
            self.bus.publish(self.topic, m.to_bytes(), key=m.key)
        if messages:
            self.bus.flush(timeout_s)
        if fresh:
            self.seen.mark_seen(batch.platform, fresh)
        return len(messages), len(old)
