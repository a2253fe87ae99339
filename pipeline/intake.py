"""The HTTP ingest API's half in the pipeline: JSON bodies into message records, published with acknowledgement.

A body is one message object, a JSON array of them, or ``{"messages": [...]}``.
Each is checked against :class:`MessageIn` (unknown fields refused, so a typo is an
error, not a silently dropped field), then made a record by the ingest contract
(:func:`aet.pipeline.ingest.normalize`: stable id, markup stripped, entities,
platform metadata). Every message of the batch is checked before any is returned:
one bad message refuses the whole batch, with one error per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aet.pipeline.config import TopicSettings
from aet.pipeline.ingest import normalize
from aet.pipeline.ports import Publisher
from aet.pipeline.records import DEFAULT_MAX_TEXT_CHARS, ID_CHARS, Message


class MessageIn(BaseModel):
    """One message as POSTed to ``/v1/messages``."""

    model_config = ConfigDict(extra="forbid", title="MessageIn")

    text: str = Field(description="the message text (HTML markup is stripped)")
    source: str = Field(
        min_length=1, max_length=64, description="platform (rss, slack, discord, telegram, stocktwits) or news / chat"
    )
    kind: Literal["news", "chat"] | None = Field(
        default=None, description="news or chat, for a source AET does not know"
    )
    id: str | None = Field(
        default=None, max_length=ID_CHARS, description="the platform's own id (else one is derived from the content)"
    )
    ts: str | None = Field(default=None, description="event time, ISO-8601 (default: arrival time)")
    channel: str = Field(default="default", max_length=ID_CHARS)
    entities: list[str] | None = Field(default=None, description="entities you know of ($AAPL); cashtags are added")
    url: str | None = Field(default=None, max_length=2048, description="a link to the message, kept in meta.url")
    meta: dict[str, Any] | None = Field(default=None, description="platform metadata, kept as is")


class IntakeRefused(ValueError):
    """A body that cannot become messages; ``errors`` lists every problem as ``{index, loc, msg}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


def _errors(exc: ValidationError, index: int | None) -> list[dict[str, Any]]:
    out = []
    for item in exc.errors(include_url=False):
        entry: dict[str, Any] = {"loc": [str(p) for p in item["loc"]], "msg": item["msg"].removeprefix("Value error, ")}
        if index is not None:
            entry["index"] = index
        out.append(entry)
    return out


class MessageIntake:
    """Parses ingest bodies with the ingest contract and publishes them to the messages topic."""

    def __init__(
        self,
        bus: Publisher,
        topics: TopicSettings,
        *,
        max_batch: int = 1000,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ) -> None:
        self.bus, self.topic = bus, topics.messages
        self.max_batch, self.max_text_chars = max_batch, max_text_chars

    def parse(self, payload: Any) -> list[Message]:
        """Every message of ``payload``, or :class:`IntakeRefused` with all the errors of the batch."""
        batch = isinstance(payload, list) or (isinstance(payload, dict) and set(payload) == {"messages"})
        items = payload if isinstance(payload, list) else payload["messages"] if batch else [payload]
        if not isinstance(items, list):
            raise IntakeRefused([{"loc": ["messages"], "msg": "must be a JSON array"}])
        if not items:
            raise IntakeRefused([{"loc": ["messages"], "msg": "no messages"}])
        if len(items) > self.max_batch:
            raise IntakeRefused([{"loc": ["messages"], "msg": f"{len(items)} messages, over {self.max_batch}"}])
        errors: list[dict[str, Any]] = []
        messages: list[Message] = []
        for i, item in enumerate(items):
            where = i if batch else None
            try:
                given = MessageIn.model_validate(item)
                meta = dict(given.meta or {})
                if given.url:
                    meta["url"] = given.url
                messages.append(
                    normalize(
                        source=given.source,
                        text=given.text,
                        ts=given.ts,
                        channel=given.channel,
                        platform_id=given.id,
                        entities=given.entities,
                        meta=meta,
                        kind=given.kind,
                        max_text_chars=self.max_text_chars,
                    )
                )
            except ValidationError as exc:
                errors += _errors(exc, where)
            except ValueError as exc:  # the contract may refuse without a pydantic error (e.g. an unknown source)
                errors.append({"loc": [], "msg": str(exc), **({"index": where} if where is not None else {})})
        if errors:
            raise IntakeRefused(errors)
        return messages

    def publish(self, messages: Sequence[Message], timeout_s: float) -> None:
        """Publish every message by its ``key``, then wait for the bus's acknowledgement (``BusError``)."""
        for m in messages:
            self.bus.publish(self.topic, m.to_bytes(), key=m.key)
        self.bus.flush(timeout_s)

    def request_schema(self) -> dict[str, Any]:
        """The body's JSON schema: one :class:`MessageIn`, an array of them, or ``{"messages": [...]}``."""
        one = MessageIn.model_json_schema(ref_template="#/components/schemas/{model}")
        many = {"type": "array", "items": {"$ref": "#/components/schemas/MessageIn"}, "maxItems": self.max_batch}
        return {
            "oneOf": [
                {"$ref": "#/components/schemas/MessageIn"},
                many,
                {"type": "object", "properties": {"messages": many}, "required": ["messages"]},
            ],
            "$defs": {"MessageIn": one},
        }
