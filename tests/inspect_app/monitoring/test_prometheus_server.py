"""The gate alarm in a real Prometheus: it scrapes the service's metrics, evaluates the rule
rendered from the same definition, and fires for the line whose camera went dark only."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from inspect_app.monitoring.alarms import DEFAULT_RULES
from inspect_app.monitoring.prometheus_rules import render_rules
from tests.inspect_app.monitoring.conftest import (
    POLL_S,
    MetricsEndpoint,
    PrometheusServer,
)

pytestmark = pytest.mark.slow

MAX_POLLS = 400


def test_the_gate_alarm_fires_for_the_dark_line_only(
    metrics_endpoint: MetricsEndpoint,
    prometheus_server: Callable[[Sequence[str], str], PrometheusServer],
) -> None:
    gate = next(rule for rule in DEFAULT_RULES if rule.name == "gate_refusals_high")
    # seconds instead of minutes: rates over 10 s of 1 s scrapes, a 2 s hold (`for: 2s`)
    quick = replace(gate, window_parts=None, window_seconds=10.0, hold=0, hold_seconds=2.0)
    server = prometheus_server(
        [metrics_endpoint.target], render_rules([quick], evaluation_interval_s=1.0)
    )
    metrics = metrics_endpoint.metrics
    metrics.gate_refusals.labels(line="line-2", reason="blank")  # a refusal series at zero

    def tick(dark: bool) -> None:
        """One moment of production: both lines inspect parts, line-1 refuses half if dark."""
        for line in ("line-1", "line-2"):
            metrics.decisions.labels(line=line, route="auto", decision="pass").inc(10)
        if dark:
            metrics.gate_refusals.labels(line="line-1", reason="underexposed").inc(5)
        time.sleep(POLL_S)

    rate = 'sum by (line) (rate(inspect_decisions_total{line="line-2"}[10s]))'
    for _ in range(MAX_POLLS):  # clean production until Prometheus sees parts flowing
        tick(dark=False)
        if server.targets_up() and server.query(rate):
            break
    else:
        pytest.fail(f"Prometheus never scraped the endpoint: {server.log_tail()}")
    assert server.alerts() == []

    states: list[str] = []
    for _ in range(MAX_POLLS):
        tick(dark=True)
        alerts = server.alerts()
        assert all(a["labels"]["line"] == "line-1" for a in alerts), alerts
        states += [a["state"] for a in alerts]
        if "firing" in states:
            break
    else:
        pytest.fail(f"the gate alert never fired; states seen {states}: {server.log_tail()}")
    (firing,) = [a for a in alerts if a["state"] == "firing"]
    assert firing["labels"] == {
        "alertname": "InspectGateRefusalsHigh",
        "alarm": "gate_refusals_high",
        "line": "line-1",
        "severity": "critical",
    }
    assert firing["annotations"]["summary"].startswith("Line line-1: image gate refusal rate")
    assert float(firing["value"]) > 0.2
