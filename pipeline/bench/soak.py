"""``aet bench soak``: a long stream through the embedded loop with faults on a schedule; nothing lost or doubled.

The scorer role runs on a memory bus and SQLite (a scratch installation) over
``messages`` good messages, with faults injected every ``fault_every`` of them,
in turn:

* bad records of every hostile kind (:data:`HOSTILE`), one every
  ``hostile_every`` good messages, each with its own key so that its dead
  letter can be found;
* the database away (:class:`FaultyStore` fails two store writes), the bus away
  (:class:`FaultyBus` fails a flush): the worker must retry and lose nothing;
* the worker crashing after ``handle``, after publish, after the store write
  and just before the commit (:class:`SimulatedCrash`): its loop ends, its
  batch is left uncommitted, and a new worker takes over the same group, as a
  restarted process would.

At the end every record is accounted for: a good message is scored (a row in
the store) or dead-lettered; a hostile one is dead-lettered (or scored, for
kinds a fixed decoder may accept). ``lost`` counts records with neither
outcome. ``duplicated`` counts row writes beyond one per message, except the
one re-write of each message whose batch crashed between its store write and
its commit (the delivery contract allows exactly that, with the same content:
``rewritten_after_crash``); the writes are counted by the database
(:class:`WriteCounter`, a trigger in the CLI's scratch database). Resident
memory is read after the first ``rss_window`` messages and at the end; the
report also estimates what the memory bus holds at the end (``bus_mb_estimate``:
payloads, keys and the Python objects around each record). Its retention drops
what every group reading a topic has committed past (beyond
``bus.memory_retention`` records a partition); here only the scorer's group
reads, so ``aet.messages`` is trimmed while ``aet.scored`` and ``aet.dlq`` are
kept whole, for the accounting to read back.

Scoring runs a :class:`LexiconModel` (keyword probabilities, no transformer):
the soak measures delivery, not the model, and a transformer on two CPU cores
would take hours for 100,000 messages. The report says so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import psutil
from prometheus_client import REGISTRY

from aet.pipeline.bench.report import environment, write_report
from aet.pipeline.config import ScorerSettings, TopicSettings
from aet.pipeline.model import Prediction, SentimentModel
from aet.pipeline.ports import BatchStore, Bus, BusError, BusRecord, Consumer
from aet.pipeline.records import Alert, ControlEvent, DeadLetter, LabelRecord, ScoredMessage, decode
from aet.pipeline.roles.scorer import Scorer
from aet.pipeline.worker import Outputs

log = logging.getLogger(__name__)

CRASH_STEPS = ("after_handle", "after_publish", "after_store", "before_commit")
#: The fault schedule, in turn: outages the worker must ride out, crashes it must be restarted after.
SCHEDULE = (
    "db_outage",
    "crash_after_handle",
    "bus_outage",
    "crash_after_publish",
    "db_outage",
    "crash_after_store",
    "crash_before_commit",
)
MAX_REAL_DEATHS = 5  # a worker that dies of a record (not of a simulated crash) this often ends the soak
STALL_S = 120.0  # ... and so does a worker that commits nothing for this long
TS = "2026-03-02T13:00:00+00:00"


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _message(ident: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"id": ident, "source": "news", "channel": "soak", "text": text, "ts": TS, **fields}


#: Hostile records, one builder per kind: each gets a unique id (``n``) so that its outcome can be found.
HOSTILE: dict[str, Callable[[str], bytes]] = {
    "not_utf8": lambda n: b"\xff\xfe\x80 soak " + n.encode() + b" \xc3\x28",
    "not_json": lambda n: b"{not json " + n.encode(),
    "not_an_object": lambda n: _json([n, 1, 2]),
    "missing_text": lambda n: _json({"id": n, "source": "news", "ts": TS}),
    "empty_text": lambda n: _json(_message(n, "   ")),
    "oversized_text": lambda n: _json(_message(n, "x" * 20_000)),
    "bad_timestamp": lambda n: _json(_message(n, "a bad time", ts="next tuesday")),
    "year_9999_offset": lambda n: _json(_message(n, "the end of time", ts="9999-12-31T23:59:59-05:00")),
    "year_1_offset": lambda n: _json(_message(n, "the start of time", ts="0001-01-01T00:00:00+05:00")),
    "far_future": lambda n: _json(_message(n, "from the future", ts="2199-01-01T00:00:00Z")),
    "lone_surrogate": lambda n: _json(_message(n, "bad @ text")).replace(b"@", b"\\ud800"),
    "nul_in_text": lambda n: _json(_message(n, "nul \u0000 inside")),
    "unknown_schema": lambda n: _json({**_message(n, "from the future schema"), "schema_version": 99}),
    "many_entities": lambda n: _json(_message(n, "too many entities", entities=[f"$E{i}" for i in range(2000)])),
    "wrong_types": lambda n: _json({"id": n, "source": 7, "text": ["list"], "ts": 12}),
}


class WriteCounter(Protocol):
    """Row writes per message id, counted by the database (storage/write_log.py, installed by the CLI)."""

    def counts(self) -> Counter[str]: ...


class SimulatedCrash(BaseException):
    """A worker crash at one step of its loop: not an ``Exception``, so no retry catches it, as with SIGKILL."""


class LexiconModel:
    """Keyword probabilities in the shape of :class:`SentimentModel` (what the soak's scorer serves)."""

    version = "soak-lexicon"
    base = version
    NEGATIVE = ("plunge", "miss", "loss", "cut")
    POSITIVE = ("soar", "beat", "record", "raise")

    def predict(self, texts: Sequence[str], sources: Sequence[str] | None = None, *, features: bool = False) -> Any:
        rows = []
        for text in texts:
            t = text.lower()
            neg, pos = sum(w in t for w in self.NEGATIVE), sum(w in t for w in self.POSITIVE)
            rows.append([1.0 + 2 * neg, 1.0, 1.0 + 2 * pos])
        probs = np.asarray(rows, dtype=np.float32).reshape(len(texts), 3)
        return Prediction(probs / probs.sum(axis=1, keepdims=True))


@dataclass
class Faults:
    """The armed fault, shared by the wrapped ports and the scorer; records what it did."""

    armed: str | None = None
    remaining: int = 0  # transient failures still to raise for an outage
    injected: Counter[str] = field(default_factory=Counter)
    rewrite_allowed: set[str] = field(default_factory=set)  # ids whose batch crashed after its store write
    republish_allowed: Counter[str] = field(default_factory=Counter)  # ids whose batch was published again
    batch_ids: list[str] = field(default_factory=list)  # the ids of the batch in flight
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, kind: str) -> None:
        with self.lock:
            self.armed, self.remaining = kind, 2 if kind == "db_outage" else 1
            self.injected[kind] += 1

    def transient(self, kind: str) -> None:
        """Raise a transient failure if an outage of ``kind`` is armed (the worker retries it)."""
        with self.lock:
            if self.armed != kind:
                return
            self.remaining -= 1
            if self.remaining <= 0:
                self.armed = None
            if kind == "bus_outage":  # the worker publishes the whole batch again after a failed flush
                self.republish_allowed.update(self.batch_ids)
        raise ConnectionError(f"simulated {kind.replace('_', ' ')}")

    def crash(self, step: str) -> None:
        """Raise :class:`SimulatedCrash` if a crash at ``step`` is armed."""
        with self.lock:
            if self.armed != f"crash_{step}":
                return
            self.armed = None
            if step in ("after_store", "before_commit"):
                self.rewrite_allowed.update(self.batch_ids)
            if step != "after_handle":  # published before the crash, published again after the restart
                self.republish_allowed.update(self.batch_ids)
        raise SimulatedCrash(step)


