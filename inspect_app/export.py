"""A line's labeled parts as a dataset folder: what `inspect-app train --data` reads back.

The layout is `data.dataset`'s: one folder per class holding the images, and ``manifest.csv``
(columns ``file`` and ``class`` first, which the loader reads, then what a person auditing
the training set needs per image: the inspection, how its final label was given, what the
model said, when the part was captured and its input metrics). Only the standing label of a
part counts; a superseded label is history, not truth, and never reaches the manifest.

Nothing is dropped without a trace:

- a part whose image bytes are gone (removed by the retention sweep, or lost) is listed in
  ``missing.csv`` with the reason, not in the manifest (the loader refuses a row without its
  file, as it should);
- a part without a human label (unless ``labeled_only``) is written under ``_unlabeled/``
  and listed in ``unlabeled.csv`` (the loader skips ``_`` folders and reads the manifest
  only, so such images never train as if labeled);
- ``export.json`` holds the request, the counts per class, the missing and unlabeled parts,
  the labelers and the manifest's SHA-256 (what a model trained on it records as lineage).

One writer (`write_export`) feeds two sinks: a folder (the CLI, and the Models page, which
writes under the service's data folder where `train --data` can read it) and a tar.gz stream
(the API), so all give the same files. Parts are read a page at a time: memory stays one page
plus one image.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from inspect_app.domain import CLASS_NAMES, Route, TaskReason
from inspect_app.events import record_event
from inspect_app.lines import get_line
from inspect_app.reference.service import flagged_users
from inspect_app.storage.images import ImageStore
from inspect_app.storage.tables import Inspection, Label, ReviewTask, User
from inspect_app.timeutil import as_utc, utcnow

MANIFEST_NAME = "manifest.csv"  # data.dataset.MANIFEST_NAME (data/ is not imported here)
MISSING_NAME = "missing.csv"
UNLABELED_NAME = "unlabeled.csv"
SUMMARY_NAME = "export.json"
UNLABELED_DIR = "_unlabeled"
PAGE = 500  # parts read per query

MANIFEST_COLUMNS = (
    "file", "class", "inspection_id", "line", "part_serial", "capture_id",
    # how the final label was given
    "labeled_by", "labeled_at", "blind", "label_route", "relabeled", "labels_given",
    # what the model said, and what was decided
    "model_version", "predicted_class", "confidence", "p_defect", "decision", "decided_by",
    "route", "level",
    # when, and the input metrics the image gate measured
    "captured_at", "received_at", "width", "height", "brightness", "contrast", "sharpness",
    "clipped_dark", "clipped_bright", "mean_blue", "mean_green", "mean_red", "image_sha256",
)  # fmt: skip
MISSING_COLUMNS = (*MANIFEST_COLUMNS, "missing_reason")
INPUT_METRIC_COLUMNS = MANIFEST_COLUMNS[
    MANIFEST_COLUMNS.index("width") : MANIFEST_COLUMNS.index("image_sha256")
]
# what training orders the plant's parts by (models.train.DataSource.order_by)
ORDER_COLUMN = "received_at"


class ExportError(ValueError):
    """An export request that cannot be carried out (the message says why)."""


@dataclass(frozen=True)
class ExportRequest:
    line_id: str
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    labeled_only: bool = False
    # leave out the labels of inspectors flagged on reference parts (inspect_app.reference):
    # their parts are listed in the summary as excluded, not written as a class or unlabeled
    exclude_flagged: bool = False

    def check(self, session: Session) -> None:
        """Raises `lines.LineNotFound` or ExportError before any byte is written."""
        get_line(session, self.line_id)
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ExportError("until must be after since")

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line_id,
            "since": None if self.since is None else as_utc(self.since).isoformat(),
            "until": None if self.until is None else as_utc(self.until).isoformat(),
            "labeled_only": self.labeled_only,
            "exclude_flagged": self.exclude_flagged,
        }


@dataclass
class ExportItem:
    """One part: its manifest row (without ``file``), its label and its image bytes."""

    row: dict[str, Any]
    label: str | None
    image_format: str
    data: bytes | None  # None: the image is not in the store
    missing_reason: str | None = None
    excluded_by: str | None = None  # a flagged inspector whose label was left out


@dataclass
class ExportSummary:
    request: dict[str, Any]
    per_class: Counter[str] = field(default_factory=Counter)
    labelers: Counter[str] = field(default_factory=Counter)
    missing: list[dict[str, Any]] = field(default_factory=list)  # inspection id and reason
    unlabeled: int = 0
    excluded: Counter[str] = field(default_factory=Counter)  # flagged inspector -> parts
    manifest_sha256: str = ""
    exported_at: str = field(default_factory=lambda: utcnow().isoformat(timespec="seconds"))

    @property
    def images(self) -> int:
        return sum(self.per_class.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "exported_at": self.exported_at,
            "images": self.images,
            "per_class": {c: self.per_class[c] for c in CLASS_NAMES if self.per_class[c]},
            "unlabeled": self.unlabeled,
            "missing": self.missing,
            "labelers": dict(sorted(self.labelers.items())),
            "excluded_flagged": dict(sorted(self.excluded.items())),
            "manifest_sha256": self.manifest_sha256,
        }

    def lines(self) -> list[str]:
        """The summary a person reads at the end of an export."""
        per_class = ", ".join(f"{c} {self.per_class[c]}" for c in CLASS_NAMES if self.per_class[c])
        labelers = ", ".join(f"{name} {n}" for name, n in sorted(self.labelers.items()))
        removed = sum(1 for m in self.missing if m["reason"].startswith("removed"))
        return [
            f"labeled images: {self.images} ({per_class or 'none'})",
            f"unlabeled images: {self.unlabeled}",
            f"missing images: {len(self.missing)} ({removed} removed by retention, "
            f"{len(self.missing) - removed} lost)",
            f"labelers: {labelers or 'none'}",
            *(
                [
                    "excluded (flagged inspectors): "
                    + (", ".join(f"{n} {k}" for n, k in sorted(self.excluded.items())) or "none")
                ]
                if self.request.get("exclude_flagged")
                else []
            ),
            f"manifest sha256: {self.manifest_sha256}",
        ]


# -- reading the parts ---------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "" if value is None else as_utc(value).isoformat()


def count_parts(session: Session, request: ExportRequest) -> int:
    """How many parts the export will go through (for a progress bar)."""
    query = select(func.count()).select_from(Inspection)
    for condition in _conditions(request):
        query = query.where(condition)
    return int(session.exec(query).one())


def _conditions(request: ExportRequest) -> list[Any]:
    conditions: list[Any] = [Inspection.line_id == request.line_id]
    if request.since is not None:
        conditions.append(col(Inspection.received_at) >= request.since)
    if request.until is not None:
        conditions.append(col(Inspection.received_at) < request.until)
    return conditions


def iter_parts(session: Session, store: ImageStore, request: ExportRequest) -> Iterator[ExportItem]:
    """The line's parts in the window, oldest id first, each with its standing label (or
    None) and its image bytes (or None with the reason)."""
    after = 0
    flagged = flagged_users(session) if request.exclude_flagged else {}
    while True:
        query = select(Inspection).where(col(Inspection.id) > after)
        for condition in _conditions(request):
            query = query.where(condition)
        page = list(session.exec(query.order_by(col(Inspection.id)).limit(PAGE)))
        if not page:
            return
        after = int(page[-1].id or 0)
        ids = [int(row.id or 0) for row in page]
        standing = {
            label.inspection_id: (label, name, reason)
            for label, name, reason in session.exec(
                select(Label, User.name, ReviewTask.reason)
                .join(User, col(User.id) == col(Label.user_id))
                .outerjoin(ReviewTask, col(ReviewTask.id) == col(Label.task_id))
                .where(col(Label.inspection_id).in_(ids), col(Label.superseded).is_(False))
                .order_by(col(Label.id))
            )
        }
        given = dict(
            session.exec(
                select(Label.inspection_id, func.count())
                .where(col(Label.inspection_id).in_(ids))
                .group_by(col(Label.inspection_id))
            ).all()
        )
        for row in page:
            found = standing.get(int(row.id or 0))
            if found is None and request.labeled_only:
                continue
            if found is not None and found[0].user_id in flagged:
                yield ExportItem(
                    row={"inspection_id": row.id, "line": row.line_id},
                    label=None,
                    image_format=row.image_format,
                    data=None,
                    excluded_by=flagged[found[0].user_id],
                )
                continue
            yield _item(row, found, int(given.get(int(row.id or 0), 0)), store)


def _item(
    row: Inspection,
    found: tuple[Label, str, str | None] | None,
    labels_given: int,
    store: ImageStore,
) -> ExportItem:
    label, labeled_by, task_reason = found if found is not None else (None, "", None)
    if label is None:
        how: dict[str, Any] = dict.fromkeys(
            ("labeled_by", "labeled_at", "blind", "label_route"), ""
        )
        how["relabeled"] = ""
    else:
        if task_reason is not None:
            label_route = Route.AUDIT.value if task_reason == TaskReason.AUDIT else "review"
        else:  # a label given outside the queue (a supervisor's relabel): the part's route
            label_route = row.route
        how = {
            "labeled_by": labeled_by,
            "labeled_at": _when(label.created_at),
            "blind": "false" if label.model_shown else "true",
            "label_route": label_route,
            "relabeled": "true" if labels_given > 1 else "false",
        }
    manifest_row = {
        "class": "" if label is None else label.label,
        "inspection_id": row.id,
        "line": row.line_id,
        "part_serial": row.part_serial or "",
        "capture_id": row.capture_id or "",
        **how,
        "labels_given": labels_given,
        "model_version": row.model_version or "",
        "predicted_class": row.predicted_class or "",
        "confidence": "" if row.confidence is None else row.confidence,
        "p_defect": "" if row.p_defect is None else row.p_defect,
        "decision": row.decision,
        "decided_by": row.decided_by or "",
        "route": row.route,
        "level": row.level,
        "captured_at": _when(row.captured_at),
        "received_at": _when(row.received_at),
        **{
            name: "" if getattr(row, name) is None else getattr(row, name)
            for name in INPUT_METRIC_COLUMNS
        },
        "image_sha256": row.image_sha256,
    }
    try:
        data: bytes | None = store.get(row.image_sha256)
        reason = None
    except (FileNotFoundError, ValueError):
        data = None
        if row.image_removed_at is not None:
            reason = f"removed by retention on {as_utc(row.image_removed_at):%Y-%m-%d}"
        else:
            reason = "lost: not in the image store"
    return ExportItem(
        row=manifest_row,
        label=None if label is None else label.label,
        image_format=row.image_format,
        data=data,
        missing_reason=reason,
    )


# -- writing the layout ----------------------------------------------------------------------


class ExportSink(Protocol):
    def add(self, name: str, data: bytes) -> None: ...


def _csv_bytes(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def write_steps(
    items: Iterator[ExportItem], sink: ExportSink, request: ExportRequest
) -> Generator[None, None, ExportSummary]:
    """Write every item's image, then the manifests, into `sink`, pausing after each item
    (so a stream can hand out what is written so far); returns the summary."""
    summary = ExportSummary(request=request.to_dict())
    manifest: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    unlabeled: list[dict[str, Any]] = []
    for item in items:
        stem = f"{item.row['line']}-{item.row['inspection_id']}.{item.image_format}"
        if item.excluded_by is not None:
            summary.excluded[item.excluded_by] += 1
        elif item.data is None:
            missing.append({**item.row, "file": "", "missing_reason": item.missing_reason})
            summary.missing.append(
                {"inspection_id": item.row["inspection_id"], "reason": item.missing_reason}
            )
        elif item.label is None:
            name = f"{UNLABELED_DIR}/{stem}"
            unlabeled.append({**item.row, "file": name})
            summary.unlabeled += 1
            sink.add(name, item.data)
        else:
            name = f"{item.label}/{stem}"
            manifest.append({**item.row, "file": name})
            summary.per_class[item.label] += 1
            summary.labelers[str(item.row["labeled_by"])] += 1
            sink.add(name, item.data)
        yield
    manifest_bytes = _csv_bytes(MANIFEST_COLUMNS, manifest)
    summary.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    sink.add(MANIFEST_NAME, manifest_bytes)
    sink.add(MISSING_NAME, _csv_bytes(MISSING_COLUMNS, missing))
    sink.add(UNLABELED_NAME, _csv_bytes(MANIFEST_COLUMNS, unlabeled))
    sink.add(SUMMARY_NAME, (json.dumps(summary.to_dict(), indent=2) + "\n").encode())
    return summary


def write_export(
    items: Iterator[ExportItem],
    sink: ExportSink,
    request: ExportRequest,
    *,
    on_item: Callable[[], None] | None = None,
) -> ExportSummary:
    """`write_steps` run to the end; `on_item` is called after each part (a progress bar)."""
    steps = write_steps(items, sink, request)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        if on_item is not None:
            on_item()


class FolderSink:
    """Files under a new (or empty) folder: an export never mixes with another's files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise ExportError(f"{self.root} exists and is not an empty folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, data: bytes) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class _Chunks(io.RawIOBase):
    """A write-only stream whose written bytes are collected for a generator to hand out."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class TarSink:
    """Members of a gzip'd tar written as a stream (``w|gz``: no seeking back)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.buffer = _Chunks()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w|gz")  # noqa: SIM115
        self.mtime = time.time()

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(f"{self.prefix}/{name}")
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.take()


