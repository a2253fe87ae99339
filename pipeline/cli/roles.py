"""``aet replay`` and ``aet score``: the daemons that carry messages onto the bus and turn them into scores.

One role per process, on Kafka or a journaled memory bus, scaled out by
running more of them. The daemons further down the loop live with the commands
that read what they produce: ``aet alert`` in alerts.py, ``aet monitor`` in
drift.py, ``aet train`` in train.py.
"""

from __future__ import annotations

from pathlib import Path

import typer

from aet.pipeline.cli.common import fail, log, open_app, print_json, resolve_settings, serve_daemon, stop_on_signals

app = typer.Typer()


@app.command()
def replay(
    data: Path = typer.Argument(..., help="Stream file (JSONL or CSV, normalized format)."),
    speed: float | None = typer.Option(None, help="Event-time speed-up; 0 = as fast as possible."),
    rate: float | None = typer.Option(None, help="Most messages a second; 0 = no limit."),
    label_fraction: float | None = typer.Option(None, help="Share of labels to publish to aet.labels."),
    label_delay: float | None = typer.Option(None, help="Event-time delay (s) of published labels."),
    limit: int | None = typer.Option(None, help="Replay at most this many messages."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Publish a recorded stream to aet.messages in event-time order (the ingest role for files)."""
    from aet.adapters.bus import open_bus
    from aet.pipeline.records import configure
    from aet.pipeline.roles.replay import Replay

    s = resolve_settings(
        replay={"speed": speed, "rate": rate, "label_fraction": label_fraction, "label_delay_s": label_delay}
    )
    configure(s.limits, s.dead_letters)  # replay opens no App: hold its records to the configured limits
    if not data.is_file():
        fail(f"stream file not found: {data}")
    bus = open_bus(s.bus)
    try:
        bus.create_topics(s.topics.all())
        stats = Replay(bus, s.topics, s.replay, max_text_chars=s.scorer.max_text_chars).run(
            data, progress=progress, limit=limit
        )
    except ValueError as exc:
        fail(str(exc))
    finally:
        bus.close()
    print_json(
        {"published": stats.published, "labels": stats.labels, "rejected": stats.rejected, "reasons": stats.reasons}
    )


@app.command()
def score(
    drain: bool = typer.Option(False, help="Exit once every available message is scored (batch mode)."),
    max_batch: int | None = typer.Option(None, help="Largest batch (messages)."),
    max_wait_ms: int | None = typer.Option(None, help="Longest wait to fill a batch (ms)."),
    metrics_port: int = typer.Option(
        0, help="Serve /metrics, /healthz and /readyz on PORT (0: off; AET_METRICS_ADDR picks the address)."
    ),
) -> None:
    """Run the scorer role: consume aet.messages, publish aet.scored, store scores, then commit.

    SIGTERM or Ctrl-C finishes the current batch, commits it and exits 0.
    """
    from aet.pipeline.metrics import MODEL_VERSION
    from aet.pipeline.model import ModelLoadError
    from aet.pipeline.runtime import NoChampionError

    s = resolve_settings(scorer={"max_batch": max_batch, "max_wait_ms": max_wait_ms})
    with open_app(s) as application:
        stop = stop_on_signals()
        readiness = serve_daemon(application, "scorer", metrics_port)
        model_loaded = readiness.flag("model", "loading the champion")
        try:
            champion = application.ensure_champion(None)
            with application.serving_scorer(champion) as scorer:
                MODEL_VERSION.info({"version": champion.version})
                model_loaded.set()
                log.info(
                    "scorer serving %s%s",
                    champion.version,
                    ", following promotions and rollbacks" if scorer.swapper is not None else "",
                )
                n = scorer.run(stop, drain=drain)
            log.info("scorer stopped after %d messages (serving %s at the end)", n, scorer.model.version)
        except (NoChampionError, ModelLoadError) as exc:
            fail(str(exc))


@app.command("fast-path")
def fast_path(
    drain: bool = typer.Option(False, help="Exit once every available record is processed (batch mode)."),
    metrics_port: int = typer.Option(
        0, help="Serve /metrics, /healthz and /readyz on PORT (0: off; AET_METRICS_ADDR picks the address)."
    ),
) -> None:
    """Run the fast path: learn per-source heads from aet.scored features and aet.labels; publish heads versions.

    Run one per installation (its heads are its own). SIGTERM or Ctrl-C finishes the current batch, commits it
    and exits 0.
    """
    from aet.pipeline.model import ModelLoadError
    from aet.pipeline.runtime import NoChampionError

    s = resolve_settings()
    if not s.scorer.features:
        fail("scorer.features is off: the scorers attach no features for the fast path to learn from")
    with open_app(s) as application:
        stop = stop_on_signals()
        serve_daemon(application, "fast-path", metrics_port)
        try:
            application.ensure_champion(None)
            learner = application.head_learner()
            n = learner.run(stop, drain=drain)
            log.info("fast path stopped after %d records: %s", n, dict(learner.counts))
        except (NoChampionError, ModelLoadError) as exc:
            fail(str(exc))
