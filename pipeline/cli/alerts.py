"""The alert commands of ``aet``: ``alert`` (the role), ``serve`` (the analysts' page), ``alerts list|follow``.

``app`` holds the root-level commands and ``alerts_app`` the ``aet alerts`` group;
pipeline/cli/main.py adds both. ``aet bench alerts`` is with the other
benchmarks in bench.py.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import typer

from aet.pipeline.cli.common import fail, log, open_app, print_json, resolve_settings, serve_daemon, stop_on_signals
from aet.pipeline.records import Alert

#: The label whose share an alert kind is about.
KIND_LABEL = {"negative_surge": "negative", "positive_surge": "positive"}

app = typer.Typer()
alerts_app = typer.Typer(
    help="Sentiment alerts in the terminal: list past ones, follow new ones.", no_args_is_help=True
)


def format_alert(a: Alert) -> str:
    """One terminal line per alert."""
    label = KIND_LABEL.get(a.kind, "negative")
    return (
        f"{a.raised_at:%Y-%m-%d %H:%M:%S}  {a.severity.upper():<8}  {a.entity:<10} {a.kind:<15} "
        f"{a.counts.get(label, 0)}/{a.counts.get('total', 0)} {label} ({a.shares.get(label, 0):.0%}, "
        f"baseline {a.baseline.get('mean', 0):.0%})  z {a.z:.1f}  "
        f"window {a.window_start:%m-%d %H:%M}→{a.window_end:%H:%M}  model {a.model_version}  {a.id}"
    )


@app.command("alert")
def alert(
    stdout: bool | None = typer.Option(None, "--stdout/--no-stdout", help="Also print alerts as JSON lines."),
    webhook: list[str] | None = typer.Option(None, help="POST alerts to this URL (repeatable)."),
    gazetteer: Path | None = typer.Option(None, help="YAML/JSON file of company names and aliases."),
    drain: bool = typer.Option(False, help="Exit once every available scored message is processed."),
    metrics_port: int = typer.Option(
        0, help="Serve /metrics, /healthz and /readyz on PORT (0: off; AET_METRICS_ADDR picks the address)."
    ),
) -> None:
    """Run the alert engine role: consume aet.scored, publish aet.alerts, store alerts, feed the sinks.

    SIGTERM or Ctrl-C finishes the current batch, commits it and exits 0.
    """
    overrides: dict[str, Any] = {"stdout": stdout, "gazetteer": gazetteer}
    if webhook:
        overrides["webhooks"] = [{"url": u} for u in webhook]
    s = resolve_settings(alerts=overrides)
    with open_app(s) as application:
        stop = stop_on_signals()
        serve_daemon(application, "alerts", metrics_port)
        dispatchers: list[Any] = []
        try:
            try:
                worker = application.alert_worker()
            except (OSError, ValueError) as exc:
                fail(f"cannot start the alert engine: {exc}")
            dispatchers = application.sink_dispatchers()
            n = worker.run(stop, drain=drain)
            log.info("alert engine stopped after %d scored messages, %d alerts", n, len(worker.raised))
        finally:
            for d in dispatchers:
                d.close(drain_s=2.0 if drain else 0.0)


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1: this machine only)."),
    port: int | None = typer.Option(None, help="Port (default 8765; 0: any free port)."),
) -> None:
    """Serve AET's HTTP surface: the analysts' page and its live feed, the read API, the ingest API
    (POST /v1/messages, with web.ingest_token) and its OpenAPI page (/docs), the chat webhooks
    (/v1/webhooks/slack|telegram|discord|stocktwits, each once its secret is set), /healthz and /readyz."""
    from aet.adapters.web import WebServer
    from aet.pipeline.config import WebSettings
    from aet.pipeline.intake import MessageIntake
    from aet.pipeline.webhooks import WebhookIntake
    from aet.storage.analyst_store import AnalystStore
    from aet.storage.ingest_store import IngestStore

    s = resolve_settings(web={"host": host, "port": port})
    with open_app(s) as application:
        stop = stop_on_signals()
        intake = MessageIntake(
            application.bus, s.topics, max_batch=s.web.max_batch, max_text_chars=s.scorer.max_text_chars
        )
        webhooks = WebhookIntake(application.bus, s.topics.messages, IngestStore(application.db))
        try:
            server = WebServer(
                application.alert_store,
                s.web,
                intake=intake,
                webhooks=webhooks,
                notes=AnalystStore(application.db),
            )
        except OSError as exc:
            fail(f"cannot listen on {s.web.host}:{s.web.port}: {exc}")
        server.start()
        if s.web.host not in ("127.0.0.1", "localhost", "::1") and s.web.allowed_hosts == WebSettings().allowed_hosts:
            log.warning(
                "web.host is %s but web.allowed_hosts only names this machine: requests naming this server by any "
                "other host are refused (400); set web.allowed_hosts",
                s.web.host,
            )
        ingest = "on" if s.web.ingest_token is not None else "off (set web.ingest_token)"
        typer.echo(f"serving {server.url}  (database {s.db_url_display}; ingest API {ingest}; Ctrl-C to stop)")
        try:
            stop.wait()
        finally:
            server.close()


@alerts_app.command("list")
def alerts_list(
    entity: str | None = typer.Option(None, help="Only this entity (e.g. $AAPL)."),
    severity: str | None = typer.Option(None, help="Only info, warning or critical."),
    limit: int = typer.Option(20, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List stored alerts, newest first."""
    with open_app(resolve_settings()) as application:
        rows = application.alert_store.list_alerts(limit=limit, entity=entity, severity=severity)
    if as_json:
        print_json([a.model_dump(mode="json") for a in rows])
        return
    if not rows:
        typer.echo("no alerts")
        return
    for a in rows:
        typer.echo(format_alert(a))


@alerts_app.command("follow")
def alerts_follow(
    entity: str | None = typer.Option(None, help="Only this entity."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    recent: int = typer.Option(5, help="First print this many recent alerts."),
    count: int = typer.Option(0, help="Exit after this many new alerts (0: follow until Ctrl-C)."),
    poll: float = typer.Option(0.5, help="Seconds between looks at the database."),
) -> None:
    """Print alerts as they are raised (by any alert engine writing this database)."""
    from aet.adapters.web import AlertFeed

    s = resolve_settings()
    with open_app(s) as application:
        stop = stop_on_signals()
        store = application.alert_store

        def show(a: Alert) -> None:
            typer.echo(a.model_dump_json() if as_json else format_alert(a))

        feed = AlertFeed(store, poll_s=poll)
        sub = feed.subscribe()
        feed.start()
        try:
            for a in reversed(store.list_alerts(limit=recent, entity=entity) if recent else []):
                show(a)
            if not as_json:
                typer.echo(f"-- following new alerts in {s.db_url_display} (Ctrl-C to stop)", err=True)
            shown = 0
            while not stop.is_set():
                try:
                    new = sub.get(timeout=0.5)
                except queue.Empty:
                    continue
                if new is None:
                    break
                if entity and new.entity != entity:
                    continue
                show(new)
                shown += 1
                if count and shown >= count:
                    break
        finally:
            feed.close()
