"""What every command shares: settings from the global options, one way to open and close an installation."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from aet.pipeline.cli import common
from aet.pipeline.cli.common import GlobalOptions, fail, open_app, resolve_settings, use_global_options
from aet.pipeline.config import load_settings


@pytest.fixture(autouse=True)
def _fresh_global_options() -> None:
    use_global_options(GlobalOptions())


def test_a_command_s_own_flags_win_over_the_global_ones(tmp_path: Path) -> None:
    use_global_options(GlobalOptions(overrides={"home": tmp_path / "global", "scorer": {"max_batch": 7}}))
    s = resolve_settings(scorer={"max_batch": 9, "max_wait_ms": None})
    assert s.home == tmp_path / "global"
    assert s.scorer.max_batch == 9 and s.scorer.max_wait_ms == load_settings().scorer.max_wait_ms


def test_invalid_settings_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info:
        resolve_settings(scorer={"max_batch": 0})
    assert info.value.exit_code == 2
    assert "error: invalid settings" in capsys.readouterr().err


def test_fail_prints_the_message_and_exits_with_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info:
        fail("no such thing", code=3)
    assert info.value.exit_code == 3 and capsys.readouterr().err.strip() == "error: no such thing"


def test_an_installation_that_cannot_open_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = load_settings(home=tmp_path / "home", database_url="nosuchdb://nowhere")
    with pytest.raises(typer.Exit) as info, open_app(s):
        pytest.fail("the block must not run")
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert f"cannot open AET home {s.home} / database nosuchdb://nowhere" in err


def test_the_installation_is_closed_however_the_block_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aet.pipeline.runtime import App

    closed: list[App] = []
    original = App.close

    def close(self: App) -> None:
        closed.append(self)
        original(self)

    monkeypatch.setattr(App, "close", close)
    s = load_settings(home=tmp_path / "home")
    with open_app(s) as application:
        assert application.settings is s
    assert closed == [application]
    with pytest.raises(typer.Exit), open_app(s) as second:
        fail("stop here")
    assert closed == [application, second]


def test_global_options_are_those_of_this_invocation(tmp_path: Path) -> None:
    options = GlobalOptions(config=tmp_path / "aet.yaml")
    use_global_options(options)
    assert common.global_options() is options


def test_the_database_password_never_shows_when_the_installation_cannot_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    password = "hunter2-Pw"
    s = load_settings(home=tmp_path / "home", database_url=f"postgresql+psycopg://aet:{password}@127.0.0.1:1/aet")
    assert password not in repr(s) and password not in str(s.model_dump())
    with pytest.raises(typer.Exit), open_app(s):
        pytest.fail("nothing listens on port 1")
    err = capsys.readouterr().err
    assert "postgresql+psycopg://aet:***@127.0.0.1:1/aet" in err  # still says which database
    assert password not in err and password not in caplog.text


def test_a_settings_error_does_not_quote_the_secrets_it_was_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AET_DATABASE_URL", "postgresql+psycopg://aet:hunter2-Pw@db/aet")
    monkeypatch.setenv("AET_ALERTS__WEBHOOKS", '[{"headers": {"A": "tok-5e6f7a8b"}}]')  # short: quoted whole
    with pytest.raises(typer.Exit):
        resolve_settings()  # the webhook has no url
    err = capsys.readouterr().err
    assert "alerts.webhooks.0.url: missing" in err
    assert "tok-5e6f7a8b" not in err and "hunter2-Pw" not in err
