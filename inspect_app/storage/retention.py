"""Image retention: how long a plant keeps the image bytes, and the sweep that removes them.

The rows stay for ever: an inspection, its decision and its labels are the evidence the
automation gate and an audit read. What goes is the bytes, which are most of the disk (a
camera image is ~100 KB; its row is ~1 KB). The policy (`keep_reason`, `plan_retention`) is
pure; `sweep_images` does the I/O.

What is kept, and why (the first reason that applies is the one reported):

- ``awaiting_review``: an open, claimed or escalated review task: a human still has to see
  it, however old it is.
- ``recent``: younger than ``retention_days`` (default 30).
- ``disagreement``, ``audited``, ``labeled``: younger than ``retention_labeled_days``
  (default 365). A disagreement is a part whose current human label (the latest, not
  superseded) is another class than the model's predicted class (``scratch`` vs ``pit``
  counts too: that is what retraining learns from). An audited part is one routed to a
  blind audit. Any labeled part counts, since a label makes an image training data.

Ages count from ``received_at``, the time the service took the part, so the policy gives
the same answer on every machine and a relabel does not move an image's end.

Several inspections may point at one file (the same bytes sent twice): the file goes only
when every inspection pointing at it is past its time; each of them is then marked
(``Inspection.image_removed_at``). An orphan file (no inspection points at it: written for
a request whose commit then failed) goes once it is older than the grace period, so a
write whose row is about to commit is never removed; so do temp files of writes a killed
process left. The store refreshes a file's time when the same bytes are stored again, and
refuses to remove a file refreshed during the sweep (`ImageStore.remove_if_idle`), which
closes the race with an upload that is about to commit a row for a file being removed.

A removal marks the rows first (committed), then removes the file: a sweep killed between
the two leaves a file only marked rows point at, which the next sweep removes as an orphan;
the reverse order would leave live rows without their image.

The same sweep clears the line outputs' outbox (`purge_outbox`): a message older than
``outbox_retention_days`` (default 30) goes, with its delivery rows, once every destination
of its line has it delivered (a line without destinations has nobody to wait for; a
destination added after the message never gets it). An undelivered message stays however
old it is, for a destination that is failing or switched off as much as for a working one:
it is what that destination still owes the line. The line's sequence counter stays, so the
numbers go on where they were, and the events keep the trail of what the sweep removed.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from inspect_app.domain import Route, TaskStatus
from inspect_app.events import record_event
from inspect_app.storage.images import ImageStore
from inspect_app.storage.tables import (
    Inspection,
    Label,
    OutboxMessage,
    OutputDelivery,
    OutputDestination,
    ReviewTask,
)
from inspect_app.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from inspect_app.settings import Settings

logger = logging.getLogger(__name__)

SWEEP_EVENT = "images_swept"
_CHUNK = 500  # hashes per query and per transaction: bounded memory on any database size
_WAITING = (TaskStatus.OPEN.value, TaskStatus.CLAIMED.value, TaskStatus.ESCALATED.value)


class KeepReason(StrEnum):
    AWAITING_REVIEW = "awaiting_review"
    RECENT = "recent"
    DISAGREEMENT = "disagreement"
    AUDITED = "audited"
    LABELED = "labeled"


@dataclass(frozen=True)
class RetentionPolicy:
    days: float = 30.0  # every image
    labeled_days: float = 365.0  # labeled, disagreement, audited
    orphan_grace: timedelta = timedelta(hours=1)  # files no row points at, and temp files
    outbox_days: float = 30.0  # outbox messages delivered everywhere (see purge_outbox)

    def __post_init__(self) -> None:
        if not 0 < self.days <= self.labeled_days:
            raise ValueError(
                f"retention needs 0 < days ({self.days:g}) <= labeled_days ({self.labeled_days:g})"
            )
        if self.orphan_grace <= timedelta(0):
            raise ValueError("the orphan grace period must be positive")
        if not self.outbox_days > 0:
            raise ValueError(f"outbox_days must be positive, got {self.outbox_days:g}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            days=settings.retention_days,
            labeled_days=settings.retention_labeled_days,
            orphan_grace=timedelta(minutes=settings.retention_orphan_grace_minutes),
            outbox_days=settings.outbox_retention_days,
        )

    def describe(self) -> str:
        minutes = self.orphan_grace.total_seconds() / 60
        return (
            f"images {self.days:g} days; labeled, disagreement and audited "
            f"{self.labeled_days:g} days; orphan files after {minutes:g} minutes; "
            f"delivered outbox messages {self.outbox_days:g} days"
        )


@dataclass(frozen=True)
class ImageUse:
    """One inspection's claim on its image, as the policy sees it."""

    inspection_id: int
    image_sha256: str
    received_at: datetime
    labeled: bool = False
    disagreement: bool = False
    audited: bool = False
    awaiting_review: bool = False


