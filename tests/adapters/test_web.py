"""``aet serve``'s page in a real headless browser (Debian's chromium), plus its JSON and SSE endpoints.

The server is the real one (Starlette on uvicorn, on a loopback port); the hostile
clients are in tests/adapters/test_web_guards.py.

The browser test opens the page, waits for its live feed to connect, then writes
an alert to the database the way an alert engine does and waits for the page to
show it; it checks the sentiment chart and the model timeline were drawn, and
saves a screenshot (its path is printed; run pytest with ``-s`` to see it).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aet.adapters.web import WebServer
from aet.pipeline.ports import BucketSnapshot
from aet.pipeline.records import Alert, ControlEvent, Probs, ScoredMessage
from aet.storage.alert_store import AlertStore
from aet.storage.analyst_store import AnalystStore
from aet.storage.db import Database
from aet.storage.registry import ModelRegistry
from aet.storage.store import ResultStore
from tests.browser import CHROMIUM, Chromium

T0 = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def alert(i: int, entity: str = "$XYZ", minutes: int = 60) -> Alert:
    end = T0 + timedelta(minutes=minutes)
    return Alert(
        id=f"al-web-{i}",
        entity=entity,
        kind="negative_surge",
        window_start=end - timedelta(hours=1),
        window_end=end,
        counts={"total": 18, "negative": 10, "neutral": 5, "positive": 3},
        shares={"negative": 10 / 18, "neutral": 5 / 18, "positive": 3 / 18},
        baseline={"mean": 0.25, "std": 0.05, "sigma": 0.11, "windows": 0.0},
        z=2.8 + i,
        severity="warning",
        example_ids=[f"m{i}-1", f"m{i}-2"],
        model_version="v0002",
    )


EVIDENCE_TEXT = "$XYZ recalls its flagship product after regulator finds defects"


def evidence(i: int) -> list[ScoredMessage]:
    """The stored messages behind alert(i)'s example ids (the second one a chat message with a link)."""
    return [
        ScoredMessage(
            id=f"m{i}-{j}",
            source=source,
            channel="wire" if source == "news" else "traders",
            text=text,
            ts=T0 + timedelta(minutes=40 + j),
            entities=["$XYZ"],
            meta={"url": "https://chat.example/m/2"} if j == 2 else {},
            label="negative",
            probs=Probs(negative=0.9, neutral=0.05, positive=0.05),
            score=-0.85,
            model_version="v0002",
        )
        for j, (source, text) in enumerate([("news", EVIDENCE_TEXT), ("chat", "dumping all my $XYZ, this is ugly")], 1)
    ]


@pytest.fixture
def populated(tmp_path: Path) -> Iterator[AlertStore]:
    """A database with sentiment buckets for two entities, two model versions and a drift event."""
    db = Database(f"sqlite:///{tmp_path / 'web.db'}")
    store = AlertStore(db)
    buckets = []
    for i in range(48):
        start = T0 + timedelta(minutes=5 * i)
        neg = 1 + (6 if 30 <= i < 38 else 0)
        buckets.append(
            BucketSnapshot(
                "$XYZ",
                start,
                start + timedelta(minutes=5),
                n=4 + neg,
                negative=neg,
                neutral=2,
                positive=2,
                score_sum=-0.3 * neg,
            )
        )
        buckets.append(
            BucketSnapshot(
                "$ACME", start, start + timedelta(minutes=5), n=3, negative=1, neutral=1, positive=1, score_sum=0.0
            )
        )
    store.save_state([], buckets)
    registry = ModelRegistry(db)
    registry.register(
        version="v0001",
        artifact_path="/nonexistent",
        sha256="0" * 64,
        backbone="minilm",
        labels=["negative", "neutral", "positive"],
        status="champion",
    )
    ResultStore(db).write(
        events=[
            ControlEvent(
                kind="drift",
                ts=datetime.now(UTC),
                model_version="v0001",
                payload={"detector": "ADWIN", "signal": "confidence"},
            )
        ]
    )
    registry.register(
        version="v0002",
        artifact_path="/nonexistent",
        sha256="1" * 64,
        backbone="minilm",
        labels=["negative", "neutral", "positive"],
        status="champion",
        parent="v0001",
    )
    ResultStore(db).write(alerts=[alert(0, "$ACME", minutes=30)], scored=evidence(1))
    yield store
    db.dispose()


