"""Ingestion throughput: what the whole service delivers against what the machine can do.

Prints, in one run:

- the **in-process limit of the whole work** (``WholeWork``): decode + input stats + the
  image gate + preprocessing + the model, batched by 16 with the serving runtime (ONNX
  Runtime by default), on both cores (two threads decode and prepare the next batch while the
  model runs the current one), no HTTP, no database. It is measured before and after the
  service runs, so the two bracket the HTTP figures on a shared machine;
- the bare model alone (the serving runtime on prepared batches of 16), for reference;
- the end-to-end throughput of ``inspect-app serve`` (a separate process on a free port, a
  temp data dir, SQLite, the bundled weights): images posted over HTTP by concurrent camera
  clients, accepted, run through the model, routed and committed (a 201 is sent only after
  the commit), and its **ratio to the whole-work limit** (goal: >= 0.5);
- p50/p95/p99 latency at offered loads of 2 and 10 images/s (open-loop: image i is sent at
  ``i / rate`` and its latency counts from then) and at the most the service sustains
  (closed loop: the clients send back to back); then **10 images/s with a shadow
  challenger** (a second registered version, the bundled weights nudged, deployed in shadow
  mode: it runs hidden on every part; goal: p99 <= 50 ms);
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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from sqlmodel import Session, col, func, select

from inspect_app.accounts import add_camera_key, add_user
from inspect_app.imaging import InputStats, decode_image, input_stats
from inspect_app.ingest.simulate import (
    CameraImage,
    SimulationSummary,
    load_camera_images,
    post_images,
)
from inspect_app.lines import add_line
from inspect_app.settings import SAMPLES_DIR, Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection, ModelPrediction
from models import DEFAULT_WEIGHTS

LINE = "bench"
BATCH = 16


class WholeWork:
    """Everything the service does to an image but HTTP and the database, at the machine's
    limit: two threads decode, measure and prepare batches of 16 while this thread runs the
    model and the gate on the batch before."""

    def __init__(self, weights: Path, images: list[CameraImage], runtime: str) -> None:
        from inspect_app.monitoring.gate import ImageGate
        from models.profile import load_profile
        from models.runtime import load_predictor

        self.images = images
        self.limits = Settings()
        self.predictor = load_predictor(weights, runtime=runtime)
        profile = load_profile(weights, version=self.predictor.version)
        self.gate = ImageGate(profile) if profile is not None else None
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="bench-decode")
        self._next = 0
        for _ in range(3):  # warm-up: allocator, kernels' first runs
            self.run_batch(self.prepare_batch())

    def _prepare(self, image: CameraImage) -> tuple[InputStats, np.ndarray]:
        decoded = decode_image(image.data, image.content_type,
                               max_bytes=self.limits.max_image_bytes,
                               max_pixels=self.limits.max_image_pixels)  # fmt: skip
        return input_stats(decoded.image), self.predictor.prepare(decoded.image)

    def prepare_batch(self) -> list[Future[tuple[InputStats, np.ndarray]]]:
        batch = []
        for _ in range(BATCH):
            batch.append(self.pool.submit(self._prepare, self.images[self._next]))
            self._next = (self._next + 1) % len(self.images)
        return batch

    def run_batch(self, batch: list[Future[tuple[InputStats, np.ndarray]]]) -> None:
        prepared = [f.result() for f in batch]
        _, embeddings = self.predictor.predict_prepared(np.stack([x for _, x in prepared]))
        if self.gate is not None:  # every check the service makes, the edge layout's too
            layouts = np.stack([stats.edge_layout for stats, _ in prepared])
            self.gate.check_batch([stats.metrics() for stats, _ in prepared], embeddings, layouts)
            profile = self.gate.profile
            m = int(profile.reference_coordinates.shape[1]) - 1
            profile.embedding.coordinates(embeddings, m)

    def throughput(self, seconds: float, rounds: int = 5) -> list[float]:
        """Images/s of `rounds` runs of `seconds / rounds` each: on a shared machine their
        spread shows how much other work disturbed the measurement."""
        rates = []
        for _ in range(rounds):
            done = 0
            ahead = self.prepare_batch()
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                current, ahead = ahead, self.prepare_batch()
                self.run_batch(current)
                done += BATCH
            rates.append(done / (time.perf_counter() - start))
            for f in ahead:
                f.result()
        return rates

    def model_only(self, seconds: float) -> float:
        """The serving runtime alone on one prepared batch of 16, images/s."""
        x = np.stack([f.result()[1] for f in self.prepare_batch()])
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.predictor.predict_prepared(x)
            done += BATCH
        return done / (time.perf_counter() - start)

    def close(self) -> None:
        self.pool.shutdown()


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


STAGES = ("decode_ms", "queue_ms", "model_ms", "persist_ms", "total_ms")


def stage_figures(
    settings: Settings, first_id: int, last_id: int | None = None
) -> dict[str, tuple[float, float]]:
    """(p50, p99) per-stage milliseconds of the inspections with first_id < id <= last_id,
    as the server recorded them: where a part's time went, and where the slowest 1%'s did."""
    engine = make_engine(settings.resolved_database_url)
    query = select(Inspection).where(Inspection.line_id == LINE, Inspection.id > first_id)
    if last_id is not None:
        query = query.where(Inspection.id <= last_id)
    with Session(engine) as session:
        rows = session.exec(query).all()
    engine.dispose()
    if not rows:
        return {}
    figures = {}
    for stage in STAGES:
        values = np.array([getattr(r, stage) for r in rows], dtype=float)
        figures[stage] = (float(np.percentile(values, 50)), float(np.percentile(values, 99)))
    return figures


def describe_stages(name: str, figures: dict[str, tuple[float, float]]) -> str:
    return f"server-side p50 / p99 {name}: " + ", ".join(
        f"{k.removesuffix('_ms')} {p50:.1f} / {p99:.1f} ms" for k, (p50, p99) in figures.items()
    )


def server_cpu_seconds(url: str) -> float:
    """The service process's CPU seconds so far (user + system), from its own /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError("the service's /metrics has no process_cpu_seconds_total")


