"""What only the in-process bus promises: its range assignor, its journal, and its threading."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aet.adapters.memory_bus import MemoryBus, assign, partition_for
from aet.pipeline.ports import BusError, BusRecord


def _log(journal: Path, topic: str, partition: int = 0) -> Path:
    return journal / "topics" / topic / f"{partition}.log"


def _poll_n(consumer: Any, n: int, timeout_s: float = 5.0) -> list[BusRecord]:
    out: list[BusRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.poll(max_records=n - len(out), timeout_ms=100))
    return out


# -- the range assignor -------------------------------------------------------------

members_st = st.lists(
    st.text(alphabet="abcdefgh0123456789-", min_size=1, max_size=8), min_size=1, max_size=8, unique=True
)
topics_st = st.dictionaries(st.sampled_from(["t1", "t2", "t3", "aet.messages"]), st.integers(0, 12), max_size=4)


@given(members=members_st, topics=topics_st, data=st.data())
@settings(max_examples=200, deadline=None)
def test_assign_gives_each_partition_to_exactly_one_member(
    members: list[str], topics: dict[str, int], data: st.DataObject
) -> None:
    """Every partition goes to exactly one member; per topic, members differ by at most one partition."""
    tps = [(t, p) for t, n in topics.items() for p in range(n)]
    tps = data.draw(st.permutations(tps))
    plan = assign(members, tps)
    assert set(plan) == set(members)
    handed_out = [tp for parts in plan.values() for tp in parts]
    assert Counter(handed_out) == Counter(tps)
    for topic, n in topics.items():
        counts = [sum(1 for t, _ in parts if t == topic) for parts in plan.values()]
        assert max(counts) - min(counts) <= 1, (topic, counts)
        assert sum(counts) == n


@given(members=members_st, topics=topics_st, data=st.data())
@settings(max_examples=100, deadline=None)
def test_assign_is_deterministic_and_contiguous(
    members: list[str], topics: dict[str, int], data: st.DataObject
) -> None:
    """The plan does not depend on input order, and each member gets a contiguous range per topic."""
    tps = [(t, p) for t, n in topics.items() for p in range(n)]
    plan = assign(members, tps)
    assert assign(data.draw(st.permutations(members)), data.draw(st.permutations(tps))) == plan
    for parts in plan.values():
        for topic in topics:
            mine = sorted(p for t, p in parts if t == topic)
            if mine:
                assert mine == list(range(mine[0], mine[0] + len(mine)))


def test_assign_with_no_members_or_partitions() -> None:
    """No members: nothing assigned; no partitions: every member gets an empty list."""
    assert assign([], [("t", 0)]) == {}
    assert assign(["a", "b"], []) == {"a": [], "b": []}


@given(key=st.text(max_size=30), partitions=st.integers(1, 64), counter=st.integers(0, 10**6))
def test_partition_for_keyed_is_stable_and_in_range(key: str, partitions: int, counter: int) -> None:
    """A key always maps to the same partition, in range, whatever the round-robin counter."""
    p = partition_for(key, partitions, counter)
    assert 0 <= p < partitions
    assert p == partition_for(key, partitions, counter + 1)


# -- publishing and polling -----------------------------------------------------------


@pytest.mark.parametrize("value", ["text", 42, None, ["b"], memoryview(b"x")])
def test_publish_refuses_non_bytes(value: Any) -> None:
    """Values must be bytes; anything else is a TypeError and nothing is stored."""
    with MemoryBus() as bus:
        with pytest.raises(TypeError, match="bytes"):
            bus.publish("t", value)
        assert bus.read_all("t") == []


def test_publish_copies_bytearray() -> None:
    """A bytearray is accepted and stored as immutable bytes, unaffected by later mutation."""
    with MemoryBus(partitions=1) as bus:
        buf = bytearray(b"abc")
        bus.publish("t", buf, key="k")
        buf[0] = ord("z")
        [record] = bus.read_all("t")
        assert record.value == b"abc" and isinstance(record.value, bytes)


def test_keyless_records_are_spread_round_robin() -> None:
    """Records without a key go to every partition in turn."""
    with MemoryBus(partitions=3) as bus:
        for i in range(9):
            bus.publish("t", str(i).encode())
        assert bus.end_offsets("t") == [3, 3, 3]


def test_closed_bus_refuses_work() -> None:
    """After close, publish, consumer, poll and commit raise BusError; close is idempotent."""
    bus = MemoryBus()
    consumer = bus.consumer("g", ["t"])
    bus.close()
    bus.close()
    with pytest.raises(BusError):
        bus.publish("t", b"x")
    with pytest.raises(BusError):
        bus.consumer("g", ["t"])
    with pytest.raises(BusError):
        consumer.poll(10, 10)
    with pytest.raises(BusError):
        consumer.commit()


def test_closed_consumer_refuses_work() -> None:
    """A closed consumer cannot poll or commit."""
    with MemoryBus() as bus:
        consumer = bus.consumer("g", ["t"])
        consumer.close()
        with pytest.raises(BusError):
            consumer.poll(10, 10)
        with pytest.raises(BusError):
            consumer.commit()


class _WatchedCondition(threading.Condition):
    """A Condition that signals when some thread starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_blocked_poll_wakes_on_publish_from_another_thread() -> None:
    """A consumer waiting in poll returns as soon as another thread publishes, long before its timeout."""
    with MemoryBus(partitions=1) as bus:
        cond = _WatchedCondition()
        bus._cond = cond  # observe the consumer going to sleep, instead of sleeping ourselves
        consumer = bus.consumer("g", ["t"])
        result: list[BusRecord] = []
        elapsed: list[float] = []

        def poll() -> None:
            started = time.monotonic()
            result.extend(consumer.poll(max_records=10, timeout_ms=30_000))
            elapsed.append(time.monotonic() - started)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        assert cond.waiting.wait(timeout=5), "poll never blocked"
        bus.publish("t", b"wake up", key="k")
        thread.join(timeout=10)
        assert not thread.is_alive(), "poll did not wake up"
        assert [r.value for r in result] == [b"wake up"]
        assert elapsed[0] < 10


