"""Settings: defaults, then a YAML/TOML file, then ``AET_*`` environment variables, then flags.

Nested settings use ``__`` in environment variables, e.g.
``AET_BUS__BACKEND=kafka`` or ``AET_SCORER__MAX_BATCH=128``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

DEFAULT_BACKBONE = "minilm"


class _Section(BaseModel):
    """A nested settings section: an unknown key (a typo in a file or AET_X__Y) is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class TopicSettings(_Section):
    """Topic names (see DESIGN.md, "Topics and records")."""

    messages: str = "aet.messages"
    scored: str = "aet.scored"
    labels: str = "aet.labels"
    control: str = "aet.control"
    alerts: str = "aet.alerts"
    dlq: str = "aet.dlq"

    def all(self) -> list[str]:
        return [self.messages, self.scored, self.labels, self.control, self.alerts, self.dlq]


class BusSettings(_Section):
    """Which bus to use and how to reach it."""

    backend: Literal["memory", "kafka"] = "memory"
    partitions: int = Field(default=3, ge=1)
    journal_dir: Path | None = Field(
        default=None, description="memory bus only: keep topics and offsets on disk here"
    )
    bootstrap_servers: str = "localhost:9092"
    client_id: str = "aet"
    replication_factor: int = Field(default=1, ge=1)
    connect_timeout_s: float = Field(default=15.0, gt=0)
    kafka: dict[str, Any] = Field(
        default_factory=dict,
        description="passed through to kafka-python clients (security_protocol, sasl_*, ssl_*, ...)",
    )


class ModelSettings(_Section):
    """The sentiment model: backbone for bootstrapping, and inference settings."""

    backbone: str = Field(
        default=DEFAULT_BACKBONE,
        description="'minilm' (the packaged offline all-MiniLM-L6-v2), a local directory, or a hub id",
    )
    max_length: int = Field(default=128, ge=8, le=4096)
    batch_size: int = Field(default=32, ge=1)
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")


class ScorerSettings(_Section):
    """Dynamic batching of the scorer and input limits."""

    group: str = "aet-scorer"
    max_batch: int = Field(default=64, ge=1)
    max_wait_ms: int = Field(default=100, ge=0)
    max_text_chars: int = Field(default=5000, ge=1)


class TrainSettings(_Section):
    """Supervised training (bootstrap now; the elastic objective builds on it)."""

    epochs: int = Field(default=3, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=16, ge=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    validation_fraction: float = Field(default=0.15, ge=0, lt=1)
    seed: int = 13


class ReplaySettings(_Section):
    """How a recorded stream is replayed."""

    speed: float = Field(default=0.0, ge=0, description="event-time speed-up; 0 = as fast as possible")
    label_fraction: float = Field(default=0.0, ge=0, le=1)
    label_delay_s: float = Field(default=0.0, ge=0, description="event-time delay before a label is emitted")
    seed: int = 7


class Settings(BaseSettings):
    """Everything a role needs to run."""

    model_config = SettingsConfigDict(env_prefix="AET_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default=Path("aet-data"), description="models, journal and the default database")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in home")
    log_level: str = "INFO"
    bus: BusSettings = Field(default_factory=BusSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        return value.upper()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'aet.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings with precedence flags > environment > config file > defaults.

    ``overrides`` are nested dicts from the command line; ``None`` values are
    dropped so that an unset flag does not mask the environment.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                suffix = Path(config_file).suffix.lower()
                if suffix == ".toml":
                    sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
                else:
                    sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            return tuple(sources)

    return _FileSettings(**_drop_none(overrides))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