def count_and_last_id(settings: Settings) -> tuple[int, int]:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        ids = session.exec(select(Inspection.id).where(Inspection.line_id == LINE)).all()
    engine.dispose()
    return len(ids), max((i for i in ids if i is not None), default=0)


def describe(name: str, summary: SimulationSummary) -> str:
    def ms(p: float) -> float:
        value = summary.latency_ms(p)
        return value if value is not None else float("nan")

    errors = sum(summary.errors.values())
    return (
        f"{name:<30} sent {summary.sent:>4}  accepted {summary.accepted:>4}  errors {errors:>3}  "
        f"{summary.accepted_per_s:6.1f} images/s  "
        f"p50 {ms(50):7.1f}  p95 {ms(95):7.1f}  p99 {ms(99):7.1f} ms"
    )


def deploy_shadow_challenger(settings: Settings, weights: Path, data_dir: Path) -> str:
    """Register a second version (the weights nudged) and deploy it in shadow mode on the
    bench line; returns its version."""
    from shadow_cost import make_candidate

    from inspect_app.rollout import deployments
    from inspect_app.rollout.deployments import DeploymentRequest
    from inspect_app.rollout.policy import Mode
    from inspect_app.rollout.registry import register_model
    from models.checkpoint import load_checkpoint

    candidate_file = make_candidate(weights, data_dir / "candidate.pt")
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as db:
        supervisor = add_user(db, "bench-supervisor", "supervisor", "bench password 123")
        candidate = register_model(db, candidate_file, data_dir, registered_by="bench")
        version = candidate.version.version
        deployments.set_deployment(
            db, LINE, DeploymentRequest(candidate=version, mode=Mode.SHADOW),
            actor=supervisor, reason="bench: a shadow challenger",
            default_version=load_checkpoint(weights).version,
        )  # fmt: skip
    engine.dispose()
    return version


