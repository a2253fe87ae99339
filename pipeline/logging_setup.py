"""How AET logs: plain text for a terminal or one JSON object a line for a log pipeline, never a secret.

``--log-format json`` (setting ``log_format``) writes each record as one JSON
object with ``ts``, ``level``, ``logger``, ``message`` and, where the code that
logged knows them, ``role``, ``message_id`` and ``model_version``. Those three
come from context variables that the worker loop and the roles bind
(:func:`bind`, :func:`set_role`), so a log line needs no extra arguments to
carry them; each thread starts without them and the worker binds its role when
its loop starts. The formatter is a few lines of ``json.dumps``, so no logging
package is added for it.

Every record, in either format, goes through :class:`RedactingFilter`: the
message is redacted with :func:`aet.pipeline.redaction.redact` and the
installation's secrets (database password, webhook URLs and headers, signing
key), so that an exception quoting a URL never prints its password.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Literal

from aet.pipeline.redaction import redact

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The context fields every record carries (``None`` where unknown); JSON lines leave out the unknown ones.
FIELDS = ("role", "message_id", "model_version")

_context: dict[str, ContextVar[str | None]] = {name: ContextVar(f"aet_log_{name}", default=None) for name in FIELDS}


def set_role(role: str) -> None:
    """Log ``role`` on every record of this thread (and of the contexts copied from it) from now on."""
    _context["role"].set(role)


def set_model_version(version: str | None) -> None:
    """Log ``version`` as the model serving in this thread from now on."""
    _context["model_version"].set(version)


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Log ``fields`` (``role``, ``message_id``, ``model_version``) on the records of this block."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    tokens: list[tuple[str, Token[str | None]]] = [(k, _context[k].set(v)) for k, v in fields.items()]
    try:
        yield
    finally:
        for name, token in reversed(tokens):
            _context[name].reset(token)


class ContextFilter(logging.Filter):
    """Adds the bound context fields to each record (an ``extra=`` of the same name wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, _context[name].get())
        return True


class RedactingFilter(logging.Filter):
    """Renders each record's message with its secrets masked and its URLs redacted."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO-8601), level, logger, message, the known context, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def build_handler(
    fmt: LogFormat = "text", *, secrets: list[str] | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in ``fmt``, with the context fields and the secrets redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets or []))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(
    level: str, fmt: LogFormat = "text", *, secrets: list[str] | None = None, stream: IO[str] | None = None
) -> None:
    """Send AET's logs to ``stream`` (stderr) at ``level`` in ``fmt`` (see :func:`build_handler`).

    Like :func:`logging.basicConfig`, it leaves a root logger that something
    else configured alone (a test's log capture); a handler it installed itself
    is replaced, so a second call changes the format.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "aet_handler", False)]
    if root.handlers and not ours:
        return
    for old in ours:
        root.removeHandler(old)
    handler = build_handler(fmt, secrets=secrets, stream=stream)
    handler.aet_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