def test_paused_consumer_gets_nothing_until_resumed() -> None:
    """pause() stops delivery; resume() continues from the same position."""
    with MemoryBus(partitions=1) as bus:
        bus.publish("t", b"a")
        consumer = bus.consumer("g", ["t"])
        consumer.pause()
        assert consumer.poll(10, 50) == []
        consumer.resume()
        assert [r.value for r in consumer.poll(10, 50)] == [b"a"]


def test_consumer_lag_counts_its_uncommitted_records() -> None:
    """Consumer.lag counts records in the member's partitions not yet committed."""
    with MemoryBus(partitions=2) as bus:
        for _ in range(5):
            bus.publish("t", b"x")
        consumer = bus.consumer("g", ["t"])
        assert consumer.lag() == 5
        assert len(_poll_n(consumer, 5)) == 5
        assert consumer.lag() == 5
        consumer.commit()
        assert consumer.lag() == 0


# -- rebalancing ----------------------------------------------------------------------


def test_joining_member_takes_partitions_from_the_committed_position() -> None:
    """When a member joins, partitions it takes over restart at the group's commit, not at the old owner's position."""
    with MemoryBus(partitions=2) as bus:
        bus.create_topics(["t"], partitions=2)
        first = bus.consumer("g", ["t"])
        for p_key in ("a", "b", "c", "d", "e", "f"):
            bus.publish("t", p_key.encode(), key=p_key)
        assert len(_poll_n(first, 6)) == 6  # polled, never committed
        second = bus.consumer("g", ["t"])
        got = _poll_n(second, 3, timeout_s=1.0)
        assert got, "the new member was given no partition"
        [partition] = {r.partition for r in got}
        assert [r.offset for r in got] == list(range(len(got)))
        assert len(got) == bus.end_offsets("t")[partition]
        # the old member no longer reads or commits the partition it lost
        first.commit()
        assert bus.group_lag("g", ["t"]) == len(got)


