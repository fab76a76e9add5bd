"""The plant's vocabulary: classes, automation levels, routes, decisions, roles.

Everything here is plain data with no I/O, so routing, evidence and the UI can share it
without importing the database or the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Final, Literal

import numpy as np
from pydantic import PlainSerializer


class DefectClass(StrEnum):
    OK = "ok"
    SCRATCH = "scratch"
    CRACK = "crack"
    PIT = "pit"
    DISCOLORATION = "discoloration"

    @property
    def is_defect(self) -> bool:
        return self is not DefectClass.OK


# The order is the model's output order; checkpoints store it and loading checks it.
CLASS_NAMES: tuple[str, ...] = tuple(c.value for c in DefectClass)
DEFECT_CLASSES: tuple[str, ...] = tuple(c for c in CLASS_NAMES if c != DefectClass.OK)


class AutomationLevel(StrEnum):
    """Lowest to highest; `rank` orders them so 'raise' and 'lower' are comparisons."""

    HUMAN_ONLY = "human_only"
    SHADOW = "shadow"
    ASSIST = "assist"
    PARTIAL = "partial"
    FULL = "full"

    @property
    def rank(self) -> int:
        return list(AutomationLevel).index(self)

    @property
    def runs_model(self) -> bool:
        return self is not AutomationLevel.HUMAN_ONLY

    @property
    def needs_evidence(self) -> bool:
        """Raising to these levels lets the model decide parts, so it is gated by evidence."""
        return self in (AutomationLevel.PARTIAL, AutomationLevel.FULL)


class Route(StrEnum):
    AUTO = "auto"  # the model decided
    REVIEW = "review"  # a human decides; the line waits (decision pending)
    AUDIT = "audit"  # the model decided; a human checks blind afterwards


class Decision(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"


class DecidedBy(StrEnum):
    MODEL = "model"
    HUMAN = "human"


class Role(StrEnum):
    INSPECTOR = "inspector"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    def may(self, needed: Role) -> bool:
        """Roles nest: an admin may do what a supervisor may, a supervisor what an inspector may."""
        order = [Role.INSPECTOR, Role.SUPERVISOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class TaskReason(StrEnum):
    DECIDE = "decide"  # the line is waiting for this human verdict
    AUDIT = "audit"  # blind check of a decision the model already made


class TaskStatus(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    DONE = "done"
    ESCALATED = "escalated"  # an inspector skipped it as unclear; a supervisor decides


def decision_for_class(label: str) -> Decision:
    """The line's decision is binary: ok passes, any defect fails."""
    return Decision.PASS if label == DefectClass.OK else Decision.FAIL


@dataclass(frozen=True)
class Prediction:
    """The model's calibrated output for one image."""

    probabilities: dict[str, float]  # class name -> calibrated probability, sums to 1
    model_version: str
    heatmap: np.ndarray | None = field(default=None, compare=False)  # (H, W) float32 in [0, 1]

    @property
    def predicted_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.predicted_class]

    @property
    def p_ok(self) -> float:
        return self.probabilities[DefectClass.OK]

    @property
    def p_defect(self) -> float:
        return 1.0 - self.p_ok


# One-sided partial automation: a side whose threshold is "never" is not automated at all, so
# at partial those parts always go to a human (e.g. auto-fail when confident, never auto-pass).
# In Python and in the database it is None; in JSON, on the command line and in the UI it is
# the word "never", so a threshold read from the API can be sent back to it unchanged.
NEVER: Final = "never"


def threshold_json(value: float | None) -> float | str:
    return NEVER if value is None else value


def threshold_text(value: float | None, spec: str = "g") -> str:
    """A threshold as the pages, the logs and the command line print it."""
    return NEVER if value is None else format(value, spec)


# A partial-automation threshold: auto-decide that side when its probability is >= it;
# None: never (see NEVER). Written to JSON as a number or "never".
Threshold = Annotated[
    float | None,
    PlainSerializer(threshold_json, return_type=float | Literal["never"], when_used="json"),
]


@dataclass(frozen=True)
class LinePolicy:
    """What routing needs to know about a line, frozen at the moment an image arrives."""

    level: AutomationLevel
    pass_threshold: Threshold = 0.98  # auto-pass when P(ok) >= this; None: never auto-pass
    fail_threshold: Threshold = 0.98  # auto-fail when P(defect) >= this; None: never auto-fail
    audit_rate: float = 0.02  # fraction of auto-decisions also sent to a human, blind
