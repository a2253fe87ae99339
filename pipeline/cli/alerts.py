"""The alert commands of ``aet``: ``alert`` (the role), ``alerts list|follow``, ``serve``, ``bench alerts``.

Registered on the command line of :mod:`aet.pipeline.cli.main` by :func:`register`, which
hands over that module (so ``python -m aet.pipeline.cli.main`` and the ``aet`` script get
the same commands).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import typer

from aet.pipeline.records import Alert

log = logging.getLogger("aet")
KIND_LABEL = {"negative_surge": "negative", "positive_surge": "positive"}


def format_alert(a: Alert) -> str:
    """One terminal line per alert."""
    label = KIND_LABEL.get(a.kind, "negative")
    return (
        f"{a.raised_at:%Y-%m-%d %H:%M:%S}  {a.severity.upper():<8}  {a.entity:<10} {a.kind:<15} "
        f"{a.counts.get(label, 0)}/{a.counts.get('total', 0)} {label} ({a.shares.get(label, 0):.0%}, "
        f"baseline {a.baseline.get('mean', 0):.0%})  z {a.z:.1f}  "
        f"window {a.window_start:%m-%d %H:%M}→{a.window_end:%H:%M}  model {a.model_version}  {a.id}"
    )


def register(cli: ModuleType) -> None:
    """Add the alert commands to ``cli.app`` and ``cli.bench_app``."""
    alerts_app = typer.Typer(
        help="Sentiment alerts in the terminal: list past ones, follow new ones.", no_args_is_help=True
    )
    cli.app.add_typer(alerts_app, name="alerts")

    @cli.app.command("alert")
    def alert(
        stdout: bool | None = typer.Option(None, "--stdout/--no-stdout", help="Also print alerts as JSON lines."),
        webhook: list[str] | None = typer.Option(None, help="POST alerts to this URL (repeatable)."),
        gazetteer: Path | None = typer.Option(None, help="YAML/JSON file of company names and aliases."),
        drain: bool = typer.Option(False, help="Exit once every available scored message is processed."),
        metrics_port: int = typer.Option(0, help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off)."),
    ) -> None:
        """Run the alert engine role: consume aet.scored, publish aet.alerts, store alerts, feed the sinks.

        SIGTERM or Ctrl-C finishes the current batch, commits it and exits 0.
        """
        from aet.pipeline.metrics import serve_metrics

        overrides: dict[str, Any] = {"stdout": stdout, "gazetteer": gazetteer}
        if webhook:
            overrides["webhooks"] = [{"url": u} for u in webhook]
        s = cli.settings(alerts=overrides)
        application = cli._open_app(s)
        stop = cli._stop_on_signals()
        dispatchers: list[Any] = []
        try:
            try:
                worker = application.alert_worker()
            except (OSError, ValueError) as exc:
                cli._fail(f"cannot start the alert engine: {exc}")
            serve_metrics(metrics_port)
            dispatchers = application.sink_dispatchers()
            n = worker.run(stop, drain=drain)
            log.info("alert engine stopped after %d scored messages, %d alerts", n, len(worker.raised))
        finally:
            for d in dispatchers:
                d.close(drain_s=2.0 if drain else 0.0)
            application.close()

    @alerts_app.command("list")
    def alerts_list(
        entity: str | None = typer.Option(None, help="Only this entity (e.g. $AAPL)."),
        severity: str | None = typer.Option(None, help="Only info, warning or critical."),
        limit: int = typer.Option(20, help="At most this many, newest first."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List stored alerts, newest first."""
        from aet.storage.alert_store import AlertStore

        s = cli.settings()
        application = cli._open_app(s)
        try:
            rows = AlertStore(application.db).list_alerts(limit=limit, entity=entity, severity=severity)
        finally:
            application.close()
        if as_json:
            cli._print_json([a.model_dump(mode="json") for a in rows])
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
        import queue

        from aet.adapters.web import AlertFeed
        from aet.storage.alert_store import AlertStore

        s = cli.settings()
        application = cli._open_app(s)
        stop = cli._stop_on_signals()
        store = AlertStore(application.db)

        def show(a: Alert) -> None:
            typer.echo(a.model_dump_json() if as_json else format_alert(a))

        feed = AlertFeed(store, poll_s=poll)
        sub = feed.subscribe()
        feed.start()
        try:
            for a in reversed(store.list_alerts(limit=recent, entity=entity) if recent else []):
                show(a)
            if not as_json:
                typer.echo(f"-- following new alerts in {s.db_url} (Ctrl-C to stop)", err=True)
            shown = 0
            while not stop.is_set():
                try:
                    a = sub.get(timeout=0.5)
                except queue.Empty:
                    continue
                if a is None:
                    break
                if entity and a.entity != entity:
                    continue
                show(a)
                shown += 1
                if count and shown >= count:
                    break
        finally:
            feed.close()
            application.close()

    @cli.app.command("serve")
    def serve(
        host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1: this machine only)."),
        port: int | None = typer.Option(None, help="Port (default 8765; 0: any free port)."),
    ) -> None:
        """Serve the analysts' page: live alert feed, sentiment over time per entity, model versions and drift."""
        from aet.adapters.web import AnalystServer
        from aet.storage.alert_store import AlertStore

        s = cli.settings(alerts={"serve_host": host, "serve_port": port})
        application = cli._open_app(s)
        stop = cli._stop_on_signals()
        try:
            server = AnalystServer(AlertStore(application.db), s.alerts.serve_host, s.alerts.serve_port)
        except OSError as exc:
            application.close()
            cli._fail(f"cannot listen on {s.alerts.serve_host}:{s.alerts.serve_port}: {exc}")
        thread = threading.Thread(target=server.serve_forever, name="aet-serve", daemon=True)
        thread.start()
        typer.echo(f"serving {server.url}  (database {s.db_url}; Ctrl-C to stop)")
        try:
            stop.wait()
        finally:
            server.close()
            application.close()

    @cli.bench_app.command("alerts")
    def bench_alerts(
        entities: int = typer.Option(10_000, help="Distinct entities in the benchmark stream."),
        messages: int = typer.Option(200_000, help="Scored messages for the throughput run."),
        bursts: int = typer.Option(20, help="Bursts whose message-to-alert delay is measured."),
        out: Path = typer.Option(Path("bench-results"), help="Directory for alerts.json and alerts.png."),
        scorer_rate: float | None = typer.Option(
            None, help="The scorer's messages/s to compare with (default: measured on the registered champion, if any)."
        ),
    ) -> None:
        """Scored messages/s through the alert engine with many entities, and burst-to-alert delay."""
        from aet.pipeline.bench.alerts import alerts_benchmark

        s = cli.settings()
        application = cli._open_app(s)
        try:
            result = alerts_benchmark(
                application, entities=entities, messages=messages, bursts=bursts, out=out, scorer_rate=scorer_rate
            )
        finally:
            application.close()
        cli._print_json(result)


def summary_lines(alerts: dict[str, Any]) -> list[str]:
    """Lines for the end-of-run summary of ``aet run``."""
    raised = alerts.get("raised_this_run", [])
    lines = [f"  alerts            {len(raised)} raised this run, {alerts.get('in_store', 0)} in the store"]
    for a in raised[:10]:
        label = KIND_LABEL.get(a["kind"], "negative")
        lines.append(
            f"    {a['severity']:<9}{a['entity']} {a['kind']}: {a['counts'].get(label, 0)}/{a['counts'].get('total', 0)} "
            f"{label}, z {a['z']}, window {a['window_start'][:16]}..{a['window_end'][11:16]} (model {a['model_version']})"
        )
    if len(raised) > 10:
        lines.append(f"    ... and {len(raised) - 10} more (aet alerts list)")
    return lines


__all__ = ["format_alert", "register", "summary_lines"]
