"""Prometheus metrics of one app, in its own registry so tests can build many apps.

What a plant operator watches: throughput and decisions per line, where the time goes
(per pipeline stage), how well micro-batching works, how long the review queue is, and
whether the camera's input is drifting (brightness, contrast, sharpness) or the model's
confidence is; and the process itself (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, open files: prometheus_client's process collector, which a
registry of one's own has only when it is added), since a line PC that runs out of memory or
CPU slows every part before any stage's figure says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STAGES = ("decode", "queue_wait", "model", "persist", "total")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_GREY_BUCKETS = tuple(float(v) for v in range(0, 256, 16))
_SHARPNESS_BUCKETS = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
_CONFIDENCE_BUCKETS = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)


class _QueueDepthCollector(Collector):
    """Review-queue depth per line, read from the database when scraped.

    Asking the database at scrape time is one cheap query per line, and it is always right:
    labels are submitted by other processes (the UI, other service replicas) that no
    in-process counter would see.
    """

    def __init__(self, depths: Callable[[], dict[str, int]]) -> None:
        self._depths = depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "inspect_review_queue_depth",
            "Review tasks waiting for a human (open or with an expired lease), by line",
            labels=["line"],
        )
        try:
            depths = self._depths()
        except Exception:  # a scrape must not fail because the database blinked
            logger.exception("could not read the review queue depth for /metrics")
            depths = {}
        for line, depth in sorted(depths.items()):
            family.add_metric([line], depth)
        yield family


class ServiceMetrics:
    """Every metric the service exports, registered on one registry per app."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # this process's CPU seconds, memory, open files
        self.ingest_requests = Counter(
            "inspect_ingest_requests",
            "Images submitted, by line, source and outcome (created, replayed, rejected)",
            ["line", "source", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "inspect_ingest_rejections",
            "Images refused, by line and HTTP status (what was wrong is in the log)",
            ["line", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "inspect_decisions",
            "Inspections created, by line, route and decision",
            ["line", "route", "decision"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "inspect_stage_seconds",
            "Time per pipeline stage: decode, queue_wait, model, gate, commit, persist, total",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inspect_model_batch_size",
            "Images per model call (micro-batching across concurrent requests)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_size = Histogram(
            "inspect_commit_size",
            "Inspections per database commit (the ingestion path's group commit)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.brightness = Histogram(
            "inspect_input_brightness",
            "Mean grey level of incoming images, by line",
            ["line"],
            buckets=_GREY_BUCKETS,
            registry=r,
        )
        self.contrast = Histogram(
            "inspect_input_contrast",
            "Standard deviation of the grey level of incoming images, by line",
            ["line"],
            buckets=_GREY_BUCKETS,
            registry=r,
        )
        self.sharpness = Histogram(
            "inspect_input_sharpness",
            "Variance of the Laplacian of incoming images (focus), by line",
            ["line"],
            buckets=_SHARPNESS_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "inspect_model_confidence",
            "Calibrated probability of the predicted class, by line",
            ["line"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        # The alarms' inputs and states (inspect_app.monitoring.alarms), so a plant's
        # Prometheus alerts on the same numbers (deploy/prometheus/inspect_app.rules.yml).
        self.gate_refusals = Counter(
            "inspect_gate_refusals",
            "Frames the image gate refused for automation, by line and reason",
            ["line", "reason"],
            registry=r,
        )
        self.monitor_value = Gauge(
            "inspect_monitor_value",
            "Latest value of each monitored metric the alarms watch, by line and metric",
            ["line", "metric"],
            registry=r,
        )
        self.alarm_firing = Gauge(
            "inspect_alarm_firing",
            "1 while the service's own alarm is firing on a line, else 0",
            ["line", "alarm", "severity"],
            registry=r,
        )
        if queue_depths is not None:
            r.register(_QueueDepthCollector(queue_depths))

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus text format, for GET /metrics."""
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (tests and the readiness report read them here)."""
        return self.registry.get_sample_value(name, labels or {})
