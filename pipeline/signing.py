"""Authenticated control events: an HMAC-SHA256 signature over each event's canonical JSON.

Whoever can write to ``aet.control`` can ask the trainer to train (and, before
issue 13, name any file and force a promotion). With ``control.signing_key`` set,
every control event AET publishes is signed — :class:`SigningBus` signs what is
published to the control topic, so every role and every ``aet`` command that
publishes control events signs them without knowing it — and the trainer
checks each retrain request with :func:`check` and dead-letters one that is
unsigned or wrongly signed.

The signature is the ``signature`` field of the event's JSON:
``hmac-sha256:<hex>`` over the canonical form of every other field (keys
sorted, no whitespace, UTF-8), computed on the JSON as it travels, so a reader
needs no schema to check it. Without a key nothing is signed or checked; the
trainer warns once that the topic is not authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import SecretStr

from aet.pipeline.ports import Bus, Consumer

log = logging.getLogger(__name__)
SIGNATURE_FIELD = "signature"
ALGORITHM = "hmac-sha256"


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes a signature covers: every field but the signature, keys sorted, compact, UTF-8."""
    body = {k: v for k, v in event.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signature(event: dict[str, Any], key: SecretStr | str) -> str:
    secret = key.get_secret_value() if isinstance(key, SecretStr) else key
    digest = hmac.new(secret.encode("utf-8"), canonical(event), hashlib.sha256).hexdigest()
    return f"{ALGORITHM}:{digest}"


def sign(value: bytes, key: SecretStr | str) -> bytes:
    """A control event's JSON bytes with its signature added (replacing any it had)."""
    event = json.loads(value)
    if not isinstance(event, dict):
        raise ValueError("a control event is a JSON object")
    event[SIGNATURE_FIELD] = signature(event, key)
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


def check(event: dict[str, Any], key: SecretStr | str) -> str | None:
    """Why ``event`` (decoded JSON) is not authentic under ``key``, or ``None`` when its signature holds."""
    given = event.get(SIGNATURE_FIELD)
    if given is None:
        return "unsigned control event (control.signing_key is set)"
    if not isinstance(given, str) or not given.startswith(f"{ALGORITHM}:"):
        return f"control event signature is not {ALGORITHM}"
    try:
        expected = signature(event, key)
    except ValueError:  # NaN or infinity in the payload: not canonical JSON
        return "control event is not canonical JSON"
    if not hmac.compare_digest(given, expected):
        return "control event signature does not match (wrong key, or altered after signing)"
    return None


class SigningBus:
    """A bus that signs every record published to the control topic; everything else passes through."""

    def __init__(self, bus: Bus, control_topic: str, key: SecretStr | str) -> None:
        self.inner, self.control_topic, self._key = bus, control_topic, key

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        if topic == self.control_topic:
            value = sign(value, self._key)
        self.inner.publish(topic, value, key=key)

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)

    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        self.inner.create_topics(topics, partitions)

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return self.inner.consumer(group, topics)

    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        return self.inner.group_lag(group, topics)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> SigningBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # backend extras (the memory bus's read_all, ...)
