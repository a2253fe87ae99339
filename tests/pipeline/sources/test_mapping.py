"""The declared field mapping of a foreign topic: JSONPaths to the message's fields, and clear refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from aet.pipeline.config import FieldMapping
from aet.pipeline.sources.formats import Draft, Refused
from aet.pipeline.sources.mapping import FieldMapper, MappingError

VENDOR = FieldMapping(
    id="$.story.uid",
    text="$.story.headline",
    ts="$.story.published_ms",
    channel="$.desk",
    entities="$.story.instruments[*].ticker",
    meta={"vendor_score": "$.analytics.score", "lang": "$.story.lang"},
)


def record(**story: object) -> bytes:
    base = {
        "uid": "NX-2026-000117",
        "headline": "<b>Acme</b> raises dividend",
        "published_ms": 1772456400000,
        "instruments": [{"ticker": "$ACME"}, {"ticker": "ACME.N"}],
        "lang": "en",
    }
    return json.dumps({"desk": "equities", "story": {**base, **story}, "analytics": {"score": 0.4}}).encode()


def test_a_vendor_record_becomes_a_draft() -> None:
    draft = FieldMapper(VENDOR).draft(record())
    assert isinstance(draft, Draft)
    assert draft.platform_id == "NX-2026-000117" and draft.text == "<b>Acme</b> raises dividend"
    assert draft.ts == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # epoch milliseconds
    assert draft.channel == "equities" and draft.entities == ["$ACME", "ACME.N"]
    assert draft.meta == {"vendor_score": 0.4, "lang": "en"}


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1772456400, datetime(2026, 3, 2, 13, 0, tzinfo=UTC)),
        (1772456400.5, datetime(2026, 3, 2, 13, 0, 0, 500000, tzinfo=UTC)),
        ("2026-03-02T13:00:00Z", "2026-03-02T13:00:00Z"),
    ],
)
def test_times_in_seconds_milliseconds_or_iso(ts: object, expected: object) -> None:
    draft = FieldMapper(VENDOR).draft(record(published_ms=ts))
    assert isinstance(draft, Draft) and draft.ts == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "tombstone"),
        (record(headline=None), "mapping.text '$.story.headline' matched nothing"),
        (json.dumps({"story": {"title": "x"}}).encode(), "matched nothing"),
        (record(headline=["a", "b"]), "is a list, not a string"),
        (record(uid={"n": 1}), "mapping.id '$.story.uid' is a dict"),
        (record(published_ms=True), "mapping.ts"),
        (record(published_ms=[1]), "mapping.ts"),
        (record(published_ms=1e300), "out of range"),
        (record(instruments=[{"ticker": 7}]), "entities are strings"),
    ],
)
def test_records_the_mapping_cannot_read_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    refused = FieldMapper(VENDOR).draft(raw)
    assert isinstance(refused, Refused) and reason in refused.reason


def test_a_bad_path_is_a_configuration_error() -> None:
    with pytest.raises(MappingError, match=r"mapping.text: '\$\.\[\[' is not a JSONPath"):
        FieldMapper(FieldMapping(text="$.[["))
