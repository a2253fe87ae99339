"""Records: wire round trips, time normalisation, and a reason for every refused input."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

import aet.pipeline.records as records_mod
from aet.pipeline.config import LimitsSettings
from aet.pipeline.records import (
    DEFAULT_MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    Alert,
    BadRecord,
    ControlEvent,
    DeadLetter,
    LabelRecord,
    Message,
    Probs,
    RetrainRequest,
    ScoredMessage,
    decode,
    parse_event_time,
)

UTC = UTC


def valid(**fields: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "id": "m1",
        "source": "news",
        "channel": "wire",
        "text": "Acme beats estimates",
        "ts": "2026-03-02T13:31:28+00:00",
        "entities": ["$ACME"],
        "meta": {"corpus": "x"},
    }
    payload.update(fields)
    return payload


def reason_of(raw: bytes | str | dict, model: type = Message, **context: object) -> str:
    with pytest.raises(BadRecord) as info:
        decode(model, raw, **context)
    assert info.value.reason == str(info.value)
    return info.value.reason


# -- round trips -------------------------------------------------------------


def test_message_round_trips_through_bytes() -> None:
    m = decode(Message, json.dumps(valid()).encode())
    assert m.id == "m1" and m.source == "news" and m.entities == ["$ACME"] and m.meta == {"corpus": "x"}
    assert m.ts == datetime(2026, 3, 2, 13, 31, 28, tzinfo=UTC)
    wire = m.to_bytes()
    assert isinstance(wire, bytes)
    assert json.loads(wire)["schema_version"] == SCHEMA_VERSION
    assert decode(Message, wire) == m
    assert decode(Message, wire.decode("utf-8")) == m


def test_defaults_and_key() -> None:
    m = decode(Message, {"id": "x", "source": "chat", "text": "hi", "ts": "2026-01-01T00:00:00Z"})
    assert m.channel == "default" and m.entities == [] and m.meta == {}
    assert m.key == "x"  # no entity: the id, so messages without entities spread over the partitions
    assert decode(Message, valid(entities=["$B", "$C"])).key == "$B"


def test_scored_message_round_trips_and_names_model_version() -> None:
    m = decode(Message, valid())
    s = ScoredMessage(
        **m.model_dump(),
        label="positive",
        probs=Probs(negative=0.1, neutral=0.2, positive=0.7),
        score=0.6,
        model_version="v0007",
    )
    back = decode(ScoredMessage, s.to_bytes())
    assert back == s
    assert back.model_version == "v0007"
    assert back.scored_at.tzinfo is not None
    with pytest.raises(BadRecord, match="model_version: missing field"):
        decode(ScoredMessage, {k: v for k, v in json.loads(s.to_bytes()).items() if k != "model_version"})


def test_label_record_round_trip() -> None:
    rec = decode(LabelRecord, {"message_id": "m1", "label": "neutral", "ts": "2026-03-02", "annotator": "ana"})
    assert rec.ts == datetime(2026, 3, 2, tzinfo=UTC)
    assert decode(LabelRecord, rec.to_bytes()) == rec


# -- time normalisation ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2020-03-16", datetime(2020, 3, 16, tzinfo=UTC)),
        ("2020-03-16T09:30:00", datetime(2020, 3, 16, 9, 30, tzinfo=UTC)),
        ("2020-03-16T09:30:00Z", datetime(2020, 3, 16, 9, 30, tzinfo=UTC)),
        ("2020-03-16T09:30:00+02:00", datetime(2020, 3, 16, 7, 30, tzinfo=UTC)),
        ("  2020-03-16T09:30:00.250-05:00 ", datetime(2020, 3, 16, 14, 30, 0, 250000, tzinfo=UTC)),
        (date(2020, 3, 16), datetime(2020, 3, 16, tzinfo=UTC)),
        (datetime(2020, 3, 16, 9, 30), datetime(2020, 3, 16, 9, 30, tzinfo=UTC)),
    ],
)
def test_event_times_become_aware_utc(given: object, expected: datetime) -> None:
    parsed = parse_event_time(given)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    m = decode(Message, valid(ts=given))
    assert m.ts == expected and m.ts.utcoffset() == timedelta(0)


def test_naive_timestamp_survives_the_wire_as_utc() -> None:
    m = decode(Message, json.dumps(valid(ts="2020-03-16T09:30:00")).encode())
    wire = json.loads(m.to_bytes())
    assert wire["ts"] in ("2020-03-16T09:30:00Z", "2020-03-16T09:30:00+00:00")


# -- refused inputs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\xfa garbage", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object: got list"),
        (b'"just a string"', "not a JSON object: got str"),
        (b"42", "not a JSON object: got int"),
        (b"null", "not a JSON object: got NoneType"),
    ],
)
def test_non_objects_are_bad_records(raw: bytes, needle: str) -> None:
    assert needle in reason_of(raw)


@pytest.mark.parametrize("field", ["id", "source", "text", "ts"])
def test_missing_field_is_named(field: str) -> None:
    payload = valid()
    del payload[field]
    assert reason_of(json.dumps(payload)) == f"{field}: missing field"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("text", 42, "text: Input should be a valid string"),
        ("text", ["a"], "text: Input should be a valid string"),
        ("entities", "$ACME", "entities: Input should be a valid list"),
        ("entities", [1], "entities.0: Input should be a valid string"),
        ("id", 7, "id: Input should be a valid string"),
        ("source", "blog", "source: Input should be 'news' or 'chat'"),
        ("meta", "oops", "meta: Input should be a valid dictionary"),
        ("id", "", "id: String should have at least 1 character"),
    ],
)
def test_wrong_typed_field_is_named(field: str, value: object, needle: str) -> None:
    assert needle in reason_of(json.dumps(valid(**{field: value})))


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n", "\u3000"])
def test_empty_or_whitespace_text(text: str) -> None:
    assert reason_of(valid(text=text)) == "text: text is empty"


def test_text_over_configured_limit() -> None:
    assert decode(Message, valid(text="x" * 10), max_text_chars=10).text == "x" * 10
    reason = reason_of(valid(text="x" * 11), max_text_chars=10)
    assert reason == "text: text has 11 characters, over the limit of 10"
    # Without a context the default limit applies.
    decode(Message, valid(text="x" * DEFAULT_MAX_TEXT_CHARS))
    assert "over the limit of 5000" in reason_of(valid(text="x" * (DEFAULT_MAX_TEXT_CHARS + 1)))


@pytest.mark.parametrize("ts", ["yesterday", "2020-13-01", "16/03/2020", "", 1584316800, None, ["2020-01-01"]])
def test_unparsable_timestamp(ts: object) -> None:
    reason = reason_of(json.dumps(valid(ts=ts)))
    assert reason.startswith("ts: unparsable timestamp"), reason


def test_several_problems_are_all_reported() -> None:
    reason = reason_of(json.dumps({"id": "m", "source": "news", "text": " ", "ts": "nope"}))
    assert "text: text is empty" in reason and "ts: unparsable timestamp" in reason


@pytest.mark.parametrize("label", ["bullish", "Positive", "", 1, None])
def test_unknown_label_in_label_record(label: object) -> None:
    reason = reason_of(json.dumps({"message_id": "m1", "label": label}), LabelRecord)
    assert reason.startswith("label: Input should be 'negative', 'neutral' or 'positive'"), reason


def test_label_record_requires_message_id() -> None:
    assert reason_of({"label": "neutral"}, LabelRecord) == "message_id: missing field"


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unsupported_schema_version(version: int) -> None:
    reason = reason_of(json.dumps(valid(schema_version=version)))
    assert reason == f"schema_version: unsupported schema_version {version} (this build reads {SCHEMA_VERSION})"
    assert "unsupported schema_version" in reason_of(
        {"message_id": "m", "label": "neutral", "schema_version": version}, LabelRecord
    )


def test_current_schema_version_accepted_and_unknown_fields_ignored() -> None:
    m = decode(Message, valid(schema_version=SCHEMA_VERSION, surprise="extra"))
    assert m.schema_version == SCHEMA_VERSION
    assert "surprise" not in json.loads(m.to_bytes())


def test_alert_window_must_be_ordered() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, Any] = {
        "id": "a",
        "entity": "$A",
        "kind": "negative_surge",
        "counts": {},
        "shares": {},
        "baseline": {},
        "z": 3.0,
        "severity": "warning",
        "model_version": "v1",
    }
    assert Alert(window_start=t, window_end=t + timedelta(minutes=5), **base).window_end > t
    reason = reason_of({**base, "window_start": t.isoformat(), "window_end": (t - timedelta(1)).isoformat()}, Alert)
    assert "window_end is before window_start" in reason


# -- dead letters --------------------------------------------------------------


def test_dead_letter_keeps_non_utf8_bytes_exactly() -> None:
    raw = b'\xff\x00{"id": \xc3\x28}\x80 tail'
    dl = DeadLetter.of(raw, stage="score", reason="not JSON", topic="aet.messages", partition=2, offset=41, key="k")
    assert dl.raw is None
    assert base64.b64decode(dl.raw_base64) == raw
    back = decode(DeadLetter, dl.to_bytes())
    assert base64.b64decode(back.raw_base64) == raw
    assert (back.stage, back.reason, back.topic, back.partition, back.offset, back.key) == (
        "score",
        "not JSON",
        "aet.messages",
        2,
        41,
        "k",
    )


def test_dead_letter_keeps_utf8_text_as_text() -> None:
    raw = "{ not json — but ünïcode".encode()
    dl = DeadLetter.of(raw, stage="replay", reason="why")
    assert dl.raw == raw.decode("utf-8") and dl.raw_base64 is None
    assert decode(DeadLetter, dl.to_bytes()).raw.encode("utf-8") == raw


@given(st.binary(max_size=200))
def test_dead_letter_never_loses_bytes(raw: bytes) -> None:
    dl = decode(DeadLetter, DeadLetter.of(raw, stage="s", reason="r").to_bytes())
    restored = dl.raw.encode("utf-8") if dl.raw is not None else base64.b64decode(dl.raw_base64)
    assert restored == raw


# -- property: any valid message round-trips -----------------------------------

WIDE_WINDOW = LimitsSettings(max_past_days=200 * 366, max_future_s=200 * 366 * 86400.0)
STORABLE = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))  # what a column can hold

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(STORABLE, max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(STORABLE, max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
datetimes = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets),
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1)),  # naive: taken as UTC
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[dict[str, object], datetime]:
    ts = draw(datetimes)
    payload = {
        "id": draw(st.text(STORABLE, min_size=1, max_size=40)),
        "source": draw(st.sampled_from(["news", "chat"])),
        "channel": draw(st.text(STORABLE, max_size=30)),
        "text": draw(st.text(STORABLE, min_size=1, max_size=300).filter(lambda s: s.strip() != "")),
        "ts": draw(st.sampled_from([ts.isoformat(), ts])),
        "entities": draw(st.lists(st.text(STORABLE, max_size=12), max_size=4)),
        "meta": draw(st.dictionaries(st.text(STORABLE, max_size=10), json_value, max_size=5)),
    }
    return payload, ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@hsettings(max_examples=150, deadline=None)
@given(messages())
def test_any_valid_message_round_trips(drawn: tuple[dict[str, object], datetime]) -> None:
    payload, instant = drawn
    m = decode(Message, payload, limits=WIDE_WINDOW)
    assert m.ts == instant and m.ts.utcoffset() == timedelta(0)
    wire = m.to_bytes()
    back = decode(Message, wire, limits=WIDE_WINDOW)
    assert back == m
    assert back.to_bytes() == wire
    assert (back.id, back.text, back.entities, back.meta) == (
        payload["id"],
        payload["text"],
        payload["entities"],
        payload["meta"],
    )


# -- decoding is total (issue 13) -----------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DECODERS = [Message, ScoredMessage, LabelRecord, ControlEvent, Alert, DeadLetter]


@pytest.mark.parametrize("model", DECODERS)
def test_a_tombstone_is_a_bad_record(model: type) -> None:
    """Before: json.loads(None) raised TypeError out of the worker (a Kafka tombstone stopped `aet score`)."""
    assert "tombstone" in reason_of(None, model)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (json.dumps(valid(text="caf\ud800e")).encode(), "text: not valid Unicode"),  # escaped lone surrogate
        (json.dumps(valid(text="a\x00b")).encode(), "text: contains a NUL character"),
        (json.dumps(valid(meta={"k": ["\x00"]})).encode(), "meta.k: contains a NUL character"),
        (json.dumps(valid(id="m\udfff")).encode(), "id: not valid Unicode"),
        (json.dumps(valid(meta={"x": float("nan")})).encode(), "meta.x: nan is not a finite number"),
        (b"[" * 50_000, "not JSON"),
        (b"1" * 5000, "not JSON"),
    ],
)
def test_what_no_column_can_hold_is_refused_at_decode(raw: bytes, needle: str) -> None:
    """Before: a lone surrogate passed and failed later when the scored message was serialized; NUL passed and
    PostgreSQL refused the write forever; deep JSON raised RecursionError."""
    assert needle in reason_of(raw)


@pytest.mark.parametrize(
    ("ts", "needle"),
    [
        ("0001-01-01T00:00:00+01:00", "out of range in UTC"),  # before: OverflowError
        ("9999-12-31T23:59:59+00:00", "in the future"),
        ("9999-12-31T23:59:59-05:00", "out of range in UTC"),  # before: OverflowError
        ("2026-12-01T12:16:00Z", "in the future"),
        ("1900-01-01T00:00:00Z", "in the past"),
    ],
)
def test_event_times_outside_the_window_are_refused(ts: str, needle: str) -> None:
    limits = LimitsSettings(max_past_days=365 * 100, max_future_s=900)
    assert needle in reason_of(valid(ts=ts), Message, limits=limits, now=NOW)
    assert needle in reason_of({"message_id": "m", "label": "neutral", "ts": ts}, LabelRecord, limits=limits, now=NOW)


def test_event_times_inside_the_window_pass() -> None:
    limits = LimitsSettings(max_past_days=1, max_future_s=900)
    assert decode(Message, valid(ts="2026-12-01T12:14:59Z"), limits=limits, now=NOW).ts.minute == 14
    assert decode(Message, valid(ts="2026-11-30T12:00:01Z"), limits=limits, now=NOW).ts.day == 30


@pytest.mark.parametrize(
    ("model", "payload", "needle"),
    [
        (Message, valid(entities=["$" + "X" * 256]), "entities.0: String should have at most 256"),
        (Message, valid(entities=[f"$E{i}" for i in range(65)]), "65 entities, over the limit of 64"),
        (Message, valid(meta={"blob": "x" * 20_000}), "over the limit of 16384"),
        (Message, valid(channel="c" * 257), "channel: String should have at most 256"),
        (LabelRecord, {"message_id": "m", "label": "neutral", "annotator": "a" * 129}, "at most 128"),
        (ControlEvent, {"kind": "drift", "id": "i" * 65}, "id: String should have at most 64"),
        (ControlEvent, {"kind": "drift", "payload": {"x": "y" * 300_000}}, "payload has"),
    ],
)
def test_field_limits_match_the_columns(model: type, payload: dict[str, Any], needle: str) -> None:
    """Before: SQLite stored these and PostgreSQL refused the batch (entity over 256, annotator over 128), or they
    were stored as is (2,000 entities, a 300 KB meta)."""
    assert needle in reason_of(payload, model)


def test_limits_come_from_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_mod, "_limits", LimitsSettings(max_entities=1))
    assert "over the limit of 1" in reason_of(valid(entities=["$A", "$B"]))
    assert decode(Message, valid(entities=["$A", "$B"]), limits=LimitsSettings()).entities == ["$A", "$B"]


def test_a_large_input_becomes_a_small_dead_letter() -> None:
    """Before: an 8 MB line became a multi-MB dead letter, over kafka-python's 1 MiB request size."""
    raw = b'{"text": "' + "é".encode() * 4_000_000 + b'"}'
    dl = DeadLetter.of(raw, stage="replay", reason="text too long", max_raw_bytes=4096)
    wire = dl.to_bytes()
    assert len(wire) < 6000 < 2**20
    back = decode(DeadLetter, wire)
    assert (back.raw_size, back.raw_sha256, back.truncated) == (len(raw), hashlib.sha256(raw).hexdigest(), True)
    assert raw.startswith(back.kept) and len(back.kept) >= 4094  # a cut multi-byte character is dropped
    assert not back.complete


