"""The dead-letter recorder role: every dead letter on ``aet.dlq`` into the ``dead_letters`` table.

Every stage that refuses an input publishes a :class:`~aet.pipeline.records.DeadLetter`
to the dead-letter topic; replay, which has no store, only publishes. This role
stores them all, whichever stage wrote them, so that ``aet dlq list|show|replay``
sees each one. A dead letter that the worker stored itself as well is the same
row (rows are keyed by a digest of stage, origin and input). A record on the
dead-letter topic that is not a valid dead letter is stored too, wrapped in a
dead letter of stage ``dlq`` that says why; it is never published again, so a
bad record cannot go round the dead-letter topic forever. A dead letter whose
copy of the input is larger than ``dead_letters.raw_bytes`` (from an older
producer) is cut to that size before it is stored, keeping the original's size
and digest.
"""

from __future__ import annotations

from aet.pipeline import metrics
from aet.pipeline.config import DeadLetterSettings, TopicSettings
from aet.pipeline.ports import BatchStore, Bus, BusRecord
from aet.pipeline.records import BadRecord, DeadLetter, decode
from aet.pipeline.worker import Outputs, Worker

STAGE = "dlq"  # the stage of a record on the dead-letter topic that is not a dead letter


class DeadLetterRecorder(Worker):
    """Consumes ``aet.dlq`` and stores every dead letter (publishes nothing)."""

    role = "dead-letters"

    def __init__(
        self, bus: Bus, store: BatchStore, topics: TopicSettings, settings: DeadLetterSettings | None = None
    ) -> None:
        settings = settings or DeadLetterSettings()
        self.raw_bytes = settings.raw_bytes
        super().__init__(
            bus, store, group=settings.group, topics=[topics.dlq], dlq_topic=topics.dlq, max_batch=500, max_wait_ms=50
        )
        self.recorded = 0

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        for r in records:
            try:
                dead = decode(DeadLetter, r.value)
            except BadRecord as exc:
                dead = DeadLetter.of(
                    r.value,
                    stage=STAGE,
                    reason=f"not a dead letter: {exc.reason}",
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    key=r.key,
                )
            dead = bounded(dead, self.raw_bytes)
            out.recorded.append(dead)
            metrics.DEAD_LETTERS_RECORDED.labels(dead.stage).inc()
        self.recorded += len(out.recorded)
        return out


def bounded(dead: DeadLetter, raw_bytes: int) -> DeadLetter:
    """``dead`` with its copy of the input cut to ``raw_bytes``; the original's size and sha256 stay as they were
    (or, when it did not record them, are those of the copy it kept, which was then the whole input)."""
    kept = dead.kept
    if kept is None or len(kept) <= raw_bytes:
        return dead
    cut = DeadLetter.of(
        kept,
        stage=dead.stage,
        reason=dead.reason,
        topic=dead.topic,
        partition=dead.partition,
        offset=dead.offset,
        key=dead.key,
        max_raw_bytes=raw_bytes,
    )
    if dead.raw_size is None or dead.raw_sha256 is None:
        return cut.model_copy(update={"ts": dead.ts})
    return cut.model_copy(update={"ts": dead.ts, "raw_size": dead.raw_size, "raw_sha256": dead.raw_sha256})
