"""Prometheus metrics shared by every role (labelled by role), and the HTTP server that exports them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, Info, make_wsgi_app

from aet.pipeline.health import Readiness, SystemdNotifier

CONSUMED = Counter("aet_consumed_records_total", "Records read from the bus", ["role"])
PROCESSED = Counter("aet_processed_records_total", "Records turned into outputs (scored, stored)", ["role"])
REJECTED = Counter("aet_rejected_records_total", "Records sent to the dead-letter topic", ["role", "stage"])
BATCH_SIZE = Histogram(
    "aet_batch_size",
    "Records per processed batch",
    ["role"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_LATENCY = Histogram(
    "aet_batch_seconds",
    "Wall time to process, publish, store and commit one batch",
    ["role"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge("aet_consumer_lag_records", "Uncommitted records in this member's partitions", ["role"])
RETRIES = Counter(
    "aet_retries_total", "Retried operations (publish, store, commit) after a failure", ["role", "operation"]
)
DEGRADED = Gauge(
    "aet_worker_degraded", "1 while an operation fails with a transient error and is retried", ["role", "operation"]
)
GAVE_UP = Counter(
    "aet_gave_up_total", "Outputs dead-lettered after a permanent error outlived its tries", ["role", "operation"]
)
CONFLICTS = Counter("aet_conflicts_total", "Messages refused because their id is stored with another text")
DEAD_LETTERS_RECORDED = Counter("aet_dead_letters_recorded_total", "Dead letters stored by the recorder", ["stage"])
MODEL_VERSION = Info("aet_model", "The model version serving in this process")

# Hot swap (pipeline/roles/hotswap.py) and automatic rollback (pipeline/learning/rollback.py).
MODEL_SWAPS = Counter(
    "aet_model_swaps_total", "Model swaps by outcome (swapped, refused, retry, superseded)", ["role", "outcome"]
)
SWAP_SECONDS = Histogram(
    "aet_model_swap_prepare_seconds",
    "Wall time to verify, load and warm up a model before it is swapped in",
    ["role"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
AUTO_ROLLBACKS = Counter("aet_auto_rollbacks_total", "Promotions rolled back because live accuracy fell")
SHADOW_TRIALS = Counter(
    "aet_shadow_trials_total", "Shadow-scoring trials of challengers, by outcome", ["outcome"]
)  # started, promote, reject, ended


class MetricsServer:
    """The HTTP endpoint of a daemon: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (pipeline/health.py).

    A threading WSGI server on its own daemon thread, like prometheus_client's
    ``start_http_server``, with the health endpoints routed before the exporter.
    """

    def __init__(self, port: int, addr: str, readiness: Readiness | None = None) -> None:
        self.readiness = readiness
        self._metrics_app = make_wsgi_app()
        self._httpd = make_server(addr, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="aet-metrics", daemon=True)
        self._thread.start()
        self._notifier: SystemdNotifier | None = None
        if readiness is not None:
            self._notifier = SystemdNotifier(readiness)
            self._notifier.start()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz") and self.readiness is not None:
            live = path == "/healthz"
            report = self.readiness.live() if live else self.readiness.report()
            body = report.to_json(self.readiness.role, "alive" if live else "ready")
            status = "200 OK" if report.ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return cast(Iterable[bytes], self._metrics_app(environ, start_response))

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
        self._httpd.shutdown()
        self._httpd.server_close()


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow readiness check never blocks a scrape."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds: not worth a log line each."""


def serve_metrics(port: int, addr: str | None = None, readiness: Readiness | None = None) -> MetricsServer | None:
    """Serve ``/metrics`` (and, with ``readiness``, ``/healthz`` and ``/readyz``) on ``addr:port``; 0 disables.

    The address defaults to ``AET_METRICS_ADDR``, else 127.0.0.1; containers
    set ``AET_METRICS_ADDR=0.0.0.0`` so that Prometheus and probes reach them.
    """
    if not port:
        return None
    return MetricsServer(port, addr or os.environ.get("AET_METRICS_ADDR", "127.0.0.1"), readiness)


# Alert engine and sinks (pipeline/roles/alerts.py, adapters/sinks.py).
ALERTS_RAISED = Counter("aet_alerts_raised_total", "Alerts raised by the alert engine", ["kind", "severity"])
ALERT_LATE = Counter("aet_alert_late_events_total", "Scored messages older than the allowed lateness, not counted")
ALERT_ENTITIES = Gauge("aet_alert_entities", "Entities with open windows in the alert engine")
SINK_DELIVERIES = Counter(
    "aet_alert_deliveries_total", "Alert delivery attempts per sink and outcome", ["sink", "outcome"]
)
# Enqueued minus finished (delivered, failed, rejected) deliveries is a sink's outbox backlog in this process.
OUTBOX_ENQUEUED = Counter("aet_alert_outbox_enqueued_total", "Alerts put into a sink's outbox", ["sink"])

# Trainer role and champion/challenger (pipeline/roles/trainer.py, pipeline/learning/promotion.py).
RETRAIN_SECONDS = Histogram(
    "aet_retrain_seconds",
    "Wall time of one retrain round (data, training, Fisher, artifact, gate)",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
TRAINING_ROUNDS = Counter("aet_training_rounds_total", "Retrain requests by outcome", ["outcome"])
PROMOTIONS = Counter(
    "aet_champion_changes_total", "Champion changes by kind (promotion, heads, rollback)", ["kind"]
)  # pipeline/learning/promotion.py

# Drift monitor (pipeline/roles/monitor.py, pipeline/drift/).
DRIFT_EVENTS = Counter("aet_drift_events_total", "Drift events emitted", ["source", "detector"])
DRIFT_SUPPRESSED = Counter(
    "aet_drift_alarms_suppressed_total", "Detector alarms within a drift cooldown (no event)", ["source", "detector"]
)
RETRAIN_REQUESTS = Counter("aet_retrain_requests_total", "Retrain requests emitted by the drift monitor", ["source"])
LABEL_OUTCOMES = Counter(
    "aet_monitor_labels_total",
    "Delayed labels seen by the monitor, by outcome (joined, held, duplicate, expired, invalid)",
    ["outcome"],
)
HELD_LABELS = Gauge("aet_monitor_held_labels", "Labels waiting for their message")
LIVE_ACCURACY = Gauge("aet_live_accuracy", "Rolling accuracy on labeled messages", ["source", "model_version"])
LIVE_MACRO_F1 = Gauge("aet_live_macro_f1", "Rolling macro-F1 on labeled messages", ["source", "model_version"])
LIVE_LABELED = Gauge("aet_live_labeled", "Labeled messages joined to predictions", ["source", "model_version"])
STREAM_POSITION = Gauge("aet_monitor_position", "Messages of a source seen by the drift monitor", ["source"])
