"""``aet train``: the trainer role as a daemon, alone or data-parallel under torchrun.

The commands that act on what it registers (``aet models promote|rollback|show``,
``aet models retrain-request``) are in models.py; its benchmarks (``aet bench
adapt|gpu-train``) in bench.py.
"""

from __future__ import annotations

import os

import typer

from aet.pipeline.cli.common import log, open_app, resolve_settings, serve_daemon, stop_on_signals

app = typer.Typer()


@app.command("train")
def train(
    drain: bool = typer.Option(False, help="Exit once every pending request is handled (batch mode)."),
    mode: str | None = typer.Option(None, help="What trains: full, attention or lora (default: settings)."),
    device: str | None = typer.Option(None, help="Training device: auto, cpu, cuda, cuda:1 ..."),
    metrics_port: int = typer.Option(
        0, help="Serve /metrics, /healthz and /readyz on PORT (0: off; AET_METRICS_ADDR picks the address)."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run the trainer role: consume retrain requests from aet.control, train, register and gate challengers.

    Under torchrun (WORLD_SIZE > 1) it trains data-parallel: rank 0 consumes
    requests and writes the results, every rank trains on its share of each
    batch (see docs/training.md). SIGTERM or Ctrl-C finishes the current
    request and exits 0.
    """
    from aet.pipeline.learning.distributed import run_trainer

    s = resolve_settings(retrain={"mode": mode, "device": device})
    with open_app(s) as application:
        stop = stop_on_signals()
        # Under torchrun only rank 0 consumes requests (and the ranks of a node would share the port).
        serve_daemon(application, "trainer", metrics_port if os.environ.get("RANK", "0") == "0" else 0)
        n = run_trainer(application, stop, drain=drain, progress=progress)
        log.info("trainer stopped after %d control records", n)
