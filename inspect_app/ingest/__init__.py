"""Camera sources: OpenCV devices/streams/files, hot folders and dataset replay.

The runner (``start_camera_sources``) is loaded on first use, because it needs the pipeline
and with it the model stack; the sources themselves and ``inspect-app simulate`` do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inspect_app.ingest.base import CameraSource, CameraSourceError, CapturedImage

if TYPE_CHECKING:
    from inspect_app.ingest.runner import (
        CameraSourceGroup,
        SourceStats,
        build_camera_source,
        start_camera_sources,
    )

__all__ = [
    "CameraSource",
    "CameraSourceError",
    "CameraSourceGroup",
    "CapturedImage",
    "SourceStats",
    "build_camera_source",
    "start_camera_sources",
]

_RUNNER_NAMES = {"CameraSourceGroup", "SourceStats", "build_camera_source", "start_camera_sources"}


def __getattr__(name: str) -> Any:
    if name in _RUNNER_NAMES:
        from inspect_app.ingest import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
