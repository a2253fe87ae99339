"""Publishing a source's batch: messages to ``aet.messages`` keyed by :attr:`~aet.pipeline.records.Message.key`, refused
input to the dead-letter topic, then a wait for the bus's acknowledgement.

Every source saves its state only after :meth:`Emitter.emit` returned (emit, then save): a crash
between the two re-emits that one batch, with the same ids, and the stores keep each message once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aet.pipeline.config import TopicSettings
from aet.pipeline.ports import Publisher
from aet.pipeline.records import DeadLetter, Message


@dataclass
class SourceStats:
    """What a source did so far."""

    published: int = 0
    dead_letters: int = 0
    skipped: int = 0  # already emitted (a feed item seen before, a file already read)
    errors: int = 0  # fetches or reads that failed (retried later)
    reasons: dict[str, int] = field(default_factory=dict)

    def refused(self, reason: str) -> None:
        self.dead_letters += 1
        why = reason.split(": ", 1)[-1][:200]
        self.reasons[why] = self.reasons.get(why, 0) + 1


class Emitter:
    """Publishes batches and waits until the bus has them."""

    def __init__(self, bus: Publisher, topics: TopicSettings, *, flush_timeout_s: float | None = 30.0) -> None:
        self.bus = bus
        self.topics = topics
        self.flush_timeout_s = flush_timeout_s

    def emit(
        self, messages: Sequence[Message], dead: Sequence[DeadLetter] = (), stats: SourceStats | None = None
    ) -> None:
        """Publish ``messages`` and ``dead`` and block until the bus acknowledged them (or raise ``BusError``)."""
        for m in messages:
            self.bus.publish(self.topics.messages, m.to_bytes(), key=m.key)
        for d in dead:
            self.bus.publish(self.topics.dlq, d.to_bytes(), key=d.key)
        if messages or dead:
            self.bus.flush(self.flush_timeout_s)
        if stats is not None:
            stats.published += len(messages)
            for d in dead:
                stats.refused(d.reason)
