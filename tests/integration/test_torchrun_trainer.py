"""``aet train`` under torchrun: two CPU ranks (gloo) train one round data-parallel; rank 0 registers it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aet.pipeline.config import load_settings
from aet.pipeline.learning.rehearsal import Reservoir
from aet.pipeline.records import LABELS, ControlEvent
from aet.pipeline.runtime import App
from aet.storage.training_store import TrainingStore
from tests.cli_helpers import aet_env
from tests.conftest import REPO
from tests.pipeline.tiny_model import register_tiny, synthetic_examples


@pytest.mark.slow
def test_torchrun_two_ranks_train_one_request(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    home, journal = tmp_path / "home", tmp_path / "journal"
    retrain = {
        "epochs": 1,
        "min_examples": 30,
        "fisher_samples": 8,
        "batch_size": 8,
        "min_holdout": 5,
        "reservoir_per_source": 60,
        "learning_rate": 5e-3,
        "mode": "attention",
        "auto_promote": False,
    }
    app = App(load_settings(home=home, bus={"journal_dir": journal}, retrain=retrain))
    try:
        register_tiny(app)
        Reservoir(TrainingStore(app.db), 60, seed=13).add(synthetic_examples(90, seed=9, prefix="old "))
        data = tmp_path / "new.jsonl"
        data.write_text(
            "".join(
                json.dumps({"id": e.id, "text": e.text, "label": LABELS[e.label]}) + "\n"
                for e in synthetic_examples(90, seed=1, prefix="new ")
            )
        )
        event = ControlEvent(kind="retrain_request", payload={"data": str(data)})
        app.bus.publish(app.settings.topics.control, event.to_bytes(), key=event.kind)
        app.bus.flush()
    finally:
        app.close()

    env = aet_env(
        home,
        AET_BUS__JOURNAL_DIR=str(journal),
        AET_MODEL__DEVICE="cpu",
        AET_MODEL__MAX_LENGTH="32",
        AET_RETRAIN__ALLOWED_DATA_DIRS=json.dumps([str(tmp_path)]),  # the request names a file there
        **{f"AET_RETRAIN__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in retrain.items()},
    )
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "aet.pipeline.cli",
            "train",
            "--drain",
            "--no-progress",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trainer rank 1 of 2" in proc.stderr and "rank 1: training its share of request" in proc.stderr

    app = App(load_settings(home=home, bus={"journal_dir": journal}, retrain=retrain))
    try:
        info = app.registry.get("v0002")
        assert info.status == "challenger" and info.info["request_id"] == event.id
        assert info.info["data_parallel_ranks"] == 2
        assert {m.version for m in app.registry.list()} == {"v0001", "v0002"}  # only rank 0 registers
    finally:
        app.close()
