"""Prometheus metrics shared by every role (labelled by role), and the exporter."""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

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


def serve_metrics(port: int, addr: str | None = None) -> None:
    """Expose ``/metrics`` on ``addr:port`` (0 disables).

    The address defaults to ``AET_METRICS_ADDR``, else 127.0.0.1; containers
    set ``AET_METRICS_ADDR=0.0.0.0`` so that Prometheus can scrape them.
    """
    if port:
        start_http_server(port, addr=addr or os.environ.get("AET_METRICS_ADDR", "127.0.0.1"))


# Alert engine and sinks (pipeline/roles/alerts.py, adapters/sinks.py).
ALERTS_RAISED = Counter("aet_alerts_raised_total", "Alerts raised by the alert engine", ["kind", "severity"])
ALERT_LATE = Counter("aet_alert_late_events_total", "Scored messages older than the allowed lateness, not counted")
ALERT_ENTITIES = Gauge("aet_alert_entities", "Entities with open windows in the alert engine")
SINK_DELIVERIES = Counter(
    "aet_alert_deliveries_total", "Alert delivery attempts per sink and outcome", ["sink", "outcome"]
)

# Trainer role and champion/challenger (pipeline/roles/trainer.py, pipeline/learning/promotion.py).
RETRAIN_SECONDS = Histogram(
    "aet_retrain_seconds",
    "Wall time of one retrain round (data, training, Fisher, artifact, gate)",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
TRAINING_ROUNDS = Counter("aet_training_rounds_total", "Retrain requests by outcome", ["outcome"])

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