def export_to_folder(
    session: Session,
    store: ImageStore,
    request: ExportRequest,
    out: Path,
    *,
    on_item: Callable[[], None] | None = None,
) -> ExportSummary:
    """The CLI's export: checked first, then written into `out` (new or empty)."""
    request.check(session)
    sink = FolderSink(out)
    return write_export(iter_parts(session, store, request), sink, request, on_item=on_item)


def export_on_server(
    session: Session,
    store: ImageStore,
    request: ExportRequest,
    exports_dir: Path,
    *,
    actor: str,
    now: datetime | None = None,
) -> tuple[Path, ExportSummary]:
    """A supervisor's export from the UI: written into a new folder under `exports_dir` (the
    service's data folder, on the machine that retrains), named by line and time so a second
    export never overwrites the first, and logged with who asked and what it holds, since a
    model trained on it records only the manifest's hash."""
    request.check(session)
    stamp = as_utc(now or utcnow()).strftime("%Y%m%dT%H%M%SZ")
    out = exports_dir / f"{request.line_id}-{stamp}"
    n = 1
    while out.exists():  # two exports within a second
        n += 1
        out = exports_dir / f"{request.line_id}-{stamp}-{n}"
    summary = write_export(iter_parts(session, store, request), FolderSink(out), request)
    record_event(
        session,
        kind="labels_exported",
        actor=actor,
        line_id=request.line_id,
        details={"folder": str(out), **summary.to_dict()},
    )
    session.commit()
    return out, summary


def stream_export_tar(engine: Engine, store: ImageStore, request: ExportRequest) -> Iterator[bytes]:
    """The API's export as tar.gz chunks; the caller has run `request.check` already. Its
    own session, because the stream outlives the request's dependencies."""
    sink = TarSink(prefix=f"{request.line_id}-export")
    with Session(engine) as session:
        for _ in write_steps(iter_parts(session, store, request), sink, request):
            chunk = sink.buffer.take()
            if chunk:
                yield chunk
    yield sink.close()
