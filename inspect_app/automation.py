"""The evidence behind a line's automation level: the gate for raising it, and the live audit
test that lowers it by itself.

Raising (`evaluate_raise`, called by `inspect_app.lines.change_automation`). A level at which
the model decides parts (partial, full) is allowed only when, for the requested policy, the
one-sided 95% Clopper-Pearson upper bounds of the escape rate (among the labeled parts it
would have auto-passed) and of the false-reject rate (among those it would have auto-failed)
are within the line's targets, each over at least `Line.min_labels` labeled parts. The
labeled parts are the line's representative blind sample for its current model (see
`inspect_app.agreement`).

How the gate reads `full`: at full the model decides every part, passing it when
P(ok) >= 0.5 and failing it otherwise, whatever thresholds the line holds
(`inspect_app.routing`). So the gate for full judges exactly that: the escape rate among all
parts with P(ok) >= 0.5 and the false-reject rate among all parts with P(ok) < 0.5, with the
same targets and minimum counts. It is the partial gate with both thresholds at 0.5 and
nothing left for humans.

Lowering (`after_label`, called by the review queue after every label). At partial and full,
blind audits of the model's decisions keep the escape and false-reject estimates live for the
current settings only. When the sequential test in `inspect_app.evidence.audit_alarm` finds
either rate clearly above its target, the line drops one level (full -> partial,
partial -> assist) if `Line.auto_demote` is on, with an `auto_demotion` event by `system`.

Reading (`recommend_for_line`, `what_if_for_line`, for `GET /lines/{line}/recommendation` and
`/what-if` and the supervisor's console): the same evidence and targets as the gate, so what a
supervisor is shown is what the gate will decide.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from inspect_app.agreement import (
    AuditCounts,
    current_model_version,
    gate_evidence,
    live_audit_counts,
)
from inspect_app.domain import AutomationLevel, LinePolicy, Route, threshold_json, threshold_text
from inspect_app.events import record_event
from inspect_app.evidence import (
    AuditAlarm,
    GateResult,
    GateTargets,
    Recommendation,
    audit_alarm,
    automated_masks,
    check_gate,
    recommend_thresholds,
    what_if,
)
from inspect_app.reference.service import gate_excluded_labelers
from inspect_app.rollout.deployments import candidate_thresholds, quarantine
from inspect_app.rollout.evidence import version_evidence, weighted_what_if
from inspect_app.rollout.policy import Mode
from inspect_app.storage.tables import Deployment, Inspection, Line
from inspect_app.timeutil import as_utc, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateVerdict:
    allowed: bool
    reason: str
    # the figures at that moment, for the 409 and the event log
    evidence: dict = field(default_factory=dict)


def gate_targets(line: Line) -> GateTargets:
    return GateTargets(
        max_escape_rate=line.max_escape_rate,
        max_false_reject_rate=line.max_false_reject_rate,
        min_labels=line.min_labels,
    )


def plain(value: Any) -> Any:
    """Dataclasses, enums and numpy scalars as plain JSON values (the event log, the 409)."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    return json.loads(json.dumps(value, default=_scalar))


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def evaluate_raise(session: Session, line: Line, target: LinePolicy) -> GateVerdict:
    """May `line` go to `target` (a level of partial or full)? Called by PUT .../automation.

    The verdict's evidence holds every figure the decision rests on, so the event log shows
    what the supervisor was shown.
    """
    if not target.level.needs_evidence:
        return GateVerdict(
            allowed=True,
            reason=f"{target.level} lets the model decide nothing: no evidence is needed",
        )
    evidence = gate_evidence(
        session,
        line.id,
        since=line.evidence_since,
        exclude_labelers=gate_excluded_labelers(session, line),
    )
    targets = gate_targets(line)
    figures = {
        "model_version": evidence.model_version,
        "source": evidence.source,
        "confidence": targets.confidence,
        "targets": asdict(targets),
    }
    if evidence.model_version is None:
        return GateVerdict(
            allowed=False,
            reason=(
                f"Not enough evidence for {target.level}: line {line.id} has no model"
                " predictions yet; run it at shadow and label its parts first."
            ),
            evidence=plain({**figures, "n_labeled": 0}),
        )
    result = check_gate(
        what_if(
            evidence.p_ok,
            evidence.human_defect,
            level=target.level,
            pass_threshold=target.pass_threshold,
            fail_threshold=target.fail_threshold,
        ),
        targets,
    )
    logger.info(
        "line %s: gate for %s (pass %s, fail %s) on %d labels of model %s: %s",
        line.id,
        target.level,
        threshold_text(target.pass_threshold, ".4f"),
        threshold_text(target.fail_threshold, ".4f"),
        evidence.n,
        evidence.model_version,
        "passed" if result.passed else "refused",
    )
    verdict = GateVerdict(
        allowed=result.passed,
        reason=result.reason,
        evidence=plain({**figures, **gate_figures(result)}),
    )
    return _with_deciding_candidate(session, line, target, verdict) if result.passed else verdict