class FaultyStore:
    """The store, failing writes while the database is "away" and crashing after a write when asked."""

    def __init__(self, inner: BatchStore, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    def write(
        self,
        *,
        scored: Sequence[ScoredMessage] = (),
        labels: Sequence[LabelRecord] = (),
        dead_letters: Sequence[DeadLetter] = (),
        events: Sequence[ControlEvent] = (),
        alerts: Sequence[Alert] = (),
    ) -> Sequence[DeadLetter] | None:
        self.faults.transient("db_outage")
        refused = self.inner.write(
            scored=scored, labels=labels, dead_letters=dead_letters, events=events, alerts=alerts
        )
        self.faults.crash("after_store")
        return refused


class FaultyConsumer:
    """A consumer whose commit can be preceded by a crash."""

    def __init__(self, inner: Consumer, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    def poll(self, max_records: int, timeout_ms: int) -> list[BusRecord]:
        return self.inner.poll(max_records, timeout_ms)

    def commit(self) -> None:
        self.faults.crash("before_commit")
        self.inner.commit()

    def lag(self) -> int:
        return self.inner.lag()

    def pause(self) -> None:
        self.inner.pause()

    def resume(self) -> None:
        self.inner.resume()

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> FaultyConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaultyBus:
    """The bus, failing a flush while the broker is "away" and crashing after a publish when asked."""

    def __init__(self, inner: Bus, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    def create_topics(self, topics: Any, partitions: int | None = None) -> None:
        self.inner.create_topics(topics, partitions)

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        self.inner.publish(topic, value, key=key)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self.faults.transient("bus_outage")
        except ConnectionError as exc:
            raise BusError(str(exc)) from exc
        self.inner.flush(timeout_s)
        self.faults.crash("after_publish")

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return FaultyConsumer(self.inner.consumer(group, topics), self.faults)

    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        return self.inner.group_lag(group, topics)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> FaultyBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SoakScorer(Scorer):
    """The scorer role, telling the faults which batch is in flight and crashing after ``handle`` when asked."""

    def __init__(self, bus: Bus, store: BatchStore, topics: TopicSettings, settings: ScorerSettings, faults: Faults):
        # Duck-typed: the scorer only calls predict() and reads version and base.
        super().__init__(bus, store, cast(SentimentModel, LexiconModel()), topics, settings)
        self.faults = faults

    def handle(self, records: list[BusRecord]) -> Outputs:
        self.faults.batch_ids = [i for i in (_id_of(r.value) for r in records) if i is not None]
        out = super().handle(records)
        self.faults.crash("after_handle")
        return out


class SoakWorker(threading.Thread):
    """One scorer's loop in a thread, as one process would run it; keeps the exception that ended it."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__(name="aet-soak-scorer", daemon=True)
        self.scorer, self.stop = scorer, threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.scorer.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - a crash (simulated or not) is what the soak observes
            self.error = exc


def soak_benchmark(
    bus: Bus,
    store: BatchStore,
    writes: WriteCounter,
    dead_letters_stored: Callable[[], Sized],
    *,
    topics: TopicSettings,
    scorer_settings: ScorerSettings,
    messages: int = 100_000,
    fault_every: int | None = None,
    hostile_every: int = 200,
    rss_window: int = 10_000,
    out: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Stream ``messages`` good messages (plus hostile ones) with faults on a schedule; return the report.

    ``bus``, ``store`` and ``writes`` belong to a scratch installation (the CLI builds one);
    ``dead_letters_stored`` returns the dead letters the store holds (rows with ``offset`` and ``reason``).
    """
    fault_every = fault_every or max(500, messages // 40)
    rss_window = min(rss_window, max(1, messages // 4))
    faults = Faults()
    fbus = FaultyBus(bus, faults)
    fstore = FaultyStore(store, faults)
    settings = scorer_settings.model_copy(update={"features": False, "hot_swap": False})
    retries_before = {op: _retries(op) for op in ("publish", "store", "commit")}
    process = psutil.Process()
    rss_start: float | None = None
    good: list[str] = []
    hostile: dict[str, str] = {}  # key (= id) -> kind
    deaths: Counter[str] = Counter()
    restarts = 0

    def start_worker() -> SoakWorker:
        worker = SoakWorker(SoakScorer(fbus, fstore, topics, settings, faults))
        worker.start()
        return worker

    def wait_drained(worker: SoakWorker) -> SoakWorker:
        """Wait until the chunk is committed, restarting the worker whenever it ends; give up on a stall."""
        nonlocal restarts
        last_lag, last_progress = -1, time.monotonic()
        while True:
            if not worker.is_alive():  # crashed: a new worker takes over the group from its last commit
                if not isinstance(worker.error, SimulatedCrash):
                    reason = f"{type(worker.error).__name__}: {worker.error}"
                    deaths[reason] += 1
                    log.warning("soak: the worker died of a record: %s", reason)
                    if sum(deaths.values()) >= MAX_REAL_DEATHS:
                        raise _Abort(f"the worker died {MAX_REAL_DEATHS} times of a record, last: {reason}")
                restarts += 1
                worker = start_worker()
                continue
            lag = bus.group_lag(settings.group, [topics.messages])
            if lag == 0:
                return worker
            if lag != last_lag:
                last_lag, last_progress = lag, time.monotonic()
            elif time.monotonic() - last_progress > STALL_S:
                raise _Abort(f"no message committed for {STALL_S:.0f} s (health: {worker.scorer.health})")
            worker.scorer.wait_for_commit(0.2)

    started = time.perf_counter()
    worker = start_worker()
    published = 0
    error: str | None = None
    schedule = _cycle(SCHEDULE)
    kinds = _cycle(tuple(HOSTILE))
    try:
        while published < messages:
            faults.arm(next(schedule))
            chunk = min(fault_every, messages - published)
            for i in range(published, published + chunk):
                ident = f"s{i}"
                entity = f"$S{i % 97}"
                bus.publish(topics.messages, _json(_message(ident, _text(i), entities=[entity])), key=entity)
                good.append(ident)
                if (i + 1) % hostile_every == 0:
                    kind = next(kinds)
                    key = f"h{len(hostile)}-{kind}"
                    hostile[key] = kind
                    bus.publish(topics.messages, HOSTILE[kind](key), key=key)
            bus.flush()
            published += chunk
            worker = wait_drained(worker)
            if rss_start is None and published >= rss_window:
                rss_start = process.memory_info().rss / 2**20
            if progress:
                log.info("soak: %d/%d messages, %d restarts", published, messages, restarts)
    except _Abort as exc:
        error = f"stopped early: {exc}"
    finally:
        worker.stop.set()
        worker.join(60)
    seconds = time.perf_counter() - started
    rss_end = process.memory_info().rss / 2**20

    faults.injected["bad_records"] = len(hostile)
    report = _account(bus, writes, dead_letters_stored, topics, good=good, hostile=hostile, faults=faults)
    report.update(
        {
            "benchmark": "soak",
            "model": {
                "name": LexiconModel.version,
                "why": "keyword probabilities, no transformer: the soak measures delivery (bus, store, "
                "commits, faults), not the model",
            },
            "error": error,
            "faults_injected": {**dict(sorted(faults.injected.items())), "total": sum(faults.injected.values())},
            "worker_restarts": restarts,
            "worker_deaths": dict(deaths),
            "retries": {op: _retries(op) - before for op, before in retries_before.items()},
            "rss_mb_start": round(rss_start if rss_start is not None else rss_end, 1),
            "rss_mb_end": round(rss_end, 1),
            "rss_window_messages": rss_window,
            "seconds": round(seconds, 1),
            "messages_per_s": round(report["messages_in"] / seconds, 1) if seconds else None,
            "settings": {"messages": messages, "fault_every": fault_every, "hostile_every": hostile_every},
            "environment": environment(),
        }
    )
    report["rss_growth_pct"] = round(100 * (report["rss_mb_end"] / report["rss_mb_start"] - 1), 1)
    if out is not None:
        write_report(report, out, "soak")
    return report


class _Abort(Exception):
    pass


def _account(
    bus: Bus,
    writes: WriteCounter,
    dead_letters_stored: Callable[[], Sized],
    topics: TopicSettings,
    *,
    good: list[str],
    hostile: dict[str, str],
    faults: Faults,
) -> dict[str, Any]:
    """Where every published record ended up: scored, dead-lettered, neither (lost); writes beyond once."""
    rewrite_allowed = faults.rewrite_allowed
    counts = writes.counts()
    dlq = [decode(DeadLetter, r.value) for r in _read_topic(bus, topics.dlq)]
    dead_keys = {d.key for d in dlq if d.key is not None}
    good_dead = {i for i in (_id_of(_raw_bytes(d)) for d in dlq) if i is not None} - set(hostile)
    scored_topic = Counter(i for i in (_id_of(r.value) for r in _read_topic(bus, topics.scored)) if i is not None)
    good_scored = [i for i in good if counts[i] > 0]
    lost_good = [i for i in good if counts[i] == 0 and i not in good_dead]
    hostile_scored = [k for k in hostile if counts[k] > 0]
    lost_hostile = [k for k in hostile if counts[k] == 0 and k not in dead_keys]
    duplicated = sum(max(0, n - (2 if i in rewrite_allowed else 1)) for i, n in counts.items())
    rewritten = sum(min(n, 2) - 1 for i, n in counts.items() if i in rewrite_allowed)
    return {
        "messages_in": len(good) + len(hostile),
        "good": len(good),
        "hostile": len(hostile),
        "scored": len(good_scored) + len(hostile_scored),
        "good_scored": len(good_scored),
        "good_dead_lettered": len(good_dead),
        "hostile_scored": dict(Counter(hostile[k] for k in hostile_scored)),
        "dead_lettered": len(dead_letters_stored()),
        "dead_letters_on_topic": len(dlq),
        "lost": len(lost_good) + len(lost_hostile),
        "lost_examples": (lost_good + [f"{k} ({hostile[k]})" for k in lost_hostile])[:10],
        "duplicated": duplicated,
        "rewritten_after_crash": rewritten,
        "scored_topic_extra": sum(scored_topic.values()) - len(scored_topic),
        "duplicated_on_topic": sum(max(0, n - 1 - faults.republish_allowed[i]) for i, n in scored_topic.items()),
        **_bus_held(bus, topics),
    }


#: CPython bytes of one record kept by the memory bus besides its payload and key: a 3-tuple (64),
#: the bytes object (33), the key's str object (49) and the timestamp int (32).
RECORD_OVERHEAD = 64 + 33 + 49 + 32


def _bus_held(bus: Bus, topics: TopicSettings) -> dict[str, Any]:
    """What the bus holds at the end: payload MB, and an estimate of the memory the memory bus spends on it."""
    records = payload = 0
    for topic in topics.all():
        for r in _read_topic(bus, topic):
            records += 1
            payload += len(r.value) + len(r.key or "")
    return {
        "bus_records": records,
        "bus_payload_mb": round(payload / 2**20, 1),
        "bus_mb_estimate": round((payload + records * RECORD_OVERHEAD) / 2**20, 1),
    }


def _read_topic(bus: Bus, topic: str) -> Iterator[BusRecord]:
    """Every retained record of ``topic``, read through a fresh consumer group until nothing is left.

    The group never commits: a committing group would count as a reader of the topic, and the
    memory bus's retention would then drop behind it what the next read-back still needs. The
    stream has ended when this runs, so an empty poll means the end of the topic.
    """
    with bus.consumer(f"aet-soak-reader-{time.monotonic_ns()}", [topic]) as consumer:
        while batch := consumer.poll(5000, timeout_ms=200):
            yield from batch


def _id_of(value: bytes | None) -> str | None:
    """The ``id`` of a JSON object record, if it has one."""
    try:
        payload = json.loads(value) if value is not None else None
    except (ValueError, TypeError):
        return None
    ident = payload.get("id") if isinstance(payload, dict) else None
    return ident if isinstance(ident, str) else None


def _raw_bytes(d: DeadLetter) -> bytes | None:
    return d.raw.encode("utf-8", "surrogatepass") if d.raw is not None else None


def _retries(operation: str) -> float:
    """The scorer's ``aet_retries_total`` for ``operation`` in this process (what its metrics endpoint shows)."""
    return REGISTRY.get_sample_value("aet_retries_total", {"role": Scorer.role, "operation": operation}) or 0.0


def _text(i: int) -> str:
    words = ("Acme shares soar on record profit", "Globex plunges after a heavy loss", "Initech holds its meeting")
    return f"{words[i % 3]}, message {i}"


def _cycle(items: tuple[str, ...]) -> Iterator[str]:
    while True:
        yield from items