def test_commit_after_missed_rebalances_never_moves_the_group_back() -> None:
    """A member that sat out a rebalance (busy, not polling) must not commit its stale positions."""
    with MemoryBus(partitions=2) as bus:
        bus.create_topics(["t"], partitions=2)
        keys = {p: next(k for k in map(str, range(100)) if partition_for(k, 2, 0) == p) for p in (0, 1)}
        first = bus.consumer("g", ["t"])
        for _ in range(3):
            bus.publish("t", b"old", key=keys[1])
        assert len(_poll_n(first, 3)) == 3  # first owns both partitions and is now busy

        second = bus.consumer("g", ["t"])  # takes one partition while first is busy
        taken = _poll_n(second, 3, timeout_s=1.0)
        [partition] = {r.partition for r in taken}
        assert partition == 1, "test assumes the newer member gets partition 1"
        for _ in range(3):
            bus.publish("t", b"new", key=keys[1])
        assert len(_poll_n(second, 3)) == 3
        second.commit()
        second.close()  # partition 1 goes back to first
        assert bus.group_lag("g", ["t"]) == 0

        first.commit()  # first never polled in between
        assert bus.group_lag("g", ["t"]) == 0, "commit moved the group's offset backwards"
        assert first.poll(10, 50) == [], "records the group already committed were delivered again"


# -- the journal ----------------------------------------------------------------------


def test_journal_keeps_topics_and_committed_offsets(tmp_path: Path) -> None:
    """After close and reopen, records, partition counts and each group's commit are all there."""
    with MemoryBus(partitions=3, journal_dir=tmp_path) as bus:
        bus.create_topics(["five"], partitions=5)
        for i in range(6):
            bus.publish("t", f"v{i}".encode(), key="k")
        bus.publish("five", b"x", key="k")
        consumer = bus.consumer("g", ["t"])
        assert [r.value for r in _poll_n(consumer, 4)] == [b"v0", b"v1", b"v2", b"v3"]
        consumer.commit()
        before = bus.read_all("t")

    with MemoryBus(partitions=3, journal_dir=tmp_path) as bus:
        assert bus.read_all("t") == before
        assert len(bus.end_offsets("five")) == 5
        assert bus.group_lag("g", ["t"]) == 2
        bus.publish("five", b"y", key="k")  # same key, same partition as before the restart
        assert len({r.partition for r in bus.read_all("five")}) == 1
        resumed = bus.consumer("g", ["t"])
        assert [r.value for r in _poll_n(resumed, 2)] == [b"v4", b"v5"]
        assert resumed.poll(10, 50) == []


def test_journal_drops_a_torn_last_record(tmp_path: Path) -> None:
    """A record cut short by a crash is dropped on reopen; later appends read back after the good ones."""
    with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
        for value in (b"first", b"second", b"third-record"):
            bus.publish("t", value, key="key")
    size = _log(tmp_path, "t").stat().st_size
    for cut in (3, len(b"third-record") + len(b"key") + 5):  # inside the value; inside the header
        with open(_log(tmp_path, "t"), "r+b") as f:
            f.truncate(size - cut)
        with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
            assert [r.value for r in bus.read_all("t")] == [b"first", b"second"]
            bus.publish("t", b"third-record", key="key")
            assert [r.value for r in bus.read_all("t")] == [b"first", b"second", b"third-record"]
        with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
            records = bus.read_all("t")
            assert [(r.key, r.value, r.offset) for r in records] == [
                ("key", b"first", 0),
                ("key", b"second", 1),
                ("key", b"third-record", 2),
            ]
        assert _log(tmp_path, "t").stat().st_size == size


def test_journal_keeps_keyless_and_empty_records(tmp_path: Path) -> None:
    """A record without a key and an empty value survive a reopen unchanged."""
    with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
        bus.publish("t", b"")
        bus.publish("t", b"\x00\xff", key="")
        before = bus.read_all("t")
    with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
        assert bus.read_all("t") == before
        assert [(r.key, r.value) for r in before] == [(None, b""), ("", b"\x00\xff")]


def test_second_bus_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    """Only one MemoryBus may hold a journal; once it is closed another may open it."""
    bus = MemoryBus(journal_dir=tmp_path)
    try:
        with pytest.raises(BusError, match="in use"):
            MemoryBus(journal_dir=tmp_path)
        bus.publish("t", b"x")
    finally:
        bus.close()
    with MemoryBus(journal_dir=tmp_path) as again:
        assert [r.value for r in again.read_all("t")] == [b"x"]


