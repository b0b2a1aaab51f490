"""Prometheus metrics of one server process (a pod), served at `/metrics` on any host.

Labels are kept to bounded sets: tenant schema, error code, close code, operation name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

OPEN_SOCKETS = Gauge(
    "chat_open_sockets", "Open WebSocket connections", ["tenant"], registry=REGISTRY
)
MESSAGES_PERSISTED = Counter(
    "chat_messages_persisted_total", "Messages stored", ["tenant"], registry=REGISTRY
)
FRAMES_DELIVERED = Counter(
    "chat_frames_delivered_total", "Room frames written to sockets", ["tenant"], registry=REGISTRY
)
LAYER_SEND_FAILURES = Counter(
    "chat_layer_send_failures_total",
    "Channel-layer sends that Redis did not take (the change itself is stored)",
    registry=REGISTRY,
)
FANOUT_REPAIRS = Counter(
    "chat_fanout_repairs_total",
    "Gap repairs from PostgreSQL, by cause (hole, reconnect, tail, unrepairable)",
    ["reason"],
    registry=REGISTRY,
)
FANOUT_REPAIRED_FRAMES = Counter(
    "chat_fanout_repaired_frames_total",
    "Messages read back from PostgreSQL by gap repairs",
    registry=REGISTRY,
)
ERRORS = Counter("chat_errors_total", "Error frames sent, by code", ["code"], registry=REGISTRY)
CLOSES = Counter(
    "chat_close_codes_total", "Sockets closed by the server, by code", ["code"], registry=REGISTRY
)
BROADCAST_LATENCY = Histogram(
    "chat_broadcast_latency_seconds",
    "From the start of the broadcast to the frame being handed to a local socket",
    buckets=_FAST,
    registry=REGISTRY,
)
LAYER_SECONDS = Histogram(
    "chat_channel_layer_seconds", "Channel-layer calls", ["op"], buckets=_FAST, registry=REGISTRY
)
DB_SECONDS = Histogram(
    "chat_db_seconds",
    "Database work per tenant-scoped call",
    ["op"],
    buckets=_FAST,
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


WEBHOOK_DELIVERIES = Counter(
    "webhook_delivery_attempts_total",
    "Webhook delivery attempts of this worker, by outcome (delivered, retry, failed, gone)",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_QUEUE_DUE = Gauge(
    "webhook_queue_due_jobs",
    "Webhook delivery jobs due now and not yet taken by a worker (read at scrape time)",
    registry=REGISTRY,
)
WEBHOOK_QUEUE_AGE = Gauge(
    "webhook_queue_oldest_due_seconds",
    "How long the oldest due job has waited for a worker (0: none waiting)",
    registry=REGISTRY,
)
