"""The command tree users script against: every command and group in its place, in ``aet --help``'s order."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer

from aet.pipeline.cli import app
from tests.conftest import REPO

ROOT = [
    "run",
    "replay",
    "score",
    "fast-path",
    "ingest",
    "alert",
    "serve",
    "monitor",
    "drift",
    "train",
    "models",
    "bench",
    "alerts",
    "dlq",
    "doctor",
    "status",
]
MODELS = ["bootstrap", "list", "promote", "rollback", "show", "retrain-request"]
BENCH = ["score", "swap", "bus", "alerts", "drift-detect", "adapt", "gpu-train", "stream", "recipe", "soak", "ingest"]


def _tree(command: Any) -> dict[str, Any]:
    """Command names in listing order; a group maps to its own tree, a command to None."""
    tree: dict[str, Any] = {}
    for name in command.list_commands(None):
        sub = command.get_command(None, name)
        tree[name] = _tree(sub) if isinstance(sub, typer.core.TyperGroup) else None
    return tree


def test_every_command_is_where_users_expect_it() -> None:
    tree = _tree(typer.main.get_group(app))
    assert list(tree) == ROOT
    assert list(tree["models"]) == MODELS
    assert list(tree["bench"]) == BENCH
    assert list(tree["alerts"]) == ["list", "follow"]
    assert list(tree["dlq"]) == ["record", "list", "show", "replay"]


@pytest.mark.slow  # subprocesses
def test_the_module_entry_points_run_the_same_command_line() -> None:
    for module in ("aet.pipeline.cli", "aet.pipeline.cli.main"):
        result = subprocess.run(
            [sys.executable, "-m", module, "models", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "retrain-request" in result.stdout
