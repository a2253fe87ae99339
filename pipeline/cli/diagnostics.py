"""The checks behind ``aet doctor``: one plain function per dependency, each returning what it found.

Every check returns :class:`Finding` objects: ``ok``, ``warning`` (works, but
an operator should know), ``problem`` (something that stops AET from doing its
job; ``aet doctor`` exits non-zero) or ``skipped`` (an earlier problem hides
it). A problem says what is wrong and what to do about it, in words an
operator can act on. The checks open what they look at read-only: the
database is *not* migrated (a schema behind is reported, not fixed), no topic
is created, no model is loaded.

They live in the CLI package because they reach the concrete database, bus
and artifact store, which only the composition root and the CLI may import.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aet.pipeline.config import Settings
from aet.pipeline.learning.heads import HEADS_FILE
from aet.pipeline.model import sentiment_label_order
from aet.pipeline.ports import ArtifactError, Bus, ModelInfo
from aet.pipeline.records import LABELS
from aet.pipeline.redaction import redact

Level = Literal["ok", "warning", "problem", "skipped"]


@dataclass(frozen=True)
class Finding:
    """One thing a check found: which check, how bad, what it saw and what to do."""

    check: str
    level: Level
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"check": self.check, "level": self.level, "detail": self.detail, "fix": self.fix}


@dataclass
class Context:
    """What the checks share: the settings, and the database and bus once a check has opened them."""

    settings: Settings
    db: Any = None  # aet.storage.db.Database, opened by check_database
    bus: Bus | None = None  # opened by check_bus
    champion: ModelInfo | None = None  # found by check_registry
    schema_at_head: bool = False  # found by check_database
    secrets: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
        if self.db is not None:
            self.db.dispose()


def _brief(exc: BaseException, secrets: list[str]) -> str:
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0] if text else ''}"[:400], secrets)


def check_config(ctx: Context) -> list[Finding]:
    """The settings loaded (the caller reports a file that does not); warn about risky choices."""
    s = ctx.settings
    found = [Finding("config", "ok", f"home {s.home}, database {s.db_url_display}, bus {s.bus.backend}")]
    if s.bus.backend == "kafka" and s.control.signing_key is None:
        found.append(
            Finding(
                "config",
                "warning",
                "control.signing_key is not set: anyone who can write to aet.control can request training",
                "set AET_CONTROL__SIGNING_KEY (the same long random value) on every process",
            )
        )
    if s.bus.backend == "memory" and s.bus.journal_dir is None:
        found.append(
            Finding(
                "config",
                "warning",
                "memory bus without a journal: daemons in separate processes cannot share it",
                "use the kafka bus for daemons, or --bus-journal DIR",
            )
        )
    return found


def check_database(ctx: Context) -> list[Finding]:
    """The database answers, and its schema is at the newest Alembic revision of this build."""
    from aet.storage.db import Database, schema_revisions, sqlite_file

    s = ctx.settings
    path = sqlite_file(s.db_url)
    if path is not None and not path.is_file():
        return [
            Finding(
                "database",
                "problem",
                f"no SQLite database at {path}",
                "check home (AET_HOME) and database_url; a new installation starts with `aet models bootstrap`",
            )
        ]
    try:
        db = Database(s.db_url, migrate_schema=False)
        db.ping()
    except Exception as exc:  # noqa: BLE001 - whatever keeps the database away is the finding
        return [
            Finding(
                "database",
                "problem",
                f"cannot reach {s.db_url_display}: {_brief(exc, ctx.secrets)}",
                "start the database or fix database_url (AET_DATABASE_URL); check host, port, user and password",
            )
        ]
    ctx.db = db
    found = [Finding("database", "ok", f"{s.db_url_display} answers")]
    try:
        current, head = schema_revisions(db.engine)
    except Exception as exc:  # noqa: BLE001
        return [*found, Finding("schema", "problem", f"cannot read the schema revision: {_brief(exc, ctx.secrets)}")]
    if current == head:
        ctx.schema_at_head = True
        found.append(Finding("schema", "ok", f"at the newest revision {head}"))
    else:
        found.append(
            Finding(
                "schema",
                "problem",
                f"schema at revision {current or 'none (empty database)'}, this build needs {head}",
                "back up the database, then run `aet models list` (any command that opens the installation "
                "migrates it) or `alembic upgrade head`; see README, Operations",
            )
        )
    return found


def check_registry(ctx: Context, *, every_artifact: bool = False) -> list[Finding]:
    """A champion is registered, its artifact matches its sha256 and its labels are negative/neutral/positive."""
    from aet.storage.registry import ModelRegistry

    if ctx.db is None or not ctx.schema_at_head:
        return [Finding("registry", "skipped", "the database is not reachable or its schema is not at head")]
    registry = ModelRegistry(ctx.db)
    try:
        champion = registry.champion()
        models = registry.list() if every_artifact else []
    except Exception as exc:  # noqa: BLE001 - e.g. a schema too old for this build
        return [Finding("registry", "problem", f"cannot read the model registry: {_brief(exc, ctx.secrets)}")]
    if champion is None:
        return [
            Finding(
                "champion",
                "problem",
                "no champion model is registered: scorers refuse to start",
                "register one: `aet models bootstrap --data labeled.jsonl` (or `aet models promote VERSION`)",
            )
        ]
    ctx.champion = champion
    found = [Finding("champion", "ok", f"{champion.version} (backbone {champion.backbone})")]
    checked = {champion.version}
    for info in [champion, *(m for m in models if m.version not in checked)]:
        checked.add(info.version)
        found.append(_check_artifact(info))
    found.append(_check_labels(champion, registry))
    return found


def _check_artifact(info: ModelInfo) -> Finding:
    from aet.storage.artifacts import verify

    try:
        verify(Path(info.artifact_path), info.sha256)
    except (ArtifactError, OSError, ValueError) as exc:
        return Finding(
            "artifact",
            "problem",
            f"{info.version} ({info.status}) at {info.artifact_path}: {exc}",
            f"restore {info.artifact_path} from backup; or roll back (`aet models rollback`) "
            "if it is the champion; never edit an artifact in place",
        )
    return Finding("artifact", "ok", f"{info.version} ({info.status}) matches its sha256")


def _check_labels(champion: ModelInfo, registry: Any) -> Finding:
    """The champion (or, for a heads version, its base) names exactly negative, neutral and positive."""
    if set(champion.labels) != set(LABELS):
        return Finding(
            "labels",
            "problem",
            f"{champion.version} is registered with labels {champion.labels}, not {list(LABELS)}",
            "promote a sentiment model with the three labels (`aet models promote VERSION`)",
        )
    weights = champion
    if (Path(champion.artifact_path) / HEADS_FILE).is_file() and champion.weights_version != champion.version:
        weights = registry.get(champion.weights_version)
    config = Path(weights.artifact_path) / "config.json"
    try:
        id2label = {int(k): v for k, v in json.loads(config.read_text())["id2label"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Finding("labels", "problem", f"cannot read the labels of {weights.version} from {config}: {exc}")
    if sentiment_label_order(id2label) is None:
        return Finding(
            "labels",
            "problem",
            f"{weights.version}'s config.json names {sorted(id2label.values())}, not {list(LABELS)}",
            "re-export the checkpoint with the three sentiment labels, register and promote it",
        )
    return Finding("labels", "ok", f"{champion.version} predicts {list(LABELS)}")


def check_disk(ctx: Context, *, min_free_bytes: int = 2**30) -> list[Finding]:
    """Room under the models directory for the next artifacts: three times the champion's size, 1 GiB at least."""
    models_dir = ctx.settings.models_dir
    where = models_dir if models_dir.exists() else ctx.settings.home
    while not where.exists() and where != where.parent:
        where = where.parent
    need = min_free_bytes
    if ctx.champion is not None and Path(ctx.champion.artifact_path).is_dir():
        size = sum(p.stat().st_size for p in Path(ctx.champion.artifact_path).rglob("*") if p.is_file())
        need = max(need, 3 * size)
    free = shutil.disk_usage(where).free
    if free < need:
        return [
            Finding(
                "disk",
                "problem",
                f"{free / 2**30:.1f} GiB free under {where}, {need / 2**30:.1f} GiB needed for new artifacts",
                "free space or move home (AET_HOME) to a larger volume; old rejected versions can be archived",
            )
        ]
    return [Finding("disk", "ok", f"{free / 2**30:.1f} GiB free under {where}")]


