"""``aet dlq``: the dead-letter recorder daemon and what an operator does with dead letters.

``record`` runs the recorder role (``aet.dlq`` into the ``dead_letters`` table; ``aet run``
embeds it); ``list`` and ``show`` read the table; ``replay`` re-publishes the original
input of a dead letter to the topic it was read from, once whatever refused it is
fixed. A dead letter whose kept copy is truncated (the input was larger than
``dead_letters.raw_bytes``) cannot be re-published: the command says so and leaves it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from aet.pipeline.cli.common import fail, log, open_app, print_json, resolve_settings, serve_daemon, stop_on_signals
from aet.pipeline.records import parse_event_time

if TYPE_CHECKING:
    from aet.storage.tables import DeadLetterRow

app = typer.Typer(
    help="Dead letters: record them from aet.dlq, list, show, and re-publish them after a fix.", no_args_is_help=True
)


def summary_of(row: DeadLetterRow) -> dict[str, Any]:
    """One dead letter without its copy of the input (``aet dlq list``)."""
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "stage": row.stage,
        "reason": row.reason,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "key": row.key,
        "raw_size": row.raw_size,
        "truncated": row.truncated,
        "replayed_at": row.replayed_at.isoformat() if row.replayed_at else None,
    }


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_event_time(value)
    except ValueError as exc:
        fail(f"--since: {exc}")


@app.command("record")
def record(
    drain: bool = typer.Option(False, help="Exit once every available dead letter is stored (batch mode)."),
    metrics_port: int = typer.Option(
        0, help="Serve /metrics, /healthz and /readyz on PORT (0: off; AET_METRICS_ADDR picks the address)."
    ),
) -> None:
    """Run the dead-letter recorder: store every dead letter on aet.dlq, whichever stage wrote it.

    SIGTERM or Ctrl-C finishes the current batch, commits it and exits 0.
    """
    s = resolve_settings()
    with open_app(s) as application:
        stop = stop_on_signals()
        serve_daemon(application, "dead-letters", metrics_port)
        recorder = application.dead_letter_recorder()
        n = recorder.run(stop, drain=drain)
        log.info("dead-letter recorder stopped after %d records", n)


@app.command("list")
def list_(
    stage: str | None = typer.Option(None, help="Only this stage (replay, score, labels, alerts, monitor, store...)."),
    reason: str | None = typer.Option(None, help="Only dead letters whose reason contains this text."),
    since: str | None = typer.Option(None, help="Only those created at or after this ISO-8601 time."),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
) -> None:
    """List stored dead letters as JSON, newest first (without their copy of the input)."""
    s = resolve_settings()
    with open_app(s) as application:
        rows = application.store.list_dead_letters(stage=stage, reason=reason, since=_since(since), limit=limit)
    print_json([summary_of(r) for r in rows])


@app.command("show")
def show(
    dead_letter_id: str = typer.Argument(..., help="The id (or a unique prefix of it) from aet dlq list."),
) -> None:
    """Show one dead letter with its kept copy of the input."""
    s = resolve_settings()
    with open_app(s) as application:
        row = _one(application.store.find_dead_letters(dead_letter_id), dead_letter_id)
    print_json({**summary_of(row), "raw_sha256": row.raw_sha256, "raw": row.raw, "raw_base64": row.raw_base64})


def _one(rows: list[DeadLetterRow], prefix: str) -> DeadLetterRow:
    if not rows:
        fail(f"no dead letter with id {prefix!r}")
    if len(rows) > 1:
        fail(f"more than one dead letter has an id starting with {prefix!r}; give more of it")
    return rows[0]


@app.command("replay")
def replay(
    dead_letter_id: str | None = typer.Argument(None, help="The id (or a unique prefix) of one dead letter."),
    all_matching: bool = typer.Option(
        False, "--all-matching", help="Every dead letter that matches --stage/--reason/--since, not yet replayed."
    ),
    stage: str | None = typer.Option(None, help="With --all-matching: only this stage."),
    reason: str | None = typer.Option(None, help="With --all-matching: only reasons containing this text."),
    since: str | None = typer.Option(None, help="With --all-matching: only those created at or after this time."),
    topic: str | None = typer.Option(None, help="Publish here instead of the topic the input was read from."),
) -> None:
    """Re-publish the original input of dead letters to the topic they were read from, after a fix.

    Refuses (and leaves unmarked) a dead letter whose kept copy is truncated or that names no topic (a
    stream-file row refused by replay: fix the file and replay it, or pass --topic). Replayed dead letters
    are marked, so --all-matching does not publish them twice.
    """
    from aet.storage.store import dead_letter_of_row

    if (dead_letter_id is None) == (not all_matching):
        fail("give one dead letter id, or --all-matching with filters")
    s = resolve_settings()
    with open_app(s) as application:
        store = application.store
        if dead_letter_id is not None:
            rows = [_one(store.find_dead_letters(dead_letter_id), dead_letter_id)]
        else:
            rows = store.list_dead_letters(stage=stage, reason=reason, since=_since(since), limit=None, replayed=False)
        published: list[str] = []
        refused: dict[str, str] = {}
        for row in rows:
            dead = dead_letter_of_row(row)
            target = topic or dead.topic
            kept = dead.kept
            if not dead.complete or kept is None:
                refused[row.id] = (
                    f"only the first {len(kept or b'')} of {dead.raw_size} bytes were kept (truncated): "
                    "the original cannot be re-published from the dead letter"
                    if dead.truncated
                    else "no complete copy of the input was kept"
                )
                continue
            if target is None:
                refused[row.id] = f"stage {dead.stage} read no topic: pass --topic, or fix the source and replay it"
                continue
            application.bus.publish(target, kept, key=dead.key)
            published.append(row.id)
        if published:
            application.bus.flush()
            store.mark_replayed(published)
    print_json({"published": published, "refused": refused})
    if refused and dead_letter_id is not None:
        fail(next(iter(refused.values())), code=1)
