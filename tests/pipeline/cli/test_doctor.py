"""``aet doctor`` names each broken dependency distinctly (real SQLite and PostgreSQL, a closed port for the bus)
and exits non-zero; ``aet status`` shows what serves and each role's lag."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aet.pipeline.cli.diagnostics import clock_finding
from aet.pipeline.records import LABELS
from aet.storage.artifacts import ArtifactStore
from aet.storage.db import Database, migrate, schema_revisions
from aet.storage.registry import ModelRegistry
from tests.kafka_broker import TansuBroker, kafka_broker  # noqa: F401 - a fixture, found by pytest through this import


def doctor(home: Path, db_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    from aet.pipeline.cli.main import app

    result = CliRunner().invoke(
        app,
        ["--home", str(home), "--db-url", db_url, "--bus-journal", str(home / "journal"), *args, "doctor", "--json"],
        env=env,
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def problems(found: list[dict[str, Any]]) -> dict[str, str]:
    return {f["check"]: f["detail"] for f in found if f["level"] == "problem"}


def register_champion(home: Path, db: Database, labels: dict[str, str] | None = None) -> Path:
    """A sealed artifact (config.json and weights bytes, no real model: the doctor loads none) as champion."""
    artifacts = ArtifactStore(home / "models")
    staged = artifacts.stage()
    id2label = labels or {str(i): label for i, label in enumerate(LABELS)}
    (staged / "config.json").write_text(json.dumps({"id2label": id2label}))
    (staged / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    path, digest = artifacts.commit(staged, "v0001")
    ModelRegistry(db).register(
        version="v0001",
        artifact_path=str(path),
        sha256=digest,
        backbone="tiny",
        labels=list(LABELS),
        status="champion",
    )
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_a_healthy_installation_has_no_problem(home: Path, db_url: str) -> None:
    db = Database(db_url)
    register_champion(home, db)
    db.dispose()
    code, found = doctor(home, db_url)
    assert code == 0 and problems(found) == {}
    assert {f["check"] for f in found if f["level"] == "ok"} >= {
        "config",
        "database",
        "schema",
        "champion",
        "artifact",
        "labels",
        "disk",
        "bus",
    }


def test_no_champion(home: Path, db_url: str) -> None:
    Database(db_url).dispose()
    code, found = doctor(home, db_url)
    assert code == 1 and set(problems(found)) == {"champion"}
    [fix] = [f["fix"] for f in found if f["check"] == "champion"]
    assert "aet models bootstrap" in fix


def test_a_corrupted_artifact(home: Path, db_url: str) -> None:
    db = Database(db_url)
    path = register_champion(home, db)
    db.dispose()
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # one byte flipped, same size
    code, found = doctor(home, db_url)
    assert code == 1 and set(problems(found)) == {"artifact"}
    assert "v0001" in problems(found)["artifact"] and "model.safetensors" in problems(found)["artifact"]


def test_a_champion_with_other_labels(home: Path, sqlite_url: str) -> None:
    db = Database(sqlite_url)
    register_champion(home, db, labels={"0": "bearish", "1": "neutral", "2": "bullish"})
    db.dispose()
    code, found = doctor(home, sqlite_url)
    assert code == 1 and set(problems(found)) == {"labels"}


def test_a_schema_behind_this_build(home: Path, db_url: str) -> None:
    db = Database(db_url, migrate_schema=False)
    migrate(db.engine, "0005")
    db.dispose()
    probe = Database(db_url, migrate_schema=False)
    head = schema_revisions(probe.engine)[1]
    probe.dispose()
    code, found = doctor(home, db_url)
    assert code == 1 and set(problems(found)) == {"schema"}
    assert head is not None and head > "0005", "the test needs a schema with revisions after 0005"
    assert "0005" in problems(found)["schema"] and head in problems(found)["schema"]
    skipped = {f["check"] for f in found if f["level"] == "skipped"}
    assert "registry" in skipped, "a registry read on an old schema would only repeat the schema problem"
    again = Database(db_url, migrate_schema=False)
    try:
        assert schema_revisions(again.engine)[0] == "0005", "the doctor only looks: it must not migrate"
    finally:
        again.dispose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_database_down(home: Path) -> None:
    url = f"postgresql+psycopg://aet:pw-not-shown@127.0.0.1:{closed_port()}/aet"
    code, found = doctor(home, url)
    assert code == 1 and set(problems(found)) == {"database"}
    assert "cannot reach" in problems(found)["database"] and "pw-not-shown" not in json.dumps(found)


def test_the_bus_down(home: Path, sqlite_url: str) -> None:
    db = Database(sqlite_url)
    register_champion(home, db)
    db.dispose()
    args = ("--bus", "kafka", "--bootstrap-servers", f"127.0.0.1:{closed_port()}", "doctor")
    from aet.pipeline.cli.main import app

    result = CliRunner().invoke(
        app, ["--home", str(home), "--db-url", sqlite_url, *args, "--json"], env={"AET_BUS__CONNECT_TIMEOUT_S": "2"}
    )
    found = json.loads(result.stdout)
    assert result.exit_code == 1 and set(problems(found)) == {"bus"}
    assert {f["check"]: f["level"] for f in found}["clock"] == "skipped"


def test_clock_skew_is_a_record_stamped_in_the_future() -> None:
    now = 1_700_000_000_000
    assert clock_finding([now - 60_000, now + 30_000], now, 5.0).level == "problem"
    assert clock_finding([now - 60_000, now + 2_000], now, 5.0).level == "ok"
    assert clock_finding([], now, 5.0).level == "skipped"


def test_status_shows_the_champion_and_the_lag(home: Path, sqlite_url: str) -> None:
    from aet.pipeline.cli.main import app

    db = Database(sqlite_url)
    register_champion(home, db)
    db.dispose()
    result = CliRunner().invoke(
        app, ["--home", str(home), "--db-url", sqlite_url, "--bus-journal", str(home / "journal"), "status", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["champion"] == "v0001" and data["models"] == {"champion": 1}
    assert data["lag"]["scorer"] == 0 and data["last_drift"] is None and data["problems"] == []
    text = CliRunner().invoke(app, ["--home", str(home), "--db-url", sqlite_url, "status"])
    assert "champion        v0001" in text.stdout and "consumer lag" in text.stdout


@pytest.mark.kafka
def test_the_clock_is_read_against_the_newest_records_on_kafka(
    kafka_broker: TansuBroker,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    from aet.adapters.bus import open_bus
    from aet.pipeline.cli.diagnostics import Context, check_bus, check_clock
    from aet.pipeline.config import Settings

    run = uuid.uuid4().hex[:8]
    settings = Settings(
        home=tmp_path,
        bus={"backend": "kafka", "bootstrap_servers": kafka_broker.bootstrap_servers, "partitions": 2},
        topics={"messages": f"m-{run}", "scored": f"s-{run}"},
    )
    with open_bus(settings.bus) as bus:
        bus.create_topics([settings.topics.messages, settings.topics.scored])
        bus.publish(settings.topics.messages, b"{}", key="k")
        bus.flush()
    ctx = Context(settings)
    try:
        assert [f.level for f in check_bus(ctx)] == ["ok"]
        assert [f.level for f in check_clock(ctx)] == ["ok"]
        # Seen from a machine whose clock is a minute behind, the record is stamped in its future.
        [late] = check_clock(ctx, now_ms=lambda: time.time() * 1000 - 60_000)
        assert late.level == "problem" and "future" in late.detail
    finally:
        ctx.close()
