"""The label recorder role: validates delayed ground-truth labels and stores them.

Labels arrive late and for a fraction of messages (docs/architecture.md, "Labels"). Until the drift
monitor joins them to predictions, this role is what keeps them: a valid label
is stored under its message id (a second label for the same message replaces
the first); an invalid one is dead-lettered with its reason.
"""

from __future__ import annotations

from aet.pipeline.config import TopicSettings
from aet.pipeline.ports import BatchStore, Bus, BusRecord
from aet.pipeline.records import BadRecord, DeadLetter, LabelRecord, decode
from aet.pipeline.worker import Outputs, Worker


class LabelRecorder(Worker):
    """Consumes ``aet.labels`` into the labels table."""

    role = "labels"

    def __init__(self, bus: Bus, store: BatchStore, topics: TopicSettings, group: str = "aet-labels") -> None:
        super().__init__(
            bus, store, group=group, topics=[topics.labels], dlq_topic=topics.dlq, max_batch=256, max_wait_ms=50
        )

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        latest: dict[str, LabelRecord] = {}
        for r in records:
            try:
                label = decode(LabelRecord, r.value)
            except BadRecord as exc:
                out.dead_letters.append(
                    DeadLetter.of(
                        r.value,
                        stage="labels",
                        reason=exc.reason,
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                    )
                )
                continue
            latest[label.message_id] = label
        out.labels = list(latest.values())
        return out
