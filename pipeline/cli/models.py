"""``aet models``: the model registry from the command line.

Train and register a first champion (``bootstrap``), list and trace versions
(``list``, ``show``), move the champion by hand (``promote``, ``rollback``) and
ask the trainer for a new challenger (``retrain-request``). Every change is
also published to aet.control, so running scorers and monitors follow it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aet.pipeline.cli.common import fail, log, open_app, print_json, resolve_settings
from aet.pipeline.records import ControlEvent

app = typer.Typer(help="Model registry: bootstrap a first champion, list versions.", no_args_is_help=True)


def _emit(application: Any, events: list[ControlEvent]) -> None:
    """Publish control events to aet.control (flushed) and store them."""
    topic = application.settings.topics.control
    for e in events:
        application.bus.publish(topic, e.to_bytes(), key=e.kind)
    application.bus.flush()
    application.store.write(events=events)


@app.command("bootstrap")
def models_bootstrap(
    data: Path = typer.Option(..., "--data", "-d", help="Labeled JSONL (text, label[, source])."),
    force: bool = typer.Option(False, help="Train and promote even if a champion exists."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    seed: int | None = typer.Option(None, help="Random seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Fine-tune the configured backbone on DATA and register it as the champion."""
    from aet.pipeline.learning.examples import TrainingDataError
    from aet.pipeline.model import ModelLoadError

    s = resolve_settings(train={"epochs": epochs, "seed": seed})
    with open_app(s) as application:
        current = application.registry.champion()
        if current is not None and not force:
            typer.echo(f"champion {current.version} already registered; use --force to train a new one")
            return
        try:
            info = application.bootstrap(data, progress=progress)
        except (TrainingDataError, ModelLoadError) as exc:
            fail(str(exc))
    print_json(
        {"version": info.version, "artifact": info.artifact_path, "sha256": info.sha256, "metrics": info.metrics}
    )


@app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered model versions, oldest first."""
    with open_app(resolve_settings()) as application:
        rows = application.registry.list()
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        typer.echo("no models registered")
        return
    typer.echo(f"{'version':<10} {'status':<12} {'parent':<10} {'val macro-F1':>12}  created")
    for r in rows:
        f1 = r.metrics.get("validation", {}).get("macro_f1")
        f1s = f"{f1:.3f}" if isinstance(f1, (int, float)) else "-"
        typer.echo(f"{r.version:<10} {r.status:<12} {r.parent or '-':<10} {f1s:>12}  {r.created_at:%Y-%m-%d %H:%M:%S}")


@app.command("promote")
def models_promote(
    version: str = typer.Argument(..., help="The version to make champion."),
    reason: str = typer.Option("manual", help="Why (recorded in the promotion event)."),
) -> None:
    """Make VERSION the champion now (bypassing the gate); publishes a promotion to aet.control."""
    from aet.pipeline.learning.promotion import Promoter
    from aet.storage.registry import RegistryError

    with open_app(resolve_settings()) as application:
        try:
            event = Promoter(application.registry).promote(version, reason=reason)
            _emit(application, [event])
        except (RegistryError, ValueError) as exc:
            fail(str(exc))
    print_json(event.model_dump(mode="json"))


@app.command("rollback")
def models_rollback(
    to: str | None = typer.Option(None, help="The version to reinstate (default: the previous champion)."),
    reason: str = typer.Option("manual", help="Why (recorded in the rollback event)."),
) -> None:
    """Demote the champion (status rolled_back) and reinstate the previous one; publishes a rollback."""
    from aet.pipeline.learning.promotion import Promoter
    from aet.storage.registry import RegistryError

    with open_app(resolve_settings()) as application:
        try:
            event = Promoter(application.registry).rollback(to, reason=reason)
            _emit(application, [event])
        except RegistryError as exc:
            fail(str(exc))
    print_json(event.model_dump(mode="json"))


@app.command("show")
def models_show(version: str = typer.Argument(..., help="A registered version, e.g. v0002.")) -> None:
    """Lineage of VERSION as JSON: parent chain, drift event, training request, data window, metrics,
    gate decisions, promotions/rollbacks, and the alerts it produced."""
    from aet.storage.lineage import lineage
    from aet.storage.registry import RegistryError

    with open_app(resolve_settings()) as application:
        try:
            result = lineage(application.registry, application.training_store, version)
        except RegistryError as exc:
            fail(str(exc))
    print_json(result)


@app.command("retrain-request")
def models_retrain_request(
    data: Path | None = typer.Option(None, help="Labeled JSONL to train on (instead of the stored window)."),
    since: str | None = typer.Option(None, help="Window start (ISO-8601) of stored labeled messages."),
    until: str | None = typer.Option(None, help="Window end (ISO-8601, exclusive)."),
    source: str | None = typer.Option(None, help="Only this source: news or chat."),
    mode: str | None = typer.Option(None, help="full, attention or lora (default: the trainer's)."),
    drift_event: str | None = typer.Option(None, help="Id of the drift event this answers (lineage)."),
    no_promote: bool = typer.Option(False, help="Register the challenger without applying the gate."),
) -> None:
    """Publish a hand-made retrain request to aet.control (what the drift monitor does after a drift event)."""
    s = resolve_settings()
    payload: dict[str, Any] = {
        "window": {"start": since, "end": until},
        "source": source,
        "mode": mode,
        "data": str(data.resolve()) if data else None,
        "drift_event_id": drift_event,
    }
    if no_promote:
        payload["auto_promote"] = False
    event = ControlEvent(kind="retrain_request", payload={k: v for k, v in payload.items() if v is not None})
    if s.bus.backend == "memory" and s.bus.journal_dir is None:
        log.warning("memory bus without --bus-journal: only a trainer in this process could see the request")
    with open_app(s) as application:
        _emit(application, [event])
    print_json(event.model_dump(mode="json"))