def keep_reason(use: ImageUse, policy: RetentionPolicy, now: datetime) -> KeepReason | None:
    """Why this inspection still needs its image, or None when it is past its time."""
    if use.awaiting_review:
        return KeepReason.AWAITING_REVIEW
    age = now - (as_utc(use.received_at) or use.received_at)
    if age < timedelta(days=policy.days):
        return KeepReason.RECENT
    if age < timedelta(days=policy.labeled_days):
        if use.disagreement:
            return KeepReason.DISAGREEMENT
        if use.audited:
            return KeepReason.AUDITED
        if use.labeled:
            return KeepReason.LABELED
    return None


@dataclass(frozen=True)
class RetentionPlan:
    remove: dict[str, tuple[int, ...]]  # image hash -> the inspections whose image it was
    kept: Counter[KeepReason]  # inspections, by why
    shared: int  # inspections past their time whose file stays for another inspection


def plan_retention(
    uses: Iterable[ImageUse], policy: RetentionPolicy, now: datetime
) -> RetentionPlan:
    """Which files go: those whose every inspection is past its time. `uses` must hold every
    inspection (not yet marked removed) pointing at each hash it mentions."""
    by_hash: dict[str, list[ImageUse]] = defaultdict(list)
    for use in uses:
        by_hash[use.image_sha256].append(use)
    remove: dict[str, tuple[int, ...]] = {}
    kept: Counter[KeepReason] = Counter()
    shared = 0
    for sha256, group in by_hash.items():
        reasons = [keep_reason(use, policy, now) for use in group]
        needed = [r for r in reasons if r is not None]
        kept.update(needed)
        if needed:
            shared += len(reasons) - len(needed)
        else:
            remove[sha256] = tuple(sorted(use.inspection_id for use in group))
    return RetentionPlan(remove=remove, kept=kept, shared=shared)


