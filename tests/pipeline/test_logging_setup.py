"""JSON log lines carry the role, message id and model version the code knew when it logged; no secret is logged.

The command line's ``--log-format json`` is checked on a real daemon in tests/pipeline/cli/test_daemon_health.py."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import ScorerSettings, TopicSettings
from aet.pipeline.logging_setup import bind, build_handler, configure_logging
from aet.pipeline.roles.scorer import Scorer
from aet.storage.store import ResultStore
from tests.pipeline.pipeline_fakes import FakeModel, encode, message_payload


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the ``aet`` loggers write, as JSON lines, while the test runs."""
    out = io.StringIO()
    handler = build_handler("json", secrets=["s3cret-pass"], stream=out)
    logger = logging.getLogger("aet")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_dead_letter_line_names_the_role_the_message_and_the_model(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings, json_lines: io.StringIO
) -> None:
    bus.publish(topics.messages, encode(message_payload(1)), key="$A")
    bus.publish(topics.messages, encode(message_payload(2, text="nul \u0000")), key="$A")  # a dead letter
    worker = Scorer(bus, store, FakeModel("v0007"), topics, ScorerSettings(max_batch=8, max_wait_ms=20))
    done = threading.Thread(target=worker.run, args=(threading.Event(),), kwargs={"drain": True})
    done.start()  # its own thread: the context it binds is its own
    done.join(30)
    [line] = [entry for entry in lines(json_lines) if "dead letter" in str(entry["message"])]
    assert line["level"] == "WARNING" and line["logger"] == "aet.pipeline.worker"
    assert line["role"] == "scorer" and line["message_id"] == "m2" and line["model_version"] == "v0007"
    assert str(line["ts"]).endswith("+00:00")


def test_bound_fields_end_with_their_block_and_secrets_are_masked(json_lines: io.StringIO) -> None:
    log = logging.getLogger("aet.test")
    with bind(message_id="req-1"):
        log.info("connecting to postgresql+psycopg://aet:s3cret-pass@db/aet")
    log.info("token s3cret-pass rejected")
    try:
        raise RuntimeError("auth s3cret-pass")
    except RuntimeError:
        log.exception("failed")
    first, second, third = lines(json_lines)
    assert first["message_id"] == "req-1" and first["message"] == "connecting to postgresql+psycopg://aet:***@db/aet"
    assert "message_id" not in second and second["message"] == "token *** rejected"
    assert "s3cret-pass" not in json_lines.getvalue() and "RuntimeError: auth ***" in str(third["exception"])
    with pytest.raises(ValueError, match="unknown log context"), bind(user="x"):
        pass


def test_configure_logging_leaves_a_configured_root_alone() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    configure_logging("INFO", "json")  # pytest's capture handlers are on the root: nothing changes
    assert root.handlers == before
