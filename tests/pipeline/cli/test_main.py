"""The ``aet`` command line, end to end in subprocesses: the README's demo and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aet.storage.db import Database
from aet.storage.tables import ModelRow, ScoredMessageRow
from tests.cli_helpers import aet_env, run_aet
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow


def _count_rows(home: Path, column) -> dict[str, int]:
    db = Database(f"sqlite:///{home / 'aet.db'}")
    try:
        with db.session() as s:
            return dict(s.execute(select(column, func.count()).group_by(column)).all())
    finally:
        db.dispose()


def test_run_bootstraps_once_then_reuses_the_champion(tmp_path: Path) -> None:
    """The README's first command: every example message scored with a model version, twice."""
    home = tmp_path / "home"
    env = aet_env(home, AET_TRAIN__EPOCHS="1")
    n_stream = sum(1 for line in (EXAMPLES / "stream.jsonl").read_text().splitlines() if line.strip())
    args = [
        "run",
        "--data",
        str(EXAMPLES / "stream.jsonl"),
        "--bootstrap-data",
        str(EXAMPLES / "train.jsonl"),
        "--label-fraction",
        "1",
        "--no-progress",
    ]

    first = run_aet(args, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "registered v0001 as champion" in first.stderr
    assert f"in the store      {n_stream} scored messages" in first.stdout
    assert sum(_count_rows(home, ScoredMessageRow.model_version).values()) == n_stream
    assert "accuracy" in first.stdout

    second = run_aet(args, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "registered" not in second.stderr, "the second run trained again instead of reusing the champion"
    assert "champion          v0001" in second.stdout
    statuses = _count_rows(home, ModelRow.status)
    assert statuses.get("champion") == 1 and set(statuses) <= {"champion", "retired"}
    versions = _count_rows(home, ModelRow.version)
    assert all(v == "v0001" or v.startswith("v0001.h") for v in versions)  # only fast-path heads on v0001
    scored = _count_rows(home, ScoredMessageRow.model_version)
    assert sum(scored.values()) == n_stream and all(v.split(".")[0] == "v0001" for v in scored)


def test_models_list_json(app_with_champion, tmp_path: Path) -> None:
    result = run_aet(["models", "list", "--json"], aet_env(app_with_champion.settings.home))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["version"], r["status"]) for r in rows] == [("v0001", "champion")]


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    from aet.pipeline.config import load_settings
    from aet.pipeline.runtime import App

    home = tmp_path / "home"
    app = App(load_settings(home=home))
    missing = tmp_path / "models" / "gone"
    app.registry.register(
        version="v0001",
        artifact_path=str(missing),
        sha256="0" * 64,
        backbone="minilm",
        labels=["negative", "neutral", "positive"],
        status="champion",
    )
    app.close()
    result = run_aet(["score", "--drain"], aet_env(home))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_model_artifact_is_a_clear_error(app_with_champion, tmp_path: Path) -> None:
    """A champion whose weights changed on disk is refused by checksum, naming the file."""
    import shutil

    info = app_with_champion.registry.champion()
    copy = tmp_path / "copy"
    shutil.copytree(info.artifact_path, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    app_with_champion.registry.register(
        version="v0002",
        artifact_path=str(copy),
        sha256=info.sha256,
        backbone="minilm",
        labels=info.labels,
        status="champion",
    )
    result = run_aet(["score", "--drain"], aet_env(app_with_champion.settings.home))
    assert result.returncode == 2
    assert "model.safetensors does not match its sha256" in result.stderr
    assert str(copy) in result.stderr


def test_run_without_champion_or_bootstrap_data_explains_what_to_do(tmp_path: Path) -> None:
    result = run_aet(["run", "--data", str(EXAMPLES / "stream.jsonl"), "--no-progress"], aet_env(tmp_path / "home"))
    assert result.returncode == 2
    assert "aet models bootstrap" in result.stderr


def test_help_lists_the_commands() -> None:
    result = run_aet(["--help"], aet_env(Path("/nonexistent")))
    assert result.returncode == 0
    for command in ("run", "replay", "score", "models", "bench"):
        assert command in result.stdout


def test_accuracy_per_version_sums_fast_path_heads_into_one_line_after_their_model() -> None:
    from aet.pipeline.cli.run import version_lines

    lines = version_lines(
        {
            "v0001": {"labeled": 100, "accuracy": 0.7},
            "v0001.h1": {"labeled": 50, "accuracy": 0.8},
            "v0001.h2": {"labeled": 150, "accuracy": 0.9},
            "v0002": {"labeled": 0, "accuracy": None},
        }
    )
    assert [line.split() for line in lines] == [
        ["v0001", "0.700", "on", "100", "labeled", "messages"],
        ["v0001", "+", "fast-path", "heads", "0.875", "on", "200", "labeled", "messages"],
    ]