@dataclass
class SweepReport:
    """What a sweep removed and kept. A dry run's figures are what it would have done."""

    policy: RetentionPolicy
    dry_run: bool
    removed_images: int = 0  # files removed under the policy
    removed_inspections: int = 0  # rows marked image_removed_at
    removed_bytes: int = 0
    already_missing: int = 0  # files the policy removes that were no longer stored
    orphans: int = 0  # files no inspection points at, removed
    orphan_bytes: int = 0
    young_orphans: int = 0  # orphans left: written within the grace period (maybe in flight)
    leftovers: int = 0  # temp files of killed writes, trash of a killed sweep, removed
    leftover_bytes: int = 0
    restored: int = 0  # trash of a killed sweep that a row still needs, put back
    kept: Counter[KeepReason] = field(default_factory=Counter)  # old enough to check, kept
    recent: int = 0  # inspections younger than retention_days (not examined one by one)
    shared: int = 0  # past their time, but their file is another inspection's too
    busy: int = 0  # files written again during the sweep: left for the next sweep
    outbox_removed: int = 0  # outbox messages delivered everywhere, past outbox_days
    outbox_removed_by_line: dict[str, int] = field(default_factory=dict)
    outbox_undelivered: int = 0  # past outbox_days but owed to a destination: kept

    @property
    def bytes_freed(self) -> int:
        return self.removed_bytes + self.orphan_bytes + self.leftover_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "policy": {
                "days": self.policy.days,
                "labeled_days": self.policy.labeled_days,
                "orphan_grace_minutes": self.policy.orphan_grace.total_seconds() / 60,
                "outbox_days": self.policy.outbox_days,
            },
            "removed_images": self.removed_images,
            "removed_inspections": self.removed_inspections,
            "removed_bytes": self.removed_bytes,
            "already_missing": self.already_missing,
            "orphans": self.orphans,
            "orphan_bytes": self.orphan_bytes,
            "young_orphans": self.young_orphans,
            "leftovers": self.leftovers,
            "leftover_bytes": self.leftover_bytes,
            "restored": self.restored,
            "kept": {reason.value: n for reason, n in sorted(self.kept.items())},
            "recent": self.recent,
            "shared": self.shared,
            "busy": self.busy,
            "bytes_freed": self.bytes_freed,
            "outbox_removed": self.outbox_removed,
            "outbox_removed_by_line": dict(sorted(self.outbox_removed_by_line.items())),
            "outbox_undelivered": self.outbox_undelivered,
        }

    def summary(self) -> list[str]:
        """The report in lines, as the CLI prints it."""
        would = "would remove" if self.dry_run else "removed"
        kept = dict(self.kept)
        kept[KeepReason.RECENT] = kept.get(KeepReason.RECENT, 0) + self.recent
        kept_text = ", ".join(f"{n} {reason.value}" for reason, n in sorted(kept.items()) if n)
        lines = [
            f"policy: {self.policy.describe()}",
            f"{would} {self.removed_images} images of {self.removed_inspections} inspections "
            f"({_size(self.removed_bytes)})"
            + (f"; {self.already_missing} were already gone" if self.already_missing else ""),
            f"{would} {self.orphans} orphan files ({_size(self.orphan_bytes)}); "
            f"{self.young_orphans} younger than the grace period left",
            f"{would} {self.leftovers} unfinished writes ({_size(self.leftover_bytes)})"
            + (f"; restored {self.restored} interrupted removals" if self.restored else ""),
            f"kept the images of {sum(kept.values())} inspections"
            + (f": {kept_text}" if kept_text else "")
            + (f"; {self.shared} more share a kept file" if self.shared else "")
            + (f"; {self.busy} files written during the sweep left" if self.busy else ""),
            f"{'would free' if self.dry_run else 'freed'} {_size(self.bytes_freed)}",
            f"{would} {self.outbox_removed} outbox messages delivered everywhere"
            + (
                " ("
                + ", ".join(
                    f"{n} of {line}" for line, n in sorted(self.outbox_removed_by_line.items())
                )
                + ")"
                if self.outbox_removed_by_line
                else ""
            )
            + f"; kept {self.outbox_undelivered} older ones still owed to a destination",
        ]
        return lines


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _uses_of(session: Session, hashes: Sequence[str]) -> list[ImageUse]:
    """Every inspection (not yet marked removed) pointing at `hashes`, with its facts."""
    rows = session.exec(
        select(
            Inspection.id,
            Inspection.image_sha256,
            Inspection.received_at,
            Inspection.route,
            Inspection.predicted_class,
        )
        .where(col(Inspection.image_sha256).in_(hashes))
        .where(col(Inspection.image_removed_at).is_(None))
    ).all()
    ids = [row[0] for row in rows]
    labels: dict[int, list[tuple[str, bool]]] = defaultdict(list)
    waiting: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        for inspection_id, label, superseded in session.exec(
            select(Label.inspection_id, Label.label, Label.superseded).where(
                col(Label.inspection_id).in_(part)
            )
        ):
            labels[inspection_id].append((label, superseded))
        waiting.update(
            session.exec(
                select(ReviewTask.inspection_id)
                .where(col(ReviewTask.inspection_id).in_(part))
                .where(col(ReviewTask.status).in_(_WAITING))
            )
        )
    uses = []
    for inspection_id, sha256, received_at, route, predicted in rows:
        given = labels.get(inspection_id, [])
        current = {label for label, superseded in given if not superseded}
        uses.append(
            ImageUse(
                inspection_id=inspection_id,
                image_sha256=sha256,
                received_at=as_utc(received_at) or received_at,
                labeled=bool(given),
                disagreement=predicted is not None and bool(current - {predicted}),
                audited=route == Route.AUDIT.value,
                awaiting_review=inspection_id in waiting,
            )
        )
    return uses


def _live_hashes(session: Session, hashes: Sequence[str]) -> set[str]:
    """Those of `hashes` that an inspection not marked removed points at."""
    return set(
        session.exec(
            select(Inspection.image_sha256)
            .where(col(Inspection.image_sha256).in_(hashes))
            .where(col(Inspection.image_removed_at).is_(None))
            .distinct()
        )
    )