def _with_deciding_candidate(
    session: Session, line: Line, target: LinePolicy, verdict: GateVerdict
) -> GateVerdict:
    """A candidate that takes a share of the line's decisions (canary, blue/green, A/B,
    bandit) decides at the new level too, so it must pass the same gate on its own
    evidence: the champion's figures say nothing of the parts the candidate decides."""
    row = session.get(Deployment, line.id)
    if row is None or row.candidate is None or row.quarantined:
        return verdict
    if not Mode(row.mode).candidate_decides:
        return verdict
    evidence = version_evidence(session, line, row.candidate, since=line.evidence_since)
    # at its own thresholds when it has them (`rollout.deployments`): those decide its parts
    own = candidate_thresholds(row)
    pass_threshold, fail_threshold = (
        (target.pass_threshold, target.fail_threshold) if own is None else own
    )
    result = check_gate(
        weighted_what_if(
            evidence,
            level=target.level,
            pass_threshold=pass_threshold,
            fail_threshold=fail_threshold,
        ),
        gate_targets(line),
    )
    figures = {"model_version": row.candidate, "mode": row.mode, **gate_figures(result)}
    logger.info(
        "line %s: gate for %s of candidate %s (%s) on %d labels: %s",
        line.id, target.level, row.candidate, row.mode, evidence.n,
        "passed" if result.passed else "refused",
    )  # fmt: skip
    reason = (
        verdict.reason
        if result.passed
        else f"Candidate {row.candidate} decides parts on line {line.id} ({row.mode}) and "
        f"has not passed the gate for {target.level} on its own evidence. {result.reason}"
    )
    return GateVerdict(
        allowed=result.passed,
        reason=reason,
        evidence=plain({**verdict.evidence, "candidate": figures}),
    )


def gate_figures(result: GateResult) -> dict[str, Any]:
    """The gate result flattened for a reader: the policy, coverage, then each side.
    Thresholds as the API writes them ("never" for a side that does not automate)."""
    what = result.what_if
    return {
        "passed": result.passed,
        "level": what.level,
        "pass_threshold": threshold_json(what.pass_threshold),
        "fail_threshold": threshold_json(what.fail_threshold),
        "n_labeled": what.n_labeled,
        "coverage": what.coverage,
        "to_human": what.to_human,
        "escape": plain(result.escape),
        "false_reject": plain(result.false_reject),
    }


@dataclass(frozen=True)
class LiveEvidence:
    """The audits of the line's current settings era and the test that may demote it."""

    counts: AuditCounts
    checks: list[AuditAlarm]  # escape rate, then false-reject rate


def live_checks(
    session: Session,
    line: Line,
    model_version: str | None,
    thresholds: tuple[float | None, float | None] | None = None,
) -> LiveEvidence:
    counts = live_audit_counts(session, line, model_version, thresholds)
    return LiveEvidence(
        counts=counts,
        checks=[
            audit_alarm("escape_rate", counts.escapes, counts.passed, line.max_escape_rate),
            audit_alarm(
                "false_reject_rate",
                counts.false_rejects,
                counts.failed,
                line.max_false_reject_rate,
            ),
        ],
    )


