"""A version's evidence on a line, from the parts it ran on, and two versions side by side.

Every version that ran on a part has a `ModelPrediction` row, so a candidate in shadow has
evidence of its own on exactly the parts the champion decided, and the two are compared
paired. Only blind labels count (the inspector did not see any model's answer).

Which parts get a label depends on the champion's routing: at shadow every part is labeled;
at partial every part the champion was unsure of is, and a lottery share (the audit rate) of
the parts it decided. A labeled part therefore stands for 1 / P(labeled) parts, and every
rate here is weighted so (Horvitz-Thompson); its bound is taken at the Kish effective sample
size, rounded down, with the errors rounded up: never kinder than the unweighted count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from inspect_app.domain import AutomationLevel, DefectClass, Route, Threshold
from inspect_app.evidence.gate import (
    GateResult,
    GateTargets,
    SideEvidence,
    WhatIf,
    automated_masks,
    check_gate,
)
from inspect_app.evidence.intervals import clopper_pearson_upper
from inspect_app.evidence.recommendation import (
    THRESHOLD_GRID,
    fixed_sequence_walk,
    recommend_thresholds,
)
from inspect_app.rollout.policy import PairedComparison, paired_comparison
from inspect_app.storage.tables import Inspection, Label, Line, ModelPrediction

OK = DefectClass.OK.value


@dataclass(frozen=True)
class VersionEvidence:
    """Blind-labeled parts a version ran on: its P(ok), the human's call, each part's weight."""

    model_version: str
    inspection_ids: NDArray[np.int64]
    p_ok: NDArray[np.float64]
    human_defect: NDArray[np.bool_]
    weight: NDArray[np.float64]  # 1 / P(the part was labeled)

    @property
    def n(self) -> int:
        return int(self.p_ok.size)


def _weight(route: str, audit_p: float | None, line_audit_rate: float) -> float:
    if route != Route.AUDIT.value:
        return 1.0  # review: every such part is labeled
    rate = audit_p if audit_p is not None and audit_p > 0 else line_audit_rate
    return 1.0 / max(rate, 1e-6)


def version_evidence(
    session: Session,
    line: Line,
    version: str,
    *,
    since: datetime | None = None,
    decided_only: bool = False,
) -> VersionEvidence:
    """The version's blind-labeled parts on `line` (gate-refused frames left out).

    `decided_only`: just the parts it decided (a canary step), not those it ran on hidden."""
    query = (
        select(
            Inspection.id,
            ModelPrediction.probabilities,
            Inspection.route,
            Inspection.audit_p,
            Label.label,
        )
        .join(ModelPrediction, col(ModelPrediction.inspection_id) == col(Inspection.id))
        .join(Label, col(Label.inspection_id) == col(Inspection.id))
        .where(
            Inspection.line_id == line.id,
            ModelPrediction.model_version == version,
            col(ModelPrediction.probabilities).is_not(None),
            col(Inspection.gate_codes).is_(None),
            col(Label.superseded).is_(False),
            col(Label.model_shown).is_(False),
        )
        .order_by(col(Inspection.id), col(Label.created_at), col(Label.id))
    )
    if decided_only:
        query = query.where(ModelPrediction.role == "decided")
    if since is not None:
        query = query.where(col(Inspection.received_at) >= since)
    latest: dict[int, tuple[float, bool, float]] = {}
    for inspection_id, probabilities, route, audit_p, label in session.exec(query):
        if not probabilities or OK not in probabilities:
            continue
        latest[int(inspection_id)] = (
            float(probabilities[OK]),
            label != OK,
            _weight(route, audit_p, line.audit_rate),
        )
    ids = np.fromiter(latest.keys(), dtype=np.int64, count=len(latest))
    values = list(latest.values())
    return VersionEvidence(
        model_version=version,
        inspection_ids=ids,
        p_ok=np.array([v[0] for v in values], dtype=np.float64),
        human_defect=np.array([v[1] for v in values], dtype=bool),
        weight=np.array([v[2] for v in values], dtype=np.float64),
    )


def _weighted_side(
    side: Literal["pass", "fail"],
    mask: NDArray[np.bool_],
    error: NDArray[np.bool_],
    weight: NDArray[np.float64],
    total_weight: float,
) -> SideEvidence:
    w = weight[mask]
    if w.size == 0:
        return SideEvidence(side=side, n=0, errors=0, share=0.0, rate=None, upper_bound=1.0)
    rate = float((w * error[mask]).sum() / w.sum())
    n_eff = math.floor(float(w.sum()) ** 2 / float((w**2).sum()) + 1e-9)
    errors = min(n_eff, math.ceil(rate * n_eff - 1e-9))
    return SideEvidence(
        side=side,
        n=n_eff,
        errors=errors,
        share=float(w.sum()) / total_weight if total_weight else 0.0,
        rate=rate,
        upper_bound=clopper_pearson_upper(errors, n_eff),
    )


def weighted_what_if(
    evidence: VersionEvidence,
    *,
    level: AutomationLevel,
    pass_threshold: float | None,
    fail_threshold: float | None,
) -> WhatIf:
    """`evidence.gate.what_if` with each labeled part weighted by the parts it stands for.
    With every weight 1 (a line at shadow) it is exactly the unweighted what-if."""
    passed, failed = automated_masks(evidence.p_ok, level, pass_threshold, fail_threshold)
    total = float(evidence.weight.sum())
    auto_pass = _weighted_side("pass", passed, evidence.human_defect, evidence.weight, total)
    auto_fail = _weighted_side("fail", failed, ~evidence.human_defect, evidence.weight, total)
    automated = float(evidence.weight[passed | failed].sum())
    return WhatIf(
        level=level,
        pass_threshold=pass_threshold,
        fail_threshold=fail_threshold,
        n_labeled=evidence.n,
        coverage=automated / total if total else 0.0,
        auto_pass=auto_pass,
        auto_fail=auto_fail,
        to_human=int(evidence.n - int((passed | failed).sum())),
    )


def line_targets(line: Line, min_labels: int | None = None) -> GateTargets:
    return GateTargets(
        max_escape_rate=line.max_escape_rate,
        max_false_reject_rate=line.max_false_reject_rate,
        min_labels=line.min_labels if min_labels is None else min_labels,
    )


def gate_on_evidence(
    line: Line,
    evidence: VersionEvidence,
    level: AutomationLevel | None = None,
    *,
    thresholds: tuple[Threshold, Threshold] | None = None,
) -> GateResult:
    """Would the version pass the line's evidence gate at its level and thresholds on its own
    evidence? Below partial it is judged at partial: what it would do once it decides.
    `thresholds` (pass, fail): judged at these instead of the line's (a candidate's own)."""
    judged = AutomationLevel(line.level) if level is None else level
    if not judged.needs_evidence:
        judged = AutomationLevel.PARTIAL
    pass_threshold, fail_threshold = (
        (line.pass_threshold, line.fail_threshold) if thresholds is None else thresholds
    )
    return check_gate(
        weighted_what_if(
            evidence,
            level=judged,
            pass_threshold=pass_threshold,
            fail_threshold=fail_threshold,
        ),
        line_targets(line),
    )


@dataclass(frozen=True)
class EvidenceRecommendation:
    """The thresholds the fixed-sequence walk chooses on a version's own evidence."""

    pass_threshold: Threshold
    fail_threshold: Threshold
    reason: str
    weighted: bool  # the labels were weighted (a line at partial labels only some parts)


