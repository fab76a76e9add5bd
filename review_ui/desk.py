"""The inspector's desk: what one browser tab is doing, and every action it can take.

One `DeskSession` per Gradio session (one per open tab), held on the server: the task the
tab shows, the verdict it can undo, whether it is paused. Every action reloads the user
from the request and goes through `inspect_app.review_queue`, which alone decides who may
label, relabel, renew or release what; this module only sequences those calls for a
person at a keyboard:

- a verdict saves the label and claims the next part in the same request and the same
  transaction (`review_queue.label_and_claim_next`: one commit), so the next image travels
  back with the answer to the key press (no second round trip);
- ``u`` shows the last labeled part again; the next verdict key relabels it
  (`review_queue.relabel`, counted as a redo) and the desk returns to the held part;
- the lease is renewed while the tab reports recent keyboard or mouse activity, and the
  part is handed back (`release_task`) after `idle_seconds` without any, or when the tab
  closes (`leave`, Gradio's unload event).

A tab's desk is a database row (`ReviewDesk`, by the tab's Gradio session hash), not process
memory: a load balancer may send each of a tab's events to another process, and every one
of them reads the desk the last one wrote (`DeskStore`). The row answers only the user who
opened it: another login naming the tab's session hash is refused, in every process.

Nothing here is Gradio-specific, so the tests drive it directly.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import review_queue
from inspect_app.api.params import MAX_NOTE_CHARS
from inspect_app.domain import Role
from inspect_app.review_queue import ClaimedTask
from inspect_app.storage.tables import ReviewDesk, User, utcnow
from review_ui.auth import AccessDenied, current_user, require_role
from review_ui.context import ReviewContext

logger = logging.getLogger(__name__)

# Local hours at which a shift starts; "my labels this shift" counts from the latest one.
SHIFT_STARTS: tuple[int, ...] = (6, 14, 22)
STALE_AFTER_S = 12 * 3600.0
# A quiet tick changes nothing on the desk; its row's last-seen time is still refreshed this
# often, so a tab that only ticks is not taken for stale.
TOUCH_AFTER = timedelta(minutes=1)
TAB_LOCKS = 64  # a tab's actions in this process take one of these, chosen by its hash


class BadInput(ValueError):
    """Input the page should never send (a note too long, an unknown class)."""


def shift_start(now_local: datetime, starts: tuple[int, ...] = SHIFT_STARTS) -> datetime:
    """The start of the shift `now_local` (an aware local time) falls in."""
    if not starts or any(not 0 <= h < 24 for h in starts):
        raise ValueError(f"shift start hours must be in 0..23, got {starts}")
    midnight = now_local.replace(hour=0, minute=0, second=0, microsecond=0)
    candidates = [midnight + timedelta(hours=h) for h in starts]
    candidates += [c - timedelta(days=1) for c in candidates]
    return max(c for c in candidates if c <= now_local)


@dataclass(frozen=True)
class Counters:
    waiting: int  # review tasks not yet labeled, all lines
    oldest_wait_s: float | None
    my_labels: int  # the user's current (not superseded) labels since the shift started
    shift_started: datetime


@dataclass(frozen=True)
class Verdict:
    """A label this desk saved, kept so ``u`` can correct it."""

    task: ClaimedTask
    label: str


@dataclass
class DeskSession:
    user_name: str
    task: ClaimedTask | None = None  # the part this tab holds a lease on
    shown_at: datetime | None = None  # when the part was put on screen
    last: Verdict | None = None
    correcting: bool = False  # showing `last` again; the next verdict relabels it
    paused: bool = False
    counters: Counters | None = None  # counted on open and each tick, kept up to date between
    overlay_key: str | None = None  # the part whose heatmap the tab holds (it holds one)

    def to_state(self) -> dict[str, Any]:
        """The desk as the JSON its `ReviewDesk` row keeps (the user is the row's own)."""
        return {
            "task": _task_state(self.task),
            "shown_at": _time_state(self.shown_at),
            "last": (
                {"task": _task_state(self.last.task), "label": self.last.label}
                if self.last is not None
                else None
            ),
            "correcting": self.correcting,
            "paused": self.paused,
            "counters": (
                {
                    **asdict(self.counters),
                    "shift_started": _time_state(self.counters.shift_started),
                }
                if self.counters is not None
                else None
            ),
            "overlay_key": self.overlay_key,
        }

    @classmethod
    def from_state(cls, user_name: str, state: dict[str, Any]) -> DeskSession:
        last, counters = state.get("last"), state.get("counters")
        last_task = _task_from_state(last["task"]) if last else None
        return cls(
            user_name=user_name,
            task=_task_from_state(state.get("task")),
            shown_at=_time_from_state(state.get("shown_at")),
            last=Verdict(task=last_task, label=last["label"]) if last and last_task else None,
            correcting=bool(state.get("correcting")),
            paused=bool(state.get("paused")),
            counters=(
                Counters(
                    waiting=int(counters["waiting"]),
                    oldest_wait_s=counters["oldest_wait_s"],
                    my_labels=int(counters["my_labels"]),
                    shift_started=_time_from_state(counters["shift_started"]) or utcnow(),
                )
                if counters
                else None
            ),
            overlay_key=state.get("overlay_key"),
        )


_TASK_TIMES = frozenset({"captured_at", "received_at", "lease_expires_at"})


def _time_state(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time_from_state(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _task_state(task: ClaimedTask | None) -> dict[str, Any] | None:
    if task is None:
        return None
    return {
        f.name: _time_state(getattr(task, f.name))
        if f.name in _TASK_TIMES
        else getattr(task, f.name)
        for f in fields(ClaimedTask)
    }


def _task_from_state(state: dict[str, Any] | None) -> ClaimedTask | None:
    if not state:
        return None
    known = {f.name for f in fields(ClaimedTask)}
    values = {k: _time_from_state(v) if k in _TASK_TIMES else v for k, v in state.items()}
    return ClaimedTask(**{k: v for k, v in values.items() if k in known})


class DeskStore:
    """The `ReviewDesk` rows: one tab's desk is read, changed by one action and written back,
    with no other action of that tab in between, whichever process runs them.

    On PostgreSQL the row stays locked (``SELECT ... FOR UPDATE``, on a connection of its
    own) from the read to the write, so two processes never interleave one tab's actions;
    the action's own queue work runs on another connection and commits as it always did.
    SQLite serves one process, where the tab's lock in `InspectorDesk` does the same: there
    the row is read and written in two short transactions, so that it never holds SQLite's
    single writer lock while the action writes.
    """

    def __init__(self, engine_of: ReviewContext) -> None:
        self._context = engine_of

    @property
    def _engine(self) -> Engine:
        return self._context.engine

    def _locking(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    @contextmanager
    def hold(self, session_hash: str, user: User) -> Iterator[DeskSession]:
        """The tab's desk for one action (a fresh one for a new tab), saved when it ends,
        also when it raises (as the desk in memory used to keep what an action changed)."""
        assert user.id is not None
        now = utcnow()
        with Session(self._engine, expire_on_commit=False) as db:
            created = self._create(db, session_hash, user.id, now)
            query = select(ReviewDesk).where(ReviewDesk.session_hash == session_hash)
            row = db.exec(query.with_for_update() if self._locking() else query).one()
            if row.user_id != user.id:
                db.rollback()
                logger.warning(
                    "review UI: %s refused the desk of a tab opened by user #%d",
                    user.name,
                    row.user_id,
                )
                raise AccessDenied("This session belongs to another user: reload the page.")
            if created:
                self._forget_stale(db, now)
            if not self._locking():
                db.commit()  # SQLite: never hold the writer lock across the action
            desk = DeskSession.from_state(user.name, row.state)
            before = row.state
            try:
                yield desk
            finally:
                state = desk.to_state()
                if state != before or now - _aware(row.last_seen_at) >= TOUCH_AFTER:
                    row.state = state
                    row.last_seen_at = utcnow()
                    db.add(row)
                db.commit()

    def _create(self, db: Session, session_hash: str, user_id: int, now: datetime) -> bool:
        """Insert the tab's row unless one is there (two processes may race on a new tab)."""
        insert = pg_insert if self._locking() else sqlite_insert
        values = {
            "session_hash": session_hash,
            "user_id": user_id,
            "state": DeskSession(user_name="").to_state(),
            "created_at": now,
            "last_seen_at": now,
        }
        done = db.execute(  # type: ignore[call-overload]
            insert(ReviewDesk.__table__)  # type: ignore[arg-type]
            .values(**values)
            .on_conflict_do_nothing(index_elements=["session_hash"])
        )
        return bool(done.rowcount)

    def _forget_stale(self, db: Session, now: datetime) -> None:
        """Drop desks not heard from in `STALE_AFTER_S` (API clients have no unload event);
        their leases have long expired."""
        cutoff = now - timedelta(seconds=STALE_AFTER_S)
        gone = db.execute(  # type: ignore[call-overload]
            delete(ReviewDesk).where(col(ReviewDesk.last_seen_at) < cutoff)
        )
        if gone.rowcount:
            logger.info("review UI: %d desk(s) not seen for 12 h forgotten", gone.rowcount)

    def take(self, session_hash: str, user_name: str | None) -> DeskSession | None:
        """Remove the tab's desk (the tab closed) and return it, if it is `user_name`'s;
        another user's closing of it changes nothing."""
        with Session(self._engine, expire_on_commit=False) as db:
            query = (
                select(ReviewDesk, User).join(User).where(ReviewDesk.session_hash == session_hash)
            )
            if self._locking():
                query = query.with_for_update(of=ReviewDesk)  # type: ignore[arg-type]
            found = db.exec(query).first()
            if found is None:
                return None
            row, owner = found
            if owner.name != user_name:
                return None
            db.delete(row)
            db.commit()
            return DeskSession.from_state(owner.name, row.state)

    def shown_elsewhere(self, user_name: str, task_id: int) -> bool:
        """Whether another open tab of `user_name` shows the part `task_id`."""
        with Session(self._engine) as db:
            states = db.exec(
                select(ReviewDesk.state).join(User).where(User.name == user_name)
            ).all()
        return any(((state or {}).get("task") or {}).get("task_id") == task_id for state in states)

    def count(self) -> int:
        with Session(self._engine) as db:
            return int(db.exec(select(func.count()).select_from(ReviewDesk)).one())


def _aware(value: datetime) -> datetime:
    """SQLite hands timezone-aware columns back naive (in UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


@dataclass(frozen=True)
class DeskView:
    """What the page shows after an action."""

    mode: str  # task | correcting | empty | paused
    part: ClaimedTask | None  # the part on screen (the corrected one while correcting)
    verdict_given: str | None = None  # while correcting: the label being corrected
    message: str = ""
    message_kind: str = "info"  # ok | warn | error | info
    clear_note: bool = False
    changed: bool = True  # False: the part on screen is unchanged (a quiet tick)
    counters: Counters | None = None

    @property
    def state(self) -> dict[str, object]:
        """A compact machine-readable summary (a hidden JSON output; tests and tools read it)."""
        part = self.part
        return {
            "mode": self.mode,
            "task_id": part.task_id if part else None,
            "inspection_id": part.shown_id if part else None,
            "line_id": part.line_id if part else None,
            "reason": part.reason if part else None,
            "model_shown": bool(part and part.predicted_class is not None),
            "my_labels": self.counters.my_labels if self.counters else None,
        }


class InspectorDesk:
    """The actions of the Inspect page, for every tab at once (thread-safe)."""

    def __init__(self, context: ReviewContext, *, idle_seconds: float = 90.0) -> None:
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds}")
        self.context = context
        self.idle_seconds = idle_seconds
        self._desks = DeskStore(context)
        self._tab_locks = [threading.Lock() for _ in range(TAB_LOCKS)]

    # -- actions -----------------------------------------------------------------------------

    def open(self, session_hash: str | None, username: str | None) -> DeskView:
        """Page load, or "continue" after a pause: show the held part or claim the next."""
        with self._action(session_hash, username) as (db, user, desk):
            desk.paused = False
            desk.correcting = False
            desk.counters = self._count(db, user)
            return self._show_next(db, user, desk)

    def verdict(
        self, session_hash: str | None, username: str | None, label: str, note: str | None
    ) -> DeskView:
        """A verdict key: label the part on screen (or relabel it while correcting)."""
        label = _as_label(label)
        note = _clean_note(note)
        with self._action(session_hash, username) as (db, user, desk):
            if desk.paused:
                desk.paused = False
                return self._show_next(db, user, desk, "Welcome back.")
            if desk.correcting and desk.last is not None:
                return self._relabel(db, user, desk, label, note)
            if desk.task is None:
                return self._show_next(db, user, desk, "No part on screen to label.", "warn")
            task = desk.task
            shown = desk.shown_at or utcnow()
            duration_ms = max(0, int(1000 * (utcnow() - shown).total_seconds()))
            try:
                # the label and the next part's claim in one transaction (one commit), so
                # the next image travels back with the answer to the key press
                _saved, next_task = review_queue.label_and_claim_next(
                    db,
                    task.task_id,
                    user,
                    label,
                    note=note,
                    duration_ms=duration_ms,
                    lease_seconds=self.context.lease_seconds,
                )
            except review_queue.ReviewError as exc:
                desk.task = None
                logger.warning(
                    "review UI: %s's verdict on task %d not saved: %s", user.name, task.task_id, exc
                )
                return self._show_next(db, user, desk, f"Not saved: {exc}.", "warn")
            desk.last = Verdict(task=task, label=label)
            desk.task = None
            _count_done(desk, labeled=True)
            return self._show(
                desk,
                next_task,
                f"Saved part #{task.shown_id} as {label.upper()}. u to undo.",
                "ok",
                clear_note=True,
            )

    def undo(self, session_hash: str | None, username: str | None) -> DeskView:
        """``u``: show the last labeled part again to correct it; ``u`` again cancels."""
        with self._action(session_hash, username) as (db, user, desk):
            if desk.correcting:
                return self._show_next(db, user, desk, "Correction cancelled; label unchanged.")
            if desk.last is None:
                return self._current(desk, "Nothing to undo yet in this tab.", "warn")
            desk.correcting = True
            return self._current(
                desk,
                f"Correcting part #{desk.last.task.shown_id} (you said "
                f"{desk.last.label.upper()}): press the right key, or Esc to cancel.",
                "warn",
            )

    def cancel(self, session_hash: str | None, username: str | None) -> DeskView:
        """Esc: leave a correction without changing the label."""
        with self._action(session_hash, username) as (db, user, desk):
            if not desk.correcting:
                return self._current(desk, changed=False)
            return self._show_next(db, user, desk, "Correction cancelled; label unchanged.")

    def skip(self, session_hash: str | None, username: str | None, note: str | None) -> DeskView:
        """``s``: the part is unclear; hand it to a supervisor (`escalate_task`)."""
        note = _clean_note(note)
        with self._action(session_hash, username) as (db, user, desk):
            if desk.correcting:
                return self._current(desk, "Finish or cancel the correction first (Esc).", "warn")
            if desk.task is None:
                return self._show_next(db, user, desk, "No part on screen to skip.", "warn")
            task = desk.task
            try:
                review_queue.escalate_task(db, task.task_id, user, note or "")
            except review_queue.ReviewError as exc:
                return self._current(desk, f"Not skipped: {exc}.", "warn")
            desk.task = None
            _count_done(desk, labeled=False)
            return self._show_next(
                db,
                user,
                desk,
                f"Part #{task.shown_id} sent to a supervisor.",
                "ok",
                clear_note=True,
            )

    def tick(
        self, session_hash: str | None, username: str | None, idle_ms: float | None
    ) -> DeskView:
        """The page's heartbeat: renew the lease while the inspector is active, hand the part
        back after `idle_seconds` without activity, pick up new parts when the queue was
        empty, and recount the queue."""
        idle_s = max(0.0, float(idle_ms or 0) / 1000.0)
        with self._action(session_hash, username) as (db, user, desk):
            desk.counters = self._count(db, user)
            if desk.paused:
                return self._current(desk, changed=False)
            if idle_s >= self.idle_seconds:
                return self._pause(db, user, desk)
            if desk.task is None:
                if desk.correcting:
                    return self._current(desk, changed=False)
                view = self._show_next(db, user, desk)
                return view if view.part is not None else replace(view, changed=False)
            remaining = (desk.task.lease_expires_at - utcnow()).total_seconds()
            if remaining > self.context.lease_seconds / 2:
                return self._current(desk, changed=False)
            held = desk.task
            try:
                expires = review_queue.renew_lease(
                    db, held.task_id, user, lease_seconds=self.context.lease_seconds
                )
            except review_queue.ReviewError as exc:
                desk.task = None
                logger.info("review UI: %s lost task %d: %s", user.name, held.task_id, exc)
                return self._show_next(
                    db,
                    user,
                    desk,
                    f"Part #{held.shown_id} went back to the queue: {exc}.",
                    "warn",
                )
            desk.task = replace(held, lease_expires_at=expires)
            return self._current(desk, changed=False)

    def leave(self, session_hash: str | None, username: str | None) -> None:
        """The tab closed: hand its part back at once, unless another tab of the same user
        shows the same part (a reload opens the new tab before the old one is gone)."""
        if not session_hash:
            return
        with self._tab_lock(session_hash):
            desk = self._desks.take(session_hash, username)
        if desk is None or desk.task is None:
            return
        held = desk.task
        if self._desks.shown_elsewhere(desk.user_name, held.task_id):
            return
        try:
            with self.context.session() as db:
                review_queue.release_task(db, held.task_id, current_user(db, _Named(username)))
        except Exception as exc:  # the tab is gone, nobody to tell: log it, the lease expires
            logger.info("review UI: task %d not released on tab close: %s", held.task_id, exc)

    def heatmap_due(self, session_hash: str | None, username: str | None) -> DeskView | None:
        """The part on screen if the tab may see the model's view of it and does not hold its
        heatmap yet (then it counts as sent); else None. Decided here, from the server's
        claim, never from what the page says it shows."""
        with self._action(session_hash, username) as (_db, _user, desk):
            view = self._current(desk, changed=False)
            part = view.part
            if part is None or part.predicted_class is None:
                return None
            key = view_key(view)
            if desk.overlay_key == key:
                return None
            desk.overlay_key = key
            return view

    def open_tabs(self) -> int:
        """Desks of open tabs, in every process."""
        return self._desks.count()

    # -- steps -------------------------------------------------------------------------------

    @contextmanager
    def _action(
        self, session_hash: str | None, username: str | None
    ) -> Iterator[tuple[Session, User, DeskSession]]:
        """One action: a database session, the checked user, and the tab's desk, held so a
        tab's actions never interleave (`DeskStore.hold`) and saved when it ends."""
        if not session_hash:
            raise BadInput("a Gradio session is required")
        with self.context.session() as db:
            user = current_user(db, _Named(username))
            require_role(user, Role.INSPECTOR, "label parts")
            with self._tab_lock(session_hash), self._desks.hold(session_hash, user) as desk:
                yield db, user, desk

    @contextmanager
    def _tab_lock(self, session_hash: str) -> Iterator[None]:
        with self._tab_locks[zlib.crc32(session_hash.encode()) % TAB_LOCKS]:
            yield

    def _show_next(
        self,
        db: Session,
        user: User,
        desk: DeskSession,
        message: str = "",
        kind: str = "info",
        *,
        clear_note: bool = False,
    ) -> DeskView:
        """Claim (or keep, renewed) the part this user holds, else the next in the queue."""
        task = review_queue.claim_next_task(db, user, lease_seconds=self.context.lease_seconds)
        return self._show(desk, task, message, kind, clear_note=clear_note)

    def _show(
        self,
        desk: DeskSession,
        task: ClaimedTask | None,
        message: str = "",
        kind: str = "info",
        *,
        clear_note: bool = False,
    ) -> DeskView:
        """Put `task` (just claimed, or kept) on the desk's screen."""
        desk.correcting = False
        if task is not None and (desk.task is None or desk.task.task_id != task.task_id):
            desk.shown_at = utcnow()
        desk.task = task
        return DeskView(
            mode="task" if task is not None else "empty",
            part=task,
            message=message,
            message_kind=kind,
            clear_note=clear_note,
            counters=desk.counters,
        )

    def _relabel(
        self, db: Session, user: User, desk: DeskSession, label: str, note: str | None
    ) -> DeskView:
        assert desk.last is not None
        corrected = desk.last
        inspection_id = corrected.task.shown_id
        try:
            review_queue.relabel(db, inspection_id, user, label, note=note)
        except review_queue.ReviewError as exc:
            return self._show_next(db, user, desk, f"Not corrected: {exc}.", "error")
        desk.last = Verdict(task=corrected.task, label=label)
        return self._show_next(
            db,
            user,
            desk,
            f"Corrected part #{inspection_id}: {corrected.label.upper()} → {label.upper()}.",
            "ok",
            clear_note=True,
        )

    def _pause(self, db: Session, user: User, desk: DeskSession) -> DeskView:
        held = desk.task
        desk.task = None
        desk.correcting = False
        desk.paused = True
        if held is not None:
            try:
                review_queue.release_task(db, held.task_id, user)
                logger.info(
                    "review UI: %s idle for %.0f s: task %d handed back",
                    user.name,
                    self.idle_seconds,
                    held.task_id,
                )
            except review_queue.ReviewError as exc:
                logger.info("review UI: task %d already gone at pause: %s", held.task_id, exc)
        return self._current(
            desk,
            f"Paused after {self.idle_seconds:.0f} s without activity; "
            "your part went back to the queue.",
            "warn",
        )

    def _current(
        self, desk: DeskSession, message: str = "", kind: str = "info", *, changed: bool = True
    ) -> DeskView:
        if desk.paused:
            mode, part = "paused", None
        elif desk.correcting and desk.last is not None:
            mode, part = "correcting", desk.last.task
        else:
            mode, part = ("task" if desk.task is not None else "empty"), desk.task
        return DeskView(
            mode=mode,
            part=part,
            verdict_given=desk.last.label if mode == "correcting" and desk.last else None,
            message=message,
            message_kind=kind,
            changed=changed,
            counters=desk.counters,
        )

    def _count(self, db: Session, user: User) -> Counters:
        now = utcnow()
        started = shift_start(now.astimezone())
        mine = review_queue.labels_given_since(db, user, started)
        oldest = review_queue.oldest_waiting(db)
        return Counters(
            waiting=review_queue.queue_depth(db),
            oldest_wait_s=(now - oldest).total_seconds() if oldest is not None else None,
            my_labels=int(mine),
            shift_started=started,
        )


def view_key(view: DeskView) -> str:
    """Names the part on screen, so its heatmap finds its way to it and to no other."""
    return f"{view.mode}-{view.part.shown_id}" if view.part is not None else ""


@dataclass(frozen=True)
class _Named:
    """The part of gr.Request that `current_user` reads."""

    username: str | None


def _count_done(desk: DeskSession, *, labeled: bool) -> None:
    """Keep the counters right between ticks without recounting on the verdict's path."""
    if desk.counters is not None:
        desk.counters = replace(
            desk.counters,
            waiting=max(0, desk.counters.waiting - 1) if labeled else desk.counters.waiting,
            my_labels=desk.counters.my_labels + (1 if labeled else 0),
        )


def _as_label(label: str) -> str:
    """The queue's check, up front: a key the page should never send is bad input."""
    try:
        return review_queue.as_label(label).value
    except review_queue.InvalidLabel as exc:
        raise BadInput(str(exc)) from None


def _clean_note(note: str | None) -> str | None:
    note = (note or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise BadInput(f"a note may have at most {MAX_NOTE_CHARS} characters, got {len(note)}")
    if "\x00" in note:
        raise BadInput("a note may not contain NUL characters")
    return note or None
