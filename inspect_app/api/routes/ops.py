"""Operations endpoints at the root, for Prometheus and the orchestrator.

``/healthz`` says the process answers (restart it if not); ``/readyz`` says it can inspect
(send it traffic only if so): the database answers, the model is loaded and the batcher's
worker is running.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import text

from inspect_app.api.pipeline_deps import MetricsDep
from inspect_app.metrics import PROMETHEUS_CONTENT_TYPE

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}}},
)
def metrics(service_metrics: MetricsDep) -> Response:
    return Response(content=service_metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_ok(request: Request) -> tuple[bool, str]:
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return False, f"unreachable: {type(exc).__name__}: {exc}"
    return True, "ok"


@router.get(
    "/readyz",
    summary="Readiness: database reachable, model loaded, batcher running",
    responses={503: {"description": "not ready; `checks` says which part is not"}},
)
def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {}
    database_ok, checks["database"] = _database_ok(request)
    predictor = getattr(state, "predictor", None)
    checks["model"] = f"loaded: {predictor.version}" if predictor is not None else "not loaded"
    pipeline = getattr(state, "pipeline", None)
    batcher_ok = pipeline is not None and pipeline.batcher.running
    checks["batcher"] = "running" if batcher_ok else "not running"
    ready = database_ok and predictor is not None and batcher_ok
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    if not ready:
        logger.warning("not ready: %s", checks)
    return JSONResponse(
        body, status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
    )