def test_a_small_input_is_kept_whole_and_complete() -> None:
    dl = decode(DeadLetter, DeadLetter.of(b"\xff\x00 raw", stage="s", reason="r").to_bytes())
    assert dl.kept == b"\xff\x00 raw" and dl.complete and not dl.truncated and dl.raw is None


def test_a_dead_letter_reason_is_made_storable() -> None:
    dl = DeadLetter.of(b"x", stage="s", reason="bad \x00 and \ud800 " + "r" * 5000, key="k\x00")
    assert "\x00" not in dl.reason and len(dl.reason) <= 2000 and dl.key == "k\\x00"
    dl.to_bytes()


# -- property: every decoder returns a record or raises BadRecord, never anything else

any_text = st.one_of(  # NUL and lone surrogates included
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    st.just("a\x00b"),
)
hostile_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    any_text,
    st.sampled_from(["2026-03-02T10:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z", "news", "drift"]),
)
hostile_json = st.recursive(
    hostile_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3))
)


def _fields(model: type) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the model's own field names (so validation, not just the first check, is exercised)."""
    return st.dictionaries(st.sampled_from(sorted(model.model_fields)), hostile_json, max_size=len(model.model_fields))


def _decodes_or_refuses(model: type, raw: Any) -> None:
    try:
        record = decode(model, raw)
    except BadRecord as exc:
        assert exc.reason and "\x00" not in exc.reason
        return
    assert isinstance(record, model)
    assert decode(model, record.to_bytes()) == record  # what passes can be serialized and read back