def check_bus(ctx: Context) -> list[Finding]:
    """The bus answers and the topics exist (the scorers' lag on aet.messages is read to prove it)."""
    from aet.adapters.bus import open_bus

    s = ctx.settings
    where = s.bus.bootstrap_servers if s.bus.backend == "kafka" else (s.bus.journal_dir or "this process")
    try:
        bus = open_bus(s.bus)
    except Exception as exc:  # noqa: BLE001
        return [_bus_down(s, where, exc, ctx.secrets)]
    ctx.bus = bus
    try:
        lag = bus.group_lag(s.scorer.group, [s.topics.messages])
    except Exception as exc:  # noqa: BLE001
        return [_bus_down(s, where, exc, ctx.secrets)]
    return [Finding("bus", "ok", f"{s.bus.backend} at {where} answers; scorers' lag on {s.topics.messages}: {lag}")]


def _bus_down(s: Settings, where: object, exc: BaseException, secrets: list[str]) -> Finding:
    return Finding(
        "bus",
        "problem",
        f"cannot reach the {s.bus.backend} bus at {where}: {_brief(exc, secrets)}",
        "start the broker or fix bus.bootstrap_servers (AET_BUS__BOOTSTRAP_SERVERS); check the network path",
    )


def check_clock(
    ctx: Context, *, tolerance_s: float = 5.0, now_ms: Callable[[], float] = lambda: time.time() * 1000
) -> list[Finding]:
    """This machine's clock against the newest records on the bus: one stamped in the future means a skew.

    Producers stamp records with their own clocks; a record newer than this
    machine's now (beyond ``tolerance_s``) means one of the clocks is off, and
    event-time windows (alerts, drift) disagree between machines. Only Kafka
    has other machines' clocks on it.
    """
    if ctx.bus is None:
        return [Finding("clock", "skipped", "the bus is not reachable")]
    newest = getattr(ctx.bus, "newest_timestamps", None)
    if newest is None:
        return [Finding("clock", "skipped", "the memory bus runs on this machine's clock")]
    stamps: list[int] = []
    try:
        for topic in (ctx.settings.topics.messages, ctx.settings.topics.scored):
            stamps.extend(newest(topic).values())
    except Exception as exc:  # noqa: BLE001
        return [Finding("clock", "warning", f"cannot read the newest records: {_brief(exc, ctx.secrets)}")]
    return [clock_finding(stamps, now_ms(), tolerance_s)]


def clock_finding(stamps: list[int], now_ms: float, tolerance_s: float) -> Finding:
    """The skew finding for the newest record timestamps ``stamps`` (ms) seen at ``now_ms``."""
    if not stamps:
        return Finding("clock", "skipped", "no records on the bus yet to compare clocks with")
    ahead_s = (max(stamps) - now_ms) / 1000
    if ahead_s > tolerance_s:
        return Finding(
            "clock",
            "problem",
            f"a record on the bus is stamped {ahead_s:.1f} s in this machine's future",
            "synchronise the clocks of every AET machine (chrony / systemd-timesyncd against one NTP source)",
        )
    return Finding("clock", "ok", f"no record on the bus is stamped ahead of this clock (newest {-ahead_s:.1f} s ago)")


def run_checks(ctx: Context, *, every_artifact: bool = False) -> list[Finding]:
    """Every check in order; later ones use what earlier ones opened."""
    found: list[Finding] = []
    for check in (
        check_config,
        check_database,
        lambda c: check_registry(c, every_artifact=every_artifact),
        check_disk,
        check_bus,
        check_clock,
    ):
        found.extend(check(ctx))
    return found
