"""The inspector's desk: what one browser tab is doing, and every action it can take.

One `DeskSession` per Gradio session (one per open tab), held on the server: the task the
tab shows, the verdict it can undo, whether it is paused. Every action reloads the user
from the request and goes through `inspect_app.review_queue`, which alone decides who may
label, relabel, renew or release what; this module only sequences those calls for a
person at a keyboard:

- a verdict saves the label and claims the next part in the same request, so the next
  image travels back with the answer to the key press (no second round trip);
- ``u`` shows the last labeled part again; the next verdict key relabels it
  (`review_queue.relabel`, counted as a redo) and the desk returns to the held part;
- the lease is renewed while the tab reports recent keyboard or mouse activity, and the
  part is handed back (`release_task`) after `idle_seconds` without any, or when the tab
  closes (`leave`, Gradio's unload event).

Nothing here is Gradio-specific, so the tests drive it directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlmodel import Session

from inspect_app import review_queue
from inspect_app.api.params import MAX_NOTE_CHARS
from inspect_app.domain import Role
from inspect_app.review_queue import ClaimedTask
from inspect_app.storage.tables import User, utcnow
from review_ui.auth import current_user, require_role
from review_ui.context import ReviewContext

logger = logging.getLogger(__name__)

# Local hours at which a shift starts; "my labels this shift" counts from the latest one.
SHIFT_STARTS: tuple[int, ...] = (6, 14, 22)
STALE_AFTER_S = 12 * 3600.0


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
    shown_at: float = 0.0  # time.monotonic() when the part was put on screen
    last: Verdict | None = None
    correcting: bool = False  # showing `last` again; the next verdict relabels it
    paused: bool = False
    counters: Counters | None = None  # counted on open and each tick, kept up to date between
    overlay_key: str | None = None  # the part whose heatmap the tab holds (it holds one)
    last_seen: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


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
            "inspection_id": part.inspection_id if part else None,
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
        self._sessions: dict[str, DeskSession] = {}
        self._sessions_lock = threading.Lock()

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
            duration_ms = int(1000 * (time.monotonic() - desk.shown_at))
            try:
                review_queue.submit_label(
                    db, task.task_id, user, label, note=note, duration_ms=duration_ms
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
            return self._show_next(
                db,
                user,
                desk,
                f"Saved part #{task.inspection_id} as {label.upper()}. u to undo.",
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
                f"Correcting part #{desk.last.task.inspection_id} (you said "
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
                f"Part #{task.inspection_id} sent to a supervisor.",
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
                    f"Part #{held.inspection_id} went back to the queue: {exc}.",
                    "warn",
                )
            desk.task = replace(held, lease_expires_at=expires)
            return self._current(desk, changed=False)

    def leave(self, session_hash: str | None, username: str | None) -> None:
        """The tab closed: hand its part back at once, unless another tab of the same user
        shows the same part (a reload opens the new tab before the old one is gone)."""
        with self._sessions_lock:
            desk = self._sessions.pop(session_hash or "", None)
            if desk is None or desk.task is None:
                return
            held = desk.task
            shared = any(
                other.user_name == desk.user_name
                and other.task is not None
                and other.task.task_id == held.task_id
                for other in self._sessions.values()
            )
        if shared or username != desk.user_name:
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
        with self._sessions_lock:
            return len(self._sessions)

    # -- steps -------------------------------------------------------------------------------

    @contextmanager
    def _action(
        self, session_hash: str | None, username: str | None
    ) -> Iterator[tuple[Session, User, DeskSession]]:
        """One action: a database session, the checked user, and the tab's desk, locked so
        a tab's actions never interleave. A tab whose user changed starts afresh."""
        if not session_hash:
            raise BadInput("a Gradio session is required")
        with self.context.session() as db:
            user = current_user(db, _Named(username))
            require_role(user, Role.INSPECTOR, "label parts")
            with self._sessions_lock:
                desk = self._sessions.get(session_hash)
                if desk is None or desk.user_name != user.name:
                    self._forget_stale()
                    desk = DeskSession(user_name=user.name)
                    self._sessions[session_hash] = desk
                desk.last_seen = time.monotonic()
            with desk.lock:
                yield db, user, desk

    def _forget_stale(self) -> None:
        """Drop desks not heard from in `STALE_AFTER_S` (API clients have no unload event);
        their leases have long expired. Called with the sessions lock held."""
        cutoff = time.monotonic() - STALE_AFTER_S
        for key in [k for k, d in self._sessions.items() if d.last_seen < cutoff]:
            del self._sessions[key]

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
        desk.correcting = False
        task = review_queue.claim_next_task(db, user, lease_seconds=self.context.lease_seconds)
        if task is not None and (desk.task is None or desk.task.task_id != task.task_id):
            desk.shown_at = time.monotonic()
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
        inspection_id = corrected.task.inspection_id
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
    return f"{view.mode}-{view.part.inspection_id}" if view.part is not None else ""


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
