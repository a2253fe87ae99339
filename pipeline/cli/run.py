"""``aet run``: every role in one process on the memory bus, and the summary it prints at the end.

The quickest way to see the whole loop on a file (replay, score, store, alert,
monitor drift, fast-path heads, retraining rounds with the gate and hot swap);
the daemons of the other command modules run the same roles one per process,
on Kafka or a journaled memory bus.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aet.pipeline.cli.alerts import KIND_LABEL
from aet.pipeline.cli.common import fail, open_app, resolve_settings, stop_on_signals
from aet.pipeline.records import utcnow

if TYPE_CHECKING:
    from aet.storage.drift_store import MonitorStore

app = typer.Typer()

#: The control events of the retraining loop the summary reports (fast-path ``heads`` events have their own line).
MODEL_EVENTS = ("training_result", "promotion", "shadow", "rejection", "rollback")


@app.command()
def run(
    data: Path = typer.Option(..., "--data", "-d", help="Stream file to replay (JSONL or CSV, normalized format)."),
    bootstrap_data: Path | None = typer.Option(
        None, help="Labeled JSONL to train a first champion on, used only if none is registered."
    ),
    label_fraction: float | None = typer.Option(
        None, help="Share of messages whose labels are replayed to aet.labels."
    ),
    label_delay: float | None = typer.Option(None, help="Event-time delay (s) before a replayed label is published."),
    speed: float | None = typer.Option(None, help="Event-time speed-up of the replay; 0 = as fast as possible."),
    rate: float | None = typer.Option(None, help="Most messages a second the replay publishes; 0 = no limit."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    metrics_port: int = typer.Option(0, help="Serve every role's Prometheus /metrics on PORT while it runs (0: off)."),
) -> None:
    """Run every role in this process on the memory bus: replay DATA, score, monitor, adapt, summarise.

    Bootstraps a champion from --bootstrap-data when none is registered; a
    second run reuses the registered champion.
    """
    from aet.pipeline.learning.examples import TrainingDataError
    from aet.pipeline.metrics import serve_metrics
    from aet.pipeline.model import ModelLoadError
    from aet.pipeline.runtime import NoChampionError, run_embedded

    s = resolve_settings(
        replay={"label_fraction": label_fraction, "label_delay_s": label_delay, "speed": speed, "rate": rate}
    )
    if s.bus.backend != "memory":
        fail("`aet run` runs every role in one process on the memory bus; on Kafka run `aet replay` and `aet score`")
    if not data.is_file():
        fail(f"stream file not found: {data}")
    with open_app(s) as application:
        serve_metrics(metrics_port)
        started = utcnow()
        try:
            summary = run_embedded(
                application, data, bootstrap_data=bootstrap_data, progress=progress, stop=stop_on_signals()
            )
        except (NoChampionError, ModelLoadError, TrainingDataError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        summary["model_events"] = model_events(application.monitor_store, started)
        summary["after_drift"] = after_drift(application.monitor_store, summary["drift"]["events_this_run"])
    print_summary(summary)


def model_events(store: MonitorStore, since: datetime) -> list[dict[str, Any]]:
    """The retraining loop's control events stored since ``since``, oldest first: rounds trained, gate decisions,
    promotions and rollbacks (what ``aet run``'s trainer and monitor did with the drift it found)."""
    rows = [r for r in store.events(kinds=MODEL_EVENTS) if r.ts >= since]
    return [
        {"kind": r.kind, "version": r.model_version, "payload": r.payload} for r in sorted(rows, key=lambda r: r.ts)
    ]


def after_drift(store: MonitorStore, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each drift event of the run: accuracy on the drifted source's labeled messages from the drift on,
    per model weights that scored them (fast-path heads counted with their weights), in the order they served.

    This is the before/after of a retraining round on the same stretch of the stream: the champion's
    weights until the promotion is swapped in, the challenger's after it. Read from the monitor's
    label ledger, which holds each label with the prediction it was joined to and its stream position.
    """
    drifts = [e for e in events if e["kind"] == "drift" and isinstance(e.get("position"), int)]
    if not drifts:
        return []
    joins = [j for j in store.label_joins() if j.status == "joined" and j.position is not None]
    joins.sort(key=lambda j: j.position or 0)
    out = []
    for e in drifts:
        groups: dict[str, list[Any]] = {}
        for j in joins:
            if j.source != e["source"] or (j.position or 0) < e["position"] or j.model_version is None:
                continue
            g = groups.setdefault(j.model_version.split(".h")[0], [0, 0, False])
            g[0] += 1
            g[1] += int(j.predicted == j.label)
            g[2] = g[2] or ".h" in j.model_version
        by_weights = [
            {"weights": w, "labeled": n, "accuracy": c / n, "heads": heads} for w, (n, c, heads) in groups.items()
        ]
        out.append({**e, "by_weights": by_weights})
    return out


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run report of ``aet run``: what was replayed, scored, stored, alerted and detected."""
    store = summary["store"]
    replay = summary["replay"]
    typer.echo("")
    if summary["interrupted"]:
        typer.secho("AET run interrupted: the stream was not fully processed (partial results below)", bold=True)
    else:
        typer.secho("AET run complete", bold=True)
    typer.echo(f"  stream            {summary['stream']}")
    typer.echo(f"  champion          {summary['champion']}")
    typer.echo(
        f"  published         {replay['published']} messages, {replay['labels']} labels, "
        f"{replay['rejected']} rejected at replay"
    )
    typer.echo(f"  consumed          {summary['scored_this_run']} messages by the scorer this run")
    typer.echo(f"  in the store      {store['scored']} scored messages")
    typer.echo(f"    by model        {json.dumps(store['by_model_version'])}")
    typer.echo(f"    by label        {json.dumps(store['by_label'])}")
    typer.echo(f"    by source       {json.dumps(store['by_source'])}")
    labeled = store["labeled"]
    if labeled["n"]:
        typer.echo(f"  accuracy          {labeled['accuracy']:.3f} on {labeled['n']} messages with ground-truth labels")
        for line in version_lines(summary.get("accuracy_by_version") or {}):
            typer.echo(line)
    if summary.get("fast_path") is not None:
        fast = summary["fast_path"]
        typer.echo(
            f"  fast path         {fast.get('labels', 0)} labels learned, {fast.get('published', 0)} heads versions "
            f"published, {fast.get('episodes', 0)} drift episodes"
        )
    typer.echo(f"  dead letters      {json.dumps(store['dead_letters'])}")
    if "alerts" in summary:
        for line in alert_lines(summary["alerts"]):
            typer.echo(line)
    if "drift" in summary:
        typer.echo(drift_line(summary["drift"]))
    for line in model_event_lines(summary.get("model_events") or []):
        typer.echo(line)
    for line in after_drift_lines(summary.get("after_drift") or []):
        typer.echo(line)
    typer.echo(f"  database          {summary['database']}")
    typer.echo(
        "  inspect with      aet models list   |   "
        "sqlite3 <database> 'select label, count(*) from scored_messages group by 1'"
    )


def version_lines(by_version: dict[str, dict[str, Any]]) -> list[str]:
    """Accuracy on the labeled messages each model version served, in the order they first served.

    Fast-path heads versions of one model (``v0001.h1``, ``v0001.h2``, ...) are
    summed into one line after the model's own, so that the adaptation shows
    as a before/after pair.
    """
    groups: dict[str, list[int]] = {}
    for version, row in by_version.items():
        key = f"{version.split('.h')[0]} + fast-path heads" if ".h" in version else version
        n, correct = groups.setdefault(key, [0, 0])
        groups[key] = [n + row["labeled"], correct + round((row["accuracy"] or 0) * row["labeled"])]
    return [f"    {key:<28}{correct / n:.3f} on {n} labeled messages" for key, (n, correct) in groups.items() if n]


def alert_lines(alerts: dict[str, Any]) -> list[str]:
    """The alerts of the run: a count, then at most ten of them."""
    raised = alerts.get("raised_this_run", [])
    lines = [f"  alerts            {len(raised)} raised this run, {alerts.get('in_store', 0)} in the store"]
    for a in raised[:10]:
        label = KIND_LABEL.get(a["kind"], "negative")
        lines.append(
            f"    {a['severity']:<9}{a['entity']} {a['kind']}: "
            f"{a['counts'].get(label, 0)}/{a['counts'].get('total', 0)} {label}, z {a['z']}, "
            f"window {a['window_start'][:16]}..{a['window_end'][11:16]} (model {a['model_version']})"
        )
    if len(raised) > 10:
        lines.append(f"    ... and {len(raised) - 10} more (aet alerts list)")
    return lines


def drift_line(drift: dict[str, Any]) -> str:
    """The drift events of the run (the first five placed) and how many retrain requests followed."""
    events = [e for e in drift["events_this_run"] if e["kind"] == "drift"]
    requests = sum(e["kind"] == "retrain_request" for e in drift["events_this_run"])
    where = ", ".join(f"{e['source']}@{e['position']} ({e['detector']})" for e in events[:5])
    return (
        f"  drift             {len(events)} events{': ' + where if where else ''}; {requests} retrain requests"
        f"   (aet drift)"
    )


def model_event_lines(events: list[dict[str, Any]]) -> list[str]:
    """What the trainer and the monitor did with the run's drift: rounds trained, gate decisions, rollbacks."""
    if not events:
        return []
    lines = [f"  retraining        {sum(e['kind'] == 'training_result' for e in events)} rounds trained this run"]
    for e in events:
        p, version = e["payload"], e["version"]
        if e["kind"] == "training_result":
            seconds = p.get("train_seconds")
            took = f", {seconds:.0f} s" if isinstance(seconds, int | float) else ""
            lines.append(f"    {version} trained ({p.get('mode')}{took})")
        elif e["kind"] == "promotion":
            gate = p.get("gate") or {}
            why = "; ".join(gate.get("reasons") or []) or p.get("reason", "")
            lines.append(f"    {version} promoted over {p.get('previous')}: {why}")
        elif e["kind"] == "rollback":
            lines.append(f"    rolled back {p.get('from')} to {p.get('to')}: {p.get('reason')}")
        else:  # a rejection, or a challenger left as a shadow for the live labels to decide
            what = "left as a shadow" if e["kind"] == "shadow" else "rejected"
            lines.append(f"    {version} {what}: {p.get('reason')}")
    return lines


def after_drift_lines(episodes: list[dict[str, Any]]) -> list[str]:
    """Accuracy on each drifted source from its drift on, per model weights in serving order: before/after."""
    lines = []
    for ep in episodes:
        lines.append(
            f"  after the drift   {ep['source']}@{ep['position']} ({ep['detector']}): accuracy on the "
            f"{ep['source']} messages from there on, by the weights that scored them"
        )
        for g in ep["by_weights"]:
            key = f"{g['weights']} + fast-path heads" if g["heads"] else g["weights"]
            lines.append(f"    {key:<28}{g['accuracy']:.3f} on {g['labeled']} labeled messages")
    return lines
