"""``aet ingest``: sources from the config or the command line, a restart that emits nothing twice, the daemon's
clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.pipeline.records import Message, decode
from tests.cli_helpers import aet_env, start_aet, wait_until
from tests.pipeline.sources.conftest import read_topic
from tests.pipeline.sources.feed_server import FeedServer, Route, rss, rss_item, serve


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    yield from serve(FeedServer())


def invoke(home: Path, journal: Path, *args: str, config: Path | None = None) -> Any:
    from typer.testing import CliRunner

    from aet.pipeline.cli.main import app

    options = ["--config", str(config)] if config else []
    return CliRunner().invoke(app, [*options, "--home", str(home), "--bus-journal", str(journal), *args])


def messages(journal: Path) -> list[Message]:
    bus = MemoryBus(journal_dir=journal)
    try:
        return [decode(Message, v) for _, v in read_topic(bus, TopicSettings().messages)]
    finally:
        bus.close()


def test_once_from_the_command_line_then_a_restart_emits_nothing(tmp_path: Path, server: FeedServer) -> None:
    server.routes["/cli.xml"] = Route(rss(rss_item("cli-1", "Acme $ACME rallies", "Mon, 02 Mar 2026 12:00:00 GMT")))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text(json.dumps({"id": "f-1", "text": "file row", "ts": "2026-03-02T12:00:00Z"}) + "\n")
    settled = time.time() - 60  # older than files.settle_s: the source leaves a file still being written alone
    os.utime(inbox / "a.jsonl", (settled, settled))
    home, journal = tmp_path / "home", tmp_path / "journal"
    args = ("ingest", "--rss", server.url("/cli.xml"), "--files", str(inbox), "--once")
    first = invoke(home, journal, *args)
    assert first.exit_code == 0, first.output
    totals = json.loads(first.output)
    assert totals["rss"]["published"] == 1 and totals["files"]["published"] == 1
    again = invoke(home, journal, *args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["rss"]["published"] == 0 and json.loads(again.output)["files"]["published"] == 0
    assert sorted(m.id for m in messages(journal)) == ["files:f-1", "rss:cli-1"]


def test_named_sources_of_the_config_and_usage_errors(tmp_path: Path, server: FeedServer) -> None:
    server.routes["/cfg.xml"] = Route(rss(rss_item("cfg-1", "Globex slides", "Mon, 02 Mar 2026 12:00:00 GMT")))
    config = tmp_path / "aet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"kind": "rss", "name": "wires", "feeds": [{"url": server.url("/cfg.xml"), "channel": "wire"}]},
                    {"kind": "files", "name": "drops", "paths": [str(tmp_path / "nowhere")], "watch": False},
                ]
            }
        )
    )
    home, journal = tmp_path / "home", tmp_path / "journal"
    ran = invoke(home, journal, "ingest", "wires", "--once", config=config)
    assert ran.exit_code == 0, ran.output
    assert list(json.loads(ran.output)) == ["wires"]
    [m] = messages(journal)
    assert (m.id, m.channel) == ("wires:cfg-1", "wire")

    unknown = invoke(home, journal, "ingest", "nope", config=config)
    assert unknown.exit_code == 2 and "no source named nope" in unknown.output
    nothing = invoke(home, journal, "ingest")
    assert nothing.exit_code == 2 and "no sources" in nothing.output
    bad_url = invoke(home, journal, "ingest", "--rss", "ftp://example.test/feed")
    assert bad_url.exit_code == 2 and "invalid source" in bad_url.output


def test_the_daemon_watches_a_directory_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    home, journal, log = tmp_path / "home", tmp_path / "journal", tmp_path / "ingest.log"
    env = aet_env(home, AET_BUS__JOURNAL_DIR=str(journal))
    proc = start_aet(["ingest", "--files", str(inbox), "--poll-interval", "0.2"], env, log)
    try:
        wait_until(lambda: "ingesting from files" in log.read_text(errors="replace"), 60, "the daemon to start", proc)
        (inbox / "late.jsonl").write_text(json.dumps({"id": "late", "text": "arrives later", "ts": None}) + "\n")
        wait_until(lambda: "read " in log.read_text(errors="replace"), 30, "the new file to be read", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert '"published": 1' in output
    assert [m.id for m in messages(journal)] == ["files:late"]