@pytest.mark.parametrize("model", DECODERS)
@hsettings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes(model: type, raw: bytes) -> None:
    _decodes_or_refuses(model, raw)


@pytest.mark.parametrize("model", DECODERS)
@hsettings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_json(model: type, data: st.DataObject) -> None:
    payload = data.draw(st.one_of(hostile_json, _fields(model)))
    _decodes_or_refuses(model, json.dumps(payload).encode())  # lone surrogates travel as \\ud800 escapes
    if isinstance(payload, dict):
        _decodes_or_refuses(model, payload)


@hsettings(max_examples=60, deadline=None)
@given(raw=st.one_of(st.none(), st.binary(max_size=20_000)), limit=st.integers(64, 4096))
def test_any_input_makes_a_bounded_dead_letter(raw: bytes | None, limit: int) -> None:
    dl = DeadLetter.of(raw, stage="s", reason="r", max_raw_bytes=limit)
    kept = dl.kept or b""
    assert len(kept) <= limit and (raw or b"").startswith(kept)
    assert dl.raw_size == len(raw or b"") and dl.truncated == (len(raw or b"") > limit)
    assert decode(DeadLetter, dl.to_bytes()) == dl


def test_a_record_built_in_code_with_nan_is_not_refused() -> None:
    """Roles build control events from training metrics that may hold NaN: building must not stop the role (the
    wire carries null, as before); only decoding input refuses NaN."""
    event = ControlEvent(kind="training_result", payload={"macro_f1": float("nan")})
    assert decode(ControlEvent, event.to_bytes()).payload == {"macro_f1": None}


@hsettings(max_examples=100, deadline=None)
@given(payload=st.one_of(hostile_json, _fields(RetrainRequest)))
def test_any_retrain_request_payload_validates_or_is_refused(payload: Any) -> None:
    """The trainer validates a retrain request's payload with RetrainRequest: a year-1 window with an offset raised
    OverflowError (not a ValidationError) before parse_event_time caught it."""
    try:
        request = RetrainRequest.model_validate(payload)
    except ValidationError:
        return
    assert isinstance(request, RetrainRequest)
    request.window()
