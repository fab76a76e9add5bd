"""The ingestion path's lookups, cached until something changes: which line a camera key
belongs to, and a line's policy.

Every image needed both (before: a session and a query for the key, another for the line,
a third for the policy). They change rarely and must be followed at once by every process
(a revoked key is refused from the camera's next image). So a `LineLookups` keeps what it
looked up under the database's change revision (`inspect_app.storage.revisions`, which every
change of a line or camera key increments in its own transaction) and reads that one small
row per request: while it reads the same, nothing the cache holds has changed; when it moved,
the cache starts again. What is cached was read after the revision it is filed under, so
it is never older than that revision.

Unknown keys and lines are cached too (as absent): adding one increments the revision. The
key cache is bounded, so a client sending random keys cannot grow it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.domain import LinePolicy
from inspect_app.lines import policy_of
from inspect_app.security import hash_secret
from inspect_app.storage.revisions import read_revision
from inspect_app.storage.tables import CameraKey, Line

MAX_CACHED_KEYS = 10_000  # known and unknown keys; beyond it the cache starts again


@dataclass
class _Snapshot:
    revision: int
    key_lines: dict[str, str | None] = field(default_factory=dict)  # key hash -> line
    policies: dict[str, LinePolicy | None] = field(default_factory=dict)  # line -> policy


class Lookup:
    """The lookups of one request: one revision read, then cached answers (or a query)."""

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


class LineLookups:
    """One engine's cache; thread-safe (request threads read it side by side)."""

    def __init__(self) -> None:
        self._snapshot = _Snapshot(revision=-1)
        self._lock = threading.Lock()

    def current(self, session: Session) -> Lookup:
        """The lookups as of now: reads the revision in `session` (one small query)."""
        revision = read_revision(session)
        snapshot = self._snapshot
        if snapshot.revision != revision:
            with self._lock:
                snapshot = self._snapshot
                if snapshot.revision != revision:
                    snapshot = _Snapshot(revision=revision)
                    self._snapshot = snapshot
        return Lookup(session, snapshot)


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
