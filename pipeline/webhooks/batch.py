"""What a webhook parser returns, and how it refuses a payload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aet.pipeline.records import ID_CHARS, Message


@dataclass
class WebhookBatch:
    """One webhook request: its event ids, each with the messages it carries (none for an event that is no
    message, such as an edit or a join), or a ``reply`` to send back as is (a handshake)."""

    platform: str
    events: dict[str, list[Message]] = field(default_factory=dict)
    reply: dict[str, Any] | None = None


class WebhookRefused(ValueError):
    """A payload that cannot be read; ``errors`` lists each problem as ``{loc, msg}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def refuse(loc: str, msg: str) -> WebhookRefused:
    return WebhookRefused([{"loc": loc.split("."), "msg": msg}])


def field_of(obj: Any, path: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    """``obj``'s value at the dotted ``path`` if it is a ``kind``; else None, or a refusal when required."""
    value = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        value = None
    if value is None or not isinstance(value, kind):
        if required:
            raise refuse(path, "missing" if value is None else f"not a {getattr(kind, '__name__', kind)}")
        return None
    return value


def obj_of(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``obj[key]`` when it is a JSON object, else an empty one (optional sub-objects: author, user, chat)."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def event_id(value: Any, path: str) -> str:
    text = str(value)
    if not text or len(text) > ID_CHARS:
        raise refuse(path, "empty or too long")
    return text


def epoch(value: Any, path: str) -> datetime:
    """A Unix time (seconds, a number or a string such as Slack's ``"1712000000.000100"``) as a UTC datetime."""
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise refuse(path, f"not a Unix time: {str(value)[:40]!r}") from None


def normalized(make: Callable[[], Message], where: str) -> Message:
    """Run the ingest contract; its field errors become the payload's refusal, located under ``where``."""
    try:
        return make()
    except WebhookRefused:
        raise
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise WebhookRefused(
            [{"loc": [where, *map(str, e["loc"])], "msg": e["msg"].removeprefix("Value error, ")} for e in errors]
        ) from None
    except ValueError as exc:
        raise refuse(where, str(exc)) from None
