"""``aet doctor`` (what is wrong with this installation, and what to do) and ``aet status`` (one screen of it).

The checks are in diagnostics.py; this module runs them and prints the
findings. ``aet status`` reads the database and the bus only: what serves, how
far behind each role's consumer group is, the last drift, retrain and alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from aet.pipeline.cli.common import print_json, resolve_settings
from aet.pipeline.cli.diagnostics import Context, Finding, run_checks

app = typer.Typer()

_MARK = {"ok": "ok", "warning": "WARN", "problem": "PROBLEM", "skipped": "skip"}
_COLOUR = {"ok": typer.colors.GREEN, "warning": typer.colors.YELLOW, "problem": typer.colors.RED, "skipped": None}


def print_findings(found: list[Finding]) -> None:
    """One line per finding; a problem or warning gets a second line with what to do."""
    for f in found:
        typer.secho(f"{_MARK[f.level]:<8} {f.check:<9} {f.detail}", fg=_COLOUR[f.level])
        if f.fix and f.level in ("problem", "warning"):
            typer.echo(f"{'':<8} {'':<9} -> {f.fix}")


@app.command("doctor")
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    all_artifacts: bool = typer.Option(
        False, "--all-artifacts", help="Verify every registered artifact's sha256, not only the champion's."
    ),
) -> None:
    """Check the config, database (schema at head), registry and artifacts, labels, disk, bus and clock.

    Each problem is printed with what to do; the exit status is 1 if there is any (warnings do not count).
    The database is not migrated and no topic is created: the doctor only looks.
    """
    s = resolve_settings()
    ctx = Context(s, secrets=s.secrets())
    try:
        found = run_checks(ctx, every_artifact=all_artifacts)
    finally:
        ctx.close()
    if as_json:
        print_json([f.as_dict() for f in found])
    else:
        print_findings(found)
    problems = sum(f.level == "problem" for f in found)
    if problems:
        if not as_json:
            typer.secho(f"{problems} problem(s) found", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def _when(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "never"


def gather_status(ctx: Context) -> dict[str, Any]:
    """What ``aet status`` shows, as data: serving models, lag per role, last drift, retrain, alert, backlog."""
    from aet.storage.alert_store import AlertStore
    from aet.storage.drift_store import MonitorStore
    from aet.storage.registry import ModelRegistry

    s = ctx.settings
    t = s.topics
    out: dict[str, Any] = {}
    if ctx.db is not None and ctx.schema_at_head:
        registry = ModelRegistry(ctx.db)
        champion = registry.champion()
        out["champion"] = champion.version if champion else None
        counts: dict[str, int] = {}
        for m in registry.list():
            counts[m.status] = counts.get(m.status, 0) + 1
        out["models"] = counts
        monitor = MonitorStore(ctx.db)
        for key, kind in (
            ("last_drift", "drift"),
            ("last_retrain", "training_result"),
            ("last_promotion", "promotion"),
        ):
            rows = monitor.events((kind,), limit=1)
            out[key] = {"ts": _when(rows[0].ts), **_summary(rows[0].payload)} if rows else None
        alerts = AlertStore(ctx.db)
        last = alerts.list_alerts(limit=1)
        out["last_alert"] = (
            {
                "ts": _when(last[0].raised_at),
                "entity": last[0].entity,
                "kind": last[0].kind,
                "severity": last[0].severity,
            }
            if last
            else None
        )
        out["alerts_total"] = alerts.count_alerts()
        out["outbox_pending"] = sum(1 for d in alerts.deliveries() if d.status == "pending")
    groups = {
        "scorer": (s.scorer.group, [t.messages]),
        "monitor": (s.monitor.group, [t.scored, t.labels]),
        "alerts": (s.alerts.group, [t.scored]),
        "trainer": (s.retrain.group, [t.control]),
        "fast-path": (s.fast_path.group, [t.scored, t.labels, t.control]),
        "dead-letters": (s.dead_letters.group, [t.dlq]),
    }
    lag: dict[str, int | str] = {}
    for role, (group, topics) in groups.items():
        try:
            lag[role] = ctx.bus.group_lag(group, topics) if ctx.bus is not None else "bus unreachable"
        except Exception as exc:  # noqa: BLE001
            lag[role] = f"unknown ({type(exc).__name__})"
    out["lag"] = lag
    return out


def _summary(payload: dict[str, Any] | None) -> dict[str, Any]:
    keep = ("source", "detector", "version", "outcome", "status", "from", "to", "reason")
    return {k: v for k, v in (payload or {}).items() if k in keep and isinstance(v, str | int | float)}


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One screen: what serves, each role's consumer lag, the last drift, retrain, promotion and alert."""
    from aet.pipeline.cli.diagnostics import check_bus, check_database

    s = resolve_settings()
    ctx = Context(s, secrets=s.secrets())
    try:
        problems = [f for f in (*check_database(ctx), *check_bus(ctx)) if f.level == "problem"]
        problems += [Finding("status", "problem", "nothing read from the database: see aet doctor")] * (
            ctx.db is not None and not ctx.schema_at_head
        )
        data = gather_status(ctx)
    finally:
        ctx.close()
    data["problems"] = [f.detail for f in problems]
    if as_json:
        print_json(data)
    else:
        typer.echo(f"champion        {data.get('champion') or 'none'}   models {data.get('models', {})}")
        typer.echo("consumer lag    " + "  ".join(f"{role} {n}" for role, n in data["lag"].items()))
        for key in ("last_drift", "last_retrain", "last_promotion", "last_alert"):
            if key in data:
                value = data[key]
                shown = "never" if value is None else " ".join(f"{k}={v}" for k, v in value.items())
                typer.echo(f"{key.replace('_', ' '):<15} {shown}")
        if "outbox_pending" in data:
            typer.echo(f"alerts          {data['alerts_total']} raised, {data['outbox_pending']} deliveries pending")
        for problem in data["problems"]:
            typer.secho(f"PROBLEM         {problem}   (aet doctor)", fg=typer.colors.RED)
    if problems:
        raise typer.Exit(1)
