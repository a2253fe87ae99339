"""Shared fixtures: offline model hub, temporary settings and databases, a trained champion."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from aet.pipeline.config import Settings, load_settings
from aet.storage.db import Database

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SHARED_DATA = Path(os.environ.get("AET_SHARED_DATA", REPO.parent / "shared" / "data"))
POSTGRES_ENV = "AET_TEST_POSTGRES_URL"


def shared_corpus(name: str) -> Path:
    """Path of a shared corpus JSONL, skipping the test when the shared data is absent."""
    path = SHARED_DATA / name / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"shared corpus {name} not found under {SHARED_DATA} (set AET_SHARED_DATA)")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in a temporary home with a fresh SQLite database."""
    return load_settings(home=tmp_path / "home", train={"epochs": 1})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


def _postgres_schema_url() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    from sqlalchemy import create_engine, text

    schema = f"aet_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    yield from _postgres_schema_url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def champion_artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A champion bootstrapped once per test session on the example data (1 epoch, seeded).

    Tests register this artifact in their own database instead of training again.
    """
    from aet.pipeline.runtime import App

    home = tmp_path_factory.mktemp("champion-home")
    app = App(load_settings(home=home, train={"epochs": 2}))
    try:
        info = app.bootstrap(EXAMPLES / "train.jsonl", progress=False)
    finally:
        app.close()
    return {"artifact_path": info.artifact_path, "sha256": info.sha256, "backbone": info.backbone}


@pytest.fixture
def app_with_champion(settings: Settings, champion_artifact: dict[str, str]) -> Iterator[object]:
    """An App on a temporary home whose registry holds the session champion as v0001."""
    from aet.pipeline.records import LABELS
    from aet.pipeline.runtime import App

    app = App(settings)
    app.registry.register(version="v0001", status="champion", labels=list(LABELS), **champion_artifact)
    yield app
    app.close()
