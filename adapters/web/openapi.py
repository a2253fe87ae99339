"""The OpenAPI 3.1 description of the HTTP API (``/openapi.json``) and a page that shows it (``/docs``).

Starlette rather than FastAPI: the API is a handful of endpoints whose request
bodies must be read under a byte cap and a deadline before any parsing (FastAPI
reads and parses the whole body first), and FastAPI's documentation page loads
Swagger UI from a CDN, which an offline deployment cannot reach. The schema is
written here from the pydantic models the pipeline validates with (the request
body's schema comes from the intake), and ``/docs`` is a self-contained page
that renders it, with no external assets.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from aet.pipeline.records import Alert

WEBHOOKS = {
    "slack": "X-Slack-Signature v0 HMAC-SHA256 with web.slack_signing_secret, 5-minute replay window",
    "telegram": "X-Telegram-Bot-Api-Secret-Token = web.telegram_secret_token",
    "discord": "bearer web.webhook_token",
    "stocktwits": "bearer web.webhook_token",
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object"}}},
    "required": ["error"],
}


def _reply(description: str, schema: dict[str, Any] | None = None, retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    if retry:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
    return out


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def build_schema(request_schema: dict[str, Any] | None, max_limit: int) -> dict[str, Any]:
    """The OpenAPI document; ``request_schema`` is the ingest body's JSON schema (None: no ingest API)."""
    alert = Alert.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = {"Alert": alert, "Error": _ERROR}
    components.update(alert.pop("$defs", {}))
    error = {"$ref": "#/components/schemas/Error"}
    limit = {"type": "integer", "minimum": 1, "maximum": max_limit}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/api/alerts": {
            "get": {
                "summary": "Stored alerts, newest first",
                "security": bearer,
                "parameters": [
                    _query("limit", "at most this many", limit),
                    _query("entity", "only this entity", {"type": "string", "maxLength": 256}),
                    _query("severity", "only this severity", {"enum": ["info", "warning", "critical"]}),
                    _query("since", "raised at or after (ISO-8601)", {"type": "string", "format": "date-time"}),
                ],
                "responses": {
                    "200": _reply("alerts", {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}),
                    "400": _reply("a bad parameter", error),
                    "401": _reply("no or wrong read token", error),
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Server-sent events: an `alert` event per new alert",
                "security": bearer,
                "parameters": [_query("since", "first replay alerts raised since", {"type": "string"})],
                "responses": {"200": {"description": "text/event-stream"}, "400": _reply("a bad parameter", error)},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _reply("alive")}}},
        "/readyz": {"get": {"summary": "Readiness", "responses": {"200": _reply("ready"), "503": _reply("not ready")}}},
    }
    if request_schema is not None:
        body = dict(request_schema)
        components.update(body.pop("$defs", {}))
        components["MessagesIn"] = body
        paths["/v1/messages"] = {
            "post": {
                "summary": 'Ingest messages: one, a JSON array, or {"messages": [...]}',
                "description": "202 only once the bus acknowledged every message; a batch is validated whole "
                "first, so a 400 means nothing was published.",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessagesIn"}}},
                },
                "responses": {
                    "202": _reply(
                        "published and acknowledged",
                        {
                            "type": "object",
                            "properties": {
                                "accepted": {"type": "integer"},
                                "ids": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    ),
                    "400": _reply("not JSON or invalid messages (errors: index, loc, msg)", error),
                    "401": _reply("no or wrong ingest token", error),
                    "408": _reply("the body did not arrive in time", error),
                    "413": _reply("the body is over the size limit", error),
                    "429": _reply("too many requests publishing", error, retry=True),
                    "503": _reply("the bus did not acknowledge", error, retry=True),
                },
            }
        }
    for platform, auth in WEBHOOKS.items():
        paths[f"/v1/webhooks/{platform}"] = {
            "post": {
                "summary": f"{platform} webhook ({auth})",
                "description": "The platform's own JSON; each event is published once (retries are answered "
                "200 with duplicates). 404 while its secret is not configured.",
                "responses": {
                    "200": _reply("taken (published, duplicates) or a handshake reply"),
                    "400": _reply("unreadable payload: nothing published", error),
                    "401": _reply("not authenticated: nothing published", error),
                    "404": _reply("not configured", error),
                    "413": _reply("the body is over the size limit", error),
                    "503": _reply("the bus did not acknowledge", error, retry=True),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "AET HTTP API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def schema_endpoint(request: Request) -> Response:
    state = request.app.state
    intake = state.intake
    return JSONResponse(build_schema(intake.request_schema() if intake is not None else None, state.settings.max_limit))


DOCS = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>AET HTTP API</title>
<style>body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:16px;color:#1d2330}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}.m{font-weight:700;text-transform:uppercase;margin-right:8px}
pre{background:#f6f7f9;padding:8px;overflow:auto;font-size:12px}code{background:#f0f1f4;padding:0 3px}</style>
</head><body><h1>AET HTTP API</h1><p>The OpenAPI document: <a href="/openapi.json">/openapi.json</a></p>
<div id="ops"></div><h2>Schemas</h2><div id="schemas"></div><script>
"use strict";
const add = (parent, tag, text) => {
  const e = document.createElement(tag); if (text !== undefined) e.textContent = text; parent.append(e); return e; };
fetch("/openapi.json").then((r) => r.json()).then((doc) => {
  const ops = document.getElementById("ops");
  for (const [path, methods] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(methods)) {
    const h = add(ops, "h2"); add(h, "span", method).className = "m"; add(h, "code", path);
    add(ops, "p", op.summary + (op.description ? " " + op.description : ""));
    if (op.parameters) add(ops, "pre", op.parameters.map((p) => p.name + ": " + p.description + " "
      + JSON.stringify(p.schema)).join("\\n"));
    if (op.requestBody) add(ops, "pre", "body: " + JSON.stringify(op.requestBody.content, null, 1));
    add(ops, "pre", Object.entries(op.responses).map(([c, r]) => c + " " + r.description).join("\\n"));
  }
  const s = document.getElementById("schemas");
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    add(s, "h3", name); add(s, "pre", JSON.stringify(schema, null, 1)); }
  document.body.dataset.rendered = "yes";
});
</script></body></html>"""


async def docs_page(request: Request) -> Response:
    return HTMLResponse(DOCS, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
