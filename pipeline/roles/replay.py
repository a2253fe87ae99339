"""Replay a recorded stream file onto the bus in event-time order.

Input is the normalized corpus format of ``shared/data`` (JSONL), or a CSV
with the same column names: ``id``, ``text``, ``source``, ``ts``, optional
``label``, ``channel``, ``entity``/``entities``. Rows without a timestamp get
synthetic, evenly spaced event times after the timestamped ones, marked in
``meta``. Optionally a seeded fraction of the labels is published to
``aet.labels`` a fixed event-time delay after its message, the way analysts'
labels trickle in.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from aet.pipeline.config import ReplaySettings, TopicSettings
from aet.pipeline.ports import Publisher
from aet.pipeline.records import (
    LABELS,
    BadRecord,
    DeadLetter,
    LabelRecord,
    Message,
    check_event_time,
    decode,
    parse_event_time,
)

log = logging.getLogger(__name__)
SYNTHETIC_START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
MESSAGE_FIELDS = {"id", "text", "source", "channel", "ts", "entities", "meta"}


@dataclass
class ReplayStats:
    """What a replay did."""

    published: int = 0
    labels: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(order=True)
class _Row:
    ts: datetime
    line: int
    data: dict[str, Any] = field(compare=False)


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord, bytes]]:
    """Yield (line number, parsed row or the reason it is bad, raw bytes) for a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not valid UTF-8 (byte {exc.start}); convert it before replaying") from exc
        for i, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
            yield i, dict(row), json.dumps(row).encode()
        return
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield i, BadRecord(f"line {i}: not JSON: {exc}"), line
                continue
            if not isinstance(data, dict):
                yield i, BadRecord(f"line {i}: not a JSON object"), line
                continue
            yield i, data, line


def to_message_payload(row: dict[str, Any], synthetic_ts: datetime | None) -> dict[str, Any]:
    """Map a corpus row to a ``Message`` payload (extra corpus fields go to ``meta``)."""
    entities = row.get("entities")
    if isinstance(entities, str):
        entities = [e for e in (x.strip() for x in entities.split(",")) if e]
    if not entities and row.get("entity"):
        given = row["entity"]
        entities = [str(e) for e in given] if isinstance(given, list) else [str(given)]
    given_meta = row.get("meta")
    meta = dict(given_meta) if isinstance(given_meta, dict) else {}
    meta.update({k: v for k, v in row.items() if k not in MESSAGE_FIELDS | {"label", "entity"} and v not in (None, "")})
    payload: dict[str, Any] = {k: row[k] for k in ("id", "text", "source") if k in row}
    payload["channel"] = row.get("channel") or row.get("corpus") or "replay"
    payload["entities"] = entities or []
    # A ``meta`` that is not an object is left for validation to refuse (a dead letter, not a crash).
    payload["meta"] = meta if isinstance(given_meta, dict) or given_meta in (None, "") else given_meta
    if synthetic_ts is not None:
        payload["ts"] = synthetic_ts.isoformat()
        meta["ts_synthetic"] = True
    else:
        payload["ts"] = row.get("ts")
    return payload


def ordered_rows(path: Path, dead: list[DeadLetter], synthetic_interval_s: float) -> list[_Row]:
    """Read a stream file into event-time order; unreadable rows become dead letters."""
    timed: list[_Row] = []
    untimed: list[tuple[int, dict[str, Any]]] = []
    for line, row, raw in read_rows(path):
        if isinstance(row, BadRecord):
            dead.append(DeadLetter.of(raw, stage="replay", reason=f"{path.name} {row.reason}"))
            continue
        if row.get("ts") in (None, ""):
            untimed.append((line, row))
            continue
        try:
            timed.append(_Row(check_event_time(parse_event_time(row["ts"])), line, row))  # in the window
        except ValueError as exc:
            dead.append(DeadLetter.of(raw, stage="replay", reason=f"{path.name} line {line}: {exc}"))
    timed.sort()
    start = (timed[-1].ts + timedelta(seconds=synthetic_interval_s)) if timed else SYNTHETIC_START
    for n, (line, row) in enumerate(untimed):
        timed.append(_Row(start + timedelta(seconds=n * synthetic_interval_s), line, {**row, "_synthetic": True}))
    return timed


