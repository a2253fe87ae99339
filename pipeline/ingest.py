"""One message record from any platform: the contract every source and the HTTP ingest API share.

A feed item, a chat message, a vendor's Kafka record or a line of a file all become
an :class:`~aet.pipeline.records.Message` through :func:`normalize`, so that every way
in gives the same ids, the same entities and the same cleaning:

- **a stable id**: the platform's own id prefixed by the source (``slack:C024BE91L/1712.0001``),
  else a sha256 of source, channel, event time and text, so the same item polled twice,
  or re-sent after a crash, carries the same id and is stored once;
- **markup stripped** from the text (an RSS summary's ``<p>``, ``&amp;``), whitespace collapsed;
- **entities extracted at ingest** (:mod:`aet.pipeline.entities`): the producer's entities
  and the cashtags of the text;
- **platform metadata kept** in ``meta`` (with ``meta["platform"]`` the source it came from);
- **keyed on the bus** by ``Message.key``: the first entity, else the message id, so a corpus
  without entities spreads over the partitions and the scorers of a group share it.

``source`` is a platform name (``rss``, ``slack``, ``discord``, ...) or a message kind
(``news`` / ``chat``); a platform :data:`PLATFORM_KINDS` does not know needs ``kind=``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import unescape
from html.parser import HTMLParser
from typing import Any

from pydantic import ValidationError

from aet.pipeline.entities import EntityExtractor
from aet.pipeline.records import (
    DEFAULT_MAX_TEXT_CHARS,
    ID_CHARS,
    Message,
    Source,
    current_limits,
    explain,
    parse_event_time,
    utcnow,
)

# What kind of message each platform carries (Message.source is "news" or "chat").
PLATFORM_KINDS: dict[str, Source] = {
    "news": "news",
    "chat": "chat",
    "rss": "news",
    "atom": "news",
    "slack": "chat",
    "discord": "chat",
    "telegram": "chat",
    "stocktwits": "chat",
}

_MARKUP = re.compile(r"<[A-Za-z/!?][^>]*>|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_SPACE = re.compile(r"\s+")
_default_extractor = EntityExtractor()


class _TextOnly(HTMLParser):
    """Collects the text of an HTML fragment: tags dropped, script/style bodies skipped, blocks spaced."""

    _SKIP = frozenset({"script", "style", "head", "title", "template"})
    _BLOCK = frozenset({"p", "br", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_markup(text: str) -> str:
    """``text`` without HTML tags and entities, whitespace collapsed; plain text only has its whitespace collapsed.

    Only text that holds something tag- or entity-like goes through the HTML parser, so a chat
    message such as ``"AAPL < 150 & falling"`` keeps its ``<`` and ``&``.
    """
    if _MARKUP.search(text):
        parser = _TextOnly()
        parser.feed(text)
        parser.close()
        text = unescape("".join(parser.parts))
    return _SPACE.sub(" ", text).strip()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", errors="surrogatepass")).hexdigest()


def message_id(source: str, channel: str, ts: str, text: str, platform_id: str | None = None) -> str:
    """The stable id of a message: ``source:platform_id``, else ``source:`` + sha256 of source, channel, time and
    text (32 hex digits, 128 bits). A platform id too long for the id column is hashed too."""
    if platform_id is not None and str(platform_id).strip():
        candidate = f"{source}:{str(platform_id).strip()}"
        return candidate if len(candidate) <= ID_CHARS else f"{source}:{_digest(candidate)[:32]}"
    return f"{source}:{_digest(source, channel, ts, text)[:32]}"


def normalize(
    *,
    source: str,
    text: str,
    ts: datetime | str | None,
    channel: str = "default",
    platform_id: str | None = None,
    entities: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    kind: Source | None = None,
    extractor: EntityExtractor | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> Message:
    """One message record from any platform (see the module docstring for what it guarantees).

    ``ts`` is the event time (ISO-8601 or a datetime; ``None``: ``now``, the arrival time, marked
    ``meta["ts_ingested"]``). ``kind`` says whether ``source`` carries news or chat when
    :data:`PLATFORM_KINDS` does not know it; ``extractor`` adds a gazetteer to the cashtags.
    Raises ``ValueError`` (a pydantic ``ValidationError``, with one error per bad field: empty text,
    unparsable or out-of-window time, unknown source, oversized meta...).
    """
    now = now or utcnow()
    source = source.strip()
    channel = channel.strip() or "default"
    clean = strip_markup(text) if isinstance(text, str) else text
    kept: dict[str, Any] = dict(meta or {})
    kept.setdefault("platform", source)
    when: Any = ts
    if ts is None or (isinstance(ts, str) and not ts.strip()):
        when = now
        kept["ts_ingested"] = True
    try:
        stamp = parse_event_time(when).isoformat()
    except ValueError:
        stamp = str(when)  # validation below refuses it with the field's error
    payload = {
        "id": message_id(source, channel, stamp, clean if isinstance(clean, str) else str(clean), platform_id),
        "source": kind or PLATFORM_KINDS.get(source.lower()) or source,
        "channel": channel,
        "text": clean,
        "ts": when,
        "entities": (extractor or _default_extractor).extract(clean, entities or ())
        if isinstance(clean, str)
        else list(entities or ()),
        "meta": kept,
    }
    return Message.model_validate(
        payload, context={"now": now, "limits": current_limits(), "max_text_chars": max_text_chars}
    )


def refusal(error: ValueError) -> str:
    """A one-line reason for a message :func:`normalize` refused (each bad field and why), for a dead letter."""
    return explain(error) if isinstance(error, ValidationError) else str(error)