@dataclass(frozen=True)
class LineRecommendation:
    """What `GET /lines/{line}/recommendation` answers: the thresholds to ask for, the gate at
    the line's current thresholds, the curves, and (at partial/full) the live audits."""

    line_id: str
    level: AutomationLevel
    model_version: str | None
    source: str
    targets: GateTargets
    current: GateResult  # partial at the line's current thresholds, from the same evidence
    recommendation: Recommendation
    live: LiveEvidence | None  # None below partial: nothing is auto-decided, nothing audited


def recommend_for_line(
    session: Session, line: Line, *, include_shown: bool = False
) -> LineRecommendation:
    evidence = gate_evidence(
        session,
        line.id,
        include_shown=include_shown,
        since=line.evidence_since,
        exclude_labelers=gate_excluded_labelers(session, line),
    )
    targets = gate_targets(line)
    level = AutomationLevel(line.level)
    current = check_gate(
        what_if(
            evidence.p_ok,
            evidence.human_defect,
            level=AutomationLevel.PARTIAL,
            pass_threshold=line.pass_threshold,
            fail_threshold=line.fail_threshold,
        ),
        targets,
    )
    return LineRecommendation(
        line_id=line.id,
        level=level,
        model_version=evidence.model_version,
        source=evidence.source,
        targets=targets,
        current=current,
        recommendation=recommend_thresholds(evidence.p_ok, evidence.human_defect, targets),
        live=live_checks(session, line, evidence.model_version) if level.needs_evidence else None,
    )


@dataclass(frozen=True)
class LineWhatIf:
    """A candidate policy judged on the line's evidence, with the parts behind the errors
    (inspection ids, at most `limit` each) so a supervisor can look at them."""

    line_id: str
    model_version: str | None
    source: str
    gate: GateResult
    escapes: list[int]
    false_rejects: list[int]


def what_if_for_line(
    session: Session,
    line: Line,
    *,
    level: AutomationLevel,
    pass_threshold: float | None,
    fail_threshold: float | None,
    include_shown: bool = False,
    limit: int = 100,
) -> LineWhatIf:
    """`pass_threshold`/`fail_threshold` None: never on that side (one-sided partial)."""
    evidence = gate_evidence(
        session,
        line.id,
        include_shown=include_shown,
        since=line.evidence_since,
        exclude_labelers=gate_excluded_labelers(session, line),
    )
    gate = check_gate(
        what_if(
            evidence.p_ok,
            evidence.human_defect,
            level=level,
            pass_threshold=pass_threshold,
            fail_threshold=fail_threshold,
        ),
        gate_targets(line),
    )
    passed, failed = automated_masks(evidence.p_ok, level, pass_threshold, fail_threshold)
    ids = evidence.inspection_ids
    return LineWhatIf(
        line_id=line.id,
        model_version=evidence.model_version,
        source=evidence.source,
        gate=gate,
        escapes=ids[passed & evidence.human_defect][:limit].tolist(),
        false_rejects=ids[failed & ~evidence.human_defect][:limit].tolist(),
    )


def _one_level_down(level: AutomationLevel) -> AutomationLevel:
    return list(AutomationLevel)[level.rank - 1]


def _demotion_reason(alarms: list[AuditAlarm]) -> str:
    words = {
        "escape_rate": ("escape rate", "escapes"),
        "false_reject_rate": ("false-reject rate", "false rejects"),
    }
    parts = []
    for alarm in alarms:
        name, errors = words[alarm.figure]
        estimate = alarm.estimate
        parts.append(
            f"the audited {name} is {100 * (estimate.rate or 0):.2f}%"
            f" ({alarm.errors} {errors} in {alarm.n} audits, 95% interval"
            f" {100 * estimate.lower:.2f}-{100 * estimate.upper:.2f}%), clearly above its"
            f" {100 * alarm.target:.2f}% target"
        )
    return "Audits show " + " and ".join(parts) + "."


