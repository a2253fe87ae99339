"""The chat webhooks on a real server, a real bus and a real database (SQLite): who may post, and retries.

Slack requests are signed here exactly as Slack signs them (v0 HMAC-SHA256 of
``v0:{timestamp}:{body}``); a bad or stale signature is a 401 with nothing published,
and a retry of an event already taken is not published again, even by a server
started after a restart on the same database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.web import WebServer
from aet.pipeline.config import TopicSettings, WebSettings
from aet.pipeline.records import Message
from aet.pipeline.webhooks import WebhookIntake
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database
from aet.storage.ingest_store import IngestStore

DATA = Path(__file__).resolve().parents[1] / "pipeline" / "webhooks" / "data"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOPICS = TopicSettings()
SETTINGS = WebSettings(
    port=0, slack_signing_secret=SECRET, telegram_secret_token="tg-secret-123", webhook_token="relay-token"
)


def slack_headers(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if at is None else at))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": "application/json"}


class Site:
    """A server on a database and a bus; ``restart`` starts a new server (and store) on the same ones."""

    def __init__(self, db_path: Path, settings: WebSettings = SETTINGS) -> None:
        self.db_path, self.settings = db_path, settings
        self.bus = MemoryBus(partitions=3)
        self._open()

    def _open(self) -> None:
        self.db = Database(f"sqlite:///{self.db_path}")
        intake = WebhookIntake(self.bus, TOPICS.messages, IngestStore(self.db))
        self.server = WebServer(AlertStore(self.db), self.settings, webhooks=intake).start()

    def restart(self) -> None:
        self.server.close()
        self.db.dispose()
        self._open()

    def close(self) -> None:
        self.server.close()
        self.db.dispose()
        self.bus.close()

    def post(self, platform: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.server.url}v1/webhooks/{platform}", content=body, headers=headers)

    def published(self) -> list[Message]:
        out: list[Message] = []
        with self.bus.consumer(f"reader-{uuid.uuid4().hex}", [TOPICS.messages]) as c:
            while records := c.poll(1000, 100):
                out += [Message.model_validate_json(r.value) for r in records]
        return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("hooks") / "aet.db")
    yield s
    s.close()


def test_slack_url_verification_handshake(site: Site) -> None:
    body = (DATA / "slack_url_verification.json").read_bytes()
    r = site.post("slack", body, slack_headers(body))
    assert r.status_code == 200 and r.json() == {"challenge": json.loads(body)["challenge"]}


def test_slack_bad_or_stale_signatures_are_401_and_publish_nothing(site: Site) -> None:
    body = (DATA / "slack_message.json").read_bytes()
    before = len(site.published())
    stale = slack_headers(body, at=time.time() - 6 * 60)  # correctly signed, but past the 5-minute window
    wrong = slack_headers(body, secret="not-the-secret")
    tampered = slack_headers(body)
    for headers, sent in [(stale, body), (wrong, body), (tampered, body.replace(b"selling", b"buying")), ({}, body)]:
        r = site.post("slack", sent, headers)
        assert r.status_code == 401, r.text
    future = slack_headers(body, at=time.time() + 6 * 60)
    assert site.post("slack", body, future).status_code == 401
    assert len(site.published()) == before


def test_slack_event_is_published_once_even_across_a_restart(site: Site) -> None:
    body = (DATA / "slack_message.json").read_bytes()
    r = site.post("slack", body, slack_headers(body))
    assert r.status_code == 200 and r.json() == {"ok": True, "published": 1, "duplicates": 0}
    ids = [m.id for m in site.published()]
    assert ids.count("slack:C05TRADERS1/1772539200.004100") == 1
    # Slack retries (X-Slack-Retry-Num) when it did not see our 200 in time: taken already, not published again.
    retry = {**slack_headers(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert site.post("slack", body, retry).json() == {"ok": True, "published": 0, "duplicates": 1}
    site.restart()
    assert site.post("slack", body, {**slack_headers(body), "X-Slack-Retry-Num": "2"}).json()["duplicates"] == 1
    assert [m.id for m in site.published()].count("slack:C05TRADERS1/1772539200.004100") == 1


def test_telegram_needs_its_secret_token_header(site: Site) -> None:
    body = (DATA / "telegram_update.json").read_bytes()
    json_type = {"Content-Type": "application/json"}
    assert site.post("telegram", body, json_type).status_code == 401
    assert site.post("telegram", body, {**json_type, "X-Telegram-Bot-Api-Secret-Token": "nope"}).status_code == 401
    r = site.post("telegram", body, {**json_type, "X-Telegram-Bot-Api-Secret-Token": "tg-secret-123"})
    assert r.status_code == 200 and r.json()["published"] == 1
    assert "telegram:-1001987654321/4711" in {m.id for m in site.published()}


@pytest.mark.parametrize(
    ("platform", "fixture", "published"),
    [("discord", "discord_messages.json", 1), ("stocktwits", "stocktwits_messages.json", 3)],
)
def test_relayed_platforms_need_the_bearer_token(site: Site, platform: str, fixture: str, published: int) -> None:
    body = (DATA / fixture).read_bytes()
    assert site.post(platform, body, {"Authorization": "Bearer wrong"}).status_code == 401
    r = site.post(platform, body, {"Authorization": "Bearer relay-token"})
    assert r.status_code == 200 and r.json()["published"] == published


def test_unreadable_payloads_are_400_and_publish_nothing(site: Site) -> None:
    before = len(site.published())
    for body in [b"{not json", b'{"type": "event_callback", "event": {"type": "message"}}']:
        r = site.post("slack", body, slack_headers(body))
        assert r.status_code == 400 and r.json()["error"]
    assert len(site.published()) == before


def test_unconfigured_webhooks_answer_404(tmp_path: Path) -> None:
    bare = Site(tmp_path / "bare.db", WebSettings(port=0))
    try:
        body = (DATA / "slack_message.json").read_bytes()
        for platform in ("slack", "telegram", "discord", "stocktwits"):
            assert bare.post(platform, body, slack_headers(body)).status_code == 404
    finally:
        bare.close()
