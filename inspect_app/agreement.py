"""Queries that turn labeled inspections into the inputs of `inspect_app.evidence`.

Which labels count, and where (design.md section 4, issue 4):

* The latest label of an inspection counts (``Label.superseded == False``); a relabel is
  counted as a redo, never as a second vote.
* Blind labels (the inspector did not see the model's answer: shadow, human_only with a
  prediction, audits) are evidence; labels given with the model's answer on screen (assist,
  uncertain parts at partial; ``Label.model_shown``) are reported separately, because a shown
  answer sways the human towards it.
* The what-if and the gate need a sample in which every part had the same chance of being
  labeled, whatever the model said. That holds at human_only and shadow, where every part goes
  to a human, and not at partial or full, where the model picks which parts humans see. So
  the gate's evidence is the blind labels of inspections routed to review at those levels
  (and, on request, assist's shown labels). Audit labels measure the line's current settings
  instead: they feed the live estimates that can demote a line (`live_audit_counts`), never
  pooled with another setting's.
* A model version is judged on its own predictions: by default, the line's current model (the
  version of its most recent prediction).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from inspect_app.domain import AutomationLevel, Decision, DefectClass, Route
from inspect_app.evidence import (
    AgreementFigures,
    RateEstimate,
    agreement_figures,
    rate_estimate,
)
from inspect_app.storage.tables import Deployment, Inspection, Label, Line, User
from inspect_app.timeutil import as_utc

# Levels at which every part is routed to a human whatever the model said.
REPRESENTATIVE_LEVELS: tuple[str, ...] = (
    AutomationLevel.HUMAN_ONLY.value,
    AutomationLevel.SHADOW.value,
)


@dataclass(frozen=True)
class LabeledInspection:
    """One inspection with a prediction and its current label."""

    inspection_id: int
    received_at: datetime
    model_version: str
    p_ok: float
    predicted_class: str
    level: str
    route: str
    decision: str
    label: str
    labeler: str
    model_shown: bool
    labeled_at: datetime
    label_count: int  # every label it was given; more than one means it was relabeled
    duration_ms: int | None

    @property
    def human_defect(self) -> bool:
        return self.label != DefectClass.OK


def _window(query, line_id: str, model_version: str | None, since, until):  # type: ignore[no-untyped-def]
    query = query.where(Inspection.line_id == line_id, col(Inspection.model_version).is_not(None))
    if model_version is not None:
        query = query.where(Inspection.model_version == model_version)
    if since is not None:
        query = query.where(col(Inspection.received_at) >= since)
    if until is not None:
        query = query.where(col(Inspection.received_at) < until)
    return query


def _check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and as_utc(until) <= as_utc(since):  # type: ignore[operator]
        raise ValueError(f"the window is empty: until ({until}) is not after since ({since})")


def current_model_version(session: Session, line_id: str) -> str | None:
    """The line's champion (its deployment), or before any deployment the model version of
    its most recent prediction (None before any). Never the candidate of a canary, A/B or
    bandit: the line's own evidence is its champion's, and a candidate's is kept apart."""
    champion = session.exec(
        select(Deployment.champion).where(Deployment.line_id == line_id)
    ).first()
    if champion is not None:
        return champion
    return session.exec(
        select(Inspection.model_version)
        .where(Inspection.line_id == line_id, col(Inspection.model_version).is_not(None))
        .order_by(col(Inspection.id).desc())
        .limit(1)
    ).first()


def model_versions(session: Session, line_id: str) -> list[str]:
    """Every model version that has made predictions on the line, newest first."""
    rows = session.exec(
        select(Inspection.model_version, func.max(Inspection.id))
        .where(Inspection.line_id == line_id, col(Inspection.model_version).is_not(None))
        .group_by(Inspection.model_version)
        .order_by(func.max(Inspection.id).desc())
    ).all()
    return [str(version) for version, _ in rows]