def after_label(session: Session, line_id: str, inspection_id: int) -> None:
    """Called after every human label is committed; the caller commits what this adds.

    Only a label on an audit of the line's current settings can move the live test, so any
    other label returns after two primary-key reads. A demotion is a conditional update on the
    settings it judged, so two processes labeling at once cannot drop the line two levels.
    """
    line = session.get(Line, line_id, populate_existing=True)
    inspection = session.get(Inspection, inspection_id)
    if line is None or inspection is None:
        return
    level = AutomationLevel(line.level)
    if not level.needs_evidence or inspection.route != Route.AUDIT.value:
        return
    # a candidate's parts were routed at its own thresholds when it has them
    row = session.get(Deployment, line_id) if inspection.arm == "candidate" else None
    own = candidate_thresholds(row) if row is not None else None
    settings = (line.pass_threshold, line.fail_threshold) if own is None else own
    if (
        inspection.level != line.level
        or inspection.pass_threshold != settings[0]
        or inspection.fail_threshold != settings[1]
    ):
        return  # an audit of earlier settings: evidence is never pooled across settings
    version = inspection.model_version or current_model_version(session, line_id)
    if inspection.arm == "candidate" and version is not None:
        # A candidate's bad audits roll the candidate back; the line and its champion stay.
        live = live_checks(session, line, version, own)
        alarms = [c for c in live.checks if c.alarm]
        if alarms:
            quarantine(
                session,
                line_id,
                actor="system",
                reason=f"Candidate {version}: {_demotion_reason(alarms)}",
                evidence={
                    "checks": [plain(c) for c in live.checks],
                    "triggered_by_inspection": inspection_id,
                },
                automatic=True,
            )
        return
    demote_on_live_audits(
        session, line, version, trigger={"triggered_by_inspection": inspection_id}
    )


@dataclass(frozen=True)
class LiveOutcome:
    """What the live audit test found for the line's current settings era, and what it did."""

    live: LiveEvidence
    alarmed: bool  # either rate is clearly above its target
    demoted_to: AutomationLevel | None  # None: the level stays (no alarm, or auto_demote off)
    reason: str | None  # the sentence of the alarm, None without one


def demote_on_live_audits(
    session: Session, line: Line, version: str | None, *, trigger: dict[str, Any]
) -> LiveOutcome:
    """Run the live audit test for `line` (at partial or full) against its current targets and
    drop it one level if the test alarms and `Line.auto_demote` is on. The caller commits.

    Called after an audit label (`after_label`) and after a supervisor changes the line's
    targets (`inspect_app.lines.set_targets`): a stricter target judges the same audits of
    the same settings, so the line may no longer meet it. `trigger` goes into the event.
    """
    line_id = line.id
    level = AutomationLevel(line.level)
    live = live_checks(session, line, version)
    counts, checks = live.counts, live.checks
    alarms = [c for c in checks if c.alarm]
    logger.debug(
        "line %s live audits: %d/%d escapes (bound %.4f), %d/%d false rejects (bound %.4f)",
        line_id,
        counts.escapes,
        counts.passed,
        checks[0].upper_bound,
        counts.false_rejects,
        counts.failed,
        checks[1].upper_bound,
    )
    if not alarms:
        return LiveOutcome(live=live, alarmed=False, demoted_to=None, reason=None)
    reason = _demotion_reason(alarms)
    if not line.auto_demote:
        logger.warning(
            "line %s: %s Auto-demotion is off: the level stays %s", line_id, reason, level
        )
        return LiveOutcome(live=live, alarmed=True, demoted_to=None, reason=reason)
    lower = _one_level_down(level)
    demoted = session.exec(
        update(Line)
        .where(
            col(Line.id) == line_id,
            col(Line.level) == line.level,
            col(Line.pass_threshold) == line.pass_threshold,
            col(Line.fail_threshold) == line.fail_threshold,
        )
        .values(level=lower.value, updated_at=utcnow())
    )
    if demoted.rowcount != 1:
        # someone else changed the line meanwhile; their change stands
        return LiveOutcome(live=live, alarmed=True, demoted_to=None, reason=reason)
    record_event(
        session,
        kind="auto_demotion",
        actor="system",
        reason=f"{reason} Lowered from {level} to {lower}.",
        line_id=line_id,
        details={
            "old": {
                "level": level.value,
                "pass_threshold": threshold_json(line.pass_threshold),
                "fail_threshold": threshold_json(line.fail_threshold),
            },
            "new": {"level": lower.value},
            "model_version": version,
            "era_start": counts.era_start.isoformat(),
            "checks": [plain(c) for c in checks],
            **trigger,
        },
    )
    session.expire(line)
    logger.warning("line %s auto-demoted %s -> %s: %s", line_id, level, lower, reason)
    return LiveOutcome(live=live, alarmed=True, demoted_to=lower, reason=reason)


