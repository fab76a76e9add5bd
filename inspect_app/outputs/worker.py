"""The delivery worker: a background thread in `serve` that sends each outbox message to each
enabled destination of its line, at least once, in order per line per destination.

Lifecycle: `start()` -> `run_once()` every `poll_seconds` until stopped -> `stop()`.

Order. A destination is delivered by one worker at a time, under a lease on its row (a
conditional UPDATE, the same on SQLite and PostgreSQL), renewed on every message; a process
that dies loses the lease when it expires and another (or the restarted one) takes over. An
idle destination is only read each poll; its lease is taken when it has something due. The
worker always sends the destination's oldest undelivered message: a failing one stalls the
destination (newer messages wait behind it), retried after `Backoff.delay(attempts)`.

At least once. A message is marked delivered only after the receiver has it, so a crash
between the two sends it again after the restart, with the same delivery id and bytes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.outputs.core import Backoff, DestinationKind
from inspect_app.outputs.outbox import _delivery_of
from inspect_app.outputs.transports import (
    DeliveryFailed,
    MqttTransport,
    Transport,
    WebhookTransport,
)
from inspect_app.storage.tables import OutboxMessage, OutputDelivery, OutputDestination
from inspect_app.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from inspect_app.settings import Settings

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1000


def make_transport(dest: OutputDestination, timeout_seconds: float) -> Transport:
    if dest.kind == DestinationKind.WEBHOOK.value:
        assert dest.secret is not None
        return WebhookTransport(dest.url, dest.secret, timeout_seconds=timeout_seconds)
    return MqttTransport(dest.url, dest.topic_prefix, timeout_seconds=timeout_seconds)


class OutputWorker:
    def __init__(
        self,
        engine: Engine,
        *,
        backoff: Backoff | None = None,
        poll_seconds: float = 0.5,
        lease_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        batch: int = 100,
        transport_factory: Callable[[OutputDestination, float], Transport] = make_transport,
    ) -> None:
        if not timeout_seconds * 2 < lease_seconds:
            raise ValueError("the lease must outlast a delivery attempt (two timeouts)")
        self.engine = engine
        self.backoff = backoff or Backoff()
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.timeout_seconds = timeout_seconds
        self.batch = batch
        self.transport_factory = transport_factory
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]
        self._transports: dict[int, tuple[datetime, Transport]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="output-worker", daemon=True)
        self._thread.start()
        logger.info("output worker %s started (poll %.2f s)", self.owner, self.poll_seconds)

    def wake(self) -> None:
        """Look now rather than at the next poll (after a commit that wrote a message)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_seconds * 3)
            self._thread = None
        self._release_leases()
        for _, transport in self._transports.values():
            try:
                transport.close()
            except Exception:  # closing a broken connection on the way out
                logger.debug("closing a transport failed", exc_info=True)
        self._transports.clear()
        logger.info("output worker %s stopped", self.owner)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delivered = self.run_once()
            except Exception:
                logger.exception("output worker round failed; trying again")
                delivered = 0
            if delivered == 0:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    # -- one round

    def run_once(self) -> int:
        """Deliver what is due to every destination this worker can hold; how many delivered."""
        with Session(self.engine) as session:
            ids = list(
                session.exec(
                    select(OutputDestination.id)
                    .where(col(OutputDestination.enabled).is_(True))
                    .order_by(col(OutputDestination.id))
                )
            )
        delivered = 0
        for dest_id in ids:
            if self._stop.is_set():
                break
            assert dest_id is not None
            # an idle destination costs a read, not a lease write, every poll
            if self._due(dest_id) and self._claim(dest_id):
                delivered += self._deliver(dest_id)
        return delivered

    def _due(self, dest_id: int) -> bool:
        """The destination has a message to send now (its oldest is not backing off)."""
        now = utcnow()
        with Session(self.engine) as session:
            dest = session.get(OutputDestination, dest_id)
            head = _head(session, dest) if dest is not None else None
        if head is None:
            return False
        due = as_utc(head[1].next_attempt_at) if head[1] is not None else None
        return due is None or due <= now

    def _claim(self, dest_id: int) -> bool:
        now = utcnow()
        with Session(self.engine) as session:
            result = session.exec(  # type: ignore[call-overload]
                update(OutputDestination)
                .where(
                    col(OutputDestination.id) == dest_id,
                    col(OutputDestination.enabled).is_(True),
                    or_(
                        col(OutputDestination.lease_owner).is_(None),
                        col(OutputDestination.lease_owner) == self.owner,
                        col(OutputDestination.lease_expires_at) <= now,
                    ),
                )
                .values(lease_owner=self.owner, lease_expires_at=now + self.lease)
            )
            session.commit()
            return result.rowcount == 1

    def _release_leases(self) -> None:
        try:
            with Session(self.engine) as session:
                session.exec(  # type: ignore[call-overload]
                    update(OutputDestination)
                    .where(col(OutputDestination.lease_owner) == self.owner)
                    .values(lease_owner=None, lease_expires_at=None)
                )
                session.commit()
        except Exception:  # the lease expires on its own
            logger.warning("could not release output leases of %s", self.owner, exc_info=True)

    def _transport(self, dest: OutputDestination) -> Transport:
        assert dest.id is not None
        cached = self._transports.get(dest.id)
        if cached is not None and cached[0] == dest.updated_at:
            return cached[1]
        if cached is not None:
            cached[1].close()
        transport = self.transport_factory(dest, self.timeout_seconds)
        self._transports[dest.id] = (dest.updated_at, transport)
        return transport

    def _deliver(self, dest_id: int) -> int:
        """Send the destination's oldest undelivered messages in order until one fails, is
        waiting out its backoff, or none is left."""
        delivered = 0
        while delivered < self.batch and not self._stop.is_set():
            now = utcnow()
            with Session(self.engine, expire_on_commit=False) as session:
                dest = session.get(OutputDestination, dest_id)
                if dest is None or not dest.enabled or dest.lease_owner != self.owner:
                    return delivered
                head = _head(session, dest)
            if head is None:
                return delivered
            message, row = head
            due = as_utc(row.next_attempt_at) if row is not None else None
            if due is not None and due > now:
                return delivered  # stalled on its oldest message until the backoff ends
            error = self._send(dest, message, first=row is None or row.replays == 0)
            if not self._record(dest, message, row, error, now):
                return delivered  # the lease was lost or a replay raced: look again later
            if error is not None:
                return delivered
            delivered += 1
        return delivered

    def _send(self, dest: OutputDestination, message: OutboxMessage, *, first: bool) -> str | None:
        try:
            # a replayed message does not move the retained "last" state back in time
            self._transport(dest).send(
                message.payload, kind=message.kind, line_id=message.line_id, retain_last=first
            )
        except DeliveryFailed as exc:
            return str(exc)[:MAX_ERROR_CHARS]
        except Exception as exc:  # any transport bug is a failed attempt
            logger.exception("output %d: unexpected error sending %s", dest.id, message.id)
            return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return None

    def _record(
        self,
        dest: OutputDestination,
        message: OutboxMessage,
        row: OutputDelivery | None,
        error: str | None,
        attempted_at: datetime,
    ) -> bool:
        now = utcnow()
        with Session(self.engine) as session:
            held = session.exec(  # type: ignore[call-overload]
                update(OutputDestination)
                .where(
                    col(OutputDestination.id) == dest.id,
                    col(OutputDestination.lease_owner) == self.owner,
                )
                .values(lease_expires_at=now + self.lease)
            ).rowcount
            if held != 1:
                session.rollback()
                logger.warning("output %d: lease lost while sending %s", dest.id, message.id)
                return False
            replays = row.replays if row is not None else 0
            current = session.exec(
                select(OutputDelivery).where(
                    OutputDelivery.destination_id == dest.id,
                    OutputDelivery.message_id == message.id,
                )
            ).first()
            if current is not None and current.replays != replays:
                session.rollback()  # a replay asked for it again meanwhile: send it again
                return False
            current = current or OutputDelivery(destination_id=dest.id, message_id=message.id)  # type: ignore[arg-type]
            current.attempts += 1
            current.last_attempt_at = attempted_at
            if error is None:
                current.delivered_at = now
                current.next_attempt_at = None
                # everything from pending_from_seq up to this one is delivered now; unless a
                # replay lowered the mark meanwhile (compare and set)
                session.exec(  # type: ignore[call-overload]
                    update(OutputDestination)
                    .where(
                        col(OutputDestination.id) == dest.id,
                        col(OutputDestination.pending_from_seq) == dest.pending_from_seq,
                    )
                    .values(pending_from_seq=message.seq + 1)
                )
            else:
                current.last_error = error
                wait = self.backoff.delay(current.attempts)
                current.next_attempt_at = now + timedelta(seconds=wait)
                logger.warning(
                    "output %d (%s %s, line %s): delivery of message %d (seq %d, %s) failed "
                    "on attempt %d: %s; next attempt in %.1f s",
                    dest.id,
                    dest.kind,
                    dest.url,
                    dest.line_id,
                    message.id,
                    message.seq,
                    message.delivery_id,
                    current.attempts,
                    error,
                    wait,
                )
            session.add(current)
            session.commit()
        if error is None:
            logger.debug("output %d: delivered seq %d (%s)", dest.id, message.seq,
                         message.delivery_id)  # fmt: skip
        return True


def _head(
    session: Session, dest: OutputDestination
) -> tuple[OutboxMessage, OutputDelivery | None] | None:
    """The destination's oldest undelivered message, with its delivery so far (or None)."""
    assert dest.id is not None
    row = session.exec(
        select(OutboxMessage, OutputDelivery)
        .outerjoin(OutputDelivery, _delivery_of(dest.id))
        .where(
            OutboxMessage.line_id == dest.line_id,
            col(OutboxMessage.seq) >= dest.pending_from_seq,
            col(OutputDelivery.delivered_at).is_(None),
        )
        .order_by(col(OutboxMessage.seq))
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def worker_of(settings: Settings, engine: Engine) -> OutputWorker | None:
    """The worker `serve` runs, from the settings (None when outputs are switched off)."""
    if not settings.outputs_enabled:
        logger.warning("line outputs are switched off: no decision or alarm is delivered")
        return None
    return OutputWorker(
        engine,
        backoff=Backoff(settings.outputs_backoff_seconds, settings.outputs_backoff_max_seconds),
        poll_seconds=settings.outputs_poll_seconds,
        lease_seconds=settings.outputs_lease_seconds,
        timeout_seconds=settings.outputs_timeout_seconds,
    )
