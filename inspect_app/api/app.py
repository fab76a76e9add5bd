"""The app factory: one FastAPI app built from `Settings`, nothing at import time.

`create_app` wires the routers and error handlers; the `lifespan` builds what needs I/O
(database, model, batcher, image store, pipeline, camera sources) when the server starts,
and stops it in the reverse order: camera sources (producers) first, then the batcher
(the consumer), then the database.

What the lifespan puts on ``app.state``: ``settings``, ``engine``, ``predictor``,
``image_store``, ``metrics``, ``pipeline``, ``batcher``, ``camera_sources``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import fastapi_offline
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.api.errors import (
    BodyGuard,
    method_not_allowed_handler,
    validation_error_handler,
)
from inspect_app.api.routes import (
    deployments,
    evidence,
    exports,
    images,
    inspections,
    lines,
    models,
    monitoring,
    ops,
    outputs,
    reference,
    reviews,
    users,
)
from inspect_app.inference import MicroBatcher
from inspect_app.lines import list_lines
from inspect_app.lookups import line_lookups
from inspect_app.metrics import ServiceMetrics
from inspect_app.monitoring.gate import ImageGate
from inspect_app.monitoring.service import LineMonitor
from inspect_app.outputs.worker import worker_of
from inspect_app.pipeline import IngestError, InspectionPipeline
from inspect_app.review_queue import queue_depth
from inspect_app.rollout.registry import ensure_registered
from inspect_app.rollout.serving import ModelPool, Rollout
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.images import open_image_store
from models.profile import ReferenceProfile, load_profile

if TYPE_CHECKING:
    from models.runtime import ServingPredictor as Predictor

logger = logging.getLogger(__name__)

# Every request body but the camera's image (which has its own limit, `max_image_bytes`):
# the largest JSON the API takes is a note of 2000 characters.
MAX_BODY_BYTES = 64 * 1024
# Swagger UI and ReDoc as installed files (the fastapi-offline package ships both), so /docs
# works on a plant network with no way out.
DOCS_ASSETS_PATH = "/docs-assets"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
# ... and the browser is told to fetch nothing from elsewhere: ReDoc's bundle always asks
# cdn.redoc.ly for its logo, and its search runs in a blob: worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'"
)

API_DESCRIPTION = """\
Human-in-the-loop visual inspection of phones on an assembly line.

* **Line cameras** post images to `POST /api/v1/lines/{line}/images` with their camera key
  (`X-Api-Key`) and get the line's decision: `pass`, `fail`, or `pending` while a human decides
  (poll `GET /api/v1/inspections/{id}`).
* **Supervisors and tools** use a user's bearer token for lines, automation levels, evidence and
  the review queue.
* **Operations**: `/metrics` (Prometheus), `/healthz`, `/readyz`. The review UI is at `/review`.