def stop_auto_decisions(
    session: Session,
    line_id: str,
    *,
    reason: str,
    details: dict[str, Any],
    within_era: bool = False,
) -> AutomationLevel | None:
    """A monitoring alarm's action: the model stops deciding on `line_id` at once.

    A line at partial or full drops to assist (humans decide every part, with the model's
    output shown); one already below that keeps its level. `Line.evidence_since` moves to
    now, so the gate judges a later raise on parts received after the alarm only: the evidence
    gathered before it described a line that has since changed.

    Except for an alarm measured on the current era alone (`within_era`: the blind labels'
    disagreement since `evidence_since`) on a line that was not deciding: the era already
    starts after the change, and the labels that fired it are that era's evidence, which the
    gate must weigh. Restarting would hide them, and on a drifted line the next firing, on the
    fresh labels, would restart it again, so the line could never gather the labels it needs
    to be raised (or a retrained version to be promoted) again. Returns the new level, or None
    when the line did not automate. The caller commits.
    """
    line = session.get(Line, line_id, with_for_update=True, populate_existing=True)
    if line is None:
        return None
    now = utcnow()
    level = AutomationLevel(line.level)
    lowered = level.needs_evidence
    kept = None  # the era's start, where it stays
    if lowered:
        line.level = AutomationLevel.ASSIST.value
        line.updated_at = now
        done = (
            f"Lowered from {level} to assist: the model decides nothing until a supervisor "
            "raises the line again on evidence gathered from now on."
        )
    elif within_era and line.evidence_since is not None:
        kept = as_utc(line.evidence_since)
        done = (
            f"The line stays at {level}; its evidence era stays from {kept.isoformat()}: "
            "this alarm measured only that era's labels."
        )
    else:
        done = f"The line stays at {level}; evidence for a raise restarts from now."
    if kept is None:
        line.evidence_since = now
    session.add(line)
    record_event(
        session,
        kind="alarm_stop_automation",
        actor="system",
        reason=f"{reason} {done}",
        line_id=line_id,
        details={
            **details,
            "old": {"level": level.value},
            "new": {"level": line.level},
            "evidence_since": (kept or now).isoformat(),
            "evidence_restarted": kept is None,
        },
    )
    logger.warning("line %s: auto-decisions stopped by an alarm: %s", line_id, reason)
    return AutomationLevel.ASSIST if lowered else None


def raise_audit_rate(
    session: Session, line_id: str, audit_rate: float, *, reason: str, details: dict[str, Any]
) -> float | None:
    """A monitoring alarm's action: more of the model's decisions go to blind audits, so the
    evidence about a line that may have changed comes faster. Never lowers the rate. Returns
    the new rate, or None when it was already at least `audit_rate`. The caller commits."""
    line = session.get(Line, line_id, with_for_update=True, populate_existing=True)
    if line is None or line.audit_rate >= audit_rate:
        return None
    old = line.audit_rate
    # updated_at stays: it starts the live audits' era (`live_audit_counts`), and more
    # audits of the same settings are more evidence of that era, not a new one.
    line.audit_rate = audit_rate
    session.add(line)
    record_event(
        session,
        kind="alarm_raise_audit_rate",
        actor="system",
        reason=f"{reason} Audit rate raised from {100 * old:g}% to {100 * audit_rate:g}%.",
        line_id=line_id,
        details={**details, "old": {"audit_rate": old}, "new": {"audit_rate": audit_rate}},
    )
    logger.warning("line %s: audit rate raised to %g by an alarm", line_id, audit_rate)
    return audit_rate
