"""End to end through the HTTP surface: ``POST /v1/messages`` → scored by the champion → alert → on the page.

The embedded loop's roles (the real scorer serving the session champion, the real
alert engine) run on the memory bus in this process, as ``aet run`` runs them; the
messages come in through the real ingest API over loopback, and a real headless
browser watches the analysts' page until the alert arrives with its evidence text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from aet.adapters.web import WebServer
from aet.pipeline.config import WebSettings
from aet.pipeline.intake import MessageIntake
from aet.pipeline.records import utcnow
from aet.pipeline.runtime import App, WorkerThread
from aet.storage.analyst_store import AnalystStore
from tests.browser import CHROMIUM, Chromium
from tests.conftest import EXAMPLES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium (Debian)"),
]
ENTITY = "$ZETA"
TOKEN = "e2e-ingest-token"


def burst(n: int = 14) -> list[dict[str, Any]]:
    """Clearly negative news from the example training set, retargeted at one entity, one a minute up to now."""
    rows = [json.loads(line) for line in (EXAMPLES / "train.jsonl").read_text().splitlines() if line.strip()]
    negatives = [r["text"] for r in rows if r["label"] == "negative" and r["source"] == "news"][:n]
    now = utcnow()
    return [
        {
            "text": f"{ENTITY}: {text}",
            "source": "news",
            "channel": "wire",
            "id": f"e2e-{i:02d}",
            "ts": (now - timedelta(minutes=n - i)).isoformat(),
            "url": f"https://news.example/zeta/{i}",
        }
        for i, text in enumerate(negatives)
    ]


@pytest.fixture
def loop(app_with_champion: App) -> Iterator[WebServer]:
    """The scorer and the alert engine on the app's memory bus, and the web server publishing to it."""
    app = app_with_champion
    champion = app.registry.champion()
    assert champion is not None
    stop = threading.Event()
    with app.serving_scorer(champion) as scorer:
        threads = [WorkerThread(scorer, stop), WorkerThread(app.alert_worker(), stop)]
        for t in threads:
            t.start()
        web = WebSettings(port=0, ingest_token=TOKEN, feed_poll_s=0.1)
        server = WebServer(
            app.alert_store, web, intake=MessageIntake(app.bus, app.settings.topics), notes=AnalystStore(app.db)
        ).start()
        try:
            yield server
        finally:
            server.close()
            stop.set()
            for t in threads:
                t.join(30)
    assert all(t.error is None for t in threads), [t.error for t in threads]


def test_posted_messages_become_an_alert_on_the_page(loop: WebServer, tmp_path: Path) -> None:
    messages = burst()
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        browser.open(loop.url)
        assert browser.wait_for("document.body.dataset.feed === 'open'"), "the event stream did not open"
        r = httpx.post(
            loop.url + "v1/messages", json={"messages": messages}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 202 and r.json()["accepted"] == len(messages)
        selector = f'#alerts li[data-entity="{ENTITY}"]'
        assert browser.wait_for(f"document.querySelector('{selector}')", timeout=90), "no alert reached the page"
        # The alert's evidence is shown as the posted messages' text, linked to where they came from.
        assert browser.wait_for(f"document.querySelector('{selector} .a-ev a')", timeout=20)
        evidence = browser.evaluate(f"[...document.querySelectorAll('{selector} .a-ev a')].map((a) => a.textContent)")
        posted = {m["text"] for m in messages}
        assert evidence and all(text in posted for text in evidence)
        assert browser.evaluate(f"document.querySelector('{selector} .a-ev a').href").startswith(
            "https://news.example/"
        )
        shot = browser.screenshot(tmp_path / "aet-e2e.png")
    finally:
        browser.close()
    print(f"\nscreenshot of the page with the alert that came in over HTTP: {shot}")
