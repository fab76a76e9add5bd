"""Ingestion throughput: what the whole service delivers against what the bare model can do.

Prints, in one run:

- the bare predictor's batched throughput (``Predictor.predict`` on batches of 16, in this
  process, on the decoded sample images);
- the end-to-end throughput of ``inspect-app serve`` (a separate process on a free port, a
  temp data dir, SQLite, the bundled weights): images posted over HTTP by concurrent camera
  clients, accepted, run through the model, routed and committed (a 201 is sent only after
  the commit), and the ratio of the two (goal: >= 0.8);
- p50/p99 latency at offered loads of 2 and 10 images/s (open-loop: image i is sent at
  ``i / rate`` and its latency counts from then; goal at 10/s: p99 <= 150 ms) and at the most
  the service sustains (closed loop: the clients send back to back);
- the median time of each pipeline stage, read from the inspections it committed, and the
  machine's load average before and after, because a shared machine skews every figure.
  The HTTP clients run in this process, on the same cores as the service: their cost is part
  of the end-to-end figure, as it would not be with cameras on the line.

The line runs at ``shadow`` (the model runs on every image and each one gets a review task);
a new line cannot start at partial or full without evidence, and raising it would measure the
evidence gate, not ingestion.

Run: ``.venv/bin/python bench/ingest_throughput.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlmodel import Session, select

from inspect_app.accounts import add_camera_key
from inspect_app.imaging import decode_image
from inspect_app.ingest.simulate import (
    CameraImage,
    SimulationSummary,
    load_camera_images,
    post_images,
)
from inspect_app.lines import add_line
from inspect_app.settings import SAMPLES_DIR, Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection
from models import DEFAULT_WEIGHTS

LINE = "bench"
BATCH = 16


class BareModel:
    """The predictor in this process, on batches of 16 decoded sample images."""

    def __init__(self, weights: Path, images: list[CameraImage]) -> None:
        from models.predictor import Predictor

        limits = Settings()
        decoded = [
            decode_image(
                img.data,
                img.content_type,
                max_bytes=limits.max_image_bytes,
                max_pixels=limits.max_image_pixels,
            ).image
            for img in images
        ]
        self.batch = [decoded[i % len(decoded)] for i in range(BATCH)]
        self.predictor = Predictor.from_checkpoint(weights)
        for _ in range(3):  # warm-up: allocator, kernels' first runs
            self.predictor.predict(self.batch)

    def throughput(self, seconds: float, rounds: int = 5) -> list[float]:
        """Images/s of `rounds` runs of `seconds / rounds` each: on a shared machine their
        spread shows how much other work disturbed the measurement."""
        rates = []
        for _ in range(rounds):
            done = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                self.predictor.predict(self.batch)
                done += BATCH
            rates.append(done / (time.perf_counter() - start))
        return rates


def prepare_service_data(data_dir: Path) -> tuple[Settings, str]:
    """The service's database with the benchmark line and a camera key for it."""
    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.resolved_database_url)
    upgrade_database(engine)
    with Session(engine) as session:
        add_line(session, LINE, "shadow", actor="bench")
        key = add_camera_key(session, LINE, actor="bench")
    engine.dispose()
    return settings, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(
    data_dir: Path, weights: Path, port: int, torch_threads: int | None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INSPECT_WEIGHTS": str(weights)}
    if torch_threads is not None:
        env["OMP_NUM_THREADS"] = str(torch_threads)  # torch's default intra-op thread count
    log = (data_dir / "serve.log").open("wb")
    cmd = [sys.executable, "-m", "inspect_app.cli", "serve", "--port", str(port),
           "--data-dir", str(data_dir), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"the service exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(
        f"the service was not ready within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}"
    )


def stage_medians(settings: Settings, first_id: int) -> dict[str, float]:
    """Median per-stage milliseconds of the inspections with id > first_id (server-side)."""
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        rows = session.exec(
            select(Inspection).where(Inspection.line_id == LINE, Inspection.id > first_id)
        ).all()
    engine.dispose()
    if not rows:
        return {}
    stages = ("decode_ms", "queue_ms", "model_ms", "persist_ms", "total_ms")
    return {s: statistics.median(getattr(r, s) for r in rows) for s in stages}


def count_and_last_id(settings: Settings) -> tuple[int, int]:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        ids = session.exec(select(Inspection.id).where(Inspection.line_id == LINE)).all()
    engine.dispose()
    return len(ids), max((i for i in ids if i is not None), default=0)


def describe(name: str, summary: SimulationSummary) -> str:
    p50, p99 = summary.latency_ms(50), summary.latency_ms(99)
    errors = sum(summary.errors.values())
    return (
        f"{name:<22} sent {summary.sent:>4}  accepted {summary.accepted:>4}  errors {errors:>3}  "
        f"{summary.accepted_per_s:6.1f} images/s  "
        f"p50 {p50 if p50 is not None else float('nan'):7.1f} ms  "
        f"p99 {p99 if p99 is not None else float('nan'):7.1f} ms"
    )


def describe_rates(rates: list[float]) -> str:
    return (
        f"median {statistics.median(rates):.1f} images/s "
        f"(rounds {', '.join(f'{r:.1f}' for r in rates)})"
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR)
    parser.add_argument("--clients", type=int, default=12, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each paced load")
    parser.add_argument("--max-images", type=int, default=400, help="images for the max load")
    parser.add_argument("--bare-seconds", type=float, default=10.0)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads for the bare model and the service (default: torch's, one per "
        "core); on a machine shared with other work, fewer threads than cores avoids "
        "OpenMP threads waiting on each other",
    )
    args = parser.parse_args()

    if not args.weights.is_file():
        raise SystemExit(
            f"no model weights at {args.weights}: build the bundled ones with `make weights` "
            "or pass --weights PATH"
        )
    images = load_camera_images(args.samples)
    print(f"load average before: {load_average()}")
    print(f"weights {args.weights}, {len(images)} sample images from {args.samples}")
    print(f"torch threads: {args.torch_threads or 'torch default (one per core)'}")

    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    model = BareModel(args.weights, images)
    bare_before = model.throughput(args.bare_seconds)
    print(f"bare predictor, batches of {BATCH}: {describe_rates(bare_before)}")

    with tempfile.TemporaryDirectory(prefix="inspect-bench-") as tmp:
        data_dir = Path(tmp)
        settings, key = prepare_service_data(data_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_service(data_dir, args.weights, port, args.torch_threads)
        try:
            wait_ready(url, process, data_dir / "serve.log", timeout_s=300)

            def run(rate: float, count: int) -> SimulationSummary:
                posting = post_images(
                    images, url=url, line=LINE, key=key, rate=rate, count=count,
                    concurrency=args.clients,
                )  # fmt: skip
                return asyncio.run(posting)

            warmup = run(0, 2 * BATCH)  # connections, the model's first batches
            results: list[tuple[str, SimulationSummary]] = []
            for rate in (2.0, 10.0):
                results.append((f"offered {rate:g} images/s", run(rate, int(rate * args.seconds))))
            _, last_id = count_and_last_id(settings)
            saturated = run(0, args.max_images)
            results.append((f"max ({args.clients} clients)", saturated))
            stages = stage_medians(settings, last_id)
            persisted, _ = count_and_last_id(settings)
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    # Again after the service ran: the machine is shared, so the two bracket the HTTP run.
    bare_after = model.throughput(args.bare_seconds)
    bare = statistics.median(bare_before + bare_after)
    accepted = warmup.accepted + sum(s.accepted for _, s in results)
    end_to_end = saturated.accepted_per_s
    print()
    for name, summary in [("warm-up (not counted)", warmup), *results]:
        print(describe(name, summary))
        for kind, n in sorted(summary.errors.items()):
            print(f"    {kind} x{n}, e.g. {summary.error_examples[kind]}")
    print()
    print(f"persisted inspections: {persisted} of {accepted} accepted (warm-up included)")
    if stages:
        print(
            "server-side medians at max load: "
            + ", ".join(f"{k.removesuffix('_ms')} {v:.1f} ms" for k, v in stages.items())
        )
    print(f"bare batched model:   {bare:7.1f} images/s (median of rounds before and after)")
    print(f"  before: {describe_rates(bare_before)}")
    print(f"  after:  {describe_rates(bare_after)}")
    print(f"end to end (HTTP):    {end_to_end:7.1f} images/s")
    print(f"ratio end-to-end/bare: {end_to_end / bare:.2f} (goal >= 0.8)")
    p99_at_10 = results[1][1].latency_ms(99)
    print(f"p99 at 10 images/s:   {p99_at_10 if p99_at_10 is not None else float('nan'):.1f} ms "
          "(goal <= 150 ms)")  # fmt: skip
    print(f"load average after:  {load_average()}")


if __name__ == "__main__":
    main()
