"""``POST /v1/messages`` on a real server and a real bus: 202 only after the acknowledgement, and every refusal.

The bus is the memory bus (what ``aet run`` uses); "slow" is a memory bus whose
acknowledgement waits for the test, "down" a closed one.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.web import WebServer
from aet.pipeline.config import TopicSettings, WebSettings
from aet.pipeline.intake import MessageIntake
from aet.pipeline.records import Message
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database

TOKEN = "ingest-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOPICS = TopicSettings()


class SlowBus(MemoryBus):
    """A memory bus whose acknowledgement (``flush``) waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__(partitions=3)
        self.release = threading.Event()
        self.waiting = threading.Event()

    def flush(self, timeout_s: float | None = None) -> None:
        self.waiting.set()
        self.release.wait(30)
        super().flush(timeout_s)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStore]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('ingest') / 'web.db'}")
    yield AlertStore(db)
    db.dispose()


def start(store: AlertStore, bus: MemoryBus, **settings: object) -> WebServer:
    web = WebSettings(port=0, ingest_token=TOKEN, max_body_bytes=64 * 1024, max_batch=50, **settings)  # type: ignore[arg-type]
    return WebServer(store, web, intake=MessageIntake(bus, TOPICS, max_batch=web.max_batch)).start()


@pytest.fixture(scope="module")
def served(store: AlertStore) -> Iterator[tuple[WebServer, MemoryBus]]:
    bus = MemoryBus(partitions=3)
    srv = start(store, bus)
    yield srv, bus
    srv.close()
    bus.close()


def published(bus: MemoryBus) -> list[tuple[str | None, Message]]:
    """Every message on the messages topic so far, with its key (read by a fresh group)."""
    out: list[tuple[str | None, Message]] = []
    with bus.consumer(f"reader-{uuid.uuid4().hex}", [TOPICS.messages]) as c:
        while records := c.poll(1000, 100):
            out += [(r.key, Message.model_validate_json(r.value)) for r in records]
    return out


def msg(text: str, **extra: object) -> dict[str, object]:
    return {"text": text, "source": "news", "ts": "2026-03-03T12:00:00Z", **extra}


def test_one_message_is_published_and_acknowledged(served: tuple[WebServer, MemoryBus]) -> None:
    srv, bus = served
    before = len(published(bus))
    r = httpx.post(
        srv.url + "v1/messages",
        json=msg("<p>$ACME beats &amp; raises</p>", id="wire-1", url="https://news.example/acme"),
        headers=AUTH,
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "ids": ["news:wire-1"]}
    rows = published(bus)
    assert len(rows) == before + 1
    key, m = next(x for x in rows if x[1].id == "news:wire-1")
    assert m.text == "$ACME beats & raises" and m.entities == ["$ACME"] and key == "$ACME"
    assert m.meta["url"] == "https://news.example/acme"


@pytest.mark.parametrize("wrap", [lambda ms: ms, lambda ms: {"messages": ms}])
def test_a_batch_is_published_whole(served: tuple[WebServer, MemoryBus], wrap: object) -> None:
    srv, bus = served
    batch = [msg(f"batch message {i} about nothing in particular", channel="wire") for i in range(3)]
    r = httpx.post(srv.url + "v1/messages", json=wrap(batch), headers=AUTH)  # type: ignore[operator]
    assert r.status_code == 202 and r.json()["accepted"] == 3
    ids = r.json()["ids"]
    assert len(set(ids)) == 3
    # Without an id or entities: the id is a content hash (stable on re-send) and the key is the id.
    assert httpx.post(srv.url + "v1/messages", json=wrap(batch), headers=AUTH).json()["ids"] == ids  # type: ignore[operator]
    keys = {m.id: k for k, m in published(bus)}
    assert all(keys[i] == i for i in ids)


def test_a_batch_with_one_bad_message_publishes_nothing(served: tuple[WebServer, MemoryBus]) -> None:
    srv, bus = served
    before = len(published(bus))
    batch = [msg("fine"), msg("   "), msg("bad time", ts="yesterday"), {"text": "x", "source": "news", "colour": 1}]
    r = httpx.post(srv.url + "v1/messages", json=batch, headers=AUTH)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert {e["index"] for e in errors} == {1, 2, 3}
    assert any(e["loc"] == ["colour"] for e in errors)  # unknown fields are errors, not dropped
    assert any("ts" in e["loc"] for e in errors)
    assert len(published(bus)) == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"[" * 5000 + b"]" * 5000, 400),
        (b"[]", 400),
        (b'{"messages": 3}', 400),
        (json.dumps([msg(f"m{i}") for i in range(51)]).encode(), 400),
        (b"42", 400),
    ],
)
def test_bad_bodies_are_a_clear_400(served: tuple[WebServer, MemoryBus], body: bytes, status: int) -> None:
    srv, bus = served
    before = len(published(bus))
    r = httpx.post(srv.url + "v1/messages", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status and r.json()["error"] and "Traceback" not in r.text
    assert len(published(bus)) == before


def test_the_ingest_token_is_required(served: tuple[WebServer, MemoryBus]) -> None:
    srv, bus = served
    before = len(published(bus))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Cookie": f"aet_token={TOKEN}"}):
        r = httpx.post(srv.url + "v1/messages", json=msg("unauthorised"), headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert len(published(bus)) == before


def test_without_an_ingest_token_configured_nobody_may_ingest(store: AlertStore) -> None:
    bus = MemoryBus(partitions=1)
    srv = WebServer(store, WebSettings(port=0), intake=MessageIntake(bus, TOPICS)).start()
    try:
        assert httpx.post(srv.url + "v1/messages", json=msg("x"), headers=AUTH).status_code == 401
    finally:
        srv.close()
        bus.close()


def test_a_bus_that_is_down_is_a_503_with_retry_after(store: AlertStore) -> None:
    bus = MemoryBus(partitions=1)
    srv = start(store, bus)
    try:
        bus.close()
        r = httpx.post(srv.url + "v1/messages", json=msg("into the void"), headers=AUTH)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    finally:
        srv.close()


def test_a_slow_bus_turns_extra_requests_away_with_429(store: AlertStore) -> None:
    bus = SlowBus()
    srv = start(store, bus, max_in_flight=1, queue_wait_s=0.05)
    replies: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: replies.append(httpx.post(srv.url + "v1/messages", json=msg("first"), headers=AUTH, timeout=30))
    )
    try:
        first.start()
        assert bus.waiting.wait(10), "the first request never reached the bus"
        r = httpx.post(srv.url + "v1/messages", json=msg("second"), headers=AUTH)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert not replies  # the first one is not answered before the bus acknowledged
        bus.release.set()
        first.join(10)
        assert [x.status_code for x in replies] == [202]
    finally:
        bus.release.set()
        srv.close()
        bus.close()


def test_openapi_describes_the_ingest_api(served: tuple[WebServer, MemoryBus]) -> None:
    srv, _ = served
    doc = httpx.get(srv.url + "openapi.json").json()
    post = doc["paths"]["/v1/messages"]["post"]
    assert {"202", "400", "401", "413", "429", "503"} <= set(post["responses"])
    fields = doc["components"]["schemas"]["MessageIn"]["properties"]
    assert {"text", "source", "ts", "id", "entities", "meta", "url"} <= set(fields)
    page = httpx.get(srv.url + "docs")
    assert page.status_code == 200 and "/openapi.json" in page.text and "https://" not in page.text
