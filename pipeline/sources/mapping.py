"""A declared field mapping: where a foreign JSON record keeps each field of a message (JSONPath, jsonpath-ng).

``text`` is required; ``id``, ``ts``, ``channel``, ``entities``, ``source`` and ``meta`` entries are
optional. A path that matches several values takes the first, except ``entities`` (every match; a
list is flattened). A time is ISO-8601 or epoch seconds (milliseconds when above 10^11, as Kafka
producers often write them). A record the mapping cannot read (not JSON, not an object, no text,
a field of the wrong type) is refused with a reason naming the path.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as parse_path

from aet.pipeline.config import FieldMapping
from aet.pipeline.sources.formats import Draft, Refused

EPOCH_MS_ABOVE = 1e11  # 1e11 s is the year 5138; as milliseconds it is 1973


class MappingError(ValueError):
    """A field mapping whose paths do not parse (a configuration error, raised at startup)."""


def _compile(field: str, path: str) -> JSONPath:
    try:
        return parse_path(path)
    except JSONPathError as exc:
        raise MappingError(f"mapping.{field}: {path!r} is not a JSONPath: {exc}") from exc


def _time(value: Any) -> datetime | str:
    if isinstance(value, bool):
        raise ValueError(f"a time is ISO-8601 or epoch seconds, not {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"a time is a finite number, not {value!r}")
        seconds = value / 1000 if abs(value) >= EPOCH_MS_ABOVE else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch time {value!r} is out of range") from exc
    if isinstance(value, str):
        return value
    raise ValueError(f"a time is ISO-8601 or epoch seconds, not {type(value).__name__}")


class FieldMapper:
    """Reads foreign records into drafts of messages with one compiled :class:`FieldMapping`."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self.paths: dict[str, JSONPath] = {}
        for field in ("text", "id", "ts", "channel", "entities", "source"):
            path = getattr(mapping, field)
            if path is not None:
                self.paths[field] = _compile(field, path)
        self.meta = {key: _compile(f"meta.{key}", path) for key, path in mapping.meta.items()}

    def _first(self, field: str, data: Any) -> Any:
        path = self.paths.get(field)
        if path is None:
            return None
        found = path.find(data)
        return found[0].value if found else None

    def draft(self, raw: bytes | None) -> Draft | Refused:
        """The draft of one record's value, or why the mapping cannot read it."""
        if raw is None:
            return Refused("no value (a tombstone)", b"")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return Refused(f"not JSON: {exc}", raw)
        if not isinstance(data, dict):
            return Refused(f"not a JSON object: got {type(data).__name__}", raw)
        text = self._first("text", data)
        if text is None:
            return Refused(f"mapping.text {self.mapping.text!r} matched nothing", raw)
        if not isinstance(text, str):
            return Refused(f"mapping.text {self.mapping.text!r} is a {type(text).__name__}, not a string", raw)
        ident = self._first("id", data)
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int))):
            return Refused(f"mapping.id {self.mapping.id!r} is a {type(ident).__name__}, not a string", raw)
        when = self._first("ts", data)
        try:
            ts = _time(when) if when is not None else None
        except ValueError as exc:
            return Refused(f"mapping.ts {self.mapping.ts!r}: {exc}", raw)
        channel = self._first("channel", data)
        if channel is not None and not isinstance(channel, (str, int)):
            return Refused(f"mapping.channel {self.mapping.channel!r} is a {type(channel).__name__}", raw)
        entities: list[str] = []
        if "entities" in self.paths:
            for match in self.paths["entities"].find(data):
                values = match.value if isinstance(match.value, list) else [match.value]
                if not all(isinstance(v, str) for v in values):
                    return Refused(f"mapping.entities {self.mapping.entities!r}: entities are strings", raw)
                entities += values
        kind = self._first("source", data)
        meta = {}
        for key, path in self.meta.items():
            found = path.find(data)
            if found:
                meta[key] = found[0].value
        return Draft(
            text=text,
            ts=ts,
            channel=str(channel) if channel not in (None, "") else "default",
            platform_id=str(ident) if ident not in (None, "") else None,
            entities=entities,
            meta=meta,
            kind=kind if kind in ("news", "chat") else None,
            raw=raw,
        )
