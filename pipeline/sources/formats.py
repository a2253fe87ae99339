"""Readers of the file formats the file source takes, each turning one file into drafts of messages.

- **JSONL** (one JSON object a line) and **CSV** (a header row): the columns of the normalized corpus
  format (``id``, ``text``, ``ts``, ``channel``, ``source`` = news/chat, ``entities`` or ``entity``,
  ``meta``); any other column is kept in ``meta``.
- **Slack export** (Slack's workspace export: ``users.json``, ``channels.json`` and a directory per
  channel holding one JSON array of messages per day, ``general/2026-03-02.json``): the channel is the
  directory's name, the platform id ``channel/ts``, mentions and links (``<@U024BE7LH>``,
  ``<https://x|label>``) turned into text; joins, leaves and topic changes are not messages.
- **Discord export** (DiscordChatExporter's JSON: ``guild``, ``channel`` and ``messages``): the platform id
  is the message's snowflake; pins, joins and other system messages are not messages.

A reader yields, for each record of the file in order, a :class:`Draft` (the arguments of
:func:`~aet.pipeline.ingest.normalize`), a :class:`Refused` (a record that cannot be one, with
the reason: it becomes a dead letter) or ``None`` (a record that is not a message, such as a
channel join). Positions in a file count records, so a restart resumes at the same record.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aet.pipeline.ingest import normalize
from aet.pipeline.records import Message, Source

MESSAGE_FIELDS = {"id", "text", "source", "channel", "ts", "entities", "entity", "meta"}


@dataclass(frozen=True)
class Draft:
    """One message as a file gives it, before :func:`~aet.pipeline.ingest.normalize`."""

    text: str
    ts: datetime | str | None
    channel: str = "default"
    platform_id: str | None = None
    entities: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    kind: Source | None = None
    raw: bytes = b""

    def message(self, source: str, default_kind: Source, max_text_chars: int, **meta: Any) -> Message:
        """The message record of this draft from ``source`` (``meta`` added to the draft's); raises ValueError."""
        return normalize(
            source=source,
            kind=self.kind or default_kind,
            text=self.text,
            ts=self.ts,
            channel=self.channel,
            platform_id=self.platform_id,
            entities=self.entities,
            meta={**self.meta, **meta},
            max_text_chars=max_text_chars,
        )


@dataclass(frozen=True)
class Refused:
    """A record of a file that cannot be a message, and why."""

    reason: str
    raw: bytes


Record = Draft | Refused | None


def _entities(row: Mapping[str, Any]) -> list[str] | str:
    given = row.get("entities")
    if isinstance(given, str):
        return [e for e in (x.strip() for x in given.split(",")) if e]
    if isinstance(given, list):
        return given
    if given not in (None, ""):
        return f"entities must be a list or a comma-separated string, not {type(given).__name__}"
    single = row.get("entity")
    if isinstance(single, list):
        return [str(e) for e in single]
    return [str(single)] if single not in (None, "") else []


def row_draft(row: Mapping[str, Any], raw: bytes, where: str) -> Draft | Refused:
    """A corpus row (JSONL object or CSV row) as a draft; extra columns go to ``meta``."""
    text = row.get("text")
    if not isinstance(text, str):
        return Refused(f"{where}: text must be a string, got {type(text).__name__}", raw)
    entities = _entities(row)
    if isinstance(entities, str):
        return Refused(f"{where}: {entities}", raw)
    given_meta = row.get("meta")
    if given_meta not in (None, "") and not isinstance(given_meta, dict):
        return Refused(f"{where}: meta must be an object", raw)
    meta = dict(given_meta or {})
    meta.update({k: v for k, v in row.items() if k not in MESSAGE_FIELDS and v not in (None, "")})
    kind = row.get("source")
    ident = row.get("id")
    return Draft(
        text=text,
        ts=row.get("ts") if isinstance(row.get("ts"), str) else None,
        channel=str(row.get("channel") or row.get("corpus") or "default"),
        platform_id=str(ident) if ident not in (None, "") else None,
        entities=[str(e) for e in entities],
        meta=meta,
        kind=kind if kind in ("news", "chat") else None,
        raw=raw,
    )


def jsonl_records(path: Path) -> Iterator[Record]:
    """Each non-blank line of a JSONL file (blank lines are records too, so positions stay line-based: ``None``)."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            raw = line.strip()
            if not raw:
                yield None
                continue
            where = f"{path.name} line {n}"
            try:
                data = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield Refused(f"{where}: not JSON: {exc}", raw)
                continue
            if not isinstance(data, dict):
                yield Refused(f"{where}: not a JSON object", raw)
                continue
            yield row_draft(data, raw, where)


def csv_records(path: Path) -> Iterator[Record]:
    """Each row of a CSV file with a header (UTF-8; a file that is not is one refused record)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield Refused(f"{path.name}: not valid UTF-8 (byte {exc.start})", b"")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        raw = json.dumps(row, ensure_ascii=False).encode()
        if None in row:
            yield Refused(f"{path.name} line {reader.line_num}: more fields than the header names", raw)
            continue
        yield row_draft(row, raw, f"{path.name} line {reader.line_num}")


# -- Slack export

SLACK_SKIPPED = {
    "channel_join",
    "channel_leave",
    "channel_topic",
    "channel_purpose",
    "channel_name",
    "channel_archive",
    "channel_unarchive",
    "group_join",
    "group_leave",
    "pinned_item",
    "bot_add",
    "bot_remove",
}
_SLACK_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def slack_users(export_root: Path) -> dict[str, str]:
    """User id -> display name from an export's ``users.json`` (empty when there is none)."""
    try:
        users = json.loads((export_root / "users.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    names = {}
    for u in users if isinstance(users, list) else ():
        if isinstance(u, dict) and u.get("id"):
            profile = u.get("profile") or {}
            names[u["id"]] = profile.get("display_name") or u.get("real_name") or u.get("name") or u["id"]
    return names


def slack_text(text: str, users: Mapping[str, str]) -> str:
    """Slack's mrkdwn references as plain text: ``<@U1>`` -> ``@name``, ``<#C1|general>`` -> ``#general``,
    ``<!here>`` -> ``@here``, ``<https://x|label>`` -> ``label``, ``<https://x>`` -> ``https://x``."""

    def plain(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("@"):
            return "@" + (label or users.get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        return label or target

    return _SLACK_LINK.sub(plain, text)


def slack_day_records(path: Path, users: Mapping[str, str]) -> Iterator[Record]:
    """The messages of one day file of a Slack export (``CHANNEL/YYYY-MM-DD.json``)."""
    channel = path.parent.name
    try:
        day = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield Refused(f"{channel}/{path.name}: not JSON: {exc}", b"")
        return
    if not isinstance(day, list):
        yield Refused(f"{channel}/{path.name}: a Slack export day file is a JSON array", b"")
        return
    for n, msg in enumerate(day):
        raw = json.dumps(msg, ensure_ascii=False).encode()
        where = f"{channel}/{path.name} message {n}"
        if not isinstance(msg, dict):
            yield Refused(f"{where}: not a JSON object", raw)
            continue
        if msg.get("type") != "message" or msg.get("subtype") in SLACK_SKIPPED:
            yield None
            continue
        ts = msg.get("ts")
        try:
            when = datetime.fromtimestamp(float(str(ts)), UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            yield Refused(f"{where}: ts {ts!r} is not a Slack timestamp", raw)
            continue
        text = slack_text(str(msg.get("text") or ""), users)
        if not text.strip():  # a file share or an attachment without text: nothing to score
            yield None
            continue
        user = msg.get("user") or msg.get("bot_id")
        meta: dict[str, Any] = {
            "platform": "slack",
            "user": user,
            "user_name": users.get(str(user)) or msg.get("username"),
        }
        for key in ("thread_ts", "reply_count", "subtype", "client_msg_id"):
            if msg.get(key) not in (None, ""):
                meta[key] = msg[key]
        reactions = [
            {"name": r.get("name"), "count": r.get("count")} for r in msg.get("reactions") or () if isinstance(r, dict)
        ]
        if reactions:
            meta["reactions"] = reactions[:20]
        yield Draft(
            text=text,
            ts=when,
            channel=channel,
            platform_id=f"{channel}/{ts}",
            meta={k: v for k, v in meta.items() if v is not None},
            kind="chat",
            raw=raw,
        )


# -- Discord export (DiscordChatExporter JSON)

DISCORD_MESSAGE_TYPES = {"Default", "Reply"}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def discord_records(path: Path) -> Iterator[Record]:
    """The messages of a DiscordChatExporter JSON export of one channel."""
    try:
        export = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield Refused(f"{path.name}: not JSON: {exc}", b"")
        return
    if not isinstance(export, dict) or not isinstance(export.get("messages"), list):
        yield Refused(f"{path.name}: a DiscordChatExporter export is an object with a 'messages' array", b"")
        return
    guild, chan = _object(export.get("guild")), _object(export.get("channel"))
    channel = str(chan.get("name") or chan.get("id") or path.stem)
    for n, msg in enumerate(export["messages"]):
        raw = json.dumps(msg, ensure_ascii=False).encode()
        where = f"{path.name} message {n}"
        if not isinstance(msg, dict) or not msg.get("id"):
            yield Refused(f"{where}: a message is an object with an id", raw)
            continue
        if msg.get("type", "Default") not in DISCORD_MESSAGE_TYPES or not str(msg.get("content") or "").strip():
            yield None
            continue
        author = _object(msg.get("author"))
        meta: dict[str, Any] = {
            "platform": "discord",
            "guild": guild.get("name"),
            "channel_id": chan.get("id"),
            "author": author.get("nickname") or author.get("name"),
            "author_id": author.get("id"),
            "is_bot": author.get("isBot"),
        }
        reference = msg.get("reference")
        if isinstance(reference, dict) and reference.get("messageId"):
            meta["reply_to"] = reference["messageId"]
        reactions = [
            {"emoji": (r.get("emoji") or {}).get("name"), "count": r.get("count")}
            for r in msg.get("reactions") or ()
            if isinstance(r, dict)
        ]
        if reactions:
            meta["reactions"] = reactions[:20]
        yield Draft(
            text=str(msg["content"]),
            ts=msg.get("timestamp") if isinstance(msg.get("timestamp"), str) else None,
            channel=channel,
            platform_id=str(msg["id"]),
            meta={k: v for k, v in meta.items() if v is not None},
            kind="chat",
            raw=raw,
        )
