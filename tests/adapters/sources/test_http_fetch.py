"""The feed fetcher against a local HTTP server: validators sent and returned, the byte cap with and without a
declared length, redirects followed up to the limit, clear reasons for what fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from aet.adapters.sources.http_fetch import HttpFeedFetcher, retry_after
from aet.pipeline.ports import FetchError
from tests.pipeline.sources.feed_server import FeedServer, Route, serve

BODY = b"<rss version='2.0'><channel><title>t</title></channel></rss>" + b" " * 20_000


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    yield from serve(FeedServer())


@pytest.fixture
def fetcher() -> Iterator[HttpFeedFetcher]:
    f = HttpFeedFetcher(timeout_s=2.0, max_bytes=10_000, max_redirects=2)
    yield f
    f.close()


def test_validators_round_trip_and_a_304(server: FeedServer, fetcher: HttpFeedFetcher) -> None:
    server.routes["/v.xml"] = Route(BODY[:500], etag='"e1"', last_modified="Mon, 02 Mar 2026 12:00:00 GMT")
    got = fetcher.fetch(server.url("/v.xml"))
    assert (got.status, got.body, got.etag, got.last_modified) == (
        200,
        BODY[:500],
        '"e1"',
        "Mon, 02 Mar 2026 12:00:00 GMT",
    )
    assert got.content_type == "application/rss+xml; charset=utf-8"
    again = fetcher.fetch(server.url("/v.xml"), etag=got.etag, last_modified=got.last_modified)
    assert (again.status, again.body, again.etag) == (304, b"", '"e1"')
    seen = server.hits("/v.xml")[-1]
    assert (seen.if_none_match, seen.if_modified_since) == ('"e1"', "Mon, 02 Mar 2026 12:00:00 GMT")


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
def test_a_body_over_the_cap_is_refused(server: FeedServer, fetcher: HttpFeedFetcher, chunked: bool) -> None:
    server.routes[f"/big-{chunked}"] = Route(BODY, chunked=chunked)
    with pytest.raises(FetchError, match="over the limit of 10000"):
        fetcher.fetch(server.url(f"/big-{chunked}"))
    server.routes[f"/small-{chunked}"] = Route(BODY[:9000], chunked=chunked)
    assert fetcher.fetch(server.url(f"/small-{chunked}")).body == BODY[:9000]


def test_redirects_followed_up_to_the_limit(server: FeedServer, fetcher: HttpFeedFetcher) -> None:
    server.routes["/r1"] = Route(redirect="/r2")
    server.routes["/r2"] = Route(redirect="/final.xml")
    server.routes["/final.xml"] = Route(BODY[:100])
    got = fetcher.fetch(server.url("/r1"))
    assert got.body == BODY[:100] and got.url == server.url("/final.xml")
    server.routes["/r0"] = Route(redirect="/r1")  # three hops: one too many
    with pytest.raises(FetchError, match="more than 2 redirects"):
        fetcher.fetch(server.url("/r0"))


def test_refused_connection_and_http_errors_are_fetch_errors(server: FeedServer, fetcher: HttpFeedFetcher) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher.fetch(server.url("/missing"))
    with pytest.raises(FetchError, match="ConnectError"):
        fetcher.fetch("http://127.0.0.1:9/feed.xml")


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120
    assert retry_after("Mon, 02 Mar 2026 12:05:00 GMT", now) == 300
    assert retry_after("Mon, 02 Mar 2026 11:00:00 GMT", now) == 0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_a_429_carries_its_retry_after(server: FeedServer, fetcher: HttpFeedFetcher) -> None:
    server.routes["/slow-down"] = Route(status=429, headers={"Retry-After": "90"})
    with pytest.raises(FetchError, match="HTTP 429") as err:
        fetcher.fetch(server.url("/slow-down"))
    assert err.value.retry_after_s == 90
