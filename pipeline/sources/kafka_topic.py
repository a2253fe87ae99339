"""A foreign Kafka topic (a vendor's feed) read with a declared field mapping into AET's messages topic.

Each poll maps the records (:mod:`aet.pipeline.sources.mapping`), publishes the messages and
the dead letters of the records the mapping cannot read (with the foreign topic, partition
and offset), waits for AET's bus to acknowledge them, and only then commits the foreign
offsets: a crash in between re-reads that poll's records, which map to the same ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aet.pipeline.config import KafkaTopicSourceSettings
from aet.pipeline.ingest import refusal
from aet.pipeline.ports import BusRecord, Consumer
from aet.pipeline.records import DeadLetter, Message
from aet.pipeline.sources.emit import Emitter, SourceStats
from aet.pipeline.sources.formats import Refused
from aet.pipeline.sources.mapping import FieldMapper

log = logging.getLogger(__name__)


class ForeignTopicSource:
    """Maps one foreign topic's records to messages (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaTopicSourceSettings,
        open_consumer: Callable[[], Consumer],
        emitter: Emitter,
        *,
        max_text_chars: int = 5000,
    ) -> None:
        self.settings = settings
        self.open_consumer = open_consumer
        self.consumer: Consumer | None = None  # joined on the first poll, left by recover()
        self.emitter = emitter
        self.mapper = FieldMapper(settings.mapping)
        self.max_text_chars = max_text_chars
        self.stats = SourceStats()

    @property
    def name(self) -> str:
        return self.settings.name

    def poll_once(self) -> int:
        """Map, publish, acknowledge and commit one poll's records; returns how many records it read."""
        if self.consumer is None:
            self.consumer = self.open_consumer()
        records = self.consumer.poll(self.settings.batch_size, int(self.settings.poll_interval_s * 1000))
        if not records:
            return 0
        messages: list[Message] = []
        dead: list[DeadLetter] = []
        for r in records:
            outcome = self._map(r)
            if isinstance(outcome, Message):
                messages.append(outcome)
            else:
                dead.append(outcome)
        self.emitter.emit(messages, dead, self.stats)
        self.consumer.commit()
        return len(records)

    interval_s = 0.0  # the poll itself waits for records

    def step(self) -> None:
        self.poll_once()

    def recover(self) -> None:
        """After a failed publish: leave the group; the next poll joins again and reads what was not committed."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.close()

    def close(self) -> None:
        self.recover()

    def _map(self, r: BusRecord) -> Message | DeadLetter:
        draft = self.mapper.draft(r.value)
        where = f"{r.topic}[{r.partition}]@{r.offset}"
        if isinstance(draft, Refused):
            reason = f"{where}: {draft.reason}"
        else:
            try:
                return draft.message(self.name, self.settings.message_source, self.max_text_chars, topic=r.topic)
            except ValueError as exc:
                reason = f"{where}: {refusal(exc)}"
        return DeadLetter.of(
            r.value,
            stage=f"ingest:{self.name}",
            reason=reason,
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
        )
