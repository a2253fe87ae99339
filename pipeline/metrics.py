"""Prometheus metrics shared by every role (labelled by role), and the exporter."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

CONSUMED = Counter("aet_consumed_records_total", "Records read from the bus", ["role"])
PROCESSED = Counter("aet_processed_records_total", "Records turned into outputs (scored, stored)", ["role"])
REJECTED = Counter("aet_rejected_records_total", "Records sent to the dead-letter topic", ["role", "stage"])
BATCH_SIZE = Histogram(
    "aet_batch_size", "Records per processed batch", ["role"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_LATENCY = Histogram(
    "aet_batch_seconds", "Wall time to process, publish, store and commit one batch", ["role"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge("aet_consumer_lag_records", "Uncommitted records in this member's partitions", ["role"])
RETRIES = Counter("aet_retries_total", "Retried operations (publish, store) after a failure", ["role", "operation"])
MODEL_VERSION = Info("aet_model", "The model version serving in this process")


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``addr:port`` (0 disables)."""
    if port:
        start_http_server(port, addr=addr)