def labeled_inspections(
    session: Session,
    line_id: str,
    *,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    levels: tuple[str, ...] | None = None,
    route: Route | None = None,
    usable_only: bool = False,
) -> list[LabeledInspection]:
    """Inspections with a prediction and a current label, received in [since, until).

    `usable_only` leaves out frames the image gate refused: the model never decides those,
    so they are no evidence of how it decides the parts it would be allowed to."""
    _check_window(since, until)
    # Every label the inspection was given, superseded ones included (the redo count); a
    # correlated count uses the index on Label.inspection_id for just the rows selected.
    all_labels = aliased(Label)
    label_count = (
        select(func.count())
        .select_from(all_labels)
        .where(col(all_labels.inspection_id) == col(Inspection.id))
        .scalar_subquery()
    )
    # Columns, not entities: thousands of rows without building an ORM object for each.
    query = (
        select(
            Inspection.id,
            Inspection.received_at,
            Inspection.model_version,
            Inspection.probabilities,
            Inspection.predicted_class,
            Inspection.level,
            Inspection.route,
            Inspection.decision,
            Label.label,
            User.name,
            Label.model_shown,
            Label.created_at,
            label_count,
            Label.duration_ms,
        )
        .join(Label, col(Label.inspection_id) == col(Inspection.id))
        .join(User, col(User.id) == col(Label.user_id))
        .where(col(Label.superseded).is_(False))
    )
    query = _window(query, line_id, model_version, since, until)
    if levels is not None:
        query = query.where(col(Inspection.level).in_(levels))
    if route is not None:
        query = query.where(Inspection.route == route.value)
    if usable_only:
        query = query.where(col(Inspection.gate_codes).is_(None))
    query = query.order_by(col(Inspection.id), col(Label.created_at), col(Label.id))
    latest: dict[int, LabeledInspection] = {}
    for row in session.exec(query):
        (inspection_id, received_at, version, probabilities, predicted, level, route_taken,
         decision, label, labeler, shown, labeled_at, count, duration_ms) = row  # fmt: skip
        probabilities = probabilities or {}
        if DefectClass.OK.value not in probabilities or predicted is None:
            continue  # a prediction row without its probabilities is not evidence
        # Ordered by label time: should two current labels ever exist, the later wins.
        latest[inspection_id] = LabeledInspection(
            inspection_id=inspection_id,
            received_at=as_utc(received_at) or received_at,
            model_version=version,
            p_ok=float(probabilities[DefectClass.OK.value]),
            predicted_class=predicted,
            level=level,
            route=route_taken,
            decision=decision,
            label=label,
            labeler=labeler,
            model_shown=bool(shown),
            labeled_at=as_utc(labeled_at) or labeled_at,
            label_count=int(count),
            duration_ms=duration_ms,
        )
    return list(latest.values())