def test_commit_after_close_does_not_touch_the_journal(tmp_path: Path) -> None:
    """A consumer of a closed bus cannot commit, so a journal released to another bus is not written."""
    bus = MemoryBus(partitions=1, journal_dir=tmp_path)
    for _ in range(3):
        bus.publish("t", b"x")
    consumer = bus.consumer("g", ["t"])
    assert len(_poll_n(consumer, 3)) == 3
    bus.close()
    with MemoryBus(partitions=1, journal_dir=tmp_path) as owner:
        with pytest.raises(BusError):
            consumer.commit()
        assert owner.group_lag("g", ["t"]) == 3
    with MemoryBus(partitions=1, journal_dir=tmp_path) as later:
        assert later.group_lag("g", ["t"]) == 3


# -- retention ------------------------------------------------------------------------


def _offsets(records: list[BusRecord]) -> list[int]:
    return [r.offset for r in records]


def _content(records: list[BusRecord]) -> list[tuple[int, int, str | None, bytes]]:
    """A record without its timestamp, which differs between two buses fed the same records."""
    return [(r.partition, r.offset, r.key, r.value) for r in records]


def test_retention_drops_only_what_every_reading_group_committed() -> None:
    """A record goes only once every group reading its topic (subscribed or committed) is past it,
    and never below ``retention`` records; offsets, end offsets and lag stay those of the full log."""
    with MemoryBus(partitions=1, retention=2) as bus:
        fast, slow = bus.consumer("fast", ["t"]), bus.consumer("slow", ["t"])  # slow: subscribed, no commit yet
        for i in range(10):
            bus.publish("t", f"v{i}".encode())
        assert len(_poll_n(fast, 10)) == 10
        fast.commit()
        assert bus.start_offsets("t") == [0] and len(bus.read_all("t")) == 10  # slow has committed nothing

        assert _offsets(_poll_n(slow, 6)) == list(range(6))
        slow.commit()
        assert bus.start_offsets("t") == [6]
        assert _offsets(bus.read_all("t")) == [6, 7, 8, 9]
        assert bus.end_offsets("t") == [10]
        assert (bus.group_lag("fast", ["t"]), bus.group_lag("slow", ["t"])) == (0, 4)
        assert (fast.lag(), slow.lag()) == (0, 4)

        rest = _poll_n(slow, 4)
        assert [(r.offset, r.value) for r in rest] == [(i, f"v{i}".encode()) for i in range(6, 10)]
        slow.commit()
        assert bus.start_offsets("t") == [8]  # everyone is at 10, but two records are always kept
        assert bus.group_lag("slow", ["t"]) == 0


def test_retention_never_drops_a_topic_no_group_reads() -> None:
    """Records of a topic nobody subscribed to or committed on stay whole, however small the retention."""
    with MemoryBus(partitions=1, retention=0) as bus:
        for i in range(5):
            bus.publish("read", b"x")
            bus.publish("unread", f"u{i}".encode())
        consumer = bus.consumer("g", ["read"])
        assert len(_poll_n(consumer, 5)) == 5
        consumer.commit()
        assert bus.read_all("read") == [] and bus.end_offsets("read") == [5]
        assert [r.value for r in bus.read_all("unread")] == [f"u{i}".encode() for i in range(5)]
        assert bus.start_offsets("unread") == [0]


def test_late_group_starts_at_the_earliest_retained_record_and_holds_retention() -> None:
    """A group that arrives after records were dropped starts at the earliest retained one
    (auto.offset.reset=earliest), counts lag from there, and from then on holds what it has not committed."""
    with MemoryBus(partitions=1, retention=3) as bus:
        early = bus.consumer("early", ["t"])
        for i in range(10):
            bus.publish("t", f"v{i}".encode())
        assert len(_poll_n(early, 10)) == 10
        early.commit()
        assert bus.start_offsets("t") == [7]

        assert bus.group_lag("late", ["t"]) == 3
        late = bus.consumer("late", ["t"])
        assert late.lag() == 3
        got = _poll_n(late, 3)
        assert [(r.offset, r.value) for r in got] == [(7, b"v7"), (8, b"v8"), (9, b"v9")]
        assert late.poll(10, 50) == []
        late.commit()

        for i in range(10, 15):
            bus.publish("t", f"v{i}".encode())
        assert len(_poll_n(early, 5)) == 5
        early.commit()
        assert bus.start_offsets("t") == [10]  # late committed 10: nothing above it goes
        assert bus.group_lag("late", ["t"]) == 5
        assert _offsets(_poll_n(late, 5)) == list(range(10, 15))


