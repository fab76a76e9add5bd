"""The outbox: a message per final decision and alarm change, written in the transaction of
the change itself, and what supervisors do with it (destinations, delivery state, replay).

`enqueue_decision` and `enqueue_alarm` are called by the code that makes the change, before
its commit: the message exists exactly when the change does, so a crash can lose neither
alone. Each takes the line's next sequence number by incrementing its `outputsequence` row,
which holds that row's lock until the commit: a line's messages therefore commit in sequence
order, and the worker, which delivers the oldest undelivered first, never passes a message
that commits later with a smaller number.

`enqueue_decisions` is the same for the many decisions of one transaction (the ingestion
path's group commit): one increment of the counter per line takes the whole range of numbers,
and the messages go in as one multi-row insert, so a line pays one counter update and one
lock per commit, not per decision (the single-decision write cost 2.17x the inspection's own
commit in ``bench/outputs_delivery.py``). The guarantee is the same: the numbers of one
commit are consecutive, and a later commit's are larger.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from inspect_app.events import record_event
from inspect_app.lines import get_line
from inspect_app.outputs.core import (
    DeliveryState,
    DestinationError,
    DestinationKind,
    MessageKind,
    alarm_payload,
    check_destination,
    decision_payload,
    delivery_state,
)
from inspect_app.storage.tables import (
    Inspection,
    OutboxMessage,
    OutputDelivery,
    OutputDestination,
    OutputSequence,
)
from inspect_app.timeutil import as_utc, utcnow

logger = logging.getLogger(__name__)

MAX_REPLAY = 10_000  # messages one replay may ask for again
MAX_STATE_SCAN = 10_000  # newest messages a state filter looks through


class OutputNotFound(LookupError):
    pass


# -- the in-transaction write ----------------------------------------------------------------


def _take_seqs(session: Session, line_id: str, count: int = 1) -> int:
    """Take the line's next `count` sequence numbers; returns the first. Locks the line's
    counter until the caller commits (so the line's messages commit in sequence order)."""
    taking = (
        update(OutputSequence)
        .where(col(OutputSequence.line_id) == line_id)
        .values(last_seq=OutputSequence.last_seq + count)
        .returning(OutputSequence.last_seq)
    )
    last = session.exec(taking).scalar_one_or_none()  # type: ignore[call-overload]
    if last is None:  # the line's first message: make its counter, then take from it
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.exec(  # type: ignore[call-overload]
            insert(OutputSequence)
            .values(line_id=line_id, last_seq=0)
            .on_conflict_do_nothing(index_elements=["line_id"])
        )
        last = session.exec(taking).scalar_one()  # type: ignore[call-overload]
    return int(last) - count + 1


def _enqueue_many(
    session: Session, line_id: str, kind: MessageKind, builds: list[Any]
) -> list[OutboxMessage]:
    """One message per `build(delivery_id, seq)`, numbered consecutively in their order."""
    first = _take_seqs(session, line_id, len(builds))
    messages = []
    for seq, build in enumerate(builds, start=first):
        delivery_id = uuid.uuid4().hex
        messages.append(
            OutboxMessage(
                line_id=line_id,
                seq=seq,
                delivery_id=delivery_id,
                kind=kind.value,
                payload=build(delivery_id, seq),
            )
        )
    session.add_all(messages)
    session.flush()
    for m in messages:
        logger.info("outbox %s %s line=%s seq=%d delivery=%s", kind.value,
                    m.payload.get("decision") or m.payload.get("to_status"),
                    line_id, m.seq, m.delivery_id)  # fmt: skip
    return messages


def _enqueue(session: Session, line_id: str, kind: MessageKind, build: Any) -> OutboxMessage:
    return _enqueue_many(session, line_id, kind, [build])[0]


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return None if value is None else value.isoformat()


def enqueue_decision(session: Session, inspection: Inspection, *, cause: str) -> OutboxMessage:
    """The inspection's final decision, for the line's outputs; call before the commit that
    makes the decision. `cause`: model | label | relabel."""
    return enqueue_decisions(session, [inspection], cause=cause)[0]


def enqueue_decisions(
    session: Session, inspections: list[Inspection], *, cause: str
) -> list[OutboxMessage]:
    """`enqueue_decision` for several inspections of one transaction: per line, one counter
    update for all of them, numbered in the order given. Returns the messages in that order."""
    by_line: dict[str, list[int]] = {}
    for i, inspection in enumerate(inspections):
        by_line.setdefault(inspection.line_id, []).append(i)
    messages: list[OutboxMessage | None] = [None] * len(inspections)
    for line_id, indexes in by_line.items():
        builds = [_decision_build(inspections[i], cause) for i in indexes]
        for i, message in zip(
            indexes, _enqueue_many(session, line_id, MessageKind.DECISION, builds), strict=True
        ):
            messages[i] = message
    return messages  # type: ignore[return-value]


def _decision_build(inspection: Inspection, cause: str) -> Any:
    assert inspection.id is not None, "flush the inspection first"
    fields = {
        "inspection_id": inspection.id,
        "capture_id": inspection.capture_id,
        "part_serial": inspection.part_serial,
        "decision": inspection.decision,
        "decided_by": inspection.decided_by,
        "decided_at": _iso(inspection.decided_at),
        "route": inspection.route,
        "received_at": _iso(inspection.received_at),
        "model_version": inspection.model_version,
        "predicted_class": inspection.predicted_class,
        "p_defect": inspection.p_defect,
    }
    return lambda delivery_id, seq: decision_payload(
        delivery_id=delivery_id, seq=seq, line_id=inspection.line_id, cause=cause,
        inspection=fields,
    )  # fmt: skip


def enqueue_alarm(session: Session, line_id: str, transition: dict[str, Any]) -> OutboxMessage:
    """An alarm's change of state (alarms.Transition.to_dict()); call before its commit."""
    return _enqueue(
        session,
        line_id,
        MessageKind.ALARM,
        lambda delivery_id, seq: alarm_payload(
            delivery_id=delivery_id, seq=seq, line_id=line_id, transition=transition
        ),
    )


# -- destinations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationView:
    """A destination as supervisors see it: never its secret."""

    id: int
    line_id: str
    kind: str
    url: str
    has_secret: bool
    topic_prefix: str
    enabled: bool
    pending_from_seq: int
    undelivered: int  # messages from pending_from_seq not delivered yet
    failing_since: datetime | None  # the oldest undelivered message's first failed attempt
    last_error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


def _last_seq(session: Session, line_id: str) -> int:
    row = session.get(OutputSequence, line_id)
    return row.last_seq if row is not None else 0


def _view(session: Session, dest: OutputDestination) -> DestinationView:
    assert dest.id is not None
    undelivered = session.exec(
        select(func.count())
        .select_from(OutboxMessage)
        .outerjoin(OutputDelivery, _delivery_of(dest.id))
        .where(
            OutboxMessage.line_id == dest.line_id,
            col(OutboxMessage.seq) >= dest.pending_from_seq,
            col(OutputDelivery.delivered_at).is_(None),
        )
    ).one()
    head = session.exec(
        select(OutputDelivery)
        .join(OutboxMessage, col(OutboxMessage.id) == col(OutputDelivery.message_id))
        .where(
            OutputDelivery.destination_id == dest.id,
            col(OutputDelivery.delivered_at).is_(None),
            col(OutputDelivery.last_error).is_not(None),
        )
        .order_by(col(OutboxMessage.seq))
    ).first()
    return DestinationView(
        id=dest.id,
        line_id=dest.line_id,
        kind=dest.kind,
        url=dest.url,
        has_secret=bool(dest.secret),
        topic_prefix=dest.topic_prefix,
        enabled=dest.enabled,
        pending_from_seq=dest.pending_from_seq,
        undelivered=int(undelivered),
        failing_since=as_utc(head.last_attempt_at) if head is not None else None,
        last_error=head.last_error if head is not None else None,
        created_by=dest.created_by,
        created_at=as_utc(dest.created_at),  # type: ignore[arg-type]
        updated_at=as_utc(dest.updated_at),  # type: ignore[arg-type]
    )


def _delivery_of(destination_id: int):  # type: ignore[no-untyped-def]
    return and_(
        col(OutputDelivery.message_id) == col(OutboxMessage.id),
        col(OutputDelivery.destination_id) == destination_id,
    )


def add_destination(
    session: Session,
    line_id: str,
    *,
    kind: str,
    url: str,
    secret: str | None = None,
    topic_prefix: str = "inspect",
    from_seq: int | None = None,
    actor: str,
    reason: str,
) -> DestinationView:
    """A new webhook or broker for a line, committed, with an event saying who and why.

    It gets the messages from `from_seq` on (default: only those written after now; an
    earlier one replays the line's history to it)."""
    get_line(session, line_id)  # LineNotFound for an unknown line
    checked = check_destination(kind, url, secret)
    if not topic_prefix or any(c in topic_prefix for c in "#+\x00"):
        raise DestinationError(f"bad MQTT topic prefix {topic_prefix!r}: no #, + or NUL")
    if from_seq is not None and from_seq < 1:
        raise DestinationError("from_seq counts from 1")
    dest = OutputDestination(
        line_id=line_id,
        kind=checked.value,
        url=url,
        secret=secret if checked is DestinationKind.WEBHOOK else None,
        topic_prefix=topic_prefix,
        pending_from_seq=from_seq if from_seq is not None else _last_seq(session, line_id) + 1,
        created_by=actor,
    )
    session.add(dest)
    session.flush()
    record_event(
        session,
        kind="output_added",
        actor=actor,
        reason=reason,
        line_id=line_id,
        details={"destination_id": dest.id, "kind": dest.kind, "url": url,
                 "topic_prefix": topic_prefix, "from_seq": dest.pending_from_seq},
    )  # fmt: skip
    session.commit()
    return _view(session, dest)


def update_destination(
    session: Session,
    destination_id: int,
    *,
    actor: str,
    reason: str,
    enabled: bool | None = None,
    url: str | None = None,
    secret: str | None = None,
    topic_prefix: str | None = None,
) -> DestinationView:
    """Change a destination (a new secret, a new URL, pause or resume it), with an event."""
    dest = session.get(OutputDestination, destination_id, populate_existing=True)
    if dest is None:
        raise OutputNotFound(f"no output destination {destination_id}")
    new_url = url if url is not None else dest.url
    new_secret = secret if secret is not None else dest.secret
    check_destination(dest.kind, new_url, new_secret)
    changed: dict[str, Any] = {}
    if enabled is not None and enabled != dest.enabled:
        changed["enabled"] = enabled
    if url is not None and url != dest.url:
        changed["url"] = url
    if secret is not None and secret != dest.secret:
        changed["secret"] = "(changed)"
    if topic_prefix is not None and topic_prefix != dest.topic_prefix:
        if any(c in topic_prefix for c in "#+\x00") or not topic_prefix:
            raise DestinationError(f"bad MQTT topic prefix {topic_prefix!r}: no #, + or NUL")
        changed["topic_prefix"] = topic_prefix
    if not changed:
        return _view(session, dest)
    dest.enabled = enabled if enabled is not None else dest.enabled
    dest.url, dest.secret = new_url, new_secret
    dest.topic_prefix = topic_prefix if topic_prefix is not None else dest.topic_prefix
    dest.updated_at = utcnow()
    session.add(dest)
    record_event(
        session,
        kind="output_changed",
        actor=actor,
        reason=reason,
        line_id=dest.line_id,
        details={"destination_id": dest.id, **changed},
    )
    session.commit()
    return _view(session, dest)


def list_destinations(session: Session, line_id: str | None = None) -> list[DestinationView]:
    query = select(OutputDestination).order_by(col(OutputDestination.id))
    if line_id is not None:
        query = query.where(OutputDestination.line_id == line_id)
    return [_view(session, d) for d in session.exec(query)]


# -- messages and their delivery -------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryView:
    destination_id: int
    state: DeliveryState
    attempts: int
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    replays: int


@dataclass(frozen=True)
class MessageView:
    id: int
    line_id: str
    seq: int
    delivery_id: str
    kind: str
    created_at: datetime
    payload: dict[str, Any]
    deliveries: list[DeliveryView]


def list_messages(
    session: Session,
    *,
    line_id: str | None = None,
    state: DeliveryState | None = None,
    destination_id: int | None = None,
    from_seq: int | None = None,
    limit: int = 100,
) -> list[MessageView]:
    """Newest first, each with its state at each destination of its line that should get it
    (a destination added later does not count messages before its start). A `state` filter
    looks through the newest `MAX_STATE_SCAN` messages."""
    dests = list(session.exec(select(OutputDestination)))
    if destination_id is not None:
        dests = [d for d in dests if d.id == destination_id]
    query = select(OutboxMessage)
    if line_id is not None:
        query = query.where(OutboxMessage.line_id == line_id)
    if from_seq is not None:
        query = query.where(col(OutboxMessage.seq) >= from_seq)
    if destination_id is not None:
        query = query.where(col(OutboxMessage.line_id).in_([d.line_id for d in dests]))
    query = query.order_by(col(OutboxMessage.id).desc())
    messages = list(session.exec(query.limit(limit if state is None else MAX_STATE_SCAN)))
    rows: dict[tuple[int, int], OutputDelivery] = {}
    ids = [m.id for m in messages]
    for start in range(0, len(ids), 500):  # one query per 500 messages, not one each
        for r in session.exec(
            select(OutputDelivery).where(
                col(OutputDelivery.message_id).in_(ids[start : start + 500])
            )
        ):
            rows[(r.message_id, r.destination_id)] = r
    views: list[MessageView] = []
    for message in messages:
        assert message.id is not None
        deliveries = []
        for dest in dests:
            if dest.line_id != message.line_id:
                continue
            assert dest.id is not None
            row = rows.get((message.id, dest.id))
            if row is None and message.seq < dest.pending_from_seq:
                continue  # before the destination existed
            deliveries.append(_delivery_view(dest.id, row))
        if state is not None and not any(d.state is state for d in deliveries):
            continue
        views.append(
            MessageView(
                id=message.id,
                line_id=message.line_id,
                seq=message.seq,
                delivery_id=message.delivery_id,
                kind=message.kind,
                created_at=as_utc(message.created_at),  # type: ignore[arg-type]
                payload=message.payload,
                deliveries=deliveries,
            )
        )
        if len(views) >= limit:
            break
    return views


def _delivery_view(destination_id: int, row: OutputDelivery | None) -> DeliveryView:
    if row is None:
        return DeliveryView(destination_id, DeliveryState.WAITING, 0, None, None, None, None, 0)
    return DeliveryView(
        destination_id=destination_id,
        state=delivery_state(row.delivered_at is not None, row.last_error),
        attempts=row.attempts,
        last_error=row.last_error,
        last_attempt_at=as_utc(row.last_attempt_at),
        next_attempt_at=as_utc(row.next_attempt_at),
        delivered_at=as_utc(row.delivered_at),
        replays=row.replays,
    )


def replay(
    session: Session,
    line_id: str,
    *,
    from_seq: int,
    to_seq: int | None = None,
    destination_id: int | None = None,
    actor: str,
    reason: str,
) -> int:
    """Send the line's messages `from_seq`..`to_seq` again (to one destination or all), with
    their own delivery ids, in order, before the newer ones not yet delivered. For a receiver
    that lost what it had: one that kept its ids drops them as duplicates. Returns how many
    deliveries were queued again."""
    get_line(session, line_id)
    last = _last_seq(session, line_id)
    to_seq = last if to_seq is None else to_seq
    if from_seq < 1 or to_seq < from_seq:
        raise DestinationError(f"replay needs 1 <= from_seq <= to_seq, got {from_seq}..{to_seq}")
    if to_seq - from_seq + 1 > MAX_REPLAY:
        raise DestinationError(f"replay at most {MAX_REPLAY} messages at a time")
    query = select(OutputDestination).where(OutputDestination.line_id == line_id)
    if destination_id is not None:
        query = query.where(OutputDestination.id == destination_id)
    dests = list(session.exec(query.with_for_update()))
    if destination_id is not None and not dests:
        raise OutputNotFound(f"no output destination {destination_id} on line {line_id}")
    messages = list(
        session.exec(
            select(OutboxMessage)
            .where(OutboxMessage.line_id == line_id)
            .where(col(OutboxMessage.seq) >= from_seq, col(OutboxMessage.seq) <= to_seq)
        )
    )
    queued = 0
    for dest in dests:
        assert dest.id is not None
        rows = {
            r.message_id: r
            for r in session.exec(
                select(OutputDelivery).where(
                    OutputDelivery.destination_id == dest.id,
                    col(OutputDelivery.message_id).in_([m.id for m in messages]),
                )
            )
        }
        for message in messages:
            assert message.id is not None
            row = rows.get(message.id) or OutputDelivery(
                destination_id=dest.id, message_id=message.id
            )
            row.delivered_at = None
            row.next_attempt_at = None
            row.last_error = None
            row.replays += 1
            session.add(row)
            queued += 1
        if messages:
            dest.pending_from_seq = min(dest.pending_from_seq, min(m.seq for m in messages))
            session.add(dest)
    record_event(
        session,
        kind="output_replay",
        actor=actor,
        reason=reason,
        line_id=line_id,
        details={"from_seq": from_seq, "to_seq": to_seq, "destination_id": destination_id,
                 "messages": len(messages), "deliveries": queued},
    )  # fmt: skip
    session.commit()
    return queued
