"""``aet ingest``: the ingest sources as a daemon (RSS/Atom feeds, files and directories, a foreign Kafka topic).

The sources are listed in the config's ``sources`` (each with a ``kind`` and a ``name``);
``aet ingest`` runs them all, ``aet ingest NAME ...`` the named ones, each in its own
thread. ``--rss URL`` and ``--files PATH`` add a source without a config file. SIGTERM or
Ctrl-C lets each source finish the batch in flight (published, acknowledged, saved) and
exits 0; ``--once`` polls each source once (a backfill, a cron job).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from aet.pipeline.sources.runner import Steppable

from aet.pipeline.cli.common import fail, log, print_json, resolve_settings, stop_on_signals

app = typer.Typer()


@app.command()
def ingest(
    names: list[str] | None = typer.Argument(None, help="Sources of the config to run (default: all of them)."),
    rss: list[str] | None = typer.Option(None, "--rss", help="Poll this RSS/Atom feed URL (repeatable)."),
    files: list[Path] | None = typer.Option(
        None, "--files", help="Read this file or watch this directory (repeatable)."
    ),
    file_format: str = typer.Option(
        "auto", "--format", help="--files format: auto, jsonl, csv, slack_export, discord_export."
    ),
    poll_interval: float | None = typer.Option(None, help="Seconds between polls of the --rss/--files sources."),
    once: bool = typer.Option(False, "--once", help="Poll every source once, then exit (backfills, cron)."),
) -> None:
    """Run ingest sources: new feed items, files and foreign-topic records onto aet.messages, each emitted once."""
    from aet.pipeline.config import FilesSourceSettings, RssSourceSettings
    from aet.pipeline.records import configure

    s = resolve_settings()
    configure(s.limits, s.dead_letters)
    configured = list(s.sources)
    adhoc: list[Any] = []
    extra: dict[str, Any] = {} if poll_interval is None else {"poll_interval_s": poll_interval}
    try:
        if rss:
            adhoc.append(RssSourceSettings.model_validate({"name": "rss", "feeds": [{"url": u} for u in rss], **extra}))
        if files:
            adhoc.append(
                FilesSourceSettings.model_validate({"name": "files", "paths": files, "format": file_format, **extra})
            )
    except ValueError as exc:
        fail(f"invalid source: {exc}")
    chosen = configured + adhoc
    if names:
        known = {c.name: c for c in chosen}
        missing = [n for n in names if n not in known]
        if missing:
            fail(f"no source named {', '.join(missing)} in the config (it has: {', '.join(known) or 'none'})")
        chosen = [known[n] for n in names] + [a for a in adhoc if a.name not in names]
    seen: set[str] = set()
    for c in chosen:
        if c.name in seen:
            fail(f"two sources are named {c.name!r}: each needs its own name (its state is kept under it)")
        seen.add(c.name)
    if not chosen:
        fail("no sources: list them under `sources` in the config, or pass --rss URL / --files PATH")
    print_json(_run(s, chosen, once=once))


def _run(s: Any, chosen: list[Any], *, once: bool) -> dict[str, Any]:
    """Build each source on the configured bus and database, run them in threads, return their totals."""
    from aet.adapters.bus import open_bus
    from aet.adapters.sources.http_fetch import HttpFeedFetcher
    from aet.pipeline.sources.emit import Emitter
    from aet.pipeline.sources.files import FileSource
    from aet.pipeline.sources.kafka_topic import ForeignTopicSource
    from aet.storage.db import Database
    from aet.storage.ingest_store import IngestStore

    s.home.mkdir(parents=True, exist_ok=True)
    db = Database(s.db_url)
    bus = open_bus(s.bus)
    closers: list[Callable[[], None]] = [db.dispose, bus.close]
    sources: list[Steppable] = []
    try:
        bus.create_topics(s.topics.all())
        state = IngestStore(db)
        emitter = Emitter(bus, s.topics)
        limit = s.scorer.max_text_chars
        for c in chosen:
            if c.kind == "rss":
                from aet.pipeline.sources.rss import RssSource

                fetcher = HttpFeedFetcher(
                    timeout_s=c.timeout_s, max_bytes=c.max_bytes, max_redirects=c.max_redirects, user_agent=c.user_agent
                )
                closers.append(fetcher.close)
                sources.append(RssSource(c, fetcher, state, emitter, max_text_chars=limit))
            elif c.kind == "files":
                sources.append(FileSource(c, state, emitter, max_text_chars=limit))
            else:
                sources.append(ForeignTopicSource(c, _consumers(s, c, bus, closers), emitter, max_text_chars=limit))
        stop = stop_on_signals()
        # A files source that does not watch reads its files once, whatever the others do.
        one_pass = [once or (c.kind == "files" and not c.watch) for c in chosen]
        failed = _run_threads(sources, one_pass, stop)
    finally:
        for src in sources:
            src.close()
        for close in reversed(closers):
            close()
    totals = {src.name: vars(src.stats) for src in sources}
    if failed:
        fail(f"source(s) stopped on an error: {', '.join(failed)} (see the log)", code=1)
    return totals


def _consumers(s: Any, c: Any, bus: Any, closers: list[Callable[[], None]]) -> Callable[[], Any]:
    """Opens a consumer of a foreign topic: on the source's own cluster when it names one, else on AET's bus."""
    from aet.adapters.bus import open_bus

    foreign = bus
    if c.bootstrap_servers:
        foreign = open_bus(s.bus.model_copy(update={"backend": "kafka", "bootstrap_servers": c.bootstrap_servers}))
        closers.append(foreign.close)
    group = c.group or f"aet-ingest-{c.name}"
    return lambda: foreign.consumer(group, [c.topic])


def _run_threads(sources: list[Steppable], one_pass: list[bool], stop: threading.Event) -> list[str]:
    """Run each source in a thread until ``stop`` (or for one pass); the names of those that failed."""
    from aet.pipeline.sources.runner import SourceRunner

    failed: list[str] = []

    def guarded(src: Steppable, once: bool) -> None:
        try:
            SourceRunner(src, once=once).run(stop)
        except Exception:  # noqa: BLE001 - a source that cannot go on stops the daemon, with its traceback logged
            log.exception("source %s stopped", src.name)
            failed.append(src.name)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(src, once), name=f"ingest-{src.name}")
        for src, once in zip(sources, one_pass, strict=True)
    ]
    for t in threads:
        t.start()
    log.info("ingesting from %s", ", ".join(src.name for src in sources))
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.5)  # a short join keeps the main thread responsive to signals
    return failed
