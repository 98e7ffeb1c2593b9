"""Prometheus metrics, on a registry of the app's own (several apps can share a
test process without "duplicated timeseries" errors from the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; an edit on SmolLM2-135M takes ~0.3-0.5 s on a 2-core CPU
# (/work/shared/REFERENCE.md), generations up to tens of seconds.
EDIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
GENERATE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge("instructedit_queue_depth", "Jobs enqueued and not yet acknowledged", registry=r)
        self.model_version = Gauge("instructedit_model_version", "The version being served", registry=r)
        self.edits = Counter("instructedit_edits", "Edits entering each status", ["status"], registry=r)
        self.edit_latency = Histogram(
            "instructedit_edit_latency_seconds",
            "Edit latency: wait (queued to started), apply (started to visible), total (queued to visible)",
            ["stage"],
            buckets=EDIT_BUCKETS,
            registry=r,
        )
        self.generation_latency = Histogram(
            "instructedit_generation_latency_seconds", "Time per generation request", buckets=GENERATE_BUCKETS, registry=r
        )
        self.worker_retries = Counter("instructedit_worker_retries", "Transient failures the worker retried", ["cause"], registry=r)
        self.enqueue_deferred = Counter(
            "instructedit_enqueue_deferred", "Jobs stored but not enqueued (queue down); the worker enqueues them later", registry=r
        )

    def observe_applied(self, queued_at: float, started_at: float, applied_at: float) -> None:
        self.edits.labels("applied").inc()
        self.edit_latency.labels("wait").observe(max(0.0, started_at - queued_at))
        self.edit_latency.labels("apply").observe(max(0.0, applied_at - started_at))
        self.edit_latency.labels("total").observe(max(0.0, applied_at - queued_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)