def _expired_hashes(session: Session, cutoff: datetime, after: str, limit: int) -> list[str]:
    """The next hashes (in order, after `after`) of inspections older than `cutoff`."""
    return list(
        session.exec(
            select(Inspection.image_sha256)
            .where(col(Inspection.received_at) < cutoff)
            .where(col(Inspection.image_removed_at).is_(None))
            .where(col(Inspection.image_sha256) > after)
            .distinct()
            .order_by(col(Inspection.image_sha256))
            .limit(limit)
        )
    )


def sweep_images(
    engine: Engine,
    store: ImageStore,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    actor: str = "system",
) -> SweepReport:
    """Remove the image files the policy no longer keeps, orphans and leftovers; mark the
    inspections whose image went. A dry run reads only. Not dry: one event records it."""
    now = now or utcnow()
    idle_since = (now - policy.orphan_grace).timestamp()  # files touched after this stay
    report = SweepReport(policy=policy, dry_run=dry_run)
    cutoff = now - timedelta(days=policy.days)
    with Session(engine, expire_on_commit=False) as session:
        report.recent = session.exec(
            select(func.count(col(Inspection.id)))
            .where(col(Inspection.received_at) >= cutoff)
            .where(col(Inspection.image_removed_at).is_(None))
        ).one()
        after = ""
        while hashes := _expired_hashes(session, cutoff, after, _CHUNK):
            after = hashes[-1]
            plan = plan_retention(_uses_of(session, hashes), policy, now)
            report.kept.update(plan.kept)
            report.shared += plan.shared
            _remove_planned(session, store, plan, report, now, idle_since, dry_run)
        _remove_orphans(session, store, report, idle_since, dry_run)
        _remove_leftovers(session, store, report, idle_since, dry_run)
        purge_outbox(session, policy, report, now, dry_run)
        if not dry_run:
            record_event(
                session,
                kind=SWEEP_EVENT,
                actor=actor,
                reason="retention: " + policy.describe(),
                details=report.to_dict(),
            )
            session.commit()
    logger.info("image sweep%s: %s", " (dry run)" if dry_run else "", "; ".join(report.summary()))
    return report


def _remove_planned(
    session: Session,
    store: ImageStore,
    plan: RetentionPlan,
    report: SweepReport,
    now: datetime,
    idle_since: float,
    dry_run: bool,
) -> None:
    sizes: dict[str, int] = {}
    for sha256 in plan.remove:
        stat = store.stat(sha256)
        if stat is not None and stat.st_mtime >= idle_since:
            report.busy += 1  # the same bytes just came in again: its row is on its way
            continue
        sizes[sha256] = stat.st_size if stat is not None else 0
        if stat is None:
            report.already_missing += 1
    if dry_run:
        report.removed_images += sum(1 for size in sizes.values() if size)
        report.removed_inspections += sum(len(plan.remove[sha]) for sha in sizes)
        report.removed_bytes += sum(sizes.values())
        return
    # Rows first, in one transaction that checks again that no row has come for the bytes
    # since they were read (a duplicate committed in between keeps the file).
    ids = [i for sha in sizes for i in plan.remove[sha]]
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        session.exec(
            update(Inspection)
            .where(col(Inspection.id).in_(part))
            .where(col(Inspection.image_removed_at).is_(None))
            .values(image_removed_at=now)
        )
    still_needed = _live_hashes(session, list(sizes))
    for sha256 in still_needed:
        session.exec(
            update(Inspection)
            .where(col(Inspection.id).in_(plan.remove[sha256]))
            .values(image_removed_at=None)
        )
        report.busy += 1
        del sizes[sha256]
    session.commit()
    report.removed_inspections += sum(len(plan.remove[sha]) for sha in sizes)
    for sha256, size in sizes.items():
        if size == 0:
            continue  # already missing: the rows now say so
        freed = store.remove_if_idle(sha256, idle_since)
        if freed is None:
            report.busy += 1  # written again this instant: the next sweep sees its new row
            continue
        if freed:
            report.removed_images += 1
            report.removed_bytes += freed


def _remove_orphans(
    session: Session, store: ImageStore, report: SweepReport, idle_since: float, dry_run: bool
) -> None:
    for hashes in _chunks(store.stored()):
        live = _live_hashes(session, hashes)
        for sha256 in hashes:
            if sha256 in live:
                continue
            stat = store.stat(sha256)
            if stat is None:
                continue
            if stat.st_mtime >= idle_since:
                report.young_orphans += 1
                continue
            freed = stat.st_size if dry_run else store.remove_if_idle(sha256, idle_since)
            if freed is None:
                report.young_orphans += 1
            elif freed:
                report.orphans += 1
                report.orphan_bytes += freed


