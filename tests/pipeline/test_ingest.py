"""The shared ingest contract: stable ids, markup stripped, entities at ingest, field errors, the bus key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from aet.pipeline.entities import EntityExtractor, Gazetteer
from aet.pipeline.ingest import message_id, normalize, strip_markup

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def test_platform_id_prefixed_by_source_and_metadata_kept() -> None:
    m = normalize(
        source="slack",
        platform_id="C024BE91L/1712345678.000200",
        channel="markets",
        text="$tsla up 4% premarket",
        ts="2026-03-02T14:31:00Z",
        meta={"user": "U123", "team": "T9"},
        now=NOW,
    )
    assert m.id == "slack:C024BE91L/1712345678.000200"
    assert m.source == "chat" and m.channel == "markets"
    assert m.entities == ["$TSLA"]
    assert m.meta == {"user": "U123", "team": "T9", "platform": "slack"}
    assert m.ts == datetime(2026, 3, 2, 14, 31, tzinfo=UTC)


def test_hash_id_is_stable_and_depends_on_source_channel_time_and_text() -> None:
    base = {"source": "rss", "channel": "reuters", "text": "Apple beats estimates", "ts": "2026-03-02T14:00:00Z"}
    one = normalize(**base, now=NOW)
    assert one.id == normalize(**base, now=NOW).id  # same item polled again: same id
    assert one.id.startswith("rss:") and len(one.id) == len("rss:") + 32
    assert one.id == message_id("rss", "reuters", "2026-03-02T14:00:00+00:00", "Apple beats estimates")
    # The same time written another way is the same event.
    assert normalize(**{**base, "ts": "2026-03-02T15:00:00+01:00"}, now=NOW).id == one.id
    for change in ({"source": "atom"}, {"channel": "ft"}, {"ts": "2026-03-02T14:00:01Z"}, {"text": "Apple misses"}):
        assert normalize(**{**base, **change}, now=NOW).id != one.id, change


def test_markup_stripped_before_the_id_and_entities() -> None:
    html = "<p>Shares of <b>$NVDA</b> &amp; $amd rose&nbsp;3%</p><script>track()</script><br/>More"
    m = normalize(source="rss", text=html, ts="2026-03-02T14:00:00Z", now=NOW)
    assert m.text == "Shares of $NVDA & $amd rose 3% More"
    assert m.entities == ["$NVDA", "$AMD"]
    assert m.id == normalize(source="rss", text=m.text, ts="2026-03-02T14:00:00Z", now=NOW).id


def test_plain_text_with_angle_brackets_is_kept() -> None:
    assert strip_markup("AAPL < 150 & falling,  RSI >70") == "AAPL < 150 & falling, RSI >70"


def test_given_entities_and_gazetteer() -> None:
    extractor = EntityExtractor(Gazetteer([{"id": "$AAPL", "names": ["Apple Inc"]}]))
    m = normalize(
        source="news",
        text="Apple Inc said $MSFT deal",
        ts=None,
        entities=["XYZ"],
        extractor=extractor,
        now=NOW,
    )
    assert m.entities == ["XYZ", "$MSFT", "$AAPL"]
    assert m.ts == NOW and m.meta["ts_ingested"] is True


def test_unknown_platform_needs_a_kind() -> None:
    with pytest.raises(ValidationError) as err:
        normalize(source="vendorx", text="hello", ts="2026-03-02T14:00:00Z", now=NOW)
    assert err.value.errors()[0]["loc"] == ("source",)
    m = normalize(source="vendorx", kind="news", text="hello", ts="2026-03-02T14:00:00Z", now=NOW)
    assert m.source == "news" and m.id.startswith("vendorx:")


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("text", {"text": "  <p> </p> "}),
        ("ts", {"ts": "yesterday"}),
        ("ts", {"ts": "2027-03-02T14:00:00Z"}),  # beyond limits.max_future_s
        ("meta", {"meta": {"blob": "x" * 20000}}),
    ],
)
def test_bad_fields_are_field_errors(field: str, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"source": "chat", "text": "fine", "ts": "2026-03-02T14:00:00Z", **kwargs}
    with pytest.raises(ValueError) as err:
        normalize(**args, now=NOW)  # type: ignore[arg-type]
    assert isinstance(err.value, ValidationError)
    assert [e["loc"][0] for e in err.value.errors()] == [field]


def test_overlong_platform_id_is_hashed_into_the_column() -> None:
    m = normalize(source="kafka", kind="news", platform_id="x" * 400, text="t", ts="2026-03-02T14:00:00Z", now=NOW)
    assert m.id.startswith("kafka:") and len(m.id) == len("kafka:") + 32


def test_the_partition_key_is_first_entity_else_id() -> None:
    with_entity = normalize(source="chat", text="$GME to the moon", ts="2026-03-02T14:00:00Z", now=NOW)
    without = normalize(source="chat", text="to the moon", ts="2026-03-02T14:00:00Z", now=NOW)
    assert with_entity.key == "$GME"
    assert without.key == without.id
