"""The drift commands of ``aet``: ``monitor`` (the role) and ``drift`` (list events and live quality).

``aet bench drift-detect`` is with the other benchmarks in bench.py.
"""

from __future__ import annotations

from typing import Any

import typer

from aet.pipeline.cli.common import log, open_app, print_json, resolve_settings, serve_daemon, stop_on_signals

app = typer.Typer()


@app.command("monitor")
def monitor(
    drain: bool = typer.Option(False, help="Exit once every available scored message and label is processed."),
    metrics_port: int = typer.Option(
        0, help="Serve /metrics, /healthz and /readyz on PORT (0: off; AET_METRICS_ADDR picks the address)."
    ),
    embed: bool = typer.Option(True, help="Load the champion to embed messages (the embedding detector)."),
    expected_run_length: int | None = typer.Option(
        None, help="Stationary messages per source expected between two false alarms (the alarm budget)."
    ),
    min_labels: int | None = typer.Option(None, help="Labels since the drift point a retrain request needs."),
) -> None:
    """Run the drift monitor role: aet.scored and aet.labels in, drift events and retrain requests out.

    Events and requests go to aet.control and the database, with the live accuracy and macro-F1 per
    source and model version (also as Prometheus metrics).

    SIGTERM or Ctrl-C finishes the current batch, commits it and exits 0.
    """
    s = resolve_settings(monitor={"expected_run_length": expected_run_length, "min_labels": min_labels})
    with open_app(s) as application:
        stop = stop_on_signals()
        serve_daemon(application, "monitor", metrics_port)
        worker = application.monitor()
        if not embed:
            worker.embedding.models = None  # label-free detection from confidence and class mix only
        log.info("monitor %s watching %s with %s", s.monitor.group, worker.topics, list(s.monitor.detectors))
        n = worker.run(stop, drain=drain)
        log.info("monitor stopped after %d records: %s", n, worker.counts)


@app.command("drift")
def drift(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    limit: int = typer.Option(50, help="Newest N events."),
    source: str | None = typer.Option(None, help="Only this source (news, chat)."),
    requests: bool = typer.Option(True, help="Also list retrain requests."),
    quality: bool = typer.Option(False, help="Also show live accuracy and macro-F1 per source and model version."),
) -> None:
    """List drift events (and the retrain requests that followed them), newest first."""
    with open_app(resolve_settings()) as application:
        store = application.monitor_store
        kinds = ("drift", "retrain_request") if requests else ("drift",)
        rows = store.events(kinds, limit=limit, source=source)
        live = store.quality() if quality else []
    if as_json:
        data: Any = [
            {
                "id": r.id,
                "kind": r.kind,
                "ts": r.ts.isoformat(),
                "model_version": r.model_version,
                "payload": r.payload,
            }
            for r in rows
        ]
        if quality:
            data = {"events": data, "quality": [_quality_dict(q) for q in live]}
        print_json(data)
        return
    if not rows:
        typer.echo("no drift events")
    else:
        typer.echo(f"{'time (UTC)':<19}  {'kind':<15} {'source':<6} {'detector':<23} {'position':>8}  details")
        for r in rows:
            p = r.payload or {}
            if r.kind == "drift":
                details = _statistic(p.get("statistic") or {})
                position = p.get("position")
            else:
                w = p.get("window") or {}
                details = f"{p.get('labeled')} labels, window {w.get('start')} .. {w.get('end')}"
                position = p.get("to_position")
            typer.echo(
                f"{r.ts:%Y-%m-%d %H:%M:%S}  {r.kind:<15} {p.get('source')!s:<6} "
                f"{p.get('detector')!s:<23} {position!s:>8}  {details}"
            )
    if quality:
        typer.echo("")
        typer.echo(f"{'source':<6} {'model':<10} {'labeled':>8} {'accuracy':>9} {'macro-F1':>9}  (rolling window)")
        for q in live:
            typer.echo(
                f"{q.source:<6} {q.model_version:<10} {q.labeled:>8} {q.accuracy:>9.3f} {q.macro_f1:>9.3f}  "
                f"({q.window})"
            )


def _statistic(stat: dict[str, Any]) -> str:
    """A drift event's statistic on one line: its scalar fields, floats to four significant digits."""
    parts = []
    for k, v in stat.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif v is not None and not isinstance(v, (dict, list)):
            parts.append(f"{k}={v}")
    return " ".join(parts)


def _quality_dict(q: Any) -> dict[str, Any]:
    """One row of live quality (per source and model version) as JSON."""
    return {
        "source": q.source,
        "model_version": q.model_version,
        "labeled": q.labeled,
        "correct": q.correct,
        "window": q.window,
        "accuracy": q.accuracy,
        "macro_f1": q.macro_f1,
        "confusion": q.confusion,
        "updated_at": q.updated_at.isoformat(),
    }
