"""A line's labeled parts as a dataset archive, for supervisors who retrain the model.

The archive is `inspect_app.export`'s layout (class folders, ``manifest.csv``,
``missing.csv``, ``unlabeled.csv``, ``export.json``) under one ``<line>-export/`` folder, as
a gzip'd tar streamed while it is written: memory stays one page of parts and one image,
however long the line has run. The request is checked (line, window) before the first byte,
so a bad one is a plain 404/422, never a broken archive.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from inspect_app.api.deps import EngineDep, SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import ClientTime, LineIdPath, time_query
from inspect_app.api.pipeline_deps import ImageStoreDep
from inspect_app.export import ExportError, ExportRequest, stream_export_tar
from inspect_app.lines import LineNotFound

router = APIRouter(prefix="/api/v1", tags=["exports"])

ARCHIVE_MEDIA_TYPE = "application/gzip"


@router.get(
    "/lines/{line}/export",
    summary="A line's labeled parts as a training-set archive (tar.gz)",
    description="Supervisors. A gzip'd tar of `<line>-export/`: one folder per class with "
    "the images of the parts' standing (not superseded) labels, `manifest.csv` (the dataset "
    "layout `inspect-app train --data` reads, with per part how it was labeled, the model's "
    "prediction, the capture time and the input metrics), `missing.csv` (parts whose image "
    "was removed by retention or lost), `unlabeled.csv` with `_unlabeled/` (unless "
    "labeled_only) and `export.json` (counts, labelers, the manifest's SHA-256). Parts "
    "received in [since, until).",
    response_class=StreamingResponse,
    responses={
        200: {"content": {ARCHIVE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(
            401,
            403,
            404,
            422,
            _404="no such line",
            _422="invalid input, or until is not after since",
        ),
    },
)
def export_line(
    line: LineIdPath,
    session: SessionDep,
    engine: EngineDep,
    store: ImageStoreDep,
    user: SupervisorUser,
    since: ClientTime | None = time_query("received at or after"),
    until: ClientTime | None = time_query("received before (after since)"),
    labeled_only: bool = Query(default=False, description="leave out parts without a label"),
    exclude_flagged: bool = Query(
        default=False,
        description="leave out labels of inspectors flagged on reference parts (listed as "
        "excluded in export.json)",
    ),
) -> StreamingResponse:
    request = ExportRequest(
        line_id=line,
        since=since,
        until=until,
        labeled_only=labeled_only,
        exclude_flagged=exclude_flagged,
    )
    try:
        request.check(session)
    except LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except ExportError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    return StreamingResponse(
        stream_export_tar(engine, store, request),
        media_type=ARCHIVE_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{line}-export.tar.gz"'},
    )
