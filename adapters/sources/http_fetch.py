"""The feed poller's HTTP client: conditional GETs with timeouts, a byte cap, a redirect limit and a total deadline.

feedparser can fetch URLs itself, but without a byte cap or a total deadline; AET fetches with
httpx and hands feedparser the bytes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from aet.pipeline.ports import Fetched, FetchError


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), ``None`` when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpFeedFetcher:
    """Implements :class:`~aet.pipeline.ports.FeedFetcher` on one pooled ``httpx.Client``."""

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 5_000_000,
        max_redirects: int = 5,
        user_agent: str = "aet-ingest/0.1",
        deadline_s: float | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.deadline_s = deadline_s if deadline_s is not None else 3 * timeout_s
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=True,
            max_redirects=max_redirects,
            headers={
                "User-Agent": user_agent,
                "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1",
            },
        )

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        started = time.monotonic()
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return Fetched(304, etag=etag, last_modified=last_modified, url=str(response.url))
                if response.status_code != 200:
                    raise FetchError(
                        f"HTTP {response.status_code} {response.reason_phrase} from {response.url}",
                        retry_after_s=retry_after(response.headers.get("Retry-After")),
                    )
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(f"feed is {declared} bytes, over the limit of {self.max_bytes}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(f"feed is over the limit of {self.max_bytes} bytes")
                    if time.monotonic() - started > self.deadline_s:
                        raise FetchError(f"feed took over {self.deadline_s:g} s to arrive")
                return Fetched(
                    200,
                    bytes(body),
                    etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"),
                    url=str(response.url),
                    content_type=response.headers.get("Content-Type"),
                )
        except httpx.TooManyRedirects as exc:
            raise FetchError(f"more than {self.max_redirects} redirects: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise FetchError(f"timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.client.close()