def recommend_on_evidence(
    evidence: VersionEvidence, targets: GateTargets, grid: Sequence[float] = THRESHOLD_GRID
) -> EvidenceRecommendation:
    """A version's own thresholds from its own evidence, with the walk's guarantee.

    Unweighted evidence (every part labeled: a line at shadow or assist) goes to
    `recommend_thresholds` as it stands. Weighted evidence (a line at partial labels every
    part its champion was unsure of, and only an audit share of the rest) is walked on each
    threshold's Kish effective count and rounded-up errors, the same counts the gate judges
    it on (`weighted_what_if`): an unweighted walk would count the champion's unsure parts
    many times over. The walk, its predeclared grid and its order are the same either way."""
    if evidence.n == 0 or bool(np.all(evidence.weight == 1.0)):
        rec = recommend_thresholds(evidence.p_ok, evidence.human_defect, targets, grid)
        return EvidenceRecommendation(rec.pass_threshold, rec.fail_threshold, rec.reason, False)
    total = float(evidence.weight.sum())
    picks: list[Threshold] = []
    notes: list[str] = []
    for side, score, error, target in (
        ("auto-pass", evidence.p_ok, evidence.human_defect, targets.max_escape_rate),
        ("auto-fail", 1.0 - evidence.p_ok, ~evidence.human_defect, targets.max_false_reject_rate),
    ):
        counts = [_weighted_side("pass", score >= t, error, evidence.weight, total) for t in grid]
        chosen, _status = fixed_sequence_walk(
            np.array([c.n for c in counts], dtype=np.int64),
            np.array([c.errors for c in counts], dtype=np.int64),
            target,
            targets.min_labels,
            targets.confidence,
        )
        pick = float(grid[int(chosen)]) if chosen >= 0 else None
        picks.append(pick)
        if pick is None:
            notes.append(f"{side} never: no threshold of the grid passes at {target:.2%}")
        else:
            at = counts[int(chosen)]
            notes.append(
                f"{side} at {pick:g}: {at.errors} errors in an effective {at.n} parts, bound "
                f"{at.upper_bound:.2%} within {target:.2%}"
            )
    return EvidenceRecommendation(
        picks[0],
        picks[1],
        f"Recommended on {evidence.n:,} weighted labels (Kish effective counts): "
        + "; ".join(notes)
        + ".",
        True,
    )


