"""Secret redaction: URLs, endpoint names, free text and settings errors print no secret."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from aet.pipeline.config import Settings, WebhookSettings, load_settings
from aet.pipeline.redaction import endpoint_name, explain_settings_error, redact, redact_url, url_origin, url_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://aet:s3cret@db:5432/aet", "postgresql+psycopg://aet:***@db:5432/aet"),
        ("postgresql+psycopg://aet@db/aet", "postgresql+psycopg://aet@db/aet"),
        ("sqlite:////var/lib/aet/aet.db", "sqlite:////var/lib/aet/aet.db"),
        ("https://h.example/hook?token=abc123&x=1", "https://h.example/hook?token=***&x=1"),
        ("https://u:p%40ss@h.example/x?api_key=k&sig=s", "https://u:***@h.example/x?api_key=***&sig=***"),
        ("http://h:notaport/x", "***"),
    ],
)
def test_redact_url_masks_passwords_and_sensitive_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_endpoint_is_named_by_its_origin_and_a_hash_never_by_its_path() -> None:
    a = endpoint_name("webhook", "https://hooks.example.com/services/T0/B0/XyZsecret")
    b = endpoint_name("webhook", "https://hooks.example.com/services/T0/B0/other")
    assert a.startswith("webhook:https://hooks.example.com#") and "XyZsecret" not in a and a != b
    assert a == endpoint_name("webhook", "https://hooks.example.com/services/T0/B0/XyZsecret")  # stable
    assert url_origin("http://u:p@[::1]:8080/x") == "http://[::1]:8080"


def test_redact_masks_known_secrets_and_every_url_in_free_text() -> None:
    text = "failed: postgresql://a:pw%2Fx@h/db refused; token Zq9-long-token in /hooks/Zq9-long-token"
    out = redact(text, ["Zq9-long-token", SecretStr("pw/x"), None, "ab"])
    assert "Zq9-long-token" not in out and "pw%2Fx" not in out and "pw/x" not in out
    assert "postgresql://a:***@h/db" in out
    assert url_secrets("postgresql://a:pw%2Fx@h/db?password=q1") == ["pw/x", "q1"]


def test_settings_keep_their_secrets_out_of_repr_and_dumps() -> None:
    s = load_settings(
        database_url="postgresql+psycopg://aet:hunter2-Pw@db/aet",
        alerts={"webhooks": [{"url": "https://h/x/tok-1a2b3c", "headers": {"Authorization": "Bearer hdr-9z8y"}}]},
        control={"signing_key": "sign-key-0f0f0f"},
    )
    shown = repr(s) + str(s.model_dump()) + s.model_dump_json()
    for secret in ("hunter2-Pw", "tok-1a2b3c", "hdr-9z8y", "sign-key-0f0f0f"):
        assert secret not in shown
    assert s.db_url == "postgresql+psycopg://aet:hunter2-Pw@db/aet"  # what the store connects with
    assert s.db_url_display == "postgresql+psycopg://aet:***@db/aet"
    assert {"hunter2-Pw", "https://h/x/tok-1a2b3c", "Bearer hdr-9z8y", "sign-key-0f0f0f"} <= set(s.secrets())
    assert s.alerts.webhooks[0].sink_name.startswith("webhook:https://h#")


def test_a_settings_error_names_the_setting_without_its_value() -> None:
    with pytest.raises(ValidationError) as info:
        WebhookSettings.model_validate({"headers": {"A": "tok-7c7c7c"}, "timeout_s": -1})
    assert "tok-7c7c7c" in str(info.value)  # pydantic quotes the input...
    explained = explain_settings_error(info.value)
    assert "tok-7c7c7c" not in explained and "url: missing" in explained and "timeout_s" in explained
    with pytest.raises(ValidationError) as bad:
        Settings(database_url=12345)  # type: ignore[arg-type]
    assert "12345" not in explain_settings_error(bad.value)
