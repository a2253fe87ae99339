"""The webhook parsers on realistic payloads written for this project (tests/pipeline/webhooks/data/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aet.pipeline.webhooks import PARSERS, WebhookRefused

DATA = Path(__file__).parent / "data"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def test_slack_message_event() -> None:
    batch = PARSERS["slack"](load("slack_message.json"))
    assert list(batch.events) == ["Ev06QQ8Y1A2B"]
    (m,) = batch.events["Ev06QQ8Y1A2B"]
    assert m.id == "slack:C05TRADERS1/1772539200.004100" and m.source == "chat" and m.channel == "C05TRADERS1"
    assert m.ts == datetime(2026, 3, 3, 12, 0, tzinfo=UTC).replace(microsecond=4100)
    assert "&amp;" not in m.text and "& the bid" in m.text and m.entities == ["$ACME"]
    assert m.meta["team"] == "T04QFK9RB" and m.meta["platform"] == "slack"


def test_slack_handshake_and_non_message_events() -> None:
    challenge = load("slack_url_verification.json")["challenge"]
    assert PARSERS["slack"](load("slack_url_verification.json")).reply == {"challenge": challenge}
    edit = PARSERS["slack"](load("slack_edit.json"))
    assert edit.events == {"Ev06QQ8Y9Z9Z": []}  # taken, nothing to publish


def test_discord_messages_skip_bots_and_link_back() -> None:
    batch = PARSERS["discord"](load("discord_messages.json"))
    assert set(batch.events) == {"1214567890123456789", "1214567890123456790"}
    (m,) = batch.events["1214567890123456789"]
    assert batch.events["1214567890123456790"] == []  # the price bot
    assert m.id == "discord:1214567890123456789" and m.entities == ["$XYZ"] and m.meta["author"] == "tendies_hunter"
    assert m.meta["url"] == "https://discord.com/channels/1090000000000000007/1100000000000000042/1214567890123456789"


def test_telegram_update() -> None:
    batch = PARSERS["telegram"](load("telegram_update.json"))
    (m,) = batch.events["718204551"]
    assert m.id == "telegram:-1001987654321/4711" and m.channel == "macrodeskchat"
    assert m.ts == datetime(2026, 3, 3, 14, 0, tzinfo=UTC) and m.meta["url"] == "https://t.me/macrodeskchat/4711"
    assert m.entities == ["$EURUSD"]
    assert PARSERS["telegram"]({"update_id": 5, "edited_message": {}}).events == {"5": []}


def test_stocktwits_keeps_the_authors_tag_as_a_weak_label() -> None:
    batch = PARSERS["stocktwits"](load("stocktwits_messages.json"))
    (bull,), (bear,), (plain,) = batch.events.values()
    assert bull.meta["weak_label"] == "positive" and bull.meta["stocktwits_sentiment"] == "Bullish"
    assert bear.meta["weak_label"] == "negative" and bear.entities[:2] == ["$TSLA", "$AAPL"]
    assert "weak_label" not in plain.meta and plain.channel == "stream"
    assert bull.meta["url"] == "https://stocktwits.com/wedge_wizard/message/601234567"


@pytest.mark.parametrize(
    ("platform", "payload", "where"),
    [
        ("slack", [], "body"),
        ("slack", {"type": "event_callback", "event": {"type": "message"}}, "event_id"),
        ("slack", {"type": "block_actions"}, "type"),
        ("slack", {"type": "event_callback", "event_id": "E1", "event": {"type": "message", "text": "hi"}}, "channel"),
        (
            "slack",
            {
                "type": "event_callback",
                "event_id": "E1",
                "event": {"type": "message", "text": "x", "channel": "C", "ts": "1e400"},
            },
            "ts",
        ),
        ("discord", [], "body"),
        ("discord", {"id": "1", "channel_id": "2", "content": "x", "timestamp": "garbage"}, "ts"),
        ("telegram", {"message": {}}, "update_id"),
        ("telegram", {"update_id": True}, "update_id"),
        ("stocktwits", {"messages": [{"id": 1, "created_at": "2026-03-03T00:00:00Z"}]}, "body"),
        ("stocktwits", {"id": 1, "body": "far future", "created_at": "2999-01-01T00:00:00Z"}, "ts"),
    ],
)
def test_unreadable_payloads_are_refused_with_the_field(platform: str, payload: Any, where: str) -> None:
    with pytest.raises(WebhookRefused) as caught:
        PARSERS[platform](payload)
    assert any(where in e["loc"] for e in caught.value.errors), caught.value.errors
