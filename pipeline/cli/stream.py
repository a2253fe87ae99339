"""``aet bench stream``: the replay benchmark of the whole loop (registered from pipeline/cli/main.py)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import typer


def register(cli: ModuleType) -> None:
    """Add ``bench stream`` to ``cli.bench_app``."""

    @cli.bench_app.command("stream")
    def bench_stream(
        scenario: str = typer.Option(
            "news-tweets",
            help="Scenario YAML, or a name from examples/scenarios (news-tweets, news-chat, news-tweets-chat-news).",
        ),
        quick: bool = typer.Option(False, help="The scenario's quick variant (smaller phases; the CI run)."),
        bus: str = typer.Option("memory", help="Bus of the AET loop: memory or kafka."),
        bootstrap_servers: str | None = typer.Option(None, help="Kafka for --bus kafka (default: a tansu broker)."),
        strategies: str | None = typer.Option(None, help="Comma-separated subset of static,river,periodic,aet,oracle."),
        data_dir: Path | None = typer.Option(
            None, help="Shared data directory (default: AET_SHARED_DATA or ../shared/data)."
        ),
        out: Path = typer.Option(Path("bench-results"), help="Directory for stream.json and stream.png."),
        progress: bool = typer.Option(True, help="Show progress bars."),
    ) -> None:
        """Replay a scenario of real corpora through static, river, periodic, AET (the full loop) and oracle:
        prequential accuracy and macro-F1 per phase, drift delay, retrains, training seconds, forgetting."""
        from aet.pipeline.bench.scenario import load_scenario
        from aet.pipeline.bench.stream import stream_benchmark

        cli.settings()
        if bus not in ("memory", "kafka"):
            cli._fail(f"--bus must be memory or kafka, not {bus!r}")
        try:
            s = load_scenario(scenario)
            if quick:
                s = s.quick_variant()
            if strategies:
                s = s.model_copy(update={"strategies": [x for x in strategies.split(",") if x]})
                s = type(s).model_validate(s.model_dump())
            result = stream_benchmark(
                s, data_dir=data_dir, out=out, bus=bus, bootstrap_servers=bootstrap_servers, progress=progress
            )
        except (FileNotFoundError, ValueError) as exc:
            cli._fail(str(exc))
        cli._print_json(result)
