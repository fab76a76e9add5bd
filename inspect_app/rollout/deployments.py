"""A line's deployment in the database: champion, candidate, mode, and every change to them.

The use cases the API, the CLI and the UI share. Each change is one transaction that bumps
`Deployment.revision` and writes an event with who, why and the evidence at that moment;
every service process follows the revision (`rollout.serving`).

A line without a deployment row runs the service's configured model (`default_version`)
alone; the first change writes the row.

Safety rules, enforced here and therefore everywhere:
- a candidate must be registered and loadable: `warm(version)` (the serving pool) is called
  before the change commits, and a load that fails refuses the change with the reason;
- at partial or full, a mode in which the candidate decides parts needs the candidate to pass
  the line's evidence gate on its own (shadow) evidence first, at its own thresholds: a new
  model's probabilities are calibrated differently, so the champion's thresholds are not its
  own. When the candidate leaves shadow its thresholds are recommended on its own evidence
  (`evidence.recommend_on_evidence`: the fixed-sequence walk, which keeps its guarantee
  although the same labels choose and test), or stated by a supervisor (gated all the same);
  they are stored with the deployment, decide the candidate's parts, judge its canary steps,
  and become the line's thresholds at finalize. A rollback drops them;
- a rollback (by a supervisor, an alarm, or the candidate's errors and latency) quarantines
  the candidate: it decides nothing until a supervisor re-arms it with a reason, so an
  automatic rollback never flaps back and forth.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from inspect_app.domain import AutomationLevel, Role, Threshold, threshold_json, threshold_text
from inspect_app.events import record_event
from inspect_app.rollout.evidence import (
    VersionEvidence,
    compare_versions,
    decided_outcome,
    gate_on_evidence,
    line_targets,
    recommend_on_evidence,
    version_evidence,
)
from inspect_app.rollout.policy import (
    DEFAULT_STEPS,
    DeploymentState,
    Mode,
    StepVerdict,
    bandit_probability,
    canary_verdict,
)
from inspect_app.rollout.registry import get_version
from inspect_app.storage.tables import BanditArm, Deployment, Label, Line, User
from inspect_app.timeutil import utcnow

logger = logging.getLogger(__name__)

Warm = Callable[[str], None]
# a supervisor's (pass, fail) for a candidate: numbers in (0.5, 1], "never" or None (never)
StatedThresholds = tuple[float | str | None, float | str | None]
# how a candidate's thresholds are chosen (`_gate_for_candidate`): recommended on its own
# evidence, a pair with who chose it ("supervisor" or the stored source), or None: the line's
RECOMMEND = "recommend"
ThresholdChoice = tuple[tuple[Threshold, Threshold], str] | Literal["recommend"] | None


class DeploymentError(Exception):
    """A deployment change that cannot be made; the message says why."""


class LineMissing(DeploymentError, LookupError):
    pass


class InvalidDeployment(DeploymentError, ValueError):
    pass


class DeploymentConflict(InvalidDeployment):
    """A well-formed request the deployment's present state does not allow (no candidate to
    roll back, one already rolled back, a canary at its last step): the same request may be
    right later, so the API answers 409 with the state, not 422. `state` holds the
    deployment's figures at the refusal."""

    def __init__(self, reason: str, state: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.state = state or {}


class DeploymentNotPermitted(DeploymentError, PermissionError):
    pass


class RolloutRefused(DeploymentError):
    """Refused on the evidence or on a failed load: `evidence` holds the figures."""

    def __init__(self, reason: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.evidence = evidence or {}


@dataclass(frozen=True)
class DeploymentRequest:
    """What a supervisor asks for; None keeps the current value (or the default)."""

    candidate: str | None
    mode: Mode
    share: float | None = None  # ab: the candidate's split; canary: ignored (steps)
    shadow_share: float | None = None
    steps: Sequence[float] | None = None
    step_min_labels: int | None = None
    candidate_audit_rate: float | None = None
    exploration: float | None = None
    # (pass, fail) the candidate is to decide at, stated by the supervisor (None or "never"
    # on a side: never); None: recommended on its own evidence when it starts deciding parts
    thresholds: StatedThresholds | None = None


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as the API, CLI and UI show it."""

    line_id: str
    champion: str
    candidate: str | None
    mode: Mode
    share: float  # of decisions the candidate takes now
    shadow_share: float
    steps: list[float]
    step: int
    step_min_labels: int
    step_started_at: Any
    candidate_audit_rate: float
    exploration: float
    quarantined: bool
    quarantine_reason: str | None
    revision: int
    updated_by: str
    updated_at: Any
    bandit: dict[str, dict[str, int]] = field(default_factory=dict)
    # the candidate's own thresholds ({"pass_threshold", "fail_threshold", "source"}, "never"
    # on a side that never decides); None: it decides at the line's
    candidate_thresholds: dict[str, Any] | None = None


def _check_share(name: str, value: float, *, open_low: bool = False) -> float:
    value = float(value)
    if not (0.0 < value <= 1.0 if open_low else 0.0 <= value <= 1.0):
        raise InvalidDeployment(f"{name} must lie in {'(0' if open_low else '[0'}, 1], got {value}")
    return value


def _check_steps(steps: Sequence[float]) -> list[float]:
    values = [_check_share("each canary step", s, open_low=True) for s in steps]
    if not values:
        raise InvalidDeployment("a canary needs at least one step")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise InvalidDeployment(f"canary steps must increase, got {values}")
    if values[-1] != 1.0:
        raise InvalidDeployment(f"the last canary step must be 1 (every part), got {values[-1]}")
    return values


def _require_supervisor(actor: User, what: str) -> None:
    if not Role(actor.role).may(Role.SUPERVISOR):
        raise DeploymentNotPermitted(
            f"user {actor.name!r} ({actor.role}) may not {what}: supervisors and admins only"
        )


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidDeployment("a reason is required: it goes into the audit trail")
    if len(reason) > 1000:
        raise InvalidDeployment("the reason must be at most 1000 characters")
    return reason


def _line(session: Session, line_id: str) -> Line:
    line = session.get(Line, line_id)
    if line is None:
        raise LineMissing(f"no line {line_id!r}")
    return line


def _default_row(line_id: str, default_version: str) -> Deployment:
    return Deployment(
        line_id=line_id,
        champion=default_version,
        steps=list(DEFAULT_STEPS),
        revision=0,
        updated_by="system",
    )


def get_deployment(session: Session, line_id: str, default_version: str) -> Deployment:
    """The line's deployment row, or (unsaved) the configured model alone."""
    _line(session, line_id)
    row = session.get(Deployment, line_id)
    return row if row is not None else _default_row(line_id, default_version)


def _locked(session: Session, line_id: str, default_version: str) -> Deployment:
    """The row under a lock (PostgreSQL) so two supervisors' changes apply one after the
    other; created from the default at the first change."""
    _line(session, line_id)
    row = session.get(Deployment, line_id, with_for_update=True, populate_existing=True)
    if row is None:
        row = _default_row(line_id, default_version)
        session.add(row)
        session.flush()
    return row


def _arms(session: Session, line_id: str) -> dict[str, tuple[int, int]]:
    rows = session.exec(select(BanditArm).where(BanditArm.line_id == line_id))
    return {r.model_version: (r.successes, r.failures) for r in rows}


def view(session: Session, line_id: str, default_version: str) -> DeploymentView:
    row = get_deployment(session, line_id, default_version)
    state = state_of(row, _arms(session, line_id))
    arms = _arms(session, line_id) if row.mode == Mode.BANDIT.value else {}
    return DeploymentView(
        line_id=row.line_id,
        champion=row.champion,
        candidate=row.candidate,
        mode=Mode(row.mode),
        share=state.candidate_share(),
        shadow_share=row.shadow_share,
        steps=[float(s) for s in row.steps],
        step=row.step,
        step_min_labels=row.step_min_labels,
        step_started_at=row.step_started_at,
        candidate_audit_rate=row.candidate_audit_rate,
        exploration=row.exploration,
        quarantined=row.quarantined,
        quarantine_reason=row.quarantine_reason,
        revision=row.revision,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        bandit={v: {"successes": s, "failures": f} for v, (s, f) in arms.items()},
        candidate_thresholds=_thresholds_json(row),
    )


def state_of(row: Deployment, arms: dict[str, tuple[int, int]] | None = None) -> DeploymentState:
    """The snapshot the pipeline routes by (bandit probability computed once, here)."""
    mode = Mode(row.mode)
    bandit_p = None
    if mode is Mode.BANDIT and row.candidate is not None:
        arms = arms or {}
        bandit_p = bandit_probability(
            arms.get(row.champion, (0, 0)), arms.get(row.candidate, (0, 0)), row.exploration
        )
    share = row.share
    if mode is Mode.CANARY:
        share = float(row.steps[min(row.step, len(row.steps) - 1)])
    return DeploymentState(
        line_id=row.line_id,
        champion=row.champion,
        candidate=row.candidate,
        mode=mode,
        share=share,
        shadow_share=row.shadow_share,
        candidate_audit_rate=row.candidate_audit_rate,
        quarantined=row.quarantined,
        revision=row.revision,
        bandit_candidate_p=bandit_p,
        candidate_thresholds=candidate_thresholds(row),
    )


def candidate_thresholds(row: Deployment) -> tuple[Threshold, Threshold] | None:
    """(pass, fail) the candidate decides at, or None: the line's thresholds."""
    stored = row.candidate_thresholds
    if row.candidate is None or not stored:
        return None
    return stored.get("pass_threshold"), stored.get("fail_threshold")


def _stored_by(row: Deployment) -> str | None:
    return (row.candidate_thresholds or {}).get("source")


def _thresholds_json(row: Deployment) -> dict[str, Any] | None:
    pair = candidate_thresholds(row)
    if pair is None:
        return None
    return {
        "pass_threshold": threshold_json(pair[0]),
        "fail_threshold": threshold_json(pair[1]),
        "source": _stored_by(row),
    }


def judged_thresholds(line: Line, row: Deployment) -> tuple[Threshold, Threshold]:
    """The thresholds the candidate's decisions are judged at: its own, else the line's."""
    pair = candidate_thresholds(row)
    return (line.pass_threshold, line.fail_threshold) if pair is None else pair


def all_states(session: Session) -> dict[str, DeploymentState]:
    """Every line that has a deployment row (others run the configured model)."""
    rows = list(session.exec(select(Deployment)))
    arms: dict[str, dict[str, tuple[int, int]]] = {}
    for arm in session.exec(select(BanditArm)):
        arms.setdefault(arm.line_id, {})[arm.model_version] = (arm.successes, arm.failures)
    return {row.line_id: state_of(row, arms.get(row.line_id)) for row in rows}


def revisions(session: Session) -> dict[str, int]:
    """The cheap poll: one small query tells a process whether anything changed."""
    rows = session.exec(select(Deployment.line_id, Deployment.revision)).all()
    return {line_id: int(revision) for line_id, revision in rows}


def bandit_revision(session: Session) -> tuple[int, int]:
    """(count, total reward updates) over every bandit arm: changes with every reward."""
    rows = session.exec(select(BanditArm.successes, BanditArm.failures)).all()
    return len(rows), sum(int(s) + int(f) for s, f in rows)


def _figures_of(row: Deployment) -> dict[str, Any]:
    return {
        "champion": row.champion,
        "candidate": row.candidate,
        "mode": row.mode,
        "share": row.share,
        "shadow_share": row.shadow_share,
        "steps": list(row.steps),
        "step": row.step,
        "step_min_labels": row.step_min_labels,
        "candidate_audit_rate": row.candidate_audit_rate,
        "exploration": row.exploration,
        "quarantined": row.quarantined,
        "candidate_thresholds": _thresholds_json(row),
        "revision": row.revision,
    }


def _record_change(
    session: Session,
    row: Deployment,
    *,
    kind: str,
    actor: str,
    reason: str,
    before: dict[str, Any],
    details: dict[str, Any] | None = None,
) -> None:
    """Bump the revision (every process follows it) and write the event, in the caller's
    transaction: the one place a deployment change is stamped and logged."""
    row.revision += 1
    row.updated_by = actor
    row.updated_at = utcnow()
    session.add(row)
    record_event(
        session,
        kind=kind,
        actor=actor,
        reason=reason,
        line_id=row.line_id,
        details={"before": before, "after": _figures_of(row), **(details or {})},
    )


def _check_thresholds(pair: StatedThresholds) -> tuple[Threshold, Threshold]:
    """A supervisor's pair as a line would take it: each in (0.5, 1] or never, not both never."""
    from inspect_app.lines import InvalidLineSettings, parse_threshold

    try:
        checked = (
            parse_threshold("pass_threshold", "never" if pair[0] is None else pair[0]),
            parse_threshold("fail_threshold", "never" if pair[1] is None else pair[1]),
        )
    except InvalidLineSettings as exc:
        raise InvalidDeployment(str(exc)) from exc
    if checked == (None, None):
        raise InvalidDeployment(
            "a candidate's thresholds with both sides never would let it decide nothing"
        )
    return checked


def _stored_choice(row: Deployment) -> tuple[tuple[Threshold, Threshold], str] | None:
    """The candidate's stored thresholds with who chose them, or None: the line's."""
    pair = candidate_thresholds(row)
    return None if pair is None else (pair, _stored_by(row) or "recommended")


def _gate_for_candidate(
    session: Session,
    line: Line,
    candidate: str,
    *,
    choice: ThresholdChoice,
    required: bool = True,
    log: bool = True,
    evidence: VersionEvidence | None = None,
) -> dict[str, Any]:
    """The candidate's gate on its own evidence, at the thresholds it is to decide at.

    `choice`: RECOMMEND (recommended on this very evidence), a (pass, fail) pair with who
    chose it (a supervisor, or the deployment's stored choice), or None (the line's). The
    figures (the choice, the gate at it, and the gate at the line's thresholds beside it)
    go into the change's event. `required` (at partial/full): a failing gate refuses.
    `evidence`: the candidate's since the line's evidence era began, when already read."""
    if evidence is None:
        evidence = version_evidence(session, line, candidate, since=line.evidence_since)
    figures: dict[str, Any] = {"candidate": candidate, "level": line.level, "n_labeled": evidence.n}
    pair: tuple[Threshold, Threshold] | None
    if choice == RECOMMEND:
        rec = recommend_on_evidence(evidence, line_targets(line))
        pair = (rec.pass_threshold, rec.fail_threshold)
        figures["source"] = "recommended"
        figures["recommendation"] = {"reason": rec.reason, "weighted": rec.weighted}
        if pair == (None, None):
            pair = None  # nothing to recommend: judged at the line's, which fail or pass alone
    elif choice is None:
        pair = None
    else:
        pair, figures["source"] = choice
    judged = (line.pass_threshold, line.fail_threshold) if pair is None else pair
    if pair is None:
        figures["source"] = "line"
    result = gate_on_evidence(line, evidence, thresholds=judged)
    at_line = result if pair is None else gate_on_evidence(line, evidence)
    figures.update(
        pass_threshold=threshold_json(judged[0]),
        fail_threshold=threshold_json(judged[1]),
        thresholds=None if pair is None else list(pair),
        passed=result.passed,
        reason=result.reason,
        coverage=result.what_if.coverage,
        escape=asdict(result.escape),
        false_reject=asdict(result.false_reject),
        at_line_thresholds={
            "pass_threshold": threshold_json(line.pass_threshold),
            "fail_threshold": threshold_json(line.fail_threshold),
            "passed": at_line.passed,
            "reason": at_line.reason,
        },
    )
    logger.log(
        logging.INFO if log else logging.DEBUG,
        "line %s: candidate %s judged at pass %s / fail %s (%s) on %d labels: %s; at the "
        "line's pass %s / fail %s: %s",
        line.id,
        candidate,
        threshold_text(judged[0]),
        threshold_text(judged[1]),
        figures["source"],
        evidence.n,
        "passes" if result.passed else "fails",
        threshold_text(line.pass_threshold),
        threshold_text(line.fail_threshold),
        "passes" if at_line.passed else "fails",
    )
    if required and not result.passed:
        raise RolloutRefused(
            f"Candidate {candidate} may not decide parts on line {line.id} at {line.level}: "
            f"it has not passed the line's gate on its own shadow evidence at pass "
            f"{threshold_text(judged[0])} / fail {threshold_text(judged[1])} "
            f"({figures['source']}). {result.reason}",
            figures,
        )
    return figures


def _store_thresholds(row: Deployment, figures: dict[str, Any]) -> None:
    """Keep the thresholds the gate was judged at with the deployment (the line's: none)."""
    pair = figures.get("thresholds")
    if pair is None:
        row.candidate_thresholds = None
        return
    row.candidate_thresholds = {
        "pass_threshold": pair[0],
        "fail_threshold": pair[1],
        "source": figures["source"],
    }


def _warm(warm: Warm | None, version: str) -> None:
    if warm is None:
        return
    try:
        warm(version)
    except Exception as exc:
        raise RolloutRefused(
            f"model {version} could not be loaded, so no traffic moves to it: "
            f"{type(exc).__name__}: {exc}",
            {"version": version},
        ) from exc


def set_deployment(
    session: Session,
    line_id: str,
    request: DeploymentRequest,
    *,
    actor: User,
    reason: str,
    default_version: str,
    warm: Warm | None = None,
) -> Deployment:
    """Start, change or end a rollout (candidate None: the champion alone, mode none)."""
    _require_supervisor(actor, "change a line's deployment")
    reason = _reason(reason)
    mode = Mode(request.mode)
    line = _line(session, line_id)
    row = _locked(session, line_id, default_version)
    before = _figures_of(row)
    if request.candidate is None:
        if mode is not Mode.NONE:
            raise InvalidDeployment(f"mode {mode} needs a candidate version")
    else:
        get_version(session, request.candidate)
        if request.candidate == row.champion:
            raise InvalidDeployment(f"{request.candidate} is already the line's champion")
        if mode is Mode.NONE:
            raise InvalidDeployment(
                "a candidate needs a mode: shadow, canary, blue_green, ab or bandit"
            )
    evidence: dict[str, Any] = {}
    level = AutomationLevel(line.level)
    new_candidate = request.candidate != row.candidate
    stated = None if request.thresholds is None else _check_thresholds(request.thresholds)
    thresholds_figures: dict[str, Any] | None = None
    if request.candidate is not None and mode.candidate_decides:
        # Its own thresholds: those stated, those it already decides at, else recommended
        # now on its own evidence (it starts deciding parts).
        keep = (
            None if new_candidate or not Mode(row.mode).candidate_decides else _stored_choice(row)
        )
        thresholds_figures = _gate_for_candidate(
            session,
            line,
            request.candidate,
            choice=(stated, "supervisor") if stated is not None else keep or RECOMMEND,
            required=level.needs_evidence,
        )
        evidence["gate"] = thresholds_figures
    elif stated is not None:
        raise InvalidDeployment(
            f"thresholds are for a candidate that decides parts; mode {mode} decides none"
        )
    if request.candidate is not None:
        _warm(warm, request.candidate)

    row.candidate = request.candidate
    row.mode = mode.value
    if request.steps is not None:
        row.steps = _check_steps(request.steps)
    if request.shadow_share is not None:
        row.shadow_share = _check_share("shadow_share", request.shadow_share, open_low=True)
    if request.step_min_labels is not None:
        if not 1 <= request.step_min_labels <= 1_000_000:
            raise InvalidDeployment("step_min_labels must lie in 1 .. 1000000")
        row.step_min_labels = int(request.step_min_labels)
    if request.candidate_audit_rate is not None:
        row.candidate_audit_rate = _check_share(
            "candidate_audit_rate", request.candidate_audit_rate
        )
    if request.exploration is not None:
        row.exploration = _check_share("exploration", request.exploration)
    if mode is Mode.AB:
        if request.share is None and not 0.0 < row.share < 1.0:
            row.share = 0.5
        elif request.share is not None:
            share = _check_share("share", request.share, open_low=True)
            if share >= 1.0:
                raise InvalidDeployment("an A/B split gives each arm a share: below 1")
            row.share = share
    elif mode is Mode.BLUE_GREEN:
        row.share = 1.0
    elif mode is Mode.CANARY:
        row.step = 0
        row.share = float(row.steps[0])
        row.step_started_at = utcnow()
    else:
        row.share = 0.0
    if (
        mode is Mode.BANDIT
        and request.candidate is not None
        and (new_candidate or before["mode"] != Mode.BANDIT.value)
    ):
        # A new bandit starts from flat posteriors; a change to a running one (its
        # exploration floor, say) keeps what the labels have taught it so far.
        _reset_arms(session, line_id, (row.champion, request.candidate))
    if new_candidate or request.candidate is None:
        row.quarantined = False
        row.quarantine_reason = None
    if thresholds_figures is None:
        row.candidate_thresholds = None  # shadow or none: the candidate decides nothing
    else:
        _store_thresholds(row, thresholds_figures)
    if row.quarantined and mode.candidate_decides:
        raise RolloutRefused(
            f"candidate {row.candidate} is quarantined ({row.quarantine_reason}); re-arm it "
            "with a reason before it decides parts again",
            {"quarantine_reason": row.quarantine_reason},
        )
    _record_change(session, row, kind="deployment_change", actor=actor.name, reason=reason,
                   before=before, details=evidence)  # fmt: skip
    session.commit()
    session.refresh(row)
    return row


def _reset_arms(session: Session, line_id: str, versions: Sequence[str]) -> None:
    for existing in session.exec(select(BanditArm).where(BanditArm.line_id == line_id)):
        session.delete(existing)
    session.flush()
    for version in versions:
        session.add(BanditArm(line_id=line_id, model_version=version))
    session.flush()


def _candidate_row(session: Session, line_id: str, default_version: str) -> Deployment:
    row = _locked(session, line_id, default_version)
    if row.candidate is None:
        raise DeploymentConflict(f"line {line_id} has no candidate", _figures_of(row))
    return row


def step_verdict(session: Session, line: Line, row: Deployment) -> StepVerdict:
    """The current canary step on the candidate's blind labels of the parts it decided."""
    assert row.candidate is not None
    evidence = version_evidence(
        session, line, row.candidate, since=row.step_started_at, decided_only=True
    )
    pass_threshold, fail_threshold = judged_thresholds(line, row)
    return canary_verdict(
        evidence.p_ok,
        evidence.human_defect,
        level=AutomationLevel(line.level),
        pass_threshold=pass_threshold,
        fail_threshold=fail_threshold,
        targets=line_targets(line),
        min_labels=row.step_min_labels,
    )


def _verdict_figures(verdict: StepVerdict) -> dict[str, Any]:
    return {
        "outcome": verdict.outcome,
        "reason": verdict.reason,
        "labels": verdict.labels,
        "min_labels": verdict.min_labels,
        "escape": asdict(verdict.gate.escape),
        "false_reject": asdict(verdict.gate.false_reject),
    }


def promote(
    session: Session,
    line_id: str,
    *,
    actor: User,
    reason: str,
    default_version: str,
    warm: Warm | None = None,
    thresholds: StatedThresholds | None = None,
) -> Deployment:
    """shadow -> canary (first step); canary -> its next step, only on a passing step.

    Leaving shadow the candidate gets its own thresholds: `thresholds` (pass, fail) as a
    supervisor states them, else recommended on its own shadow evidence; at partial/full it
    must pass the line's gate at them."""
    _require_supervisor(actor, "promote a candidate")
    reason = _reason(reason)
    stated = None if thresholds is None else _check_thresholds(thresholds)
    line = _line(session, line_id)
    row = _candidate_row(session, line_id, default_version)
    if row.quarantined:
        raise RolloutRefused(
            f"candidate {row.candidate} is quarantined ({row.quarantine_reason}); re-arm it first"
        )
    before = _figures_of(row)
    evidence: dict[str, Any] = {}
    mode = Mode(row.mode)
    if mode is Mode.SHADOW:
        assert row.candidate is not None
        evidence["gate"] = _gate_for_candidate(
            session,
            line,
            row.candidate,
            choice=(stated, "supervisor") if stated is not None else RECOMMEND,
            required=AutomationLevel(line.level).needs_evidence,
        )
        _warm(warm, row.candidate)
        _store_thresholds(row, evidence["gate"])
        row.mode = Mode.CANARY.value
        row.step = 0
    elif stated is not None:
        raise InvalidDeployment(
            "a candidate's thresholds are chosen when it leaves shadow; a running canary "
            "keeps the ones its steps are judged at (roll back, or start it again)"
        )
    elif mode is Mode.CANARY:
        verdict = step_verdict(session, line, row)
        evidence["step"] = _verdict_figures(verdict)
        if verdict.outcome != "pass":
            raise RolloutRefused(
                f"step {row.step + 1} of {len(row.steps)} has not passed: {verdict.reason}",
                evidence,
            )
        if row.step + 1 >= len(row.steps):
            raise DeploymentConflict(
                "the canary is at its last step: finalize it", _figures_of(row)
            )
        row.step += 1
    else:
        raise DeploymentConflict(
            f"promote moves shadow -> canary -> next step; in mode {mode} use finalize or rollback",
            _figures_of(row),
        )
    row.share = float(row.steps[row.step])
    row.step_started_at = utcnow()
    _record_change(session, row, kind="rollout_promote", actor=actor.name, reason=reason,
                   before=before, details=evidence)  # fmt: skip
    session.commit()
    session.refresh(row)
    return row


def quarantine(
    session: Session,
    line_id: str,
    *,
    actor: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
    automatic: bool = False,
) -> Deployment | None:
    """Roll the candidate back in the caller's transaction (the monitor's alarm action):
    it decides nothing from the next image on and stays quarantined until re-armed.

    `actor` is a user's name or "system". Returns None when there is nothing to roll back
    (no candidate, or already quarantined), so an alarm that keeps firing writes one event."""
    reason = _reason(reason)
    row = session.get(Deployment, line_id, with_for_update=True, populate_existing=True)
    if row is None or row.candidate is None or row.quarantined:
        return None
    before = _figures_of(row)
    row.quarantined = True
    row.quarantine_reason = reason[:1000]
    row.share = 0.0
    row.candidate_thresholds = None  # re-armed, it is judged afresh on its evidence
    _record_change(session, row, kind="rollout_rollback", actor=actor, reason=reason,
                   before=before, details={"automatic": automatic, **(evidence or {})})  # fmt: skip
    logger.warning(
        "line %s: candidate %s rolled back by %s (%s)", line_id, row.candidate, actor, reason
    )
    return row


def rollback(
    session: Session,
    line_id: str,
    *,
    actor: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
    automatic: bool = False,
) -> Deployment | None:
    """`quarantine`, committed."""
    row = quarantine(
        session, line_id, actor=actor, reason=reason, evidence=evidence, automatic=automatic
    )
    if row is None:
        session.rollback()
        return None
    session.commit()
    session.refresh(row)
    return row


def rollback_by(session: Session, line_id: str, *, actor: User, reason: str) -> Deployment:
    """A supervisor's rollback (the API's, the CLI's and the UI's button)."""
    _require_supervisor(actor, "roll back a candidate")
    _line(session, line_id)
    row = session.get(Deployment, line_id)
    if row is None or row.candidate is None:
        raise DeploymentConflict(
            f"line {line_id} has no candidate to roll back",
            None if row is None else _figures_of(row),
        )
    if row.quarantined:
        raise DeploymentConflict(
            f"candidate {row.candidate} is already rolled back ({row.quarantine_reason})",
            _figures_of(row),
        )
    rolled = rollback(session, line_id, actor=actor.name, reason=reason)
    assert rolled is not None
    return rolled


def rearm(
    session: Session, line_id: str, *, actor: User, reason: str, default_version: str
) -> Deployment:
    """Lift a quarantine; a canary starts again at its first step."""
    _require_supervisor(actor, "re-arm a candidate")
    reason = _reason(reason)
    row = _candidate_row(session, line_id, default_version)
    if not row.quarantined:
        raise DeploymentConflict(f"candidate {row.candidate} is not quarantined", _figures_of(row))
    before = _figures_of(row)
    row.quarantined = False
    row.quarantine_reason = None
    mode = Mode(row.mode)
    if mode is Mode.CANARY:
        row.step = 0
        row.share = float(row.steps[0])
        row.step_started_at = utcnow()
    elif mode is Mode.BLUE_GREEN:
        row.share = 1.0
    details: dict[str, Any] = {}
    if mode.candidate_decides:
        # its thresholds were dropped at the rollback: recommended again on its evidence now
        # (logged, not gated: a re-arm has never been, it is a supervisor's decision)
        assert row.candidate is not None
        details["gate"] = _gate_for_candidate(
            session, _line(session, line_id), row.candidate, choice=RECOMMEND, required=False
        )
        _store_thresholds(row, details["gate"])
    _record_change(session, row, kind="rollout_rearm", actor=actor.name, reason=reason,
                   before=before, details=details)  # fmt: skip
    session.commit()
    session.refresh(row)
    return row


def finalize(
    session: Session,
    line_id: str,
    *,
    actor: User,
    reason: str,
    default_version: str,
    warm: Warm | None = None,
) -> Deployment:
    """The candidate becomes the champion; the old champion is no longer needed."""
    _require_supervisor(actor, "finalize a rollout")
    reason = _reason(reason)
    line = _line(session, line_id)
    row = _candidate_row(session, line_id, default_version)
    if row.quarantined:
        raise RolloutRefused(f"candidate {row.candidate} is quarantined: it cannot be finalized")
    assert row.candidate is not None
    evidence: dict[str, Any] = {}
    # From shadow it never had thresholds of its own: recommended now, as a promote would.
    from_shadow = RECOMMEND if Mode(row.mode) is Mode.SHADOW else None
    evidence["gate"] = _gate_for_candidate(
        session,
        line,
        row.candidate,
        choice=_stored_choice(row) or from_shadow,
        required=AutomationLevel(line.level).needs_evidence,
    )
    _warm(warm, row.candidate)
    before = _figures_of(row)
    new_thresholds = evidence["gate"]["thresholds"]
    row.champion = row.candidate
    row.candidate = None
    row.candidate_thresholds = None
    row.mode = Mode.NONE.value
    row.share = 0.0
    row.step = 0
    _record_change(session, row, kind="model_switch", actor=actor.name, reason=reason,
                   before=before, details={"finalized": True, **evidence})  # fmt: skip
    if new_thresholds is not None:
        _thresholds_to_line(
            session,
            line,
            tuple(new_thresholds),
            actor=actor.name,
            reason=reason,
            version=row.champion,
            figures=evidence["gate"],
        )
    session.commit()
    session.refresh(row)
    return row


def _thresholds_to_line(
    session: Session,
    line: Line,
    thresholds: tuple[Threshold, ...],
    *,
    actor: str,
    reason: str,
    version: str,
    figures: dict[str, Any],
) -> None:
    """The finalized candidate's thresholds become the line's (in the caller's transaction):
    its probabilities are the line's from now on, and the champion's thresholds were not
    made for them. Logged with before and after; the line's live audits start a new era."""
    before = {
        "pass_threshold": threshold_json(line.pass_threshold),
        "fail_threshold": threshold_json(line.fail_threshold),
    }
    line.pass_threshold, line.fail_threshold = thresholds[0], thresholds[1]
    line.updated_at = utcnow()
    session.add(line)
    after = {
        "pass_threshold": threshold_json(line.pass_threshold),
        "fail_threshold": threshold_json(line.fail_threshold),
    }
    record_event(
        session,
        kind="line_thresholds",
        actor=actor,
        reason=f"model {version} finalized with its own thresholds: {reason}",
        line_id=line.id,
        details={"before": before, "after": after, "model_version": version, "gate": figures},
    )
    logger.info(
        "line %s: thresholds pass %s / fail %s -> pass %s / fail %s with model %s (%s, by %s)",
        line.id,
        before["pass_threshold"],
        before["fail_threshold"],
        after["pass_threshold"],
        after["fail_threshold"],
        version,
        figures.get("source"),
        actor,
    )


# --------------------------------------------------------------------------------------------
# After a label: the bandit's reward and the canary's step


def after_label(session: Session, line_id: str, inspection_id: int) -> None:
    """Reward the bandit arm that decided the part (once, on its first blind label) and judge
    the canary step. Called after the label committed; commits its own changes."""
    row = session.get(Deployment, line_id)
    if row is None or row.candidate is None:
        return
    mode = Mode(row.mode)
    if mode is Mode.BANDIT:
        _reward(session, line_id, inspection_id)
    elif mode is Mode.CANARY and not row.quarantined:
        line = _line(session, line_id)
        verdict = step_verdict(session, line, row)
        if verdict.outcome == "fail":
            rollback(
                session,
                line_id,
                actor="system",
                reason=f"canary step {row.step + 1} failed: {verdict.reason}",
                evidence={"step": _verdict_figures(verdict)},
                automatic=True,
            )
        elif verdict.outcome == "pass" and row.step + 1 < len(row.steps):
            _advance(session, line_id, verdict)


def _advance(session: Session, line_id: str, verdict: StepVerdict) -> None:
    row = session.get(Deployment, line_id, with_for_update=True, populate_existing=True)
    if row is None or row.quarantined or row.step + 1 >= len(row.steps):
        session.rollback()
        return
    before = _figures_of(row)
    row.step += 1
    row.share = float(row.steps[row.step])
    row.step_started_at = utcnow()
    _record_change(session, row, kind="rollout_promote", actor="system",
                   reason=f"canary step passed on evidence: {verdict.reason}", before=before,
                   details={"step": _verdict_figures(verdict)})  # fmt: skip
    session.commit()


def _reward(session: Session, line_id: str, inspection_id: int) -> None:
    # Once per part: only its first blind label rewards (a relabel changes nothing here).
    blind = session.exec(
        select(func.count())
        .select_from(Label)
        .where(Label.inspection_id == inspection_id, col(Label.model_shown).is_(False))
    ).one()
    if int(blind) != 1:
        return
    outcome = decided_outcome(session, inspection_id)
    if outcome is None:
        return
    version, _arm, agreed = outcome
    column = BanditArm.successes if agreed else BanditArm.failures
    session.exec(
        update(BanditArm)
        .where(col(BanditArm.line_id) == line_id, col(BanditArm.model_version) == version)
        .values({column.key: column + 1, "updated_at": utcnow()})  # type: ignore[attr-defined]
    )
    session.commit()


def comparison(session: Session, line_id: str, default_version: str) -> dict[str, Any] | None:
    """Champion and candidate side by side (None without a candidate), for the UI and API."""
    line = _line(session, line_id)
    row = get_deployment(session, line_id, default_version)
    if row.candidate is None:
        return None
    # the line's current evidence era: labels from before an alarm are not evidence now
    compared = compare_versions(
        session, line, row.champion, row.candidate, since=line.evidence_since
    )
    own = _gate_for_candidate(
        session,
        line,
        row.candidate,
        choice=_stored_choice(row) or RECOMMEND,
        required=False,
        log=False,  # a view, read often: the changes log their choices
        evidence=compared.candidate.evidence,
    )
    result: dict[str, Any] = {
        "champion": _report(compared.champion),
        "candidate": _report(compared.candidate),
        # the candidate at its own thresholds (stored, else recommended on this evidence)
        "candidate_own": {
            key: own[key]
            for key in (
                "source",
                "pass_threshold",
                "fail_threshold",
                "passed",
                "reason",
                "coverage",
                "escape",
                "false_reject",
            )
        }
        | {"recommendation": (own.get("recommendation") or {}).get("reason")},
        "paired": {
            **asdict(compared.paired),
            "champion_accuracy": compared.paired.champion_accuracy,
            "candidate_accuracy": compared.paired.candidate_accuracy,
        },
    }
    if row.mode == Mode.CANARY.value:
        result["step"] = _verdict_figures(step_verdict(session, line, row))
    return result


def _report(report: Any) -> dict[str, Any]:
    gate = report.gate
    return {
        "model_version": report.model_version,
        "n_labeled": report.evidence.n,
        "passes_gate": gate.passed,
        "gate_reason": gate.reason,
        "coverage": gate.what_if.coverage,
        "escape": asdict(gate.escape),
        "false_reject": asdict(gate.false_reject),
    }


def versions_needed(session: Session, default_version: str) -> set[str]:
    """Every version some line runs (the pool keeps these loaded)."""
    needed = {default_version}
    for row in session.exec(select(Deployment)):
        needed.add(row.champion)
        if row.candidate is not None:
            needed.add(row.candidate)
    return needed


def running_lines(session: Session, default_version: str) -> dict[str, list[tuple[str, str]]]:
    """Version -> [(line id, "champion" | "candidate")] for every line, sorted: what the
    registry listings show beside each version. A line without a deployment row runs the
    service's configured model as its champion."""
    running: dict[str, list[tuple[str, str]]] = {}
    deployed = set()
    for row in session.exec(select(Deployment)):
        deployed.add(row.line_id)
        running.setdefault(row.champion, []).append((row.line_id, "champion"))
        if row.candidate is not None:
            running.setdefault(row.candidate, []).append((row.line_id, "candidate"))
    for line_id in session.exec(select(Line.id)):
        if line_id not in deployed:
            running.setdefault(default_version, []).append((line_id, "champion"))
    return {version: sorted(roles) for version, roles in running.items()}
