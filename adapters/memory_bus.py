"""The in-process bus: the embedded default, where one process runs every worker.

Topics are lists of records per partition, guarded by one condition variable.
Consumer groups share partitions the way Kafka's range assignor does, and
rebalance when a member joins or leaves. With ``journal_dir`` set, every topic
and every group's committed offsets are also written to disk, so a process
killed mid-stream resumes where its group last committed (one process may hold
a journal at a time).

With ``retention`` set, a partition holding more than ``retention`` records
drops its oldest ones once every consumer group that reads the topic has
committed past them, so an endless embedded stream runs in bounded memory.
Offsets stay stable (each partition keeps the offset of its first retained
record); a group that starts below the retained range starts at its earliest
record, as Kafka's ``auto.offset.reset=earliest`` does. A topic that no group
reads (has committed on, or has a member subscribed to) is never trimmed: its
records are what the read-back helpers (:meth:`MemoryBus.read_all`) are for.
The journal on disk keeps every record; a reopened bus trims what it loads.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from aet.pipeline.ports import Bus, BusError, BusRecord, Consumer

_HEADER = struct.Struct(">qii")  # timestamp_ms, key length (-1: no key), value length


def partition_for(key: str | None, partitions: int, counter: int) -> int:
    """Stable partition of a key; keyless records are spread round-robin."""
    if key is None:
        return counter % partitions
    return zlib.crc32(key.encode("utf-8")) % partitions


def assign(members: Sequence[str], topic_partitions: Sequence[tuple[str, int]]) -> dict[str, list[tuple[str, int]]]:
    """Range-assign partitions to group members (sorted member ids, contiguous ranges per topic)."""
    out: dict[str, list[tuple[str, int]]] = {m: [] for m in members}
    if not members:
        return out
    ordered = sorted(members)
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, part in topic_partitions:
        by_topic[topic].append(part)
    for topic, parts in sorted(by_topic.items()):
        parts.sort()
        per, extra = divmod(len(parts), len(ordered))
        start = 0
        for i, member in enumerate(ordered):
            n = per + (1 if i < extra else 0)
            out[member].extend((topic, p) for p in parts[start : start + n])
            start += n
    return out


_Record = tuple[str | None, bytes, int]  # key, value, timestamp_ms


class _Partition:
    """The retained records of one partition; ``base`` is the offset of the first one."""

    __slots__ = ("base", "records")

    def __init__(self, records: list[_Record] | None = None) -> None:
        self.records: list[_Record] = records if records is not None else []
        self.base = 0

    @property
    def end(self) -> int:
        """The offset the next record will get (Kafka's log end offset)."""
        return self.base + len(self.records)

    def trim(self, below: int, keep: int) -> int:
        """Drop records with an offset under ``below``, keeping at least ``keep``; return how many went."""
        n = min(below - self.base, len(self.records) - keep)
        if n <= 0:
            return 0
        del self.records[:n]
        self.base += n
        return n


class _Journal:
    """Append-only files for topic partitions and atomically replaced files for offsets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(root / "LOCK", "a+")  # noqa: SIM115 - holds the journal's lock until close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BusError(f"bus journal {root} is in use by another process") from exc
        self._files: dict[tuple[str, int], BinaryIO] = {}

    def _log_path(self, topic: str, partition: int) -> Path:
        return self.root / "topics" / topic / f"{partition}.log"

    def load_topics(self) -> dict[str, list[list[_Record]]]:
        """Read every partition log, dropping a torn record left by a crash mid-write."""
        topics: dict[str, list[list[_Record]]] = {}
        base = self.root / "topics"
        if not base.exists():
            return topics
        for topic_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            logs = sorted(topic_dir.glob("*.log"), key=lambda p: int(p.stem))
            topics[topic_dir.name] = [self._read_log(p) for p in logs]
        return topics

    @staticmethod
    def _read_log(path: Path) -> list[_Record]:
        data = path.read_bytes()
        records, pos = [], 0
        while pos + _HEADER.size <= len(data):
            ts, klen, vlen = _HEADER.unpack_from(data, pos)
            if klen < -1 or vlen < 0:
                break  # not a record header: the tail is corrupt, keep what precedes it
            end = pos + _HEADER.size + max(klen, 0) + vlen
            if end > len(data):
                break
            kstart = pos + _HEADER.size
            key = data[kstart : kstart + klen].decode("utf-8") if klen >= 0 else None
            records.append((key, data[kstart + max(klen, 0) : end], ts))
            pos = end
        if pos != len(data):
            with open(path, "r+b") as f:
                f.truncate(pos)
        return records

    def append(self, topic: str, partition: int, key: str | None, value: bytes, ts: int) -> None:
        f = self._files.get((topic, partition))
        if f is None:
            path = self._log_path(topic, partition)
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[(topic, partition)] = open(path, "ab")  # noqa: SIM115 - appended to until close()
        kbytes = key.encode("utf-8") if key is not None else b""
        f.write(_HEADER.pack(ts, len(kbytes) if key is not None else -1, len(value)) + kbytes + value)

    def create_partitions(self, topic: str, partitions: int) -> None:
        for p in range(partitions):
            path = self._log_path(topic, p)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def sync(self) -> None:
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())

    def load_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        groups: dict[str, dict[tuple[str, int], int]] = {}
        base = self.root / "groups"
        if base.exists():
            for path in base.glob("*.json"):
                raw = json.loads(path.read_text())
                groups[raw["group"]] = {(t, int(p)): o for t, p, o in raw["offsets"]}
        return groups

    def save_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        base = self.root / "groups"
        base.mkdir(exist_ok=True)
        name = zlib.crc32(group.encode()).to_bytes(4, "big").hex() + ".json"
        tmp = base / (name + ".tmp")
        body = {"group": group, "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())]}
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, base / name)

    def close(self) -> None:
        self.sync()
        for f in self._files.values():
            f.close()
        self._files.clear()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()


class MemoryBus(Bus):
    """In-process bus with Kafka's semantics: partitions, keys, consumer groups, commits.

    ``retention``: records a partition keeps at least before its oldest ones, once every group
    reading the topic has committed past them, are dropped (``None``: keep every record).
    """

    def __init__(
        self, partitions: int = 3, journal_dir: str | Path | None = None, retention: int | None = None
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if retention is not None and retention < 0:
            raise ValueError("retention must be at least 0 (or None to keep every record)")
        self.default_partitions = partitions
        self.retention = retention
        self._cond = threading.Condition()
        self._topics: dict[str, list[_Partition]] = {}
        self._committed: dict[str, dict[tuple[str, int], int]] = defaultdict(dict)
        self._members: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
        self._generation: dict[str, int] = defaultdict(int)
        self._counter = 0
        self._closed = False
        self._journal = _Journal(Path(journal_dir)) if journal_dir else None
        if self._journal:
            self._topics = {t: [_Partition(r) for r in parts] for t, parts in self._journal.load_topics().items()}
            self._committed.update(self._journal.load_offsets())
            for topic, parts in self._topics.items():
                for p in range(len(parts)):
                    self._trim(topic, p)

    def _ensure_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    def _partitions_of(self, topic: str) -> list[_Partition]:
        if topic not in self._topics:
            self._topics[topic] = [_Partition() for _ in range(self.default_partitions)]
            if self._journal:
                self._journal.create_partitions(topic, self.default_partitions)
        return self._topics[topic]

    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        with self._cond:
            self._ensure_open()
            for topic in topics:
                if topic not in self._topics:
                    n = partitions or self.default_partitions
                    self._topics[topic] = [_Partition() for _ in range(n)]
                    if self._journal:
                        self._journal.create_partitions(topic, n)
                    self._generation_bump_for(topic)

    def _generation_bump_for(self, topic: str) -> None:
        for group, members in self._members.items():
            if any(topic in topics for topics in members.values()):
                self._generation[group] += 1

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"bus values are bytes, got {type(value).__name__}")
        with self._cond:
            self._ensure_open()
            parts = self._partitions_of(topic)
            self._counter += 1
            p = partition_for(key, len(parts), self._counter)
            ts = int(time.time() * 1000)
            parts[p].records.append((key, bytes(value), ts))
            if self._journal:
                self._journal.append(topic, p, key, bytes(value), ts)
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        with self._cond:
            self._ensure_open()
            if self._journal:
                self._journal.sync()

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        with self._cond:
            self._ensure_open()
            for topic in topics:
                self._partitions_of(topic)
            return _MemoryConsumer(self, group, tuple(topics))

    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        with self._cond:
            committed = self._committed.get(group, {})
            return sum(
                part.end - max(committed.get((t, p), 0), part.base)
                for t in topics
                for p, part in enumerate(self._topics.get(t, []))
            )

    def end_offsets(self, topic: str) -> list[int]:
        """The log end offset of each partition of ``topic`` (records ever published to it)."""
        with self._cond:
            return [part.end for part in self._topics.get(topic, [])]

    def start_offsets(self, topic: str) -> list[int]:
        """The offset of the earliest retained record of each partition of ``topic``."""
        with self._cond:
            return [part.base for part in self._topics.get(topic, [])]

    def read_all(self, topic: str) -> list[BusRecord]:
        """Every retained record of a topic, partition by partition (for tests and summaries)."""
        with self._cond:
            return [
                BusRecord(topic, p, part.base + i, key, value, ts)
                for p, part in enumerate(self._topics.get(topic, []))
                for i, (key, value, ts) in enumerate(part.records)
            ]

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._journal:
                self._journal.close()
            self._cond.notify_all()

    # -- group coordination, called by consumers under the lock ------------------

    def _join(self, group: str, member: str, topics: tuple[str, ...]) -> None:
        self._members[group][member] = topics
        self._generation[group] += 1
        self._cond.notify_all()

    def _leave(self, group: str, member: str) -> None:
        if self._members[group].pop(member, None) is not None:
            self._generation[group] += 1
            self._cond.notify_all()

    def _assignment(self, group: str, member: str) -> list[tuple[str, int]]:
        members = self._members[group]
        topics = sorted({t for ts in members.values() for t in ts})
        tps = [(t, p) for t in topics for p in range(len(self._topics.get(t, [])))]
        plan = assign(list(members), tps)
        return [tp for tp in plan.get(member, []) if tp[0] in members.get(member, ())]

    def _commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        self._committed[group].update(offsets)
        if self._journal:
            self._journal.sync()
            self._journal.save_offsets(group, self._committed[group])
        for topic, partition in offsets:
            self._trim(topic, partition)

    def _trim(self, topic: str, partition: int) -> None:
        """Apply retention to one partition: drop what every group reading ``topic`` has committed past."""
        if self.retention is None:
            return
        part = self._topics[topic][partition]
        if len(part.records) <= self.retention:
            return
        readers = {g for g, offsets in self._committed.items() if any(t == topic for t, _ in offsets)}
        readers |= {g for g, members in self._members.items() if any(topic in ts for ts in members.values())}
        if not readers:
            return  # nobody reads it (yet): keep it all, for a group to come or a read-back
        floor = min(max(self._committed[g].get((topic, partition), 0), part.base) for g in readers)
        part.trim(floor, self.retention)


class _MemoryConsumer(Consumer):
    _ids = 0

    def __init__(self, bus: MemoryBus, group: str, topics: tuple[str, ...]) -> None:
        _MemoryConsumer._ids += 1
        self._bus = bus
        self._group = group
        self._member = f"{group}-{_MemoryConsumer._ids:06d}"
        self._topics = topics
        self._generation = -1
        self._assigned: list[tuple[str, int]] = []
        self._position: dict[tuple[str, int], int] = {}
        self._paused = False
        self._closed = False
        bus._join(group, self._member, topics)

    def _sync_assignment(self) -> None:
        gen = self._bus._generation[self._group]
        if gen == self._generation:
            return
        self._generation = gen
        self._assigned = self._bus._assignment(self._group, self._member)
        committed = self._bus._committed[self._group]
        # While this member was not polling, another may have owned a partition and committed
        # past our old position: never resume (or later commit) behind the group's commit.
        # Below the retained range, start at the earliest retained record (auto.offset.reset=earliest).
        topics = self._bus._topics
        self._position = {
            tp: max(self._position.get(tp, 0), committed.get(tp, 0), topics[tp[0]][tp[1]].base) for tp in self._assigned
        }

    def _take(self, max_records: int) -> list[BusRecord]:
        out: list[BusRecord] = []
        if self._paused:
            return out
        topics = self._bus._topics
        for topic, part in self._assigned:
            partition = topics[topic][part]
            records, base = partition.records, partition.base
            pos = max(self._position[(topic, part)], base)
            while pos < partition.end and len(out) < max_records:
                key, value, ts = records[pos - base]
                out.append(BusRecord(topic, part, pos, key, value, ts))
                pos += 1
            self._position[(topic, part)] = pos
            if len(out) >= max_records:
                break
        return out

    def poll(self, max_records: int, timeout_ms: int) -> list[BusRecord]:
        deadline = time.monotonic() + timeout_ms / 1000
        with self._bus._cond:
            while True:
                if self._closed or self._bus._closed:
                    raise BusError("consumer is closed")
                self._sync_assignment()
                batch = self._take(max_records)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    return batch
                self._bus._cond.wait(remaining)

    def commit(self) -> None:
        with self._bus._cond:
            if self._closed or self._bus._closed:
                raise BusError("consumer is closed")
            self._sync_assignment()  # commit only partitions owned now, from positions not behind the group
            self._bus._commit(self._group, dict(self._position))

    def lag(self) -> int:
        with self._bus._cond:
            self._sync_assignment()
            committed = self._bus._committed[self._group]
            parts = self._bus._topics
            return sum(parts[t][p].end - max(committed.get((t, p), 0), parts[t][p].base) for t, p in self._assigned)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def close(self) -> None:
        with self._bus._cond:
            if not self._closed:
                self._closed = True
                self._bus._leave(self._group, self._member)
