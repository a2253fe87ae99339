"""The RSS/Atom poller: feeds fetched conditionally, parsed by feedparser, each item emitted once, ever.

Per feed and poll: skip the feed while its backoff lasts; fetch it with its ETag and
Last-Modified (a 304 costs nothing); hand the bytes to feedparser (which never fetches
anything itself); turn each item into a message (headline and/or summary, markup stripped,
the item's published time as event time, the item's guid as its platform id); drop the
items this source emitted before (kept in the database); emit the rest in acknowledged
batches, saving after each batch the items it held, and after the last one the feed's new
validators. A fetch or parse error doubles the feed's wait (``backoff_base_s`` up to
``backoff_max_s``; longer when a 429 or 503 asks for it with ``Retry-After``) and leaves
the other feeds alone.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import feedparser

from aet.pipeline.config import FeedSettings, RssSourceSettings
from aet.pipeline.ingest import message_id, normalize, refusal, strip_markup
from aet.pipeline.ports import FeedFetcher, FeedState, FetchError, IngestState
from aet.pipeline.records import DeadLetter, Message, utcnow
from aet.pipeline.sources.emit import Emitter, SourceStats

log = logging.getLogger(__name__)
SUMMARY_META_CHARS = 2000  # an item's summary kept in meta (the text may be its headline only)


@dataclass(frozen=True)
class FeedItem:
    """One item of a parsed feed, before normalization: its platform id, text, time and metadata."""

    platform_id: str
    text: str
    published: datetime | None
    meta: dict[str, Any]


def _entry_time(entry: Any) -> datetime | None:
    """The item's published time (else its updated time), from feedparser's UTC struct_time."""
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def parse_feed(
    body: bytes, url: str, text: str = "title", content_type: str | None = None
) -> tuple[str | None, list[FeedItem]]:
    """The feed's title and its items; ``ValueError`` with feedparser's reason when ``body`` is no feed.

    feedparser parses leniently: a feed with a small XML error still yields its items (its
    ``bozo`` flag is kept in the log), and a well-formed feed may have no items; a body that
    yields neither items nor a feed is an error.
    """
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    parsed = feedparser.parse(body, response_headers=headers)
    if not parsed.entries and (parsed.get("bozo") or not parsed.get("version")):
        reason = parsed.get("bozo_exception")
        raise ValueError(f"not a feed: {type(reason).__name__}: {reason}" if reason else "not a feed: no RSS or Atom")
    if parsed.get("bozo"):
        log.info("feed %s parsed leniently: %s", url, parsed.get("bozo_exception"))
    items = []
    for entry in parsed.entries:
        title = strip_markup(entry.get("title") or "")
        summary = strip_markup(entry.get("summary") or "")
        body_text = {"title": title or summary, "summary": summary or title}.get(text)
        if body_text is None:  # title_summary
            body_text = f"{title}. {summary}" if title and summary and summary != title else title or summary
        guid = entry.get("id") or entry.get("link")
        if not guid:  # no guid, no link: the content is the identity (stable across polls, unlike a clock)
            guid = "sha256:" + hashlib.sha256(f"{title}\x1f{summary}".encode()).hexdigest()[:32]
        meta: dict[str, Any] = {"feed": url}
        if entry.get("link"):
            meta["link"] = entry["link"]
        if entry.get("author"):
            meta["author"] = entry["author"]
        if summary and text == "title":
            meta["summary"] = summary[:SUMMARY_META_CHARS]
        tags = [t.get("term") for t in entry.get("tags") or () if t.get("term")]
        if tags:
            meta["tags"] = tags[:20]
        items.append(FeedItem(str(guid), body_text, _entry_time(entry), meta))
    return parsed.feed.get("title"), items


class FeedBackoff:
    """The wait after a feed's ``failures``-th error in a row: ``base`` doubled each time, at most ``cap``."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s = base_s
        self.cap_s = cap_s

    def delay_s(self, failures: int) -> float:
        return min(self.cap_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 62))


