"""The gate alarm in a real Prometheus: it scrapes the service's metrics, evaluates the rule
rendered from the same definition, and fires for the line whose camera went dark only."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from sqlmodel import Session

from inspect_app.accounts import add_camera_key
from inspect_app.lines import add_line
from inspect_app.monitoring.alarms import DEFAULT_RULES
from inspect_app.monitoring.prometheus_rules import render_rules
from inspect_app.settings import SAMPLES_DIR, Settings
from inspect_app.storage.db import make_engine, upgrade_database
from models import DEFAULT_WEIGHTS
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


def test_prometheus_scraping_the_real_service_fires_when_its_camera_goes_dark(
    tmp_path: Path,
    running_service: Callable[..., Any],
    prometheus_server: Callable[[Sequence[str], str], PrometheusServer],
) -> None:
    """End to end: the service's own gate refuses black frames, its /metrics counts them, and
    Prometheus, with the shipped rule (a short window for the test), fires for that line."""
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    upgrade_database(engine)
    with Session(engine) as db:
        add_line(db, "line-1", "shadow")
        key = add_camera_key(db, "line-1")
    engine.dispose()
    clean = [p.read_bytes() for p in sorted(Path(SAMPLES_DIR).glob("ok/*.png"))[:5]]
    black = cv2.imencode(".png", np.zeros((480, 640, 3), dtype=np.uint8))[1].tobytes()
    gate = next(rule for rule in DEFAULT_RULES if rule.name == "gate_refusals_high")
    quick = replace(gate, window_parts=None, window_seconds=10.0, hold=0, hold_seconds=2.0)

    with running_service(data_dir, weights=DEFAULT_WEIGHTS, log=tmp_path / "s.log") as service:
        target = service.url.removeprefix("http://")
        server = prometheus_server([target], render_rules([quick], evaluation_interval_s=1.0))

        def post(data: bytes) -> dict[str, Any]:
            response = httpx.post(
                f"{service.url}/api/v1/lines/line-1/images",
                content=data,
                headers={"X-Api-Key": key, "Content-Type": "image/png"},
                timeout=60,
            )
            assert response.status_code == 201, response.text
            return response.json()

        for i in range(MAX_POLLS):  # clean parts until Prometheus sees them flowing
            assert post(clean[i % len(clean)])["gate_codes"] == []
            time.sleep(POLL_S)
            if server.targets_up() and server.query("sum(inspect_decisions_total) > 0"):
                break
        else:
            pytest.fail(f"Prometheus never scraped the service: {server.log_tail()}")
        assert server.alerts() == []

        for _ in range(MAX_POLLS):  # the lamp fails
            assert post(black)["gate_codes"]
            time.sleep(POLL_S)
            alerts = server.alerts()
            if any(a["state"] == "firing" for a in alerts):
                break
        else:
            pytest.fail(f"the gate alert never fired: {server.log_tail()}")
    (firing,) = [a for a in alerts if a["state"] == "firing"]
    assert firing["labels"]["line"] == "line-1"
    assert firing["labels"]["alertname"] == "InspectGateRefusalsHigh"
