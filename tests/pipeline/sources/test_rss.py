"""The RSS/Atom poller against feeds served by a local HTTP server, with a real SQLite state store and memory bus."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.sources.http_fetch import HttpFeedFetcher
from aet.pipeline.config import FeedSettings, RssSourceSettings
from aet.pipeline.ports import FeedState
from aet.pipeline.records import DeadLetter, Message
from aet.pipeline.sources.emit import Emitter
from aet.pipeline.sources.rss import RssSource
from aet.storage.ingest_store import IngestStore
from tests.pipeline.sources.feed_server import FeedServer, Route, atom, rss, rss_item, serve

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
ITEMS = [
    rss_item(
        "wire-1001",
        "Acme &amp; Co. beats estimates",
        "Mon, 02 Mar 2026 13:05:00 GMT",
        "<p>Shares of <b>$ACME</b> rose&nbsp;4% after <a href='x'>earnings</a>.</p>",
    ),
    rss_item("wire-1002", "Globex cuts guidance; $GBX falls", "Mon, 02 Mar 2026 13:40:00 +0000"),
    rss_item("wire-1003", "Initech names new CFO", "Mon, 02 Mar 2026 09:00:00 -0500"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    yield from serve(FeedServer())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_source(ingest_store: IngestStore, emitter: Emitter, clock: Clock) -> Iterator[Callable[..., RssSource]]:
    fetchers: list[HttpFeedFetcher] = []

    def make(*urls: str, store: Any = None, **overrides: Any) -> RssSource:
        settings = RssSourceSettings(
            feeds=[FeedSettings(url=u) for u in urls],
            backoff_base_s=60,
            backoff_max_s=600,
            **{"timeout_s": 2.0, **overrides},
        )
        fetcher = HttpFeedFetcher(
            timeout_s=settings.timeout_s, max_bytes=settings.max_bytes, max_redirects=settings.max_redirects
        )
        fetchers.append(fetcher)
        return RssSource(settings, fetcher, store or ingest_store, emitter, clock=clock)

    yield make
    for f in fetchers:
        f.close()


def test_items_become_messages_then_a_304_costs_nothing(
    server: FeedServer, make_source: Callable[..., RssSource], published: Callable[[], list[Message]]
) -> None:
    server.routes["/wire.xml"] = Route(rss(*ITEMS), etag='"v1"', last_modified="Mon, 02 Mar 2026 13:41:00 GMT")
    source = make_source(server.url("/wire.xml"))
    source.poll_once()
    got = {m.id: m for m in published()}
    assert set(got) == {"rss:wire-1001", "rss:wire-1002", "rss:wire-1003"}
    acme = got["rss:wire-1001"]
    assert acme.text == "Acme & Co. beats estimates"  # the headline, entity-decoded
    assert acme.meta["summary"] == "Shares of $ACME rose 4% after earnings."  # markup stripped
    assert acme.meta["link"] == "https://news.example.test/a/wire-1001" and acme.meta["platform"] == "rss"
    assert acme.ts == datetime(2026, 3, 2, 13, 5, tzinfo=UTC) and acme.source == "news"
    assert acme.channel == "Wire Markets"
    assert got["rss:wire-1003"].ts == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # -0500 to UTC
    assert got["rss:wire-1002"].entities == ["$GBX"]

    source.poll_once()
    second = server.hits("/wire.xml")[-1]
    assert (second.if_none_match, second.status) == ('"v1"', 304)
    assert len(published()) == 3


def test_new_items_only_across_polls_and_a_restart(
    server: FeedServer,
    make_source: Callable[..., RssSource],
    published: Callable[[], list[Message]],
) -> None:
    # No validators: the server sends the whole feed every time, so only the state store keeps items out.
    server.routes["/novalidators.xml"] = Route(rss(*ITEMS[:2], ITEMS[0]))  # a duplicate guid in one feed too
    make_source(server.url("/novalidators.xml")).poll_once()
    assert sorted(m.id for m in published()) == ["rss:wire-1001", "rss:wire-1002"]
    server.routes["/novalidators.xml"] = Route(rss(*ITEMS))
    source = make_source(server.url("/novalidators.xml"))
    source.poll_once()
    source.poll_once()
    restarted = make_source(server.url("/novalidators.xml"))  # a new process on the same database
    restarted.poll_once()
    assert sorted(m.id for m in published()) == ["rss:wire-1001", "rss:wire-1002", "rss:wire-1003"]
    assert restarted.stats.published == 0 and restarted.stats.skipped == 3


def test_last_modified_alone_is_honoured_after_a_restart(
    server: FeedServer, make_source: Callable[..., RssSource], published: Callable[[], list[Message]]
) -> None:
    server.routes["/lm.xml"] = Route(rss(*ITEMS[:1]), last_modified="Mon, 02 Mar 2026 12:00:00 GMT")
    make_source(server.url("/lm.xml")).poll_once()
    make_source(server.url("/lm.xml")).poll_once()
    hits = server.hits("/lm.xml")
    assert [(h.if_modified_since, h.status) for h in hits] == [
        (None, 200),
        ("Mon, 02 Mar 2026 12:00:00 GMT", 304),
    ]
    assert len(published()) == 1


def test_atom_feed_with_html_titles(
    server: FeedServer, make_source: Callable[..., RssSource], published: Callable[[], list[Message]]
) -> None:
    server.routes["/filings.atom"] = Route(
        atom(
            ("urn:filing:8k-77", "&lt;b&gt;8-K&lt;/b&gt; $INTC: results of operations", "2026-03-02T11:00:00Z"),
            ("urn:filing:10q-12", "10-Q for &lt;i&gt;Hooli&lt;/i&gt;", "2026-03-01T21:30:00+02:00"),
        ),
        content_type="application/atom+xml",
    )
    make_source(server.url("/filings.atom")).poll_once()
    got = {m.id: m for m in published()}
    assert got["rss:urn:filing:8k-77"].text == "8-K $INTC: results of operations"
    assert got["rss:urn:filing:8k-77"].entities == ["$INTC"]
    assert got["rss:urn:filing:10q-12"].ts == datetime(2026, 3, 1, 19, 30, tzinfo=UTC)
    assert got["rss:urn:filing:10q-12"].channel == "Filings"


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (Route(b"<?xml version='1.0'?><rss><channel><title>broken</chan"), "not a feed"),
        (Route(b"<html><body>Service unavailable</body></html>", content_type="text/html"), "not a feed"),
        (Route(status=500), "HTTP 500"),
        (Route(rss(*ITEMS), delay_s=1.5), "timed out"),
        (Route(redirect="/loop-b"), "redirects"),
    ],
    ids=["invalid-xml", "html-page", "server-error", "timeout", "redirect-loop"],
)
def test_a_failing_feed_backs_off_and_the_others_go_on(
    server: FeedServer,
    make_source: Callable[..., RssSource],
    ingest_store: IngestStore,
    clock: Clock,
    published: Callable[[], list[Message]],
    route: Route,
    reason: str,
    request: pytest.FixtureRequest,
) -> None:
    bad = f"/bad-{request.node.callspec.id}"
    server.routes[bad] = route
    server.routes["/loop-b"] = Route(redirect="/loop-a")
    server.routes["/loop-a"] = Route(redirect="/loop-b")
    server.routes["/good.xml"] = Route(rss(*ITEMS[1:2]))
    source = make_source(server.url(bad), server.url("/good.xml"), timeout_s=0.5)
    source.poll_once()
    assert [m.id for m in published()] == ["rss:wire-1002"]
    state = ingest_store.feed("rss", server.url(bad))
    assert state is not None and state.failures == 1 and reason in (state.last_error or "")
    assert state.retry_at == T0 + timedelta(seconds=60)

    fetched = len(server.hits(bad))
    clock.now = T0 + timedelta(seconds=30)
    source.poll_once()  # still backing off: not fetched
    assert len(server.hits(bad)) == fetched
    clock.now = T0 + timedelta(seconds=61)
    source.poll_once()
    state = ingest_store.feed("rss", server.url(bad))
    assert state is not None and state.failures == 2 and state.retry_at == clock.now + timedelta(seconds=120)

    server.routes[bad] = Route(rss(*ITEMS[:1]))  # the feed recovers
    clock.now += timedelta(seconds=121)
    source.poll_once()
    state = ingest_store.feed("rss", server.url(bad))
    assert state == FeedState(server.url(bad))
    assert sorted(m.id for m in published()) == ["rss:wire-1001", "rss:wire-1002"]


def test_backoff_is_capped(server: FeedServer, make_source: Callable[..., RssSource], clock: Clock) -> None:
    server.routes["/down"] = Route(status=503)
    source = make_source(server.url("/down"))
    for _ in range(8):
        source.poll_once()
        state = source.state.feed("rss", server.url("/down"))
        assert state is not None and state.retry_at is not None
        clock.now = state.retry_at
    assert state.failures == 8 and state.retry_at == clock.now
    assert [source.backoff.delay_s(n) for n in (1, 2, 3, 4, 5, 8)] == [60, 120, 240, 480, 600, 600]


def test_a_retry_after_is_honoured_within_the_longest_wait(
    server: FeedServer, make_source: Callable[..., RssSource], clock: Clock
) -> None:
    server.routes["/busy"] = Route(status=429, headers={"Retry-After": "300"})
    server.routes["/away"] = Route(status=503, headers={"Retry-After": "86400"})
    source = make_source(server.url("/busy"), server.url("/away"))
    source.poll_once()
    busy, away = source.state.feed("rss", server.url("/busy")), source.state.feed("rss", server.url("/away"))
    assert busy is not None and busy.retry_at == T0 + timedelta(seconds=300)  # over the 60 s backoff
    assert away is not None and away.retry_at == T0 + timedelta(seconds=600)  # capped by backoff_max_s


class CrashAfterPublish:
    """The state store of a process killed between the bus's acknowledgement and the state save."""

    def __init__(self, store: IngestStore) -> None:
        self.store = store
        self.saves = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def save_feed(self, source: str, state: FeedState, emitted: Any = ()) -> None:
        self.saves += 1
        if self.saves == 2:
            raise KeyboardInterrupt("killed between publish and save")
        self.store.save_feed(source, state, emitted)