class RssSource:
    """Polls the feeds of one ``rss`` source (see the module docstring)."""

    def __init__(
        self,
        settings: RssSourceSettings,
        fetcher: FeedFetcher,
        state: IngestState,
        emitter: Emitter,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_text_chars: int = 5000,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.state = state
        self.emitter = emitter
        self.clock = clock
        self.max_text_chars = max_text_chars
        self.backoff = FeedBackoff(settings.backoff_base_s, settings.backoff_max_s)
        self.stats = SourceStats()

    @property
    def name(self) -> str:
        return self.settings.name

    def poll_once(self) -> SourceStats:
        """Poll every feed that is due; returns the running totals."""
        for feed in self.settings.feeds:
            self.poll_feed(feed)
        return self.stats

    @property
    def interval_s(self) -> float:
        return self.settings.poll_interval_s

    def step(self) -> None:
        self.poll_once()

    def recover(self) -> None:
        """Nothing to undo after a failed publish: the state was not saved, the next poll emits the batch again."""

    def close(self) -> None:
        """The fetcher belongs to whoever made it."""

    def poll_feed(self, feed: FeedSettings) -> None:
        """Fetch, parse and emit one feed if its backoff allows."""
        now = self.clock()
        known = self.state.feed(self.name, feed.url) or FeedState(feed.url)
        if known.retry_at is not None and known.retry_at > now:
            return
        try:
            got = self.fetcher.fetch(feed.url, etag=known.etag, last_modified=known.last_modified)
            if got.status == 304:
                self.state.save_feed(self.name, replace(known, failures=0, retry_at=None, last_error=None))
                return
            title, items = parse_feed(got.body, feed.url, self.settings.text, got.content_type)
        except FetchError as exc:
            self._failed(known, str(exc), now, exc.retry_after_s)
            return
        except ValueError as exc:
            self._failed(known, str(exc), now)
            return
        fresh = FeedState(feed.url, etag=got.etag, last_modified=got.last_modified)
        channel = feed.channel or (title or "").strip()[:256] or urlsplit(feed.url).hostname or "rss"
        self._emit_items(known, fresh, channel, items)

    def _failed(self, known: FeedState, reason: str, now: datetime, retry_after_s: float | None = None) -> None:
        failures = known.failures + 1
        wait = self.backoff.delay_s(failures)
        if retry_after_s is not None:  # the server's own ask, within the longest wait configured
            wait = min(max(wait, retry_after_s), self.settings.backoff_max_s)
        log.warning("feed %s failed (%d in a row, next try in %.0f s): %s", known.url, failures, wait, reason)
        self.stats.errors += 1
        self.state.save_feed(
            self.name, replace(known, failures=failures, retry_at=now + timedelta(seconds=wait), last_error=reason)
        )

    def _emit_items(self, known: FeedState, fresh: FeedState, channel: str, items: Sequence[FeedItem]) -> None:
        keyed: dict[str, FeedItem] = {}
        for item in items:
            keyed.setdefault(message_id(self.name, channel, "", "", item.platform_id), item)
        done = self.state.emitted(self.name, list(keyed))
        self.stats.skipped += len(done)
        todo = [(key, item) for key, item in keyed.items() if key not in done]
        size = self.settings.batch_size
        batches = [todo[i : i + size] for i in range(0, len(todo), size)] or [[]]
        for n, batch in enumerate(batches):
            messages, dead = self._normalize(channel, batch)
            self.emitter.emit(messages, dead, self.stats)
            # The feed's new validators only with its last batch: a crash before it re-fetches the whole feed,
            # and the items already saved are dropped as emitted.
            last = n == len(batches) - 1
            self.state.save_feed(self.name, fresh if last else known, emitted=[key for key, _ in batch])

    def _normalize(self, channel: str, batch: Sequence[tuple[str, FeedItem]]) -> tuple[list[Message], list[DeadLetter]]:
        messages: list[Message] = []
        dead: list[DeadLetter] = []
        for key, item in batch:
            try:
                messages.append(
                    normalize(
                        source=self.name,
                        kind="news",
                        text=item.text,
                        ts=item.published,
                        channel=channel,
                        platform_id=item.platform_id,
                        meta=item.meta,
                        max_text_chars=self.max_text_chars,
                    )
                )
            except ValueError as exc:
                raw = json.dumps({"id": item.platform_id, "text": item.text, "meta": item.meta}, default=str)
                dead.append(
                    DeadLetter.of(raw.encode(), stage=f"ingest:{self.name}", reason=f"{key}: {refusal(exc)}", key=key)
                )
        return messages, dead
