"""Secret redaction: what AET may print of a URL, a settings error or an exception message.

Secrets reach AET inside URLs (a PostgreSQL password, a webhook token in the
path or the query), in webhook headers and in the control-topic signing key.
Settings keep them as pydantic ``SecretStr`` so that a settings object never
prints them; everything that does print — logs, thread names, metric labels,
outbox keys, ``aet`` output, errors — goes through the functions here:

- :func:`redact_url`: a URL with its password and sensitive query values masked
  (``postgresql+psycopg://aet:***@db/aet``); the path is kept (a database name);
- :func:`endpoint_name`: a stable, printable name of an endpoint whose whole URL
  may be a secret (a Slack-style webhook): its origin and a short hash of the URL;
- :func:`redact`: any text with every URL redacted and every known secret value
  masked — the one function for messages that may quote a secret;
- :func:`explain_settings_error`: a settings validation error without the input
  values pydantic would otherwise quote.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pydantic import SecretStr, ValidationError

MASK = "***"
#: Query parameters whose value is masked (matched anywhere in the name, any case).
SENSITIVE_QUERY = re.compile(r"token|key|secret|pass|pwd|sig|auth|code|cred|session", re.IGNORECASE)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_MIN_SECRET = 4  # shorter values would mask ordinary words


def reveal(value: SecretStr | str | None) -> str | None:
    """The plain value of a secret setting (for the code that must use it, never for printing)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and the values of sensitive query parameters masked."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return MASK  # not a URL we can take apart: print nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if has_password else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SENSITIVE_QUERY.search(k) else v) for k, v in pairs], safe="*")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")  # (urlunsplit drops "//")


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, nothing else (no user info, path or query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def endpoint_name(kind: str, url: str) -> str:
    """A printable, stable name for an endpoint whose URL may hold a token: ``kind:origin#hash``.

    The hash (8 hex digits of the URL's sha256) tells two endpoints on one host
    apart without revealing their paths.
    """
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    return f"{kind}:{url_origin(url)}#{digest}"


def redact(text: str, secrets: Iterable[SecretStr | str | None] = ()) -> str:
    """``text`` with every known secret value masked and every URL in it redacted (:func:`redact_url`).

    Each secret is also masked in its percent-encoded form (as it appears in a URL).
    """
    for secret in sorted({s for s in (reveal(v) for v in secrets) if s and len(s) >= _MIN_SECRET}, key=len):
        for form in {secret, quote(secret, safe=""), unquote(secret)}:
            if len(form) >= _MIN_SECRET:
                text = text.replace(form, MASK)
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that are secret: its password and sensitive query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    out = [unquote(parts.password)] if parts.password else []
    out += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if SENSITIVE_QUERY.search(k) and v]
    return out


def explain_settings_error(error: ValidationError) -> str:
    """One line per invalid setting (``where: why``), never quoting the value that was given."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        message = "missing" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
