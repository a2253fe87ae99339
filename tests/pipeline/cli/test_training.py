"""``aet models retrain-request|show|promote|rollback`` and ``aet train`` on a tiny champion (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aet.pipeline import cli
from aet.pipeline.config import load_settings
from aet.pipeline.learning.rehearsal import Reservoir
from aet.pipeline.records import LABELS
from aet.pipeline.runtime import App
from aet.storage.training_store import TrainingStore
from tests.pipeline.tiny_model import register_tiny, synthetic_examples

RETRAIN = {
    "epochs": "1",
    "min_examples": "30",
    "fisher_samples": "8",
    "batch_size": "16",
    "min_holdout": "5",
    "reservoir_per_source": "60",
    "learning_rate": "0.005",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    app = App(load_settings(home=home, bus={"journal_dir": tmp_path / "journal"}))
    try:
        register_tiny(app)
        Reservoir(TrainingStore(app.db), 60, seed=13).add(synthetic_examples(90, seed=9, prefix="old "))
    finally:
        app.close()
    return home


def aet(home: Path, *args: str) -> Any:
    env = {
        "AET_HOME": str(home),
        "AET_BUS__JOURNAL_DIR": str(home.parent / "journal"),
        "AET_MODEL__DEVICE": "cpu",
        "AET_MODEL__MAX_LENGTH": "32",
        "AET_RETRAIN__ALLOWED_DATA_DIRS": json.dumps([str(home.parent)]),  # requests name files in tmp_path
        **{f"AET_RETRAIN__{k.upper()}": v for k, v in RETRAIN.items()},
    }
    result = CliRunner().invoke(cli.app, list(args), env=env, catch_exceptions=False)
    return result


def test_request_train_show_promote_rollback(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "new.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": e.id, "text": e.text, "label": LABELS[e.label]}) + "\n"
            for e in synthetic_examples(90, seed=1, prefix="new ")
        )
    )
    made = aet(home, "models", "retrain-request", "--data", str(data), "--no-promote", "--drift-event", "d-1")
    assert made.exit_code == 0, made.output
    request = json.loads(made.stdout)
    assert request["kind"] == "retrain_request" and request["payload"]["auto_promote"] is False

    trained = aet(home, "train", "--drain", "--no-progress", "--mode", "lora")
    assert trained.exit_code == 0, trained.output

    shown = aet(home, "models", "show", "v0002")
    assert shown.exit_code == 0, shown.output
    lineage = json.loads(shown.stdout)
    assert lineage["status"] == "challenger" and lineage["parent"] == "v0001"
    assert lineage["training_request"]["id"] == request["id"] and lineage["training_request"]["stored"] is True
    assert lineage["drift_event"] == {"id": "d-1", "stored": False}
    assert lineage["training"]["mode"] == "lora"

    promoted = aet(home, "models", "promote", "v0002", "--reason", "looks good")
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.stdout)["payload"]["champion"]["version"] == "v0002"
    rolled = aet(home, "models", "rollback", "--reason", "live accuracy fell")
    assert rolled.exit_code == 0, rolled.output
    event = json.loads(rolled.stdout)
    assert (event["kind"], event["payload"]["from"], event["payload"]["to"]) == ("rollback", "v0002", "v0001")

    listed = json.loads(aet(home, "models", "list", "--json").stdout)
    assert {r["version"]: r["status"] for r in listed} == {"v0001": "champion", "v0002": "rolled_back"}
    kinds = [d["kind"] for d in json.loads(aet(home, "models", "show", "v0002").stdout)["decisions"]]
    assert kinds == ["training_result", "promotion", "rollback"]


def test_clear_errors(home: Path) -> None:
    unknown = aet(home, "models", "show", "v0042")
    assert unknown.exit_code == 2 and "unknown model version 'v0042'" in unknown.output
    nothing = aet(home, "models", "rollback")
    assert nothing.exit_code == 2 and "no previous champion" in nothing.output
    again = aet(home, "models", "promote", "v0001")
    assert again.exit_code == 2 and "already the champion" in again.output
