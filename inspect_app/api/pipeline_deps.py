"""Dependencies for the pipeline's parts that the app factory builds (see `api.app`).

Read from ``app.state`` per request, so each app built by `create_app` (and each test) has
its own pipeline, image store and metrics; ``async``, so reading them costs no thread hop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inspect_app.metrics import ServiceMetrics
from inspect_app.pipeline import InspectionPipeline
from inspect_app.rollout.serving import Rollout
from inspect_app.storage.images import ImageStore


async def get_pipeline(request: Request) -> InspectionPipeline:
    return request.app.state.pipeline


async def get_image_store(request: Request) -> ImageStore:
    return request.app.state.image_store


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_rollout(request: Request) -> Rollout:
    return request.app.state.rollout


PipelineDep = Annotated[InspectionPipeline, Depends(get_pipeline)]
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RolloutDep = Annotated[Rollout, Depends(get_rollout)]