def _remove_leftovers(
    session: Session, store: ImageStore, report: SweepReport, idle_since: float, dry_run: bool
) -> None:
    for leftover in store.leftovers():
        if leftover.kind == "trash" and leftover.sha256 is not None:
            # A killed sweep's removal: put back if a row needs it (rows come before files,
            # so only a row committed during that sweep can), else finish the removal.
            needed = leftover.sha256 in _live_hashes(session, [leftover.sha256])
            if needed and not store.exists(leftover.sha256):
                report.restored += 1
                if not dry_run:
                    store.restore(leftover)
                continue
        elif leftover.mtime >= idle_since:
            continue  # a write in progress
        report.leftovers += 1
        report.leftover_bytes += leftover.size
        if not dry_run:
            leftover.path.unlink(missing_ok=True)


# -- the outbox ------------------------------------------------------------------------------


def _owed():  # type: ignore[no-untyped-def]
    """SQL, correlated to an `OutboxMessage` row: some destination of its line still has
    it to deliver (a delivery row not delivered, or none yet from its pending mark on)."""
    dest = aliased(OutputDestination)
    row = aliased(OutputDelivery)
    of_message = and_(
        col(row.destination_id) == col(dest.id), col(row.message_id) == col(OutboxMessage.id)
    )
    pending_row = select(row.id).where(of_message, col(row.delivered_at).is_(None))
    any_row = select(row.id).where(of_message)
    return (
        select(dest.id)
        .where(
            col(dest.line_id) == col(OutboxMessage.line_id),
            or_(
                pending_row.correlate_except(row).exists(),
                and_(
                    ~any_row.correlate_except(row).exists(),
                    col(OutboxMessage.seq) >= col(dest.pending_from_seq),
                ),
            ),
        )
        .correlate_except(dest)
        .exists()
    )


def purge_outbox(
    session: Session, policy: RetentionPolicy, report: SweepReport, now: datetime, dry_run: bool
) -> None:
    """Delete outbox messages older than ``policy.outbox_days`` that every destination of
    their line has delivered, with their delivery rows; count the old ones still owed.

    A chunk at a time, each in its own transaction that locks the line's destinations first
    (as a replay does) and checks delivery again in the DELETE itself, so a replay asking
    for an old message again keeps it."""
    cutoff = now - timedelta(days=policy.outbox_days)
    old = col(OutboxMessage.created_at) < cutoff
    report.outbox_undelivered = session.exec(
        select(func.count()).select_from(OutboxMessage).where(old, _owed())
    ).one()
    after = 0
    while True:
        chunk = list(
            session.exec(
                select(OutboxMessage.id, OutboxMessage.line_id)
                .where(old, col(OutboxMessage.id) > after, ~_owed())
                .order_by(col(OutboxMessage.id))
                .limit(_CHUNK)
            )
        )
        if not chunk:
            break
        after = chunk[-1][0]
        if dry_run:
            _count_lines(report, [line for _, line in chunk])
            continue
        lines = sorted({line for _, line in chunk})
        session.exec(
            select(OutputDestination.id)
            .where(col(OutputDestination.line_id).in_(lines))
            .with_for_update()
        ).all()
        ids = [message_id for message_id, _ in chunk]
        gone = list(
            session.exec(
                select(OutboxMessage.id, OutboxMessage.line_id).where(
                    col(OutboxMessage.id).in_(ids), ~_owed()
                )
            )
        )
        gone_ids = [message_id for message_id, _ in gone]
        session.exec(delete(OutputDelivery).where(col(OutputDelivery.message_id).in_(gone_ids)))
        session.exec(delete(OutboxMessage).where(col(OutboxMessage.id).in_(gone_ids)))
        session.commit()
        _count_lines(report, [line for _, line in gone])
    if report.outbox_removed or report.outbox_undelivered:
        logger.info(
            "outbox: %s %d messages delivered everywhere before %s; %d older still owed",
            "would remove" if dry_run else "removed",
            report.outbox_removed,
            cutoff.isoformat(),
            report.outbox_undelivered,
        )


def _count_lines(report: SweepReport, lines: Iterable[str]) -> None:
    for line in lines:
        report.outbox_removed += 1
        report.outbox_removed_by_line[line] = report.outbox_removed_by_line.get(line, 0) + 1
