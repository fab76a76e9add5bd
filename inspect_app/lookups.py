"""The ingestion path's lookups, cached until something changes: which line a camera key
belongs to, and a line's policy.

Every image needed both (before: a session and a query for the key, another for the line,
a third for the policy). They change rarely and must be followed quickly by every process
(a revoked key is refused within `max_age_s` of its revocation). So a `LineLookups` keeps
what it looked up under the database's change revision (`inspect_app.storage.revisions`,
which every change of a line or camera key increments in its own transaction): while the
revision reads the same, nothing the cache holds has changed; when it moved, the cache
starts again. What is cached was read after the revision it is filed under, so it is never
older than that revision.

Reading the revision is itself one small query (a session, a statement: on SQLite 14.7% of
the service's time at 12 clients, when it was read twice per image). So a cache re-reads it
at most every ``max_age_s`` (the service's ``lookup_max_age_ms``; 0 reads it on every
lookup): between two reads its answers are taken as they are. That is the staleness it
allows: a change committed by **another process** (the CLI, a second service) is followed
at most ``max_age_s`` after its commit; a change committed in **this process** (through an
engine's session) drops the cache at its commit, so it is followed from the next lookup.

Unknown keys and lines are cached too (as absent): adding one increments the revision. The
key cache is bounded, so a client sending random keys cannot grow it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.domain import LinePolicy
from inspect_app.lines import policy_of
from inspect_app.security import hash_secret
from inspect_app.storage.revisions import CHANGED_ENGINES, read_revision
from inspect_app.storage.tables import CameraKey, Line

MAX_CACHED_KEYS = 10_000  # known and unknown keys; beyond it the cache starts again

_UNKNOWN: Any = object()  # not cached (distinct from a cached None: known to be absent)


@dataclass
class _Snapshot:
    revision: int
    checked_at: float = float("-inf")  # when the revision was last read as this one
    key_lines: dict[str, str | None] = field(default_factory=dict)  # key hash -> line
    policies: dict[str, LinePolicy | None] = field(default_factory=dict)  # line -> policy


@dataclass(frozen=True)
class CameraAnswer:
    """What the image route needs of a request's key and line, in one lookup."""

    camera_line: str | None  # the key's line; None: unknown or revoked
    policy: LinePolicy | None  # the path line's policy; None: no such line (or no valid key)


class Lookup:
    """The lookups of one request: at most one revision read, then cached answers (or a
    query in the request's session)."""

    def __init__(self, session: Session, snapshot: _Snapshot) -> None:
        self._session = session
        self._snapshot = snapshot

    @property
    def revision(self) -> int:
        return self._snapshot.revision

    def camera_line(self, key: str | None) -> str | None:
        """The line a camera key belongs to; None for an unknown or revoked key."""
        if not key:
            return None
        digest = hash_secret(key)
        keys = self._snapshot.key_lines
        if digest in keys:
            return keys[digest]
        line = self._session.exec(
            select(CameraKey.line_id)
            .where(CameraKey.key_hash == digest)
            .where(col(CameraKey.revoked_at).is_(None))
        ).first()
        if len(keys) >= MAX_CACHED_KEYS:
            keys.clear()
        keys[digest] = line
        return line

    def policy(self, line_id: str) -> LinePolicy | None:
        """The line's policy; None for a line that does not exist."""
        policies = self._snapshot.policies
        if line_id in policies:
            return policies[line_id]
        line = self._session.get(Line, line_id)
        policy = policy_of(line) if line is not None else None
        policies[line_id] = policy
        return policy

    def camera_for_line(self, key: str | None, line_id: str) -> CameraAnswer:
        camera_line = self.camera_line(key)
        policy = self.policy(line_id) if camera_line is not None else None
        return CameraAnswer(camera_line, policy)


class LineLookups:
    """One engine's cache; thread-safe (request threads and the event loop read it side by
    side). `max_age_s`: how long a read of the revision stands (see the module's docstring);
    `clock`: monotonic seconds (tests pass their own)."""

    def __init__(self, max_age_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        if max_age_s < 0:
            raise ValueError("max_age_s must not be negative")
        self.max_age_s = max_age_s
        self.clock = clock
        self._snapshot = _Snapshot(revision=-1)
        self._lock = threading.Lock()
        # bumped by `invalidate`: a revision read that began before a local change must not
        # mark the cache fresh after it
        self._generation = 0

    def _fresh(self) -> _Snapshot | None:
        snapshot = self._snapshot
        if self.clock() - snapshot.checked_at < self.max_age_s:
            return snapshot
        return None

    def current(self, session: Session) -> Lookup:
        """The lookups as of now: reads the revision in `session` (one small query) unless
        it was read within `max_age_s`."""
        snapshot = self._fresh()
        if snapshot is not None:
            return Lookup(session, snapshot)
        generation, read_at = self._generation, self.clock()
        revision = read_revision(session)
        with self._lock:
            snapshot = self._snapshot
            if snapshot.revision != revision:
                snapshot = _Snapshot(revision=revision)
                self._snapshot = snapshot
            if generation == self._generation:
                snapshot.checked_at = read_at
        return Lookup(session, snapshot)

    def peek_camera_for_line(self, key: str | None, line_id: str) -> CameraAnswer | None:
        """The answer from the cache alone, with no I/O (for the event loop), when the
        revision was read within `max_age_s` and the cache holds it; else None (look it up
        with `current` in a worker thread)."""
        snapshot = self._fresh()
        if snapshot is None or not key:
            return None
        camera_line = snapshot.key_lines.get(hash_secret(key), _UNKNOWN)
        if camera_line is _UNKNOWN:
            return None
        if camera_line is None:
            return CameraAnswer(None, None)
        policy = snapshot.policies.get(line_id, _UNKNOWN)
        if policy is _UNKNOWN:
            return None
        return CameraAnswer(camera_line, policy)

    def invalidate(self) -> None:
        """Forget that the revision was read: the next lookup reads it (a change of a line or
        key committed in this process)."""
        with self._lock:
            self._generation += 1
            self._snapshot.checked_at = float("-inf")


_by_engine: weakref.WeakKeyDictionary[Engine, LineLookups] = weakref.WeakKeyDictionary()
_by_engine_lock = threading.Lock()


def line_lookups(engine: Engine) -> LineLookups:
    """The engine's one cache (every caller on an engine shares it)."""
    lookups = _by_engine.get(engine)
    if lookups is None:
        with _by_engine_lock:
            lookups = _by_engine.get(engine)
            if lookups is None:
                lookups = LineLookups()
                _by_engine[engine] = lookups
    return lookups


@event.listens_for(Session, "after_commit")
def _drop_after_a_local_change(session: Session) -> None:
    """A change of a line or key committed through an engine of this process: that engine's
    cache reads the revision at its next lookup instead of waiting out `max_age_s`."""
    engines = session.info.pop(CHANGED_ENGINES, None)
    for engine in engines or ():
        lookups = _by_engine.get(engine)
        if lookups is not None:
            lookups.invalidate()


@event.listens_for(Session, "after_rollback")
def _no_change_after_a_rollback(session: Session) -> None:
    session.info.pop(CHANGED_ENGINES, None)