@dataclass(frozen=True)
class VersionReport:
    model_version: str
    evidence: VersionEvidence
    gate: GateResult


@dataclass(frozen=True)
class ShadowComparison:
    """Champion and candidate on the same blind-labeled parts."""

    line_id: str
    champion: VersionReport
    candidate: VersionReport
    paired: PairedComparison


def _binary_correct(evidence: VersionEvidence, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
    index = {int(i): k for k, i in enumerate(evidence.inspection_ids)}
    rows = np.array([index[int(i)] for i in ids], dtype=np.int64)
    said_defect = evidence.p_ok[rows] < 0.5
    return said_defect == evidence.human_defect[rows]


def compare_versions(
    session: Session,
    line: Line,
    champion: str,
    candidate: str,
    *,
    since: datetime | None = None,
) -> ShadowComparison:
    """Each version's gate on its own evidence, and McNemar's exact test on the parts both
    ran on (a binary call at P(ok) = 0.5 against the blind label)."""
    mine = version_evidence(session, line, champion, since=since)
    theirs = version_evidence(session, line, candidate, since=since)
    both = np.intersect1d(mine.inspection_ids, theirs.inspection_ids)
    return ShadowComparison(
        line_id=line.id,
        champion=VersionReport(champion, mine, gate_on_evidence(line, mine)),
        candidate=VersionReport(candidate, theirs, gate_on_evidence(line, theirs)),
        paired=paired_comparison(_binary_correct(mine, both), _binary_correct(theirs, both)),
    )


def decided_outcome(session: Session, inspection_id: int) -> tuple[str, str, bool] | None:
    """(version, arm, agreed) of a part's decider against its first blind label, or None
    when the part has no blind label or no decider: the bandit's reward, once per part."""
    first = aliased(Label)
    row = session.exec(
        select(Inspection.model_version, Inspection.arm, Inspection.probabilities, first.label)
        .join(first, col(first.inspection_id) == col(Inspection.id))
        .where(
            Inspection.id == inspection_id,
            col(first.model_shown).is_(False),
        )
        .order_by(col(first.created_at), col(first.id))
        .limit(1)
    ).first()
    if row is None:
        return None
    version, arm, probabilities, label = row
    if version is None or arm is None or not probabilities or OK not in probabilities:
        return None
    said_ok = float(probabilities[OK]) >= 0.5
    return str(version), str(arm), said_ok == (label == OK)
