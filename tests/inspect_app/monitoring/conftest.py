"""A real Prometheus server for the alarm rules, and a small /metrics endpoint for it to scrape.

`prometheus_server(targets, rules_text)` starts Debian's `/usr/bin/prometheus` on a free
loopback port, scraping `targets` ("host:port", path /metrics) every second and evaluating
`rules_text` every second; every server a test starts is stopped at its end. `metrics_endpoint`
serves one `ServiceMetrics` registry over HTTP; a test that has the real service running
passes its address instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from inspect_app.metrics import PROMETHEUS_CONTENT_TYPE, ServiceMetrics

POLL_S = 0.25  # between polls; every wait below is a bounded number of polls, not a deadline
READY_POLLS = 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MetricsEndpoint:
    metrics: ServiceMetrics
    target: str  # host:port, as a Prometheus scrape target


@pytest.fixture
def metrics_endpoint() -> Iterator[MetricsEndpoint]:
    """A `ServiceMetrics` registry served at http://127.0.0.1:<port>/metrics."""
    metrics = ServiceMetrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", PROMETHEUS_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape a second would fill the test log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MetricsEndpoint(metrics, f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class PrometheusServer:
    process: subprocess.Popen[bytes]
    url: str
    root: Path
    log: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def api(self, path: str, **params: str) -> Any:
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts, pending and firing, each with its `labels` and `state`."""
        return self.api("alerts")["alerts"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def _prometheus_binary() -> str | None:
    return shutil.which("prometheus") or shutil.which("/usr/bin/prometheus")


def _start(binary: str, targets: Sequence[str], rules_text: str) -> PrometheusServer:
    root = Path(tempfile.mkdtemp(prefix="inspect-prom-"))
    (root / "rules.yml").write_text(rules_text)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(root / "rules.yml")],
        "scrape_configs": [
            {"job_name": "inspect_app", "static_configs": [{"targets": list(targets)}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = root / "prometheus.log"
    last = "(not started)"
    for _ in range(5):  # another process may take the free port before Prometheus does
        port = _free_port()
        with log.open("ab") as log_file:
            process = subprocess.Popen(
                [binary, f"--config.file={root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = PrometheusServer(process, f"http://127.0.0.1:{port}", root, log)
        for _ in range(READY_POLLS):
            if process.poll() is not None:
                break
            try:
                if server.client.get(f"{server.url}/-/ready").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
        last = server.log_tail()
        server.client.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"Prometheus did not get ready: {last}")


@pytest.fixture
def prometheus_server() -> Iterator[Callable[[Sequence[str], str], PrometheusServer]]:
    """Start Prometheus on `targets` with a rules file; stopped when the test ends."""
    binary = _prometheus_binary()
    if binary is None:
        pytest.skip("no prometheus binary (apt-get install prometheus, or scripts/system-deps.sh)")
    started: list[PrometheusServer] = []

    def start(targets: Sequence[str], rules_text: str) -> PrometheusServer:
        server = _start(binary, targets, rules_text)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