@pytest.fixture
def server(populated: AlertStore) -> Iterator[WebServer]:
    srv = WebServer(populated, port=0, feed_poll_s=0.1, notes=AnalystStore(populated.db)).start()
    yield srv
    srv.close()


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_binds_to_loopback_by_default(populated: AlertStore) -> None:
    from aet.pipeline.config import WebSettings

    assert WebSettings().host == "127.0.0.1"
    srv = WebServer(populated, port=0)
    try:
        assert srv.thread.host == "127.0.0.1"
    finally:
        srv.close()


def test_json_endpoints(server: WebServer) -> None:
    base = server.url
    assert [a["id"] for a in get_json(base + "api/alerts")] == ["al-web-0"]
    entities = get_json(base + "api/entities")
    assert entities[0]["entity"] == "$ACME" and entities[0]["alerts"] == 1  # alerted entities first
    assert {e["entity"] for e in entities} == {"$ACME", "$XYZ"}
    series = get_json(base + "api/sentiment?entity=%24XYZ")
    assert len(series["buckets"]) == 48 and series["buckets"][30]["negative_share"] == pytest.approx(7 / 11)
    models = get_json(base + "api/models")
    assert [m["version"] for m in models["models"]] == ["v0001", "v0002"]
    assert [e["kind"] for e in models["events"]] == ["drift"]
    with pytest.raises(urllib.error.HTTPError):
        get_json(base + "nope")
    # Each bucket's shares come with their 95% Wilson interval: a bucket of 11 messages cannot claim 7/11 exactly.
    b = series["buckets"][30]
    assert 0.3 < b["negative_lo"] < 7 / 11 < b["negative_hi"] < 0.9
    assert get_json(base + "api/sentiment?entity=%24ACME")["alerts"][0]["window_start"] == "2026-03-03T11:30:00+00:00"