Errors are `4xx` with `{"detail": "..."}` saying what was wrong (a 422 for invalid fields
lists each problem: `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`). Request
bodies are limited to 64 KiB, except the camera's image.
"""


def _queue_depths(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {line.id: queue_depth(session, line.id) for line in list_lines(session)}


async def _ingest_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IngestError)
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # torch and ONNX Runtime: loaded when the server starts, not before
    from models.runtime import load_predictor

    settings: Settings = app.state.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    await asyncio.to_thread(upgrade_database, engine)
    line_lookups(engine).max_age_s = settings.lookup_max_age_ms / 1000
    metrics = ServiceMetrics(queue_depths=partial(_queue_depths, engine))
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    predictor = await asyncio.to_thread(
        partial(
            load_predictor,
            settings.weights,
            runtime=settings.inference_runtime,
            intra_op_threads=settings.onnx_threads,
        )
    )
    # The first forward pass allocates and tunes; pay for it now, not on the first part.
    await asyncio.to_thread(predictor.predict, [np.zeros((32, 32, 3), dtype=np.uint8)])
    logger.info(
        "model %s loaded from %s, served by %s (classes: %s)",
        predictor.version,
        settings.weights,
        predictor.runtime,
        ", ".join(predictor.class_names),
    )
    batcher = MicroBatcher(
        predictor,
        settings.batch_max_size,
        settings.batch_max_wait_ms,
        metrics=metrics,
        wait_for_announced=True,
    )
    gate, profile = await asyncio.to_thread(_gate, settings, predictor)
    rollout = await asyncio.to_thread(
        _rollout, settings, engine, predictor, batcher, profile, gate, metrics
    )
    monitor = _monitor(engine, rollout, predictor, metrics)
    store = open_image_store(settings, engine)
    pipeline = InspectionPipeline(
        engine=engine,
        store=store,
        batcher=batcher,
        metrics=metrics,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        loop=asyncio.get_running_loop(),
        gate=gate,
        monitor=monitor,
        rollout=rollout,
    )
    cameras = list(settings.cameras)
    if settings.demo:
        from inspect_app.demo import seed_demo

        cameras += await asyncio.to_thread(seed_demo, engine, settings)

    app.state.engine = engine
    app.state.metrics = metrics
    app.state.predictor = predictor
    app.state.image_store = store
    app.state.batcher = batcher
    app.state.pipeline = pipeline
    app.state.monitor = monitor
    app.state.rollout = rollout
    batcher.start()
    await asyncio.to_thread(rollout.start)
    await asyncio.to_thread(monitor.warm_up)
    monitor.start()
    outputs = worker_of(settings, engine)  # None when INSPECT_OUTPUTS_ENABLED=false
    app.state.outputs = outputs
    if outputs is not None:
        outputs.start()
    sources = None
    try:
        if cameras:
            from inspect_app.ingest import start_camera_sources

            sources = start_camera_sources(cameras, pipeline)
        app.state.camera_sources = sources
        base = f"http://{settings.host}:{settings.port}"
        logger.info(
            "inspection service ready: API docs %s/docs, review UI %s, metrics %s/metrics;"
            " data in %s, database %s",
            base,
            f"{base}/review" if settings.review_ui else "off (INSPECT_REVIEW_UI=false)",
            base,
            settings.data_dir.resolve(),
            engine.url.render_as_string(hide_password=True),
        )
        yield
    finally:
        if sources is not None:
            # In a thread: a camera thread may be waiting on a submission that needs this
            # event loop to finish.
            await asyncio.to_thread(sources.stop)
        try:  # the hidden runs of answered parts, while their batchers still run
            await asyncio.wait_for(pipeline.settle(), timeout=30)
        except TimeoutError:
            logger.error("the hidden runs of answered parts did not finish within 30 s")
        await asyncio.to_thread(rollout.stop)  # every loaded version's batcher
        await asyncio.to_thread(pipeline.close)  # commits what the batchers answered
        await asyncio.to_thread(monitor.stop)
        if outputs is not None:
            await asyncio.to_thread(outputs.stop)
        engine.dispose()
        logger.info("inspection service stopped")


def _gate(
    settings: Settings, predictor: Predictor
) -> tuple[ImageGate | None, ReferenceProfile | None]:
    """The image gate of the configured model, from its reference profile.

    A model without a profile (a plant's own checkpoint trained before profiles existed) is
    served without a gate, loudly: every frame then counts as usable, which is what the
    service did before the gate existed. `inspect-app profile` makes one.
    """
    profile = load_profile(settings.weights, version=predictor.version)
    if profile is None:
        logger.warning(
            "model %s has no reference profile beside %s: the image gate cannot check frames "
            "and drift monitoring has no reference; make one with `inspect-app profile`",
            predictor.version,
            settings.weights,
        )
        return None, None
    gate = ImageGate(profile)
    logger.info(
        "image gate of model %s: reference %s, out-of-distribution distance <= %.1f",
        predictor.version,
        profile.source,
        gate.ood_threshold,
    )
    return gate, profile


def _rollout(
    settings: Settings,
    engine: Engine,
    predictor: Predictor,
    batcher: MicroBatcher,
    profile: ReferenceProfile | None,
    gate: ImageGate | None,
    metrics: ServiceMetrics,
) -> Rollout:
    """The registry holds the configured model (registered at first start), and the pool
    starts with it loaded; lines' deployments load what else they run."""
    with Session(engine) as session:
        ensure_registered(session, settings.weights, settings.data_dir)
    pool = ModelPool(
        engine,
        settings.data_dir,
        max_loaded=settings.max_loaded_models,
        batch_max_size=settings.batch_max_size,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        metrics=metrics,
        inference_runtime=settings.inference_runtime,
        onnx_threads=settings.onnx_threads,
    )
    pool.add(predictor, batcher, profile, gate)
    return Rollout(
        engine,
        pool,
        predictor.version,
        poll_seconds=settings.deployment_poll_seconds,
        max_errors=settings.candidate_max_errors,
        max_latency_ms=settings.candidate_max_latency_ms,
    )


def _monitor(
    engine: Engine, rollout: Rollout, predictor: Predictor, metrics: ServiceMetrics
) -> LineMonitor:
    def profile_of(version: str | None) -> ReferenceProfile | None:
        loaded = rollout.pool.get(version) if version is not None else None
        return loaded.profile if loaded is not None else None

    def disagreement_of(version: str | None) -> float | None:
        """The version's expected disagreement with blind labels, from its model card
        (figures under "validation", or at the top level of older cards)."""
        loaded = rollout.pool.get(version) if version is not None else None
        card = (loaded.predictor if loaded is not None else predictor).metrics
        accuracy = (card.get("validation") or card).get("binary_accuracy")
        return None if accuracy is None else max(1 - float(accuracy), 0.005)

    return LineMonitor(
        engine, profiles=profile_of, metrics=metrics, reference_disagreement=disagreement_of
    )


def _add_offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from the installed assets, not a CDN."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    favicon = f"{DOCS_ASSETS_PATH}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=favicon,
            # No badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            redoc_js_url=f"{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page


def create_app(settings: Settings | None = None) -> FastAPI:
    """The whole service, configured by `settings` (default: from the environment)."""
    app = FastAPI(
        title="inspect_app",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings if settings is not None else Settings()
    for module in (
        images,
        inspections,
        lines,
        reviews,
        users,
        evidence,
        monitoring,
        models,
        deployments,
        exports,
        ops,
        outputs,
        reference,
    ):
        app.include_router(module.router)
    app.add_exception_handler(IngestError, _ingest_error)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(405, method_not_allowed_handler)
    _add_offline_docs(app)
    if app.state.settings.review_ui:
        from review_ui.app import mount_review_ui  # gradio: imported when an app is built

        mount_review_ui(app)  # the review UI under /review, on the same service layer
    # Added last, so it is the outermost middleware: every body, the review UI's included,
    # is bounded before anything (the UI's session check too) reads it.
    app.add_middleware(BodyGuard, limit=MAX_BODY_BYTES, exempt=[images.IMAGE_UPLOAD_PATH])
    return app