def test_a_kill_between_publish_and_save_re_emits_that_batch_once_with_the_same_ids(
    server: FeedServer,
    make_source: Callable[..., RssSource],
    ingest_store: IngestStore,
    published: Callable[[], list[Message]],
) -> None:
    items = [rss_item(f"bulk-{i:03}", f"Headline number {i}", "Mon, 02 Mar 2026 12:00:00 GMT") for i in range(10)]
    server.routes["/bulk.xml"] = Route(rss(*items), etag='"bulk"')
    crashing = make_source(server.url("/bulk.xml"), store=CrashAfterPublish(ingest_store), batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        crashing.poll_once()  # batch 1 published and saved, batch 2 published, then killed
    first_run = {m.id for m in published()}
    assert len(first_run) == 8
    make_source(server.url("/bulk.xml"), batch_size=4).poll_once()  # the restart: no validators saved yet
    counts = Counter(m.id for m in published())
    assert set(counts) == {f"rss:bulk-{i:03}" for i in range(10)}
    # The batch published but not saved comes again, with the same ids; nothing else does.
    assert sorted(i for i, n in counts.items() if n == 2) == [f"rss:bulk-{i:03}" for i in range(4, 8)]
    assert sum(counts.values()) == 14
    assert server.hits("/bulk.xml")[-1].if_none_match is None


def test_an_item_that_cannot_be_a_message_is_a_dead_letter_once(
    server: FeedServer,
    make_source: Callable[..., RssSource],
    published: Callable[[], list[Message]],
    dead_letters: Callable[[], list[DeadLetter]],
) -> None:
    server.routes["/odd.xml"] = Route(
        rss(
            rss_item("odd-1", "", "Mon, 02 Mar 2026 12:00:00 GMT"),
            rss_item("ok-1", "Fine", "Mon, 02 Mar 2026 12:00:00 GMT"),
        )
    )
    source = make_source(server.url("/odd.xml"))
    source.poll_once()
    source.poll_once()
    assert [m.id for m in published()] == ["rss:ok-1"]
    dead = dead_letters()
    assert len(dead) == 1 and dead[0].stage == "ingest:rss" and "text is empty" in dead[0].reason
    assert dead[0].key == "rss:odd-1"


def test_bus_is_not_touched_when_nothing_is_new(
    server: FeedServer, make_source: Callable[..., RssSource], bus: MemoryBus
) -> None:
    server.routes["/empty.xml"] = Route(rss())
    source = make_source(server.url("/empty.xml"))
    source.poll_once()
    assert source.stats.published == 0 and source.stats.errors == 0