def test_alerts_carry_their_evidence_and_acknowledgement(server: WebServer, populated: AlertStore) -> None:
    ResultStore(populated.db).write(alerts=[alert(1)])
    (a,) = get_json(server.url + "api/alerts?entity=%24XYZ")
    assert [e["text"] for e in a["evidence"]] == [EVIDENCE_TEXT, "dumping all my $XYZ, this is ugly"]
    assert a["evidence"][1]["url"] == "https://chat.example/m/2" and a["sources"] == ["chat", "news"]
    assert a["ack"] is None
    body = json.dumps({"by": "dana", "note": "checked the wire"}).encode()
    request = urllib.request.Request(server.url + "api/alerts/al-web-1/ack", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.loads(r.read())["by"] == "dana"
    (a,) = get_json(server.url + "api/alerts?entity=%24XYZ")
    assert a["ack"]["by"] == "dana" and a["ack"]["note"] == "checked the wire"
    # A page on another origin cannot acknowledge through the analyst's browser.
    forged = urllib.request.Request(
        server.url + "api/alerts/al-web-1/ack", data=body, method="POST", headers={"Origin": "http://evil.example"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 403
    for path, data in [("al-web-404", body), ("al-web-1", b"{}"), ("al-web-1", b"not json")]:
        bad = urllib.request.Request(server.url + f"api/alerts/{path}/ack", data=data, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=10)
        assert caught.value.code in (400, 404)


def test_event_stream_pushes_new_alerts(server: WebServer, populated: AlertStore) -> None:
    """A raw SSE client: an alert stored after it connected arrives as an ``alert`` event."""
    with urllib.request.urlopen(server.url + "events", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.readline().startswith(b"retry:")
        ResultStore(populated.db).write(alerts=[alert(7)])
        lines: list[bytes] = []
        while not (lines and lines[-1] == b"\n" and any(x.startswith(b"event:") for x in lines)):
            line = stream.readline()
            if line.startswith(b": "):  # the "connected" comment or a heartbeat
                continue
            lines.append(line)
    event = dict(line.decode().rstrip("\n").split(": ", 1) for line in lines if b": " in line)
    assert event["event"] == "alert" and event["id"] == "al-web-7"
    assert json.loads(event["data"])["entity"] == "$XYZ"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium (Debian)")
def test_page_in_headless_chromium_shows_pushed_alert_and_chart(
    server: WebServer, populated: AlertStore, tmp_path: Path
) -> None:
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        browser.open(server.url)
        # The page loaded its initial state and connected its live feed.
        assert browser.wait_for("document.body.dataset.feed === 'open'"), "the event stream did not open"
        assert browser.wait_for("document.querySelector('#alerts li[data-id=\"al-web-0\"]')")
        assert browser.wait_for("document.querySelectorAll('#timeline .model').length === 2")
        assert browser.evaluate("document.querySelectorAll('#timeline .event-drift').length") == 1
        # An alert raised after the page opened is pushed to it.
        ResultStore(populated.db).write(alerts=[alert(1)])
        assert browser.wait_for("document.querySelector('#alerts li[data-id=\"al-web-1\"]')"), (
            "the pushed alert did not appear"
        )
        text = browser.evaluate("document.querySelector('#alerts li[data-id=\"al-web-1\"]').textContent")
        assert "$XYZ" in text and "10/18 negative" in text and "v0002" in text
        # The evidence is the messages' text, with source and time, and a link where the platform gave one.
        assert EVIDENCE_TEXT in text and "m1-1" not in text and "news · wire · 2026-03-03 12:41" in text
        assert (
            browser.evaluate("document.querySelector('#alerts li[data-id=\"al-web-1\"] .a-ev a').href")
            == "https://chat.example/m/2"
        )
        assert browser.evaluate("document.querySelector('#alerts li').dataset.id") == "al-web-1"  # newest first
        # The chart follows the new alert's entity and is drawn: bars, two lines, the alert marker.
        assert browser.wait_for(
            "document.querySelector('#chart').dataset.entity === '$XYZ' && document.body.dataset.chart === 'rendered'"
        )
        chart = browser.evaluate("""(() => { const c = document.querySelector('#chart');
            return {points: +c.dataset.points, bars: c.querySelectorAll('rect.bar').length,
                    lines: c.querySelectorAll('polyline').length, marks: c.querySelectorAll('.alert-mark').length,
                    width: c.getBoundingClientRect().width}; })()""")
        assert chart == {"points": 48, "bars": 48, "lines": 2, "marks": 1, "width": chart["width"]}
        assert chart["width"] > 300
        shot = browser.screenshot(tmp_path / "aet-serve.png")
        # Filters: severity and source hide what does not match.
        browser.evaluate(
            "(() => { const s = document.querySelector('#f-severity'); s.value = 'critical'; s.onchange(); })()"
        )
        assert browser.evaluate("document.body.dataset.shownAlerts") == "0"
        browser.evaluate(
            "(() => { const s = document.querySelector('#f-severity'); s.value = ''; s.onchange(); "
            "const t = document.querySelector('#f-source'); t.value = 'chat'; t.onchange(); })()"
        )
        assert browser.evaluate("document.body.dataset.shownAlerts") == "1"  # al-web-0's evidence is not stored
        # Clicking an alert zooms the chart to its window (with as much again on either side).
        browser.evaluate("document.querySelector('#alerts li[data-id=\"al-web-1\"] .a-meta').click()")
        assert browser.wait_for("document.querySelector('#chart').dataset.zoomed === 'yes'")
        assert 0 < browser.evaluate("+document.querySelector('#chart').dataset.points") < 48
        assert browser.evaluate("document.querySelectorAll('#chart .alert-window').length") == 1
        # Acknowledging stores it (every analyst's page shows it) and shows who took it.
        browser.evaluate("document.querySelector('#who').value = 'dana'")
        browser.evaluate("document.querySelector('#alerts li[data-id=\"al-web-1\"] button.ack').click()")
        assert browser.wait_for("document.querySelector('#alerts li[data-id=\"al-web-1\"] .a-ack')")
        assert AnalystStore(populated.db).acks(["al-web-1"])["al-web-1"]["by"] == "dana"
    finally:
        browser.close()
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot of the analysts' page: {shot}")
