"""The ``aet`` command line: run the whole loop embedded, or one role as a daemon.

Settings come from defaults, a config file (``--config``), ``AET_*`` environment
variables and these flags, in increasing precedence.

This module is the root command and its global options only; every command
lives in the module of its group and is added here, in the order ``aet --help``
lists them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from aet.pipeline.cli import alerts, bench, dlq, doctor, drift, ingest, models, roles, run, train
from aet.pipeline.cli.common import GlobalOptions, use_global_options

app = typer.Typer(
    help="AET: score financial news and chat sentiment on a stream, and keep the model right as language drifts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(run.app)
app.add_typer(roles.app)
app.add_typer(ingest.app)
app.add_typer(alerts.app)
app.add_typer(drift.app)
app.add_typer(train.app)
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(dlq.app, name="dlq")
app.add_typer(doctor.app)


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
    log_format: str | None = typer.Option(
        None, help="text, or json: one object a line with role, message id and model version."
    ),
) -> None:
    """Global options apply to every command."""
    use_global_options(
        GlobalOptions(
            config=config,
            overrides={
                "home": home,
                "database_url": db_url,
                "log_level": log_level,
                "log_format": log_format,
                "bus": {"backend": bus, "bootstrap_servers": bootstrap_servers, "journal_dir": bus_journal},
            },
        )
    )


if __name__ == "__main__":
    app()