def count_predicted(
    session: Session,
    line_id: str,
    *,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Inspections with a prediction in the window, labeled or not."""
    _check_window(since, until)
    query = _window(select(func.count(col(Inspection.id))), line_id, model_version, since, until)
    return int(session.exec(query).one())


def disagreement_images(session: Session, inspection_ids: Sequence[int]) -> dict[int, str]:
    """The stored image (its sha256) of each inspection: what a supervisor looks at where
    the human's label and the model's call differ. Unknown ids are absent."""
    if not inspection_ids:
        return {}
    rows = session.exec(
        select(Inspection.id, Inspection.image_sha256).where(
            col(Inspection.id).in_(list(inspection_ids))
        )
    ).all()
    return {int(inspection_id): sha for inspection_id, sha in rows}


# --------------------------------------------------------------------------------------------
# The agreement report


@dataclass(frozen=True)
class InspectorAgreement:
    """How one inspector's current labels compare with the model."""

    inspector: str
    labels: int
    blind: AgreementFigures  # the figures to trust
    shown: AgreementFigures  # with the model's answer on screen: swayed towards it
    redo_rate: RateEstimate  # of their current labels, the share that replaced an earlier one
    median_duration_ms: float | None


@dataclass(frozen=True)
class AgreementReport:
    line_id: str
    model_version: str | None  # None: the line has no predictions yet
    model_versions: list[str]  # all versions seen on the line, newest first
    since: datetime | None
    until: datetime | None
    predicted: int  # inspections with a prediction in the window
    labeled: int  # of them, with a current label
    coverage: RateEstimate  # labeled / predicted: how much of the model's output humans checked
    redo_rate: RateEstimate  # labeled inspections that were relabeled
    blind: AgreementFigures  # evidence: the human did not see the model's answer
    shown: AgreementFigures  # reported apart: the human saw the model's answer
    by_inspector: list[InspectorAgreement]


def _figures(rows: list[LabeledInspection]) -> AgreementFigures:
    return agreement_figures([r.label for r in rows], [r.predicted_class for r in rows])


def _redo(rows: list[LabeledInspection]) -> RateEstimate:
    return rate_estimate(sum(1 for r in rows if r.label_count > 1), len(rows))


def agreement_report(
    session: Session,
    line_id: str,
    *,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AgreementReport:
    """Model against humans on one line, for one model version (default: the current one)."""
    versions = model_versions(session, line_id)
    version = model_version if model_version is not None else (versions[0] if versions else None)
    rows: list[LabeledInspection] = []
    predicted = 0
    if version is not None:
        rows = labeled_inspections(
            session, line_id, model_version=version, since=since, until=until
        )
        predicted = count_predicted(
            session, line_id, model_version=version, since=since, until=until
        )
    by_labeler: dict[str, list[LabeledInspection]] = defaultdict(list)
    for row in rows:
        by_labeler[row.labeler].append(row)
    inspectors = []
    for name in sorted(by_labeler):
        mine = by_labeler[name]
        durations = [r.duration_ms for r in mine if r.duration_ms is not None]
        inspectors.append(
            InspectorAgreement(
                inspector=name,
                labels=len(mine),
                blind=_figures([r for r in mine if not r.model_shown]),
                shown=_figures([r for r in mine if r.model_shown]),
                redo_rate=_redo(mine),
                median_duration_ms=float(statistics.median(durations)) if durations else None,
            )
        )
    return AgreementReport(
        line_id=line_id,
        model_version=version,
        model_versions=versions,
        since=as_utc(since),
        until=as_utc(until),
        predicted=predicted,
        labeled=len(rows),
        coverage=rate_estimate(len(rows), predicted),
        redo_rate=_redo(rows),
        blind=_figures([r for r in rows if not r.model_shown]),
        shown=_figures([r for r in rows if r.model_shown]),
        by_inspector=inspectors,
    )


# --------------------------------------------------------------------------------------------
# The gate's evidence and the live audit counts


@dataclass(frozen=True)
class GateEvidence:
    """The representative labeled sample the what-if, the gate and the recommendation use."""

    model_version: str | None
    source: str  # in words, for the supervisor and the event log
    inspection_ids: NDArray[np.int64]
    p_ok: NDArray[np.float64]
    human_defect: NDArray[np.bool_]

    @property
    def n(self) -> int:
        return int(self.p_ok.size)


def gate_evidence(
    session: Session,
    line_id: str,
    *,
    model_version: str | None = None,
    include_shown: bool = False,
    since: datetime | None = None,
    exclude_labelers: Collection[str] = (),
) -> GateEvidence:
    """Blind labels of parts every one of which went to a human (see the module docstring).

    Frames the image gate refused are left out (the model would never decide them), and so
    is everything received before `since`: after a monitoring alarm stopped auto-decisions
    (`Line.evidence_since`), only what the line shows since then can justify a raise. Labels
    by `exclude_labelers` (e.g. inspectors flagged on reference parts,
    `reference.service.flagged_users`) are left out too."""
    version = (
        model_version if model_version is not None else current_model_version(session, line_id)
    )
    levels = REPRESENTATIVE_LEVELS + ((AutomationLevel.ASSIST.value,) if include_shown else ())
    rows: list[LabeledInspection] = []
    if version is not None:
        rows = [
            r
            for r in labeled_inspections(
                session,
                line_id,
                model_version=version,
                since=since,
                levels=levels,
                route=Route.REVIEW,
                usable_only=True,
            )
            if (include_shown or not r.model_shown) and r.labeler not in exclude_labelers
        ]
    source = (
        f"current labels of model {version or '-'} predictions at "
        + "/".join(levels)
        + (" (blind and shown labels)" if include_shown else " (blind labels only)")
        + (f", received since {as_utc(since):%Y-%m-%d %H:%M} UTC" if since is not None else "")
        + (
            f", without the labels of {', '.join(sorted(exclude_labelers))}"
            if exclude_labelers
            else ""
        )
    )
    return GateEvidence(
        model_version=version,
        source=source,
        inspection_ids=np.array([r.inspection_id for r in rows], dtype=np.int64),
        p_ok=np.array([r.p_ok for r in rows], dtype=np.float64),
        human_defect=np.array([r.human_defect for r in rows], dtype=bool),
    )


@dataclass(frozen=True)
class AuditCounts:
    """Audits of the line's current settings era, by the side the model decided."""

    model_version: str | None
    era_start: datetime
    passed: int  # audited auto-passed parts
    escapes: int  # ... that a human labeled defective
    failed: int  # audited auto-failed parts
    false_rejects: int  # ... that a human labeled ok


def live_audit_counts(
    session: Session,
    line: Line,
    model_version: str | None,
    thresholds: tuple[float | None, float | None] | None = None,
) -> AuditCounts:
    """Count current audit labels at exactly the line's current level and thresholds, by the
    given model, since the line's settings last changed (`Line.updated_at`): a line demoted
    and raised again at the same thresholds starts afresh rather than inheriting old alarms.
    `thresholds`: a candidate's own (`rollout.deployments`), which its parts were routed at."""
    era_start = line.updated_at
    pass_threshold, fail_threshold = (
        (line.pass_threshold, line.fail_threshold) if thresholds is None else thresholds
    )
    query = (
        select(Inspection.decision, Label.label, func.count())
        .join(Label, col(Label.inspection_id) == col(Inspection.id))
        .where(
            Inspection.line_id == line.id,
            Inspection.route == Route.AUDIT.value,
            Inspection.level == line.level,
            Inspection.pass_threshold == pass_threshold,
            Inspection.fail_threshold == fail_threshold,
            Inspection.model_version == model_version,
            col(Inspection.received_at) >= era_start,
            col(Label.superseded).is_(False),
        )
        .group_by(Inspection.decision, Label.label)
    )
    counts = {"passed": 0, "escapes": 0, "failed": 0, "false_rejects": 0}
    for decision, label, count in session.exec(query):
        ok = label == DefectClass.OK.value
        if decision == Decision.PASS.value:
            counts["passed"] += count
            counts["escapes"] += 0 if ok else count
        elif decision == Decision.FAIL.value:
            counts["failed"] += count
            counts["false_rejects"] += count if ok else 0
    return AuditCounts(
        model_version=model_version, era_start=as_utc(era_start) or era_start, **counts
    )
