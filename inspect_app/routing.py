"""Where an inspection goes, given the model's output and the line's policy (design.md section 2).

Pure: no clock, no random generator, no I/O. The audit lottery's draw is passed in, so tests
choose it and the pipeline owns the generator.

| level      | route                            | decision        | model shown            |
| ---------- | -------------------------------- | --------------- | ---------------------- |
| human_only | review                           | pending (human) | no (model does not run)|
| shadow     | review                           | pending (human) | no (blind)             |
| assist     | review                           | pending (human) | yes                    |
| partial    | auto when confident, else review | model / pending | review: yes; audit: no |
| full       | auto always                      | model           | audit: no              |

At partial either side may be "never" (threshold None, `domain.NEVER`): a line that
auto-fails when confident but never auto-passes sends every part the model calls ok to a
human. At full the thresholds play no part (the model decides every part at P(ok) = 0.5).

An auto-decision also becomes an `audit` (the decision stands, a human checks it blind
afterwards) when ``draw < audit_rate``.

A frame the image gate refused (``usable=False``: blank, over/under-exposed, out of focus,
the wrong size, or unlike anything the model was trained on) is never decided by the model,
whatever the level: a human decides it, and at partial and full without the model's output,
which on such a frame means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspect_app.domain import (
    AutomationLevel,
    DecidedBy,
    Decision,
    LinePolicy,
    Prediction,
    Route,
    TaskReason,
)


@dataclass(frozen=True)
class RoutingOutcome:
    route: Route
    decision: Decision
    decided_by: DecidedBy | None  # None while a human has not decided yet (pending)
    # May the model's output be shown for this part (to the inspector and in the line's answer)?
    # True for assist reviews, partial reviews and auto-decisions; False where a human must
    # judge blind (human_only, shadow, audits).
    show_model: bool
    task_reason: TaskReason | None  # the review task to open, None for a plain auto-decision


def _human_decides(show_model: bool) -> RoutingOutcome:
    return RoutingOutcome(
        route=Route.REVIEW,
        decision=Decision.PENDING,
        decided_by=None,
        show_model=show_model,
        task_reason=TaskReason.DECIDE,
    )


def _model_decides(decision: Decision, draw: float, audit_rate: float) -> RoutingOutcome:
    if draw < audit_rate:
        # Blind, so the audit measures the model rather than the human's trust in it.
        return RoutingOutcome(
            route=Route.AUDIT,
            decision=decision,
            decided_by=DecidedBy.MODEL,
            show_model=False,
            task_reason=TaskReason.AUDIT,
        )
    return RoutingOutcome(
        route=Route.AUTO,
        decision=decision,
        decided_by=DecidedBy.MODEL,
        show_model=True,
        task_reason=None,
    )


def route_inspection(
    prediction: Prediction | None, policy: LinePolicy, draw: float, *, usable: bool = True
) -> RoutingOutcome:
    """Route one inspection.

    `prediction` is None only at ``human_only`` (the model does not run there); at any other
    level a missing prediction is a programming error, not a reason to guess. `draw` is a
    uniform number in [0, 1) for the audit lottery; it matters only for auto-decisions.
    """
    level = policy.level
    if level is AutomationLevel.HUMAN_ONLY:
        return _human_decides(show_model=False)
    if prediction is None:
        raise ValueError(f"level {level} runs the model, but no prediction was given")
    if level is AutomationLevel.SHADOW:
        return _human_decides(show_model=False)
    if level is AutomationLevel.ASSIST:
        return _human_decides(show_model=True)
    if not usable:
        return _human_decides(show_model=False)
    if level is AutomationLevel.PARTIAL:
        # A side whose threshold is None ("never") is not automated: those parts go to a human.
        confident_ok = policy.pass_threshold is not None and (
            prediction.p_ok >= policy.pass_threshold
        )
        confident_defect = policy.fail_threshold is not None and (
            prediction.p_defect >= policy.fail_threshold
        )
        # Both can hold only when thresholds are set below 0.5; the model is then not
        # confident either way, so a human decides rather than an arbitrary tie-break.
        if confident_ok and not confident_defect:
            return _model_decides(Decision.PASS, draw, policy.audit_rate)
        if confident_defect and not confident_ok:
            return _model_decides(Decision.FAIL, draw, policy.audit_rate)
        return _human_decides(show_model=True)
    if level is AutomationLevel.FULL:
        decision = Decision.PASS if prediction.p_ok >= 0.5 else Decision.FAIL
        return _model_decides(decision, draw, policy.audit_rate)
    raise ValueError(f"unknown automation level {level!r}")
