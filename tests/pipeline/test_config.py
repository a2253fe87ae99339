"""Settings precedence: defaults < config file (YAML/TOML) < AET_* environment < explicit overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from aet.pipeline.config import (
    LEARNING_RATE_BY_MODE,
    FitSettings,
    ObjectiveSettings,
    RoundSettings,
    ScorerSettings,
    Settings,
    TrainableSettings,
    load_settings,
)
from aet.pipeline.learning.trainable import MODES

YAML = """\
log_level: warning
scorer:
  group: file-group
  max_batch: 10
  max_wait_ms: 45
bus:
  backend: kafka
  bootstrap_servers: file-broker:9092
replay:
  label_fraction: 0.25
"""

TOML = """\
log_level = "warning"

[scorer]
group = "file-group"
max_batch = 10
max_wait_ms = 45

[bus]
backend = "kafka"
bootstrap_servers = "file-broker:9092"

[replay]
label_fraction = 0.25
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AET_* variable from the caller's shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("AET_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["yaml", "yml", "toml"])
def config_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"aet.{request.param}"
    path.write_text(TOML if request.param == "toml" else YAML)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.scorer == ScorerSettings()
    assert s.scorer.max_batch == 64 and s.scorer.max_wait_ms == 20 and s.scorer.max_text_chars == 5000
    assert s.bus.backend == "memory"
    assert s.log_level == "INFO"
    assert s.topics.messages == "aet.messages" and s.topics.dlq == "aet.dlq"
    assert len(set(s.topics.all())) == 6
    assert s.db_url == f"sqlite:///{(Path('aet-data') / 'aet.db').resolve()}"


def test_file_overrides_defaults(config_file: Path) -> None:
    s = load_settings(config_file)
    assert s.scorer.group == "file-group"
    assert (s.scorer.max_batch, s.scorer.max_wait_ms) == (10, 45)
    assert s.scorer.max_text_chars == 5000  # untouched default survives next to file values
    assert s.bus.backend == "kafka" and s.bus.bootstrap_servers == "file-broker:9092"
    assert s.bus.partitions == 3
    assert s.replay.label_fraction == 0.25
    assert s.log_level == "WARNING"


def test_env_overrides_file_and_nests_with_double_underscore(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AET_SCORER__MAX_BATCH", "30")
    monkeypatch.setenv("AET_SCORER__MAX_WAIT_MS", "35")
    monkeypatch.setenv("AET_BUS__BOOTSTRAP_SERVERS", "env-broker:9092")
    monkeypatch.setenv("AET_LOG_LEVEL", "debug")
    s = load_settings(config_file)
    assert (s.scorer.max_batch, s.scorer.max_wait_ms) == (30, 35)
    assert s.scorer.group == "file-group"  # the file still wins over defaults where env is silent
    assert s.bus.bootstrap_servers == "env-broker:9092" and s.bus.backend == "kafka"
    assert s.log_level == "DEBUG"


def test_overrides_beat_env_file_and_defaults(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AET_SCORER__MAX_BATCH", "30")
    monkeypatch.setenv("AET_SCORER__MAX_WAIT_MS", "35")
    s = load_settings(config_file, scorer={"max_batch": 40}, log_level="error")
    assert s.scorer.max_batch == 40  # flag > env > file
    assert s.scorer.max_wait_ms == 35  # env > file, a sibling flag does not reset it
    assert s.scorer.group == "file-group"  # file > default
    assert s.scorer.max_text_chars == 5000  # default
    assert s.log_level == "ERROR"


def test_none_overrides_do_not_mask_env_or_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AET_SCORER__MAX_WAIT_MS", "35")
    monkeypatch.setenv("AET_LOG_LEVEL", "debug")
    s = load_settings(
        config_file,
        log_level=None,
        database_url=None,
        scorer={"max_wait_ms": None, "max_batch": None, "group": None},
        bus={"backend": None, "bootstrap_servers": None, "journal_dir": None},
    )
    assert s.scorer.max_wait_ms == 35
    assert s.scorer.max_batch == 10
    assert s.scorer.group == "file-group"
    assert s.bus.backend == "kafka" and s.bus.bootstrap_servers == "file-broker:9092"
    assert s.bus.journal_dir is None
    assert s.log_level == "DEBUG"


def test_env_without_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AET_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("AET_REPLAY__SPEED", "2.5")
    monkeypatch.setenv("AET_BUS__KAFKA__SECURITY_PROTOCOL", "SSL")
    s = load_settings()
    assert s.home == tmp_path / "h"
    assert s.replay.speed == 2.5
    assert s.bus.kafka == {"security_protocol": "SSL"}
    assert s.db_url == f"sqlite:///{(tmp_path / 'h' / 'aet.db').resolve()}"
    assert s.models_dir == tmp_path / "h" / "models"


def test_unrelated_aet_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AET_CONFIG", "/nowhere.yaml")  # read by the CLI, not a setting
    monkeypatch.setenv("AET_SHARED_DATA", "/data")  # read by the tests
    assert load_settings().scorer.max_batch == 64


def test_database_url_override() -> None:
    s = load_settings(database_url="postgresql+psycopg://u@h/db")
    assert s.db_url == "postgresql+psycopg://u@h/db"


def test_missing_config_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path)  # a directory is not a config file


@pytest.mark.parametrize(
    "body",
    [
        "scorer:\n  max_batch: 0\n",  # below the minimum
        "bus:\n  backend: rabbitmq\n",  # not a backend
        "replay:\n  label_fraction: 1.5\n",  # not a fraction
        "unknown_section: 1\n",  # typo at the top level
        "scorer:\n  max_batchh: 5\n",  # typo inside a section must not be silently ignored
    ],
)
def test_invalid_file_values_are_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValidationError):
        load_settings(path)


