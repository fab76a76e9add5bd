"""A line camera over real HTTP: posts a dataset's images to a running service at a set rate.

What ``inspect-app simulate`` and the ingestion benchmark use. Each image goes as a camera
sends it (raw body, its content type, a capture id and a part serial, the camera key in
``X-Api-Key``). Pacing is open-loop: image i is due at ``start + i / rate`` whether or not
earlier answers have come, and its latency counts from when it was due, so a service that
falls behind shows it in the percentiles instead of slowing the camera down. With ``rate``
0 the clients send back to back (closed loop), which measures the most the service can take.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from data.dataset import load_dataset
from inspect_app.ingest.base import content_type_for
from inspect_app.ingest.replay import replay_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraImage:
    """One image ready to post: read into memory first so disk reads are not in the timing."""

    name: str
    data: bytes
    content_type: str | None


@dataclass
class SimulationSummary:
    sent: int = 0
    accepted: int = 0  # 2xx: the service took the image and answered with a decision
    decisions: Counter[str] = field(default_factory=Counter)  # pass | fail | pending
    errors: Counter[str] = field(default_factory=Counter)  # "HTTP 422", "ConnectError", ...
    error_examples: dict[str, str] = field(default_factory=dict)  # first detail of each kind
    latencies_ms: list[float] = field(default_factory=list)  # of accepted images
    elapsed_s: float = 0.0
    offered_rate: float = 0.0  # images/s asked for; 0 = as fast as the clients can

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, percentile: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(self.latencies_ms, percentile))


def load_camera_images(data: Path, count: int | None = None) -> list[CameraImage]:
    """The images a simulated camera sends, in the replay camera's order, read into memory."""
    items = replay_order(load_dataset(data), shuffle=True, seed=0)
    if not items:
        raise ValueError(f"dataset {data} has no images")
    if count is not None:
        items = items[:count]
    return [
        CameraImage(
            name=Path(item.path).name,
            data=Path(item.path).read_bytes(),
            content_type=content_type_for(Path(item.path)),
        )
        for item in items
    ]


async def post_images(
    images: list[CameraImage],
    *,
    url: str,
    line: str,
    key: str,
    rate: float,
    count: int,
    concurrency: int = 4,
    timeout_s: float = 30.0,
) -> SimulationSummary:
    """Post `count` images (cycling through `images`) to `line` at `rate` images/s."""
    if not images:
        raise ValueError("no images to send")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if rate < 0:
        raise ValueError(f"rate must be 0 (as fast as possible) or positive, got {rate}")
    endpoint = f"{url.rstrip('/')}/api/v1/lines/{line}/images"
    run = uuid.uuid4().hex[:8]  # capture ids of this run never collide with an earlier run's
    summary = SimulationSummary(offered_rate=rate)
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def send(i: int, due: float) -> None:
            image = images[i % len(images)]
            headers = {"X-Api-Key": key}
            if image.content_type:
                headers["Content-Type"] = image.content_type
            params = {
                "capture_id": f"sim-{run}-{i}",
                "part_serial": f"SIM-{run}-{i:06d}",
                "captured_at": datetime.now(UTC).isoformat(),
            }
            try:
                response = await client.post(
                    endpoint, content=image.data, headers=headers, params=params
                )
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
                summary.errors[kind] += 1
                summary.error_examples.setdefault(kind, f"{image.name}: {exc}")
                return
            finally:
                slots.release()
            if response.is_success:
                summary.accepted += 1
                summary.latencies_ms.append((time.perf_counter() - due) * 1000)
                summary.decisions[str(response.json().get("decision", "?"))] += 1
            else:
                kind = f"HTTP {response.status_code}"
                summary.errors[kind] += 1
                summary.error_examples.setdefault(kind, f"{image.name}: {_detail(response)}")

        start = time.perf_counter()
        tasks = []
        for i in range(count):
            due = start + i / rate if rate > 0 else None
            if due is not None:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await slots.acquire()
            summary.sent += 1
            sent_at = due if due is not None else time.perf_counter()
            tasks.append(asyncio.create_task(send(i, sent_at)))
        await asyncio.gather(*tasks)
        summary.elapsed_s = time.perf_counter() - start
    return summary


def simulate_line_camera(
    *,
    url: str,
    line: str,
    key: str,
    data: Path,
    rate: float,
    count: int | None = None,
    concurrency: int = 4,
) -> SimulationSummary:
    """Post a dataset (once, or `count` images cycling through it) as a line camera would."""
    images = load_camera_images(data, count)
    total = count if count is not None else len(images)
    log.info(
        "simulating a camera on line %s: %d images at %s images/s to %s", line, total, rate, url
    )
    return asyncio.run(
        post_images(
            images, url=url, line=line, key=key, rate=rate, count=total, concurrency=concurrency
        )
    )


def format_summary(summary: SimulationSummary) -> str:
    """The summary a person reads after a run."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    decisions = ", ".join(f"{k} {v}" for k, v in sorted(summary.decisions.items())) or "none"
    offered = f"{summary.offered_rate:g}/s" if summary.offered_rate > 0 else "as fast as possible"
    lines = [
        f"sent      {summary.sent} (offered {offered}, {summary.elapsed_s:.1f} s)",
        f"accepted  {summary.accepted} ({summary.accepted_per_s:.1f} images/s)",
        f"decisions {decisions}",
        f"errors    {sum(summary.errors.values())}",
    ]
    for kind, n in sorted(summary.errors.items()):
        lines.append(f"  {kind} x{n}, e.g. {summary.error_examples.get(kind, '')}")
    lines.append(f"latency   p50 {ms(summary.latency_ms(50))}, p99 {ms(summary.latency_ms(99))}")
    return "\n".join(lines)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
