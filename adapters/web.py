"""``aet serve``: the analysts' web page, on the standard library's HTTP server.

One page, no external assets (it must work with no internet): the live alert
feed (server-sent events), an entity's sentiment over time drawn as inline SVG,
and the model version history with drift events marked. Bound to 127.0.0.1 by
default; it only reads the database.

Endpoints: ``/`` (the page), ``/events`` (SSE; ``?since=ISO`` replays alerts
raised since then first), ``/api/alerts``, ``/api/entities``,
``/api/sentiment?entity=X``, ``/api/models``, ``/healthz``.

The alerts table is the source of truth (every alert engine writes it, on any
bus backend), so :class:`AlertFeed` follows it and fans new or re-raised alerts
out to every open event stream.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from aet.pipeline.records import Alert, parse_event_time, utcnow

log = logging.getLogger(__name__)


class AlertFeed(threading.Thread):
    """Follows the alerts table (by ``raised_at``) and hands each new alert to every subscriber.

    The query overlaps the previous one by ``overlap_s`` so an alert whose
    transaction committed late is still seen; (id, raised_at) pairs already sent
    are skipped.
    """

    def __init__(self, store: Any, *, poll_s: float = 0.25, overlap_s: float = 120.0) -> None:
        super().__init__(name="aet-alert-feed", daemon=True)
        self.store, self.poll_s, self.overlap_s = store, poll_s, overlap_s
        self.stop = threading.Event()
        self._subscribers: set[queue.Queue[Alert | None]] = set()
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str], datetime] = {}
        self._cursor = utcnow() - timedelta(seconds=overlap_s)
        self.polls = 0
        self._poll(broadcast=False)  # what exists now is the page's initial list, not news

    def subscribe(self) -> queue.Queue[Alert | None]:
        q: queue.Queue[Alert | None] = queue.Queue()
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[Alert | None]) -> None:
        with self._lock:
            self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _poll(self, broadcast: bool = True) -> None:
        alerts = self.store.alerts_raised_since(self._cursor - timedelta(seconds=self.overlap_s))
        self.polls += 1
        fresh = []
        for a in alerts:
            key = (a.id, a.raised_at.isoformat())
            if key in self._sent:
                continue
            self._sent[key] = a.raised_at
            fresh.append(a)
            if a.raised_at > self._cursor:
                self._cursor = a.raised_at
        horizon = self._cursor - timedelta(seconds=2 * self.overlap_s)
        self._sent = {k: v for k, v in self._sent.items() if v >= horizon}
        if broadcast and fresh:
            with self._lock:
                subscribers = list(self._subscribers)
            for q in subscribers:
                for a in fresh:
                    q.put(a)

    def run(self) -> None:
        while not self.stop.wait(self.poll_s):
            try:
                self._poll()
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the feed
                log.warning("alert feed: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            for q in self._subscribers:
                q.put(None)
        if self.is_alive():
            self.join()


def _alert_json(a: Alert) -> dict[str, Any]:
    return a.model_dump(mode="json")


class _Handler(BaseHTTPRequestHandler):
    server: AnalystServer
    server_version = "aet-serve/0.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/":
                self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif url.path == "/events":
                self._events(q.get("since"))
            elif url.path == "/api/alerts":
                limit = min(int(q.get("limit", 100)), 1000)
                alerts = self.server.store.list_alerts(limit=limit, entity=q.get("entity") or None)
                self._json([_alert_json(a) for a in alerts])
            elif url.path == "/api/entities":
                self._json(self.server.store.top_entities(limit=int(q.get("limit", 30))))
            elif url.path == "/api/sentiment":
                entity = q.get("entity", "")
                alerts = self.server.store.list_alerts(limit=200, entity=entity) if entity else []
                self._json(
                    {
                        "entity": entity,
                        "buckets": self.server.store.sentiment(entity) if entity else [],
                        "alerts": [
                            {"id": a.id, "kind": a.kind, "severity": a.severity, "window_end": a.window_end.isoformat()}
                            for a in alerts
                        ],
                    }
                )
            elif url.path == "/api/models":
                self._json(self.server.store.model_history())
            elif url.path == "/healthz":
                self._json({"ok": True, "subscribers": self.server.feed.subscribers})
            else:
                self._send(404, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except ValueError as exc:
            self._send(400, f"bad request: {exc}\n".encode(), "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any) -> None:
        self._send(200, json.dumps(data, default=str).encode("utf-8"), "application/json")

    def _events(self, since: str | None) -> None:
        feed = self.server.feed
        sub = feed.subscribe()  # before the backlog query, so nothing falls in between
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n: connected\n\n")
            self.wfile.flush()
            if since:
                for a in self.server.store.alerts_raised_since(parse_event_time(since)):
                    self._event(a)
            while not self.server.closing.is_set():
                try:
                    item = sub.get(timeout=self.server.heartbeat_s)
                except queue.Empty:
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    continue
                if item is None:
                    break
                self._event(item)
        finally:
            feed.unsubscribe(sub)

    def _event(self, a: Alert) -> None:
        data = json.dumps(_alert_json(a))
        self.wfile.write(f"id: {a.id}\nevent: alert\ndata: {data}\n\n".encode())
        self.wfile.flush()


class AnalystServer(ThreadingHTTPServer):
    """The page's HTTP server; ``serve_forever`` in a thread, ``close`` to stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, store: Any, host: str = "127.0.0.1", port: int = 8765, *, poll_s: float = 0.25, heartbeat_s: float = 15.0
    ) -> None:
        super().__init__((host, port), _Handler)
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.closing = threading.Event()
        self.feed = AlertFeed(store, poll_s=poll_s)
        self.feed.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.closing.set()
        self.feed.close()
        self.shutdown()
        self.server_close()


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>AET — sentiment alerts</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --mute:#6b7385; --neg:#c8372d; --pos:#2a8a4a; --neu:#8a8f99;
          --info:#3d6fb6; --warning:#d08a12; --critical:#c8372d; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; align-items:center; gap:16px; padding:10px 18px; background:#1d2330; color:#fff; }
  header h1 { font-size:17px; margin:0; font-weight:600; }
  #status { font-size:12px; padding:2px 8px; border-radius:10px; background:#555; }
  #status.live { background:var(--pos); }
  main { display:grid; grid-template-columns: minmax(340px, 1fr) 2fr; gap:14px; padding:14px; }
  section { background:var(--card); border-radius:8px; box-shadow:0 1px 3px rgba(0,0,0,.08); padding:12px 14px; }
  h2 { font-size:14px; margin:0 0 8px; color:var(--mute); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
  #alerts { list-style:none; margin:0; padding:0; max-height:78vh; overflow:auto; }
  #alerts li { border-left:4px solid var(--info); padding:6px 10px; margin:0 0 8px; background:#fafbfc; cursor:pointer; }
  #alerts li.sev-warning { border-color:var(--warning); }
  #alerts li.sev-critical { border-color:var(--critical); }
  #alerts li.fresh { animation: flash 2s ease-out; }
  @keyframes flash { from { background:#fff3c4; } to { background:#fafbfc; } }
  .a-top { display:flex; justify-content:space-between; gap:8px; }
  .a-entity { font-weight:700; }
  .a-sev { font-size:11px; text-transform:uppercase; font-weight:700; }
  .a-meta, .a-ex { color:var(--mute); font-size:12px; }
  .empty { color:var(--mute); font-style:italic; }
  #chart, #timeline { width:100%; display:block; }
  .controls { display:flex; gap:10px; align-items:center; margin-bottom:6px; }
  .legend span { margin-right:12px; font-size:12px; }
  .legend i { display:inline-block; width:10px; height:10px; margin-right:4px; vertical-align:middle; }
  table { border-collapse:collapse; width:100%; font-size:12px; margin-top:8px; }
  td, th { text-align:left; padding:3px 6px; border-bottom:1px solid #eee; }
  .right { display:flex; flex-direction:column; gap:14px; }
</style>
</head>
<body data-feed="connecting">
<header><h1>AET · sentiment alerts</h1><span id="status">connecting…</span><span id="count"></span></header>
<main>
  <section>
    <h2>Live alert feed</h2>
    <ul id="alerts"><li class="empty" id="no-alerts">No alerts yet.</li></ul>
  </section>
  <div class="right">
    <section>
      <h2>Sentiment over time</h2>
      <div class="controls"><label>Entity <select id="entity"></select></label>
        <span class="legend"><span><i style="background:var(--neg)"></i>negative share</span>
        <span><i style="background:var(--pos)"></i>positive share</span>
        <span><i style="background:#d9dde4"></i>messages</span>
        <span><i style="background:var(--warning)"></i>alert</span></span></div>
      <svg id="chart" viewBox="0 0 800 280" role="img" aria-label="sentiment chart"></svg>
    </section>
    <section>
      <h2>Model versions and drift</h2>
      <svg id="timeline" viewBox="0 0 800 110" role="img" aria-label="model timeline"></svg>
      <table id="models"><thead><tr><th>version</th><th>status</th><th>parent</th><th>created</th><th>promoted</th><th>val macro-F1</th></tr></thead><tbody></tbody></table>
    </section>
  </div>
</main>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const state = { alerts: new Map(), entity: null, picked: false, newest: null };
const LOADED_AT = Date.now();
const $ = (id) => document.getElementById(id);
const pct = (x) => (100 * x).toFixed(0) + "%";
const fmt = (iso) => iso ? iso.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, "") : "";
function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function getJSON(url) { return fetch(url, {cache: "no-store"}).then((r) => r.json()); }

function renderAlert(a, fresh) {
  const key = a.id;
  let li = state.alerts.get(key);
  if (!li) { li = document.createElement("li"); state.alerts.set(key, li); }
  const label = a.kind === "positive_surge" ? "positive" : "negative";
  li.className = "alert sev-" + a.severity + (fresh ? " fresh" : "");
  li.dataset.id = a.id; li.dataset.entity = a.entity; li.dataset.raisedAt = a.raised_at;
  li.innerHTML = "";
  const top = document.createElement("div"); top.className = "a-top";
  const ent = document.createElement("span"); ent.className = "a-entity"; ent.textContent = a.entity + " · " + a.kind.replace("_", " ");
  const sev = document.createElement("span"); sev.className = "a-sev"; sev.textContent = a.severity;
  top.append(ent, sev);
  const meta = document.createElement("div"); meta.className = "a-meta";
  meta.textContent = `${a.counts[label]}/${a.counts.total} ${label} (${pct(a.shares[label])}, baseline ${pct(a.baseline.mean)}), z ${a.z.toFixed(1)} · ${fmt(a.window_start)} → ${fmt(a.window_end)} · model ${a.model_version}`;
  const ex = document.createElement("div"); ex.className = "a-ex";
  ex.textContent = "examples: " + (a.example_ids || []).join(", ");
  li.append(top, meta, ex);
  li.onclick = () => { state.picked = true; selectEntity(a.entity); };
  const list = $("alerts");
  const none = $("no-alerts"); if (none) none.remove();
  // newest raised first
  const before = [...list.children].find((c) => c !== li && c.dataset.raisedAt && c.dataset.raisedAt < a.raised_at);
  list.insertBefore(li, before || null);
  $("count").textContent = state.alerts.size + " alerts";
  if (!state.newest || a.raised_at > state.newest) state.newest = a.raised_at;
}

function ensureOption(entity) {
  const sel = $("entity");
  if (![...sel.options].some((o) => o.value === entity)) sel.add(new Option(entity, entity));
}

function selectEntity(entity) {
  if (!entity) return;
  ensureOption(entity);
  state.entity = entity; $("entity").value = entity;
  return drawChart();
}

function drawChart() {
  const entity = state.entity;
  return getJSON("/api/sentiment?entity=" + encodeURIComponent(entity)).then((d) => {
    if (d.entity !== state.entity) return;
    const svg = $("chart"); svg.innerHTML = "";
    const W = 800, H = 280, L = 44, R = 12, T = 12, B = 40;
    const pts = d.buckets;
    svg.dataset.entity = entity; svg.dataset.points = String(pts.length);
    svg.append(el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fbfcfd", stroke: "#e3e6eb"}));
    for (const f of [0, 0.5, 1]) {
      const y = T + (1 - f) * (H - T - B);
      svg.append(el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e6eb"}));
      svg.append(el("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#6b7385"}, pct(f)));
    }
    if (!pts.length) {
      svg.append(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7385"}, "no data for " + entity));
      document.body.dataset.chart = "empty";
      return;
    }
    const t0 = Date.parse(pts[0].start), t1 = Math.max(Date.parse(pts[pts.length - 1].end), t0 + 1);
    const x = (iso) => L + (Date.parse(iso) - t0) / (t1 - t0) * (W - L - R);
    const y = (f) => T + (1 - f) * (H - T - B);
    const maxN = Math.max(...pts.map((p) => p.n));
    for (const p of pts) {
      const h = p.n / maxN * (H - T - B) * 0.35, x0 = x(p.start), x1 = x(p.end);
      svg.append(el("rect", {x: x0, y: H - B - h, width: Math.max(1, x1 - x0 - 1), height: h, fill: "#d9dde4", class: "bar"}));
    }
    const line = (key, color, cls) => {
      const p = pts.map((b) => `${((x(b.start) + x(b.end)) / 2).toFixed(1)},${y(b[key]).toFixed(1)}`).join(" ");
      svg.append(el("polyline", {points: p, fill: "none", stroke: color, "stroke-width": 2, class: cls}));
      for (const b of pts) svg.append(el("circle", {cx: (x(b.start) + x(b.end)) / 2, cy: y(b[key]), r: 2.5, fill: color}));
    };
    line("negative_share", "#c8372d", "neg"); line("positive_share", "#2a8a4a", "pos");
    for (const a of d.alerts) {
      const ax = x(a.window_end);
      if (ax < L || ax > W - R + 1) continue;
      const c = a.severity === "critical" ? "#c8372d" : a.severity === "warning" ? "#d08a12" : "#3d6fb6";
      svg.append(el("line", {x1: ax, x2: ax, y1: T, y2: H - B, stroke: c, "stroke-dasharray": "4 3", class: "alert-mark"}));
      svg.append(el("text", {x: ax + 3, y: T + 12, "font-size": 11, fill: c}, a.kind === "positive_surge" ? "▲" : "▼"));
    }
    svg.append(el("text", {x: L, y: H - 12, "font-size": 11, fill: "#6b7385"}, fmt(pts[0].start)));
    svg.append(el("text", {x: W - R, y: H - 12, "text-anchor": "end", "font-size": 11, fill: "#6b7385"}, fmt(pts[pts.length - 1].end)));
    svg.append(el("text", {x: W / 2, y: H - 12, "text-anchor": "middle", "font-size": 12, fill: "#1d2330"}, entity + " · " + pts.reduce((s, p) => s + p.n, 0) + " messages"));
    document.body.dataset.chart = "rendered";
  });
}

function drawModels() {
  return getJSON("/api/models").then((d) => {
    const tb = $("models").querySelector("tbody"); tb.innerHTML = "";
    for (const m of d.models) {
      const tr = document.createElement("tr");
      for (const v of [m.version, m.status, m.parent || "-", fmt(m.created_at), fmt(m.promoted_at), m.macro_f1 == null ? "-" : m.macro_f1.toFixed(3)]) {
        const td = document.createElement("td"); td.textContent = v; tr.append(td);
      }
      tb.append(tr);
    }
    const svg = $("timeline"); svg.innerHTML = "";
    const W = 800, L = 20, R = 20, Y = 55;
    const times = [...d.models.map((m) => Date.parse(m.created_at)), ...d.events.map((e) => Date.parse(e.ts))];
    svg.append(el("line", {x1: L, x2: W - R, y1: Y, y2: Y, stroke: "#aab0bb"}));
    if (!times.length) { svg.append(el("text", {x: W / 2, y: Y - 10, "text-anchor": "middle", fill: "#6b7385"}, "no models registered")); return; }
    const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1);
    const x = (t) => L + (t - t0) / (t1 - t0 || 1) * (W - L - R);
    for (const m of d.models) {
      const cx = x(Date.parse(m.created_at));
      svg.append(el("circle", {cx, cy: Y, r: 7, fill: m.status === "champion" ? "#2a8a4a" : "#8a8f99", class: "model"}));
      svg.append(el("text", {x: cx, y: Y + 24, "text-anchor": "middle", "font-size": 11}, m.version));
    }
    const marks = {drift: ["#c8372d", "▼ drift"], promotion: ["#2a8a4a", "▲"], rollback: ["#d08a12", "↺"], retrain_request: ["#3d6fb6", "⟳"]};
    for (const e of d.events) {
      const [c, sym] = marks[e.kind] || ["#6b7385", "•"];
      const ex = x(Date.parse(e.ts));
      svg.append(el("line", {x1: ex, x2: ex, y1: Y - 22, y2: Y, stroke: c, class: "event event-" + e.kind}));
      const t = el("text", {x: ex, y: Y - 26, "text-anchor": "middle", "font-size": 11, fill: c}, sym);
      t.append(el("title", {}, `${e.kind} ${fmt(e.ts)} ${e.detector || ""} ${e.signal || ""}`));
      svg.append(t);
    }
  });
}

function connect() {
  const since = new Date(LOADED_AT - 5000).toISOString();  // everything after the initial list (duplicates merge by id)
  const es = new EventSource("/events?since=" + encodeURIComponent(since));
  es.onopen = () => { $("status").textContent = "live"; $("status").className = "live"; document.body.dataset.feed = "open"; };
  es.onerror = () => { $("status").textContent = "reconnecting…"; $("status").className = ""; document.body.dataset.feed = "reconnecting"; };
  es.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    renderAlert(a, true);
    if (!state.picked) selectEntity(a.entity);
    else if (a.entity === state.entity) drawChart();
  });
}

$("entity").onchange = (e) => { state.picked = true; selectEntity(e.target.value); };
Promise.all([getJSON("/api/alerts?limit=100"), getJSON("/api/entities")]).then(([alerts, entities]) => {
  for (const a of alerts.slice().reverse()) renderAlert(a, false);
  for (const e of entities) ensureOption(e.entity);
  const first = alerts.length ? alerts[0].entity : (entities.length ? entities[0].entity : null);
  if (first) selectEntity(first); else document.body.dataset.chart = "empty";
  connect();
});
drawModels();
setInterval(() => { if (state.entity) drawChart(); }, 10000);
setInterval(drawModels, 30000);
</script>
</body>
</html>
"""