def test_invalid_env_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AET_SCORER__MAX_BATCH", "many")
    with pytest.raises(ValidationError, match="max_batch"):
        load_settings()
    monkeypatch.setenv("AET_SCORER__MAX_BATCH", "8")
    monkeypatch.setenv("AET_SCORER__MAX_BACH", "8")
    with pytest.raises(ValidationError, match="max_bach"):
        load_settings()


def test_overrides_are_validated() -> None:
    with pytest.raises(ValidationError):
        load_settings(scorer={"max_wait_ms": -1})
    with pytest.raises(ValidationError):
        load_settings(scorer={"max_batch_size": 5})


RETRAIN_YAML = """\
retrain:
  mode: lora
  epochs: 4
  learning_rate: 0.001
  lambda_ewc: 2.5
  replay: false
  replay_ratio: 0.25
  fisher_samples: 64
  min_examples: 30
  promote_min_gain: 0.05
"""


def test_retrain_keys_stay_flat_and_the_old_replay_keys_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "aet.yaml"
    path.write_text(RETRAIN_YAML)
    r = load_settings(path).retrain
    assert (r.mode, r.epochs, r.learning_rate, r.lambda_ewc, r.fisher_samples) == ("lora", 4, 0.001, 2.5, 64)
    assert r.rehearsal is False and r.rehearsal_ratio == 0.25  # from replay / replay_ratio
    assert (r.min_examples, r.promote_min_gain) == (30, 0.05)
    assert r.describe() == "ce+ewc(2.5)+att(1)"
    path.write_text("retrain:\n  rehearsal: false\n  rehearsal_ratio: 0.75\n")
    r = load_settings(path).retrain
    assert r.rehearsal is False and r.rehearsal_ratio == 0.75


def test_retrain_env_variables_old_and_new_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AET_RETRAIN__EPOCHS", "5")
    monkeypatch.setenv("AET_RETRAIN__LAMBDA_ATT", "0")
    monkeypatch.setenv("AET_RETRAIN__REPLAY", "false")
    monkeypatch.setenv("AET_RETRAIN__REPLAY_RATIO", "0.3")
    r = load_settings().retrain
    assert (r.epochs, r.lambda_att, r.rehearsal, r.rehearsal_ratio) == (5, 0.0, False, 0.3)
    monkeypatch.delenv("AET_RETRAIN__REPLAY")
    monkeypatch.setenv("AET_RETRAIN__REHEARSAL", "false")
    assert load_settings().retrain.rehearsal is False
    monkeypatch.setenv("AET_RETRAIN__REHEARSAL_RATIOO", "0.3")
    with pytest.raises(ValidationError, match="rehearsal_ratioo"):
        load_settings()


def test_the_bootstrap_and_a_round_share_the_fit_with_their_own_defaults() -> None:
    s = load_settings()
    assert isinstance(s.train, FitSettings) and isinstance(s.retrain, RoundSettings)
    assert isinstance(s.retrain, FitSettings) and isinstance(s.retrain, ObjectiveSettings)
    assert isinstance(s.retrain, TrainableSettings)
    train, retrain = s.train, s.retrain
    assert (train.epochs, train.batch_size, train.patience, train.time_budget_s) == (3, 16, None, None)
    assert (retrain.epochs, retrain.batch_size, retrain.patience, retrain.time_budget_s) == (4, 32, None, 1800.0)
    assert train.learning_rate_for("full") == 1e-4  # the bootstrap trains every weight
    assert retrain.mode == "attention" and retrain.learning_rate_used == LEARNING_RATE_BY_MODE["attention"] == 5e-4
    lora = retrain.model_copy(update={"mode": "lora"})
    assert lora.learning_rate_used == 2e-3
    assert lora.model_copy(update={"learning_rate": 1e-5}).learning_rate_used == 1e-5
    assert (train.seed, train.validation_fraction) == (retrain.seed, retrain.validation_fraction) == (13, 0.15)


def test_the_per_mode_learning_rates_are_described_from_their_one_mapping() -> None:
    description = FitSettings.model_fields["learning_rate"].description or ""
    assert all(f"{mode} {rate:g}" in description for mode, rate in LEARNING_RATE_BY_MODE.items())
    assert set(LEARNING_RATE_BY_MODE) == set(MODES)


@pytest.mark.parametrize(
    "body",
    [
        "retrain:\n  mode: everything\n",
        "retrain:\n  epochs: 0\n",
        "retrain:\n  patience: 0\n",
        "retrain:\n  lambda_ewcc: 1\n",
        "train:\n  batch_size: 0\n",
    ],
)
def test_invalid_training_values_are_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValidationError):
        load_settings(path)
