"""Changing a line's automation level: lowering is always allowed, raising is gated by evidence.

STUB until the evidence issue lands: raising to a level that lets the model decide
(partial, full) is refused. Owned by the evidence work, which replaces these bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from inspect_app.domain import LinePolicy
from inspect_app.storage.tables import Line


@dataclass(frozen=True)
class GateVerdict:
    allowed: bool
    reason: str
    evidence: dict = field(default_factory=dict)  # the figures at that moment, for the 409 and the log


def evaluate_raise(session: Session, line: Line, target: LinePolicy) -> GateVerdict:
    """May `line` go to `target` (a level of partial or full)? Called by PUT .../automation."""
    return GateVerdict(
        allowed=False,
        reason="the evidence gate is not available yet: raising to partial or full is refused",
    )


def after_label(session: Session, line_id: str, inspection_id: int) -> None:
    """Called after every human label is committed: at partial/full, audits keep the bounds
    live and may demote the line. No-op until the evidence work lands."""
