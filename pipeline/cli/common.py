"""What every ``aet`` command shares: its settings, its AET installation, its errors and its output.

The root command's global options are kept here by :func:`use_global_options`
and merged by :func:`resolve_settings` under each command's own flags, so a
command module never reaches into another. :func:`open_app` is the one way a
command opens an installation: it turns a failure to open into a clear usage
error and always closes what it opened.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from pydantic import ValidationError

from aet.pipeline.config import Settings, load_settings, merge_overrides
from aet.pipeline.logging_setup import configure_logging
from aet.pipeline.redaction import explain_settings_error, redact

if TYPE_CHECKING:
    from aet.pipeline.health import Readiness
    from aet.pipeline.runtime import App

log = logging.getLogger("aet")


@dataclass
class GlobalOptions:
    """The root command's options (``--config``, ``--home``, ``--bus`` ...), as settings overrides."""

    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


_options = GlobalOptions()


def use_global_options(options: GlobalOptions) -> None:
    """Remember the root command's options for the command that runs after it."""
    global _options
    _options = options


def global_options() -> GlobalOptions:
    """The root command's options of this invocation."""
    return _options


def resolve_settings(**overrides: Any) -> Settings:
    """Settings for a command (defaults < config file < environment < global flags < its own flags); sets up logging."""
    merged = merge_overrides(_options.overrides, overrides)
    try:
        s = load_settings(_options.config, **merged)
    except ValidationError as exc:  # a settings error is a usage error; it never quotes the values (secrets)
        fail(f"invalid settings: {explain_settings_error(exc)}")
    except Exception as exc:  # noqa: BLE001
        fail(f"invalid settings: {redact(str(exc))}")
    configure_logging(s.log_level, s.log_format, secrets=s.secrets())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if s.log_level != "DEBUG":  # kafka-python logs every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return s


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with ``error: MESSAGE`` on stderr and exit status ``code`` (2: a usage error)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def open_app(s: Settings) -> Iterator[App]:
    """The AET installation of ``s`` (database, registry, artifacts, bus), closed when the block ends."""
    from aet.pipeline.runtime import App

    try:
        application = App(s)
    except Exception as exc:  # noqa: BLE001 - whatever stops the installation from opening is reported as such
        fail(f"cannot open AET home {s.home} / database {s.db_url_display}: {redact(str(exc), s.secrets())}")
    try:
        yield application
    finally:
        application.close()


def serve_daemon(application: App, role: str, metrics_port: int) -> Readiness:
    """Serve a daemon's ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics_port`` (0: none) before it starts.

    Ready means: the database answers and a ``role`` worker has polled its topics; a command adds its own
    checks to the returned :class:`Readiness` (e.g. ``flag("model", ...)`` until its model is loaded).
    """
    from aet.pipeline.health import Readiness
    from aet.pipeline.metrics import serve_metrics

    readiness = Readiness(role, secrets=application.settings.secrets())
    readiness.require("database", application.db.ping)
    readiness.require_subscribed(role)
    try:
        serve_metrics(metrics_port, readiness=readiness)
    except OSError as exc:
        fail(f"cannot serve metrics on port {metrics_port}: {exc}")
    return readiness


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a worker finishes and commits its batch first."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def print_json(data: Any) -> None:
    """A command's result as indented JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, default=str))