def shadow_predictions(settings: Settings) -> int:
    """The challenger's answers so far (it runs once the service has followed the change)."""
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        n = session.exec(
            select(func.count())
            .select_from(ModelPrediction)
            .where(ModelPrediction.role == "shadow", col(ModelPrediction.error).is_(None))
        ).one()
    engine.dispose()
    return int(n)


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
    parser.add_argument(
        "--limit-seconds", type=float, default=10.0, help="each whole-work measurement"
    )
    parser.add_argument(
        "--runtime", choices=("onnx", "torch"), default="onnx", help="the limit's runtime"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads for the service (default: torch's, one per core)",
    )
    parser.add_argument("--no-shadow", action="store_true", help="skip the shadow challenger")
    args = parser.parse_args()

    if not args.weights.is_file():
        raise SystemExit(
            f"no model weights at {args.weights}: build the bundled ones with `make weights` "
            "or pass --weights PATH"
        )
    images = load_camera_images(args.samples)
    print(f"load average before: {load_average()}")
    print(f"weights {args.weights}, {len(images)} sample images from {args.samples}")

    work = WholeWork(args.weights, images, args.runtime)
    limit_before = work.throughput(args.limit_seconds)
    model_rate = work.model_only(2.0)
    print(f"whole work in process ({work.predictor.runtime}): {describe_rates(limit_before)}")

    shadow: SimulationSummary | None = None
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
            uncounted = 0  # accepted while the challenger was being followed and warmed
            results: list[tuple[str, SimulationSummary]] = []
            for rate in (2.0, 10.0):
                results.append((f"offered {rate:g} images/s", run(rate, int(rate * args.seconds))))
            _, last_id = count_and_last_id(settings)
            server_cpu, client_cpu, wall = (
                server_cpu_seconds(url),
                time.process_time(),
                time.perf_counter(),
            )
            saturated = run(0, args.max_images)
            server_cpu = server_cpu_seconds(url) - server_cpu
            client_cpu, wall = time.process_time() - client_cpu, time.perf_counter() - wall
            results.append((f"max ({args.clients} clients)", saturated))
            stages = stage_figures(settings, last_id)
            shadow_stages: dict[str, tuple[float, float]] = {}
            if not args.no_shadow:
                deploy_shadow_challenger(settings, args.weights, data_dir)
                deadline = time.monotonic() + 120  # the service follows within a second
                while shadow_predictions(settings) == 0 and time.monotonic() < deadline:
                    uncounted += run(0, BATCH).accepted  # also warms the challenger's batches
                uncounted += run(0, 2 * BATCH).accepted
                _, before_shadow = count_and_last_id(settings)
                shadow = run(10.0, int(10 * args.seconds))
                results.append(("10 images/s, shadow challenger", shadow))
                shadow_stages = stage_figures(settings, before_shadow)
            persisted, _ = count_and_last_id(settings)
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    # Again after the service ran: the machine is shared, so the two bracket the HTTP run.
    limit_after = work.throughput(args.limit_seconds)
    work.close()
    limit = statistics.median(limit_before + limit_after)
    accepted = warmup.accepted + uncounted + sum(s.accepted for _, s in results)
    end_to_end = saturated.accepted_per_s
    print()
    for name, summary in [("warm-up (not counted)", warmup), *results]:
        print(describe(name, summary))
        for kind, n in sorted(summary.errors.items()):
            print(f"    {kind} x{n}, e.g. {summary.error_examples[kind]}")
    print()
    print(f"persisted inspections: {persisted} of {accepted} accepted (warm-ups included)")
    if stages:
        print(describe_stages("at max load", stages))
    if shadow_stages:
        print(describe_stages("at 10 images/s with the shadow challenger", shadow_stages))
    print(f"model alone ({work.predictor.runtime}, batches of {BATCH}): {model_rate:7.1f} images/s")
    print(f"whole-work limit:      {limit:7.1f} images/s (median of rounds before and after)")
    print(f"  before: {describe_rates(limit_before)}")
    print(f"  after:  {describe_rates(limit_after)}")
    print(f"end to end (HTTP):     {end_to_end:7.1f} images/s")
    print(f"ratio end-to-end/whole-work limit: {end_to_end / limit:.2f} (goal >= 0.5)")
    per_image = 1000 / saturated.accepted
    cores = os.cpu_count() or 1
    print(
        f"CPU at max load, per image accepted: the service {server_cpu * per_image:.1f} ms, the "
        f"HTTP clients (this process) {client_cpu * per_image:.1f} ms; the whole work in process "
        f"{1000 * cores / limit:.1f} ms of the cores' time; cores busy "
        f"{(server_cpu + client_cpu) / wall:.2f} of {cores}"
    )
    p99_at_10 = results[1][1].latency_ms(99)
    print(f"p99 at 10 images/s:    {p99_at_10 if p99_at_10 is not None else float('nan'):.1f} ms")
    if shadow is not None:
        p99 = shadow.latency_ms(99)
        print(f"p99 at 10 images/s with a shadow challenger: "
              f"{p99 if p99 is not None else float('nan'):.1f} ms (goal <= 50 ms)")  # fmt: skip
    print(f"load average after:  {load_average()}")


if __name__ == "__main__":
    main()
