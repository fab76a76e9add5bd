"""The cost of a shadow challenger on ingestion, and the gap of a blue-green switch.

One `inspect-app serve` process (SQLite, the bundled weights) and, in this process, HTTP
camera clients. Measured in one run, alternating so drift on a shared machine shows:

1. the most the service sustains (closed loop) with the champion alone;
2. the same with a shadow candidate running hidden on every part (a second version: the
   bundled weights slightly perturbed, registered through the registry);
3. the champion alone again;

and prints the ratio with/without. Then it switches the line blue-green while a camera posts
at 20 images/s and reports the gap: how long after the change committed the first image the
candidate decided arrived, and how many images received after the commit the old version
still decided (the service follows the database within its poll interval; a change made
through the service's own API applies at once).

Run: ``.venv/bin/python bench/shadow_cost.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
from ingest_throughput import (
    LINE,
    describe,
    free_port,
    load_average,
    prepare_service_data,
    start_service,
    wait_ready,
)
from sqlmodel import Session, col, select

from inspect_app.accounts import add_user
from inspect_app.ingest.simulate import SimulationSummary, load_camera_images, post_images
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.registry import register_model
from inspect_app.settings import SAMPLES_DIR
from inspect_app.storage.db import make_engine
from inspect_app.storage.tables import Inspection
from inspect_app.timeutil import utcnow
from models import DEFAULT_WEIGHTS
from models.checkpoint import load_checkpoint, save_checkpoint


def make_candidate(weights: Path, out: Path) -> Path:
    """The bundled weights nudged (a new version name, the same cost per image)."""
    base = load_checkpoint(weights)
    with torch.no_grad():
        for p in base.model.parameters():
            p.add_(1e-4 * torch.randn_like(p))
    save_checkpoint(
        out,
        base.model,
        config=base.config,
        class_names=base.class_names,
        preprocessing=base.preprocessing,
        temperature=base.temperature,
        metrics=base.metrics,
        data_seed=base.data_seed,
    )
    return out


def wait_for(predicate, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("the service did not follow the deployment change")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--max-images", type=int, default=300)
    parser.add_argument("--switch-seconds", type=float, default=6.0)
    parser.add_argument("--torch-threads", type=int, default=None)
    args = parser.parse_args()
    images = load_camera_images(SAMPLES_DIR)
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="inspect-shadow-") as tmp:
        data_dir = Path(tmp)
        settings, key = prepare_service_data(data_dir)
        engine = make_engine(settings.resolved_database_url)
        candidate_file = make_candidate(args.weights, data_dir / "candidate.pt")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_service(data_dir, args.weights, port, args.torch_threads)
        try:
            wait_ready(url, process, data_dir / "serve.log", timeout_s=300)
            with Session(engine, expire_on_commit=False) as db:
                supervisor = add_user(db, "bench-supervisor", "supervisor", "bench password 123")
                candidate = register_model(
                    db, candidate_file, data_dir, registered_by="bench"
                ).version.version
                champion = load_checkpoint(args.weights).version  # registered by the service

            def run(rate: float, count: int) -> SimulationSummary:
                posting = post_images(images, url=url, line=LINE, key=key, rate=rate,
                                      count=count, concurrency=args.clients)  # fmt: skip
                return asyncio.run(posting)

            def deploy(mode: Mode, version: str | None) -> datetime:
                with Session(engine) as db:
                    deployments.set_deployment(
                        db, LINE, DeploymentRequest(candidate=version, mode=mode),
                        actor=supervisor, reason=f"bench: {mode}", default_version=champion,
                    )  # fmt: skip
                return utcnow()

            run(0, 32)  # warm-up
            alone = run(0, args.max_images)
            deploy(Mode.SHADOW, candidate)
            time.sleep(3.0)  # the service polls within a second and loads the candidate
            run(0, 32)
            shadowed = run(0, args.max_images)
            deploy(Mode.NONE, None)
            time.sleep(2.0)
            alone_again = run(0, args.max_images)
            deploy(Mode.SHADOW, candidate)
            time.sleep(3.0)
            paced_shadow = run(10.0, 100)

            # blue-green while a camera posts at 20 images/s
            async def camera_and_switch() -> tuple[SimulationSummary, datetime]:
                posting = asyncio.create_task(
                    post_images(
                        images,
                        url=url,
                        line=LINE,
                        key=key,
                        rate=20.0,
                        count=int(20 * args.switch_seconds),
                        concurrency=4,
                    )
                )
                await asyncio.sleep(args.switch_seconds / 2)
                committed = await asyncio.to_thread(deploy, Mode.BLUE_GREEN, candidate)
                return await posting, committed

            switch_run, committed = asyncio.run(camera_and_switch())
            with Session(engine) as db:
                after = db.exec(
                    select(Inspection.received_at, Inspection.model_version)
                    .where(col(Inspection.received_at) >= committed)
                    .order_by(col(Inspection.received_at))
                ).all()
        finally:
            process.terminate()
            process.wait(timeout=60)
            if process.poll() is None:
                process.kill()
            engine.dispose()
    without = (alone.accepted_per_s + alone_again.accepted_per_s) / 2
    print(describe("champion alone", alone))
    print(describe("with a shadow candidate", shadowed))
    print(describe("champion alone again", alone_again))
    print(describe("shadow, offered 10 images/s", paced_shadow))
    print(f"ratio with/without shadow: {shadowed.accepted_per_s / without:.2f}")
    p99 = paced_shadow.latency_ms(99)
    print(f"p99 at 10 images/s with a shadow challenger: {p99 or float('nan'):.1f} ms")
    old = [at for at, version in after if version != candidate]
    first_new = next((at for at, version in after if version == candidate), None)
    print(describe("blue-green switch at 20 images/s", switch_run))
    print(
        f"switch: {len(old)} of {len(after)} images received after the commit were still "
        f"decided by the champion; the first the candidate decided arrived "
        + (f"{(first_new - committed).total_seconds() * 1000:.0f} ms" if first_new else "never")
        + " after the commit (poll interval 1 s)"
    )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