def test_journal_reopen_trims_what_it_loads_with_the_same_offsets(tmp_path: Path) -> None:
    """The journal keeps every record; a reopened bus applies its retention to them, offsets unchanged."""
    with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
        for i in range(5):
            bus.publish("t", f"v{i}".encode())
        consumer = bus.consumer("g", ["t"])
        assert len(_poll_n(consumer, 4)) == 4
        consumer.commit()
    with MemoryBus(partitions=1, journal_dir=tmp_path, retention=0) as bus:
        assert [(r.offset, r.value) for r in bus.read_all("t")] == [(4, b"v4")]
        assert bus.end_offsets("t") == [5] and bus.group_lag("g", ["t"]) == 1
        assert [(r.offset, r.value) for r in _poll_n(bus.consumer("g", ["t"]), 1)] == [(4, b"v4")]
        bus.publish("t", b"v5")
    with MemoryBus(partitions=1, journal_dir=tmp_path) as bus:
        assert _offsets(bus.read_all("t")) == list(range(6))


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(["a", "b", "c", "d"])),
        st.tuples(st.just("poll"), st.sampled_from(["g1", "g2"]), st.integers(1, 6)),
        st.tuples(st.just("commit"), st.sampled_from(["g1", "g2"])),
    ),
    max_size=60,
)


@given(ops=ops_st, retention=st.integers(0, 4))
@settings(max_examples=150, deadline=None)
def test_retention_changes_nothing_any_group_reads(ops: list[tuple[Any, ...]], retention: int) -> None:
    """Against a bus that keeps everything, the same publishes, polls and commits deliver the same
    records at the same offsets with the same lag; each partition keeps at least ``retention`` records
    and everything at or above the lowest commit of its readers."""
    with MemoryBus(partitions=2) as full, MemoryBus(partitions=2, retention=retention) as kept:
        consumers = [{g: bus.consumer(g, ["t"]) for g in ("g1", "g2")} for bus in (full, kept)]
        for i, op in enumerate(ops):
            if op[0] == "publish":
                for bus in (full, kept):
                    bus.publish("t", f"v{i}".encode(), key=op[1])
            elif op[0] == "poll":
                a, b = (_content(c[op[1]].poll(op[2], 0)) for c in consumers)
                assert a == b
            else:
                for c in consumers:
                    c[op[1]].commit()
            for g in ("g1", "g2"):
                assert full.group_lag(g, ["t"]) == kept.group_lag(g, ["t"])
                assert consumers[0][g].lag() == consumers[1][g].lag()
            assert full.end_offsets("t") == kept.end_offsets("t")
            floors = [min(kept._committed[g].get(("t", p), 0) for g in ("g1", "g2")) for p in (0, 1)]
            for p, (start, end) in enumerate(zip(kept.start_offsets("t"), kept.end_offsets("t"), strict=True)):
                assert start <= floors[p] or end - start == retention
                assert end - start >= min(retention, end)
            assert set(_content(kept.read_all("t"))) <= set(_content(full.read_all("t")))


def test_bus_settings_carry_the_retention_to_the_memory_bus() -> None:
    """``bus.memory_retention`` reaches the bus ``open_bus`` builds; the default is bounded, ``None`` keeps all."""
    from aet.adapters.bus import open_bus
    from aet.pipeline.config import BusSettings

    assert BusSettings().memory_retention == 10_000
    for retention in (7, None):
        bus = open_bus(BusSettings(memory_retention=retention))
        try:
            assert isinstance(bus, MemoryBus) and bus.retention == retention
        finally:
            bus.close()
    with pytest.raises(ValueError, match="retention"):
        MemoryBus(retention=-1)
