"""Control-event signatures: what is signed, what a check refuses, and that AET's own publishers sign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.cli import main as cli
from aet.pipeline.config import load_settings
from aet.pipeline.records import ControlEvent, decode
from aet.pipeline.runtime import App
from aet.pipeline.signing import SIGNATURE_FIELD, SigningBus, canonical, check, sign

KEY = "k-0123456789abcdef"


def test_a_signed_event_checks_and_any_change_breaks_it() -> None:
    event = ControlEvent(kind="retrain_request", payload={"data": "/d/ä.jsonl", "window": {"start": "2024-01-01"}})
    signed = json.loads(sign(event.to_bytes(), KEY))
    assert signed[SIGNATURE_FIELD].startswith("hmac-sha256:") and check(signed, KEY) is None
    assert decode(ControlEvent, json.dumps(signed)) == event  # readers ignore the extra field
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items())))))
    assert check(reordered, KEY) is None  # key order is not part of the signature
    assert "does not match" in (check(signed, "another-key") or "")
    for field, value in [("kind", "promotion"), ("model_version", "v0009"), ("ts", "2030-01-01T00:00:00Z")]:
        assert "does not match" in (check({**signed, field: value}, KEY) or ""), field
    assert "does not match" in (check({**signed, "payload": {**signed["payload"], "auto_promote": True}}, KEY) or "")
    assert "unsigned" in (check(json.loads(event.to_bytes()), KEY) or "")
    assert "not hmac-sha256" in (check({**signed, SIGNATURE_FIELD: "md5:00"}, KEY) or "")
    assert SIGNATURE_FIELD.encode() not in canonical(signed)


def test_the_signing_bus_signs_the_control_topic_only() -> None:
    inner = MemoryBus(partitions=1)
    inner.create_topics(["aet.control", "aet.alerts"])
    bus = SigningBus(inner, "aet.control", KEY)
    event = ControlEvent(kind="drift").to_bytes()
    bus.publish("aet.control", event, key="drift")
    bus.publish("aet.alerts", b'{"x": 1}', key="e")
    (control,) = inner.read_all("aet.control")
    assert check(json.loads(control.value), KEY) is None
    assert inner.read_all("aet.alerts")[0].value == b'{"x": 1}'
    with pytest.raises(ValueError):
        bus.publish("aet.control", b"[1, 2]")
    bus.close()


def test_aet_commands_that_publish_control_events_sign_them(tmp_path: Path) -> None:
    home, journal = tmp_path / "home", tmp_path / "journal"
    env = {"AET_HOME": str(home), "AET_BUS__JOURNAL_DIR": str(journal), "AET_CONTROL__SIGNING_KEY": KEY}
    made = CliRunner().invoke(cli.app, ["models", "retrain-request", "--since", "2024-01-01"], env=env)
    assert made.exit_code == 0, made.output
    app = App(load_settings(home=home, bus={"journal_dir": journal}))
    try:
        (record,) = app.bus.read_all(app.settings.topics.control)  # type: ignore[attr-defined]
        assert check(json.loads(record.value), KEY) is None
    finally:
        app.close()
