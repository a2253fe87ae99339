"""The training commands: ``aet train``, ``aet models promote|rollback|show|retrain-request``,
``aet bench adapt`` and ``aet bench gpu-train`` (registered into pipeline/cli/main.py)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import typer


def _emit(application: Any, events: list[Any]) -> None:
    """Publish control events to aet.control (flushed) and store them."""
    topic = application.settings.topics.control
    for e in events:
        application.bus.publish(topic, e.to_bytes(), key=e.kind)
    application.bus.flush()
    application.store.write(events=events)


def register(cli: ModuleType) -> None:
    """Add the training commands to ``cli.app``, ``cli.models_app`` and ``cli.bench_app``."""

    @cli.app.command("train")
    def train(
        drain: bool = typer.Option(False, help="Exit once every pending request is handled (batch mode)."),
        mode: str | None = typer.Option(None, help="What trains: full, attention or lora (default: settings)."),
        device: str | None = typer.Option(None, help="Training device: auto, cpu, cuda, cuda:1 ..."),
        metrics_port: int = typer.Option(0, help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off)."),
        progress: bool = typer.Option(True, help="Show progress bars."),
    ) -> None:
        """Run the trainer role: consume retrain requests from aet.control, train, register and gate challengers.

        Under torchrun (WORLD_SIZE > 1) it trains data-parallel: rank 0 consumes
        requests and writes the results, every rank trains on its share of each
        batch (see docs/training.md). SIGTERM or Ctrl-C finishes the current
        request and exits 0.
        """
        from aet.pipeline.learning.distributed import run_trainer
        from aet.pipeline.metrics import serve_metrics

        s = cli.settings(retrain={"mode": mode, "device": device})
        application = cli._open_app(s)
        stop = cli._stop_on_signals()
        try:
            serve_metrics(metrics_port)
            n = run_trainer(application, stop, drain=drain, progress=progress)
            cli.log.info("trainer stopped after %d control records", n)
        finally:
            application.close()

    @cli.models_app.command("promote")
    def models_promote(
        version: str = typer.Argument(..., help="The version to make champion."),
        reason: str = typer.Option("manual", help="Why (recorded in the promotion event)."),
    ) -> None:
        """Make VERSION the champion now (bypassing the gate); publishes a promotion to aet.control."""
        from aet.pipeline.learning.promotion import Promoter
        from aet.storage.registry import RegistryError

        application = cli._open_app(cli.settings())
        try:
            event = Promoter(application.registry).promote(version, reason=reason)
            _emit(application, [event])
        except (RegistryError, ValueError) as exc:
            cli._fail(str(exc))
        finally:
            application.close()
        cli._print_json(event.model_dump(mode="json"))

    @cli.models_app.command("rollback")
    def models_rollback(
        to: str | None = typer.Option(None, help="The version to reinstate (default: the previous champion)."),
        reason: str = typer.Option("manual", help="Why (recorded in the rollback event)."),
    ) -> None:
        """Demote the champion (status rolled_back) and reinstate the previous one; publishes a rollback."""
        from aet.pipeline.learning.promotion import Promoter
        from aet.storage.registry import RegistryError

        application = cli._open_app(cli.settings())
        try:
            event = Promoter(application.registry).rollback(to, reason=reason)
            _emit(application, [event])
        except RegistryError as exc:
            cli._fail(str(exc))
        finally:
            application.close()
        cli._print_json(event.model_dump(mode="json"))

    @cli.models_app.command("show")
    def models_show(version: str = typer.Argument(..., help="A registered version, e.g. v0002.")) -> None:
        """Lineage of VERSION as JSON: parent chain, drift event, training request, data window, metrics,
        gate decisions, promotions/rollbacks, and the alerts it produced."""
        from aet.storage.lineage import lineage
        from aet.storage.registry import RegistryError

        application = cli._open_app(cli.settings())
        try:
            result = lineage(application, version)
        except RegistryError as exc:
            cli._fail(str(exc))
        finally:
            application.close()
        cli._print_json(result)

    @cli.models_app.command("retrain-request")
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
        from aet.pipeline.records import ControlEvent

        s = cli.settings()
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
            cli.log.warning("memory bus without --bus-journal: only a trainer in this process could see the request")
        application = cli._open_app(s)
        try:
            _emit(application, [event])
        finally:
            application.close()
        cli._print_json(event.model_dump(mode="json"))

    @cli.bench_app.command("adapt")
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
        from aet.pipeline.learning.round import AdaptConfig

        s = cli.settings()
        base = AdaptConfig.from_settings(s.retrain, epochs=epochs, seed=seed, time_budget_s=None)
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
            cli._fail(str(exc))
        result = {**result, "results": [{k: v for k, v in r.items() if k != "history"} for r in result["results"]]}
        cli._print_json(result)

    @cli.bench_app.command("gpu-train")
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

        cli.settings()
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
            cli._fail(str(exc))
        cli._print_json(result)