def _reject(row: dict[str, Any], where: str, reason: str) -> DeadLetter:
    return DeadLetter.of(json.dumps(row, default=str).encode(), stage="replay", reason=f"{where}: {reason}")


class Replay:
    """Publishes a stream file to ``aet.messages`` (and some labels to ``aet.labels``)."""

    def __init__(
        self,
        bus: Publisher,
        topics: TopicSettings,
        settings: ReplaySettings,
        *,
        max_text_chars: int = 5000,
        synthetic_interval_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.settings = settings
        self.max_text_chars = max_text_chars
        self.synthetic_interval_s = synthetic_interval_s

    def run(self, path: Path, *, progress: bool = True, limit: int | None = None) -> ReplayStats:
        """Replay ``path`` to the end (or ``limit`` messages); returns what was published."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stream file not found: {path}")
        stats = ReplayStats()
        dead: list[DeadLetter] = []
        rows = ordered_rows(path, dead, self.synthetic_interval_s)
        if limit is not None:
            rows = rows[:limit]
        rng = random.Random(self.settings.seed)
        pending: list[tuple[datetime, int, LabelRecord]] = []
        delay = timedelta(seconds=self.settings.label_delay_s)
        wall_start, event_start = time.monotonic(), rows[0].ts if rows else None
        for n, item in enumerate(tqdm(rows, desc=f"replay {path.name}", unit="msg", disable=not progress)):
            self._pace(item.ts, event_start, wall_start, n)
            while pending and pending[0][0] <= item.ts:
                self._publish_label(heapq.heappop(pending)[2], stats)
            row = {k: v for k, v in item.data.items() if k != "_synthetic"}
            payload = to_message_payload(row, item.ts if item.data.get("_synthetic") else None)
            try:
                message = decode(Message, payload, max_text_chars=self.max_text_chars)
            except BadRecord as exc:
                dead.append(_reject(row, f"{path.name} line {item.line}", exc.reason))
                continue
            self.bus.publish(self.topics.messages, message.to_bytes(), key=message.key)
            stats.published += 1
            label = row.get("label")
            if label in (None, ""):
                continue
            # Draw for every labelled row and check the label whether or not it is sampled, so that
            # neither the sample nor the dead letters depend on the other.
            sampled = rng.random() < self.settings.label_fraction
            if label not in LABELS:
                dead.append(_reject(row, f"{path.name} line {item.line}", f"unknown label {label!r}"))
                continue
            if sampled:
                due = message.ts + delay
                record = LabelRecord(message_id=message.id, label=label, ts=due, annotator=f"replay:{path.name}")
                heapq.heappush(pending, (due, n, record))
        while pending:
            self._publish_label(heapq.heappop(pending)[2], stats)
        for dl in dead:
            self.bus.publish(self.topics.dlq, dl.to_bytes())
            stats.rejected += 1
            why = dl.reason.split(": ", 1)[-1]
            stats.reasons[why] = stats.reasons.get(why, 0) + 1
        self.bus.flush()
        return stats

    def _publish_label(self, record: LabelRecord, stats: ReplayStats) -> None:
        self.bus.publish(self.topics.labels, record.to_bytes(), key=record.message_id)
        stats.labels += 1

    def _pace(self, ts: datetime, event_start: datetime | None, wall_start: float, n: int) -> None:
        """Hold the ``n``-th message back until its event time, scaled by ``speed``, has come, and as long as
        ``rate`` messages a second allow (0: neither paces)."""
        due = n / self.settings.rate if self.settings.rate else 0.0
        if self.settings.speed and event_start is not None:
            due = max(due, (ts - event_start).total_seconds() / self.settings.speed)
        wait = due - (time.monotonic() - wall_start)
        if wait > 0:
            time.sleep(wait)
