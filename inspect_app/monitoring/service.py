"""The service side of monitoring: each line's recent parts against the deciding model's
reference profile, the alarms that watch them, and the actions the alarms take.

Every `MonitorConfig.evaluate_every` parts a line's window is read from the database (the
inspection rows already hold each part's input metrics, gate verdict, prediction and reduced
embedding, so every process and a restarted one see the same window; only the parts that
arrived since the last evaluation are read in full, `_Windows`), the monitored values
are computed (the vocabulary of `inspect_app.monitoring.alarms`), each of the line's alarm
rules steps its state machine, and what the transitions ask for is done in the same
transaction: events for every state change, the line dropped to assist (`stop_automation`),
its audit rate raised, a notification recorded. The values are stored as `MonitorSample`
rows for the Monitoring page and set on the Prometheus gauges.

Cadences follow what `bench/drift_tests.py` measured for the false-alarm budget: the input
tests on the last 50 parts every 10 parts (alpha 1e-4: 0.1 false alarms per 20,000 clean
parts); the embedding and prediction tests once per 200 parts on the last 200 (alpha 1e-3).

Prediction drift compares the line with its own past, not with the calibration images: a
plant's defect rate is not the generator's balanced mix, so the profile's defect rate would
flag every plant. The baseline is the `baseline_window` usable parts before the tested
window, by the same model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from inspect_app.automation import raise_audit_rate, stop_auto_decisions
from inspect_app.domain import AutomationLevel, DefectClass, TaskStatus
from inspect_app.events import record_event
from inspect_app.metrics import ServiceMetrics
from inspect_app.monitoring.alarms import (
    DEFAULT_RULES,
    MONITORED_METRICS,
    Action,
    AlarmRule,
    AlarmState,
    AlarmStatus,
    Transition,
    effective_rules,
    step,
)
from inspect_app.monitoring.baseline import line_reference
from inspect_app.monitoring.drift import (
    DisagreementMonitor,
    QuantileTable,
    confidence_histogram,
    defect_rate,
    embedding_drift,
    input_drift,
    prediction_drift,
)
from inspect_app.outputs.outbox import enqueue_alarm
from inspect_app.rollout.deployments import quarantine
from inspect_app.storage.tables import (
    AlarmRuleOverride,
    AlarmStateRow,
    DriftReport,
    Inspection,
    Label,
    Line,
    MonitorSample,
    ReviewTask,
)
from inspect_app.timeutil import as_utc, utcnow
from models.profile import ReferenceProfile

logger = logging.getLogger(__name__)

# The input metrics the drift test compares (size and aspect are the gate's business: they
# are constant on a healthy camera, and a KS test of a constant says nothing).
DRIFT_METRICS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "sharpness",
    "clipped_dark",
    "clipped_bright",
    "mean_blue",
    "mean_green",
    "mean_red",
)
_WAITING = (TaskStatus.OPEN.value, TaskStatus.CLAIMED.value, TaskStatus.ESCALATED.value)


@dataclass(frozen=True)
class MonitorConfig:
    evaluate_every: int = 10  # parts between evaluations of a line
    input_window: int = 50  # parts in the input-drift test's window
    slow_window: int = 200  # parts in the embedding and prediction tests' window (and cadence)
    baseline_window: int = 1000  # the line's own past the prediction test compares with
    min_baseline: int = 200  # fewer baseline parts than this: no prediction test yet
    embedding_permutations: int = 999
    # the model's disagreement with blind labels that the concept-drift monitor takes as
    # normal, when the model card gives none
    reference_disagreement: float = 0.02
    disagreement_window_s: float = 3600.0  # a detection counts as "now" for this long

    def __post_init__(self) -> None:
        if min(self.evaluate_every, self.input_window, self.slow_window) < 1:
            raise ValueError("monitoring windows and cadence must be at least 1 part")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one line: the values, the alarms' transitions and what was done."""

    line_id: str
    at: datetime
    model_version: str | None
    values: dict[str, float | None]
    transitions: list[Transition]
    actions: list[str] = field(default_factory=list)
    reports: list[DriftReport] = field(default_factory=list)


# -- reading a line's window


@dataclass(frozen=True)
class _Part:
    id: int
    received_at: datetime
    model_version: str | None
    metrics: dict[str, float | None]
    gated: bool
    p_defect: float | None
    embedding: list[float] | None


def _part_query(line_id: str) -> Any:
    columns = [getattr(Inspection, m) for m in DRIFT_METRICS]
    return select(
        Inspection.id,
        Inspection.received_at,
        Inspection.model_version,
        Inspection.gate_codes,
        Inspection.p_defect,
        Inspection.embedding,
        *columns,
    ).where(Inspection.line_id == line_id)


def _parts_of(rows: Iterable[Any]) -> list[_Part]:
    parts = []
    for row in rows:
        ident, received, version, codes, p_defect, embedding, *values = row
        parts.append(
            _Part(
                id=ident,
                received_at=as_utc(received) or received,
                model_version=version,
                metrics=dict(zip(DRIFT_METRICS, values, strict=True)),
                gated=codes is not None,
                p_defect=p_defect,
                embedding=embedding,
            )
        )
    return parts


def _recent_parts(
    session: Session, line_id: str, n: int, before_id: int | None = None
) -> list[_Part]:
    """The line's last `n` inspections (before `before_id` if given), newest first."""
    query = _part_query(line_id)
    if before_id is not None:
        query = query.where(col(Inspection.id) < before_id)
    return _parts_of(session.exec(query.order_by(col(Inspection.id).desc()).limit(n)).all())


_IN_CHUNK = 500  # ids per IN (...) list


class _Windows:
    """Each line's last parts as read before, so an evaluation reads in full only the parts
    that arrived since the last one (10 of a window of 200 at the default cadence).

    Which parts are the window is still read from the database each time (their ids, from the
    (line_id, id) index): every process's parts count, and a part another transaction
    committed late with a lower id is found as on a full read. Only the columns of a part
    already read are taken from here, and those never change after its insert.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_line: dict[str, dict[int, _Part]] = {}

    def recent(self, session: Session, line_id: str, n: int) -> list[_Part]:
        """The line's last `n` inspections, newest first (as `_recent_parts`)."""
        ids = session.exec(
            select(Inspection.id)
            .where(Inspection.line_id == line_id)
            .order_by(col(Inspection.id).desc())
            .limit(n)
        ).all()
        with self._lock:
            known = dict(self._by_line.get(line_id, {}))
        missing = [i for i in ids if i not in known]
        for start in range(0, len(missing), _IN_CHUNK):
            chunk = missing[start : start + _IN_CHUNK]
            query = _part_query(line_id).where(col(Inspection.id).in_(chunk))
            known.update((p.id, p) for p in _parts_of(session.exec(query).all()))
        parts = [known[i] for i in ids if i in known]
        with self._lock:
            self._by_line[line_id] = {p.id: p for p in parts}
        return parts


def _share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return float(np.mean(values)) if values else None


def reference_metrics(profile: ReferenceProfile) -> dict[str, QuantileTable]:
    """The profile's input-metric quantiles as the drift test's reference tables."""
    return {
        m: QuantileTable(
            np.asarray(profile.quantile_levels), np.asarray(q), n=max(profile.n_images, 1)
        )
        for m, q in profile.metric_quantiles.items()
        if m in DRIFT_METRICS
    }


def _input_drift_value(
    parts: Sequence[_Part], profile: ReferenceProfile
) -> tuple[float | None, DriftReport | None]:
    recent = {m: np.array([p.metrics[m] for p in parts], dtype=float) for m in DRIFT_METRICS}
    reference = reference_metrics(profile)
    recent = {m: v for m, v in recent.items() if m in reference}
    if not recent:
        return None, None
    report = input_drift(reference, recent)
    if not report.metrics:
        return None, None
    p = min(m.adjusted_p for m in report.metrics)
    drifted = [m for m in report.metrics if m.drifted]
    return p, DriftReport(
        line_id="",
        kind="input",
        window=len(parts),
        p_value=p,
        drifted=bool(drifted),
        details={
            "metrics": [
                {
                    "metric": m.metric,
                    "statistic": m.statistic,
                    "adjusted_p": m.adjusted_p,
                    "reference_median": m.reference_median,
                    "recent_median": m.recent_median,
                    "direction": m.direction,
                    "drifted": m.drifted,
                }
                for m in report.metrics
            ],
            "alpha": report.alpha,
        },
    )


def _embedding_drift_value(
    parts: Sequence[_Part], profile: ReferenceProfile, permutations: int
) -> tuple[float | None, DriftReport | None]:
    usable = [p for p in parts if p.embedding is not None]
    reference = np.asarray(profile.reference_coordinates, dtype=float)
    if len(usable) < 20 or reference.size == 0:
        return None, None
    recent = np.asarray([p.embedding for p in usable], dtype=float)
    if recent.shape[1] != reference.shape[1]:
        return None, None
    report = embedding_drift(reference, recent, n_permutations=permutations)
    responsible = [usable[int(i)].id for i in report.most_responsible]
    return report.p_value, DriftReport(
        line_id="",
        kind="embedding",
        window=len(usable),
        p_value=report.p_value,
        drifted=report.drifted,
        details={"auc": report.auc, "alpha": report.alpha, "permutations": permutations},
        responsible=responsible,
    )


def _prediction_drift_values(
    parts: Sequence[_Part], baseline: Sequence[_Part], config: MonitorConfig
) -> tuple[float | None, float | None, DriftReport | None]:
    recent = np.array([p.p_defect for p in parts if p.p_defect is not None and not p.gated])
    past = np.array([p.p_defect for p in baseline if p.p_defect is not None and not p.gated])
    if recent.size < 20 or past.size < config.min_baseline:
        return None, None, None
    report = prediction_drift(defect_rate(past), confidence_histogram(past), recent)
    rate_p, hist_p = report.adjusted_p
    return (
        rate_p,
        hist_p,
        DriftReport(
            line_id="",
            kind="prediction",
            window=int(recent.size),
            p_value=min(rate_p, hist_p),
            drifted=report.drifted,
            details={
                "defect_rate": report.defect_rate,
                "baseline_defect_rate": report.reference_defect_rate,
                "baseline_parts": int(past.size),
                "defect_rate_p": rate_p,
                "histogram_p": hist_p,
            },
        ),
    )


def _disagreement_value(
    session: Session,
    line: Line,
    model_version: str | None,
    config: MonitorConfig,
    reference_rate: float,
    now: datetime,
) -> float | None:
    """1 when the CUSUM on the line's blind labels (audits and shadow reviews) against the
    model's own decision detected a rise within the last `disagreement_window_s`, else 0.

    Only the parts `model_version` (the line's model now) decided count: the reference rate
    is that version's, and after a switch the old version's disagreements say nothing of the
    new one's (a retrained version finalized on a drifted line would otherwise inherit the
    alarms of the version it replaced)."""
    since = line.evidence_since
    query = (
        select(Inspection.p_defect, Label.label, Label.created_at)
        .join(Label, col(Label.inspection_id) == col(Inspection.id))
        .where(
            Inspection.line_id == line.id,
            Inspection.model_version == model_version,
            col(Label.superseded).is_(False),
            col(Label.model_shown).is_(False),
            col(Inspection.p_defect).is_not(None),
        )
        .order_by(col(Label.created_at))
    )
    if since is not None:
        query = query.where(col(Inspection.received_at) >= since)
    rows = session.exec(query.limit(20_000)).all()
    if not rows:
        return None
    monitor = DisagreementMonitor(reference_rate)
    last_detection: datetime | None = None
    for p_defect, label, labeled_at in rows:
        model_defect = p_defect > 0.5
        human_defect = label != DefectClass.OK.value
        monitor.update(model_defect != human_defect)
        if monitor.drift_detected:
            last_detection = as_utc(labeled_at)
    if last_detection is None:
        return 0.0
    return 1.0 if (now - last_detection).total_seconds() <= config.disagreement_window_s else 0.0


def _backlog_age(session: Session, line_id: str, now: datetime) -> float:
    oldest = session.exec(
        select(func.min(ReviewTask.created_at)).where(
            ReviewTask.line_id == line_id, col(ReviewTask.status).in_(_WAITING)
        )
    ).one()
    return 0.0 if oldest is None else max(0.0, (now - as_utc(oldest)).total_seconds())  # type: ignore[operator]


# -- rules and state


def line_rules(session: Session, line_id: str) -> list[AlarmRule]:
    """The shipped rules with this line's supervisor edits applied."""
    overrides = {
        o.rule: o.changes
        for o in session.exec(
            select(AlarmRuleOverride).where(AlarmRuleOverride.line_id == line_id)
        ).all()
    }
    return effective_rules(DEFAULT_RULES, overrides)


def set_line_rule(
    session: Session,
    line_id: str,
    rule: str,
    changes: dict[str, Any],
    *,
    actor: str,
    reason: str,
) -> AlarmRule:
    """A supervisor's edit of one rule on one line, validated against the whole rule set
    (AlarmRuleError names what is wrong), logged with who and why. The caller commits."""
    if session.get(Line, line_id) is None:
        raise LookupError(f"no line {line_id!r}")
    existing = session.get(AlarmRuleOverride, (line_id, rule))
    merged = {**(existing.changes if existing else {}), **changes}
    overrides = {
        o.rule: o.changes
        for o in session.exec(
            select(AlarmRuleOverride).where(AlarmRuleOverride.line_id == line_id)
        ).all()
    }
    overrides[rule] = merged
    rules = {r.name: r for r in effective_rules(DEFAULT_RULES, overrides)}
    if existing is None:
        existing = AlarmRuleOverride(line_id=line_id, rule=rule, changes=merged, updated_by=actor)
    existing.changes = merged
    existing.updated_by = actor
    existing.reason = reason
    existing.updated_at = utcnow()
    session.add(existing)
    record_event(
        session,
        kind="alarm_rule_changed",
        actor=actor,
        reason=reason,
        line_id=line_id,
        details={"rule": rule, "changes": changes, "now": rules[rule].to_dict()},
    )
    return rules[rule]


def alarm_states(session: Session, line_id: str) -> dict[str, AlarmState]:
    return {
        row.rule: AlarmState.from_dict(row.state)
        for row in session.exec(select(AlarmStateRow).where(AlarmStateRow.line_id == line_id))
    }


# -- the monitor


ProfileLookup = Callable[[str | None], ReferenceProfile | None]


class LineMonitor:
    """Counts each line's parts and evaluates it every `evaluate_every` parts, off the
    ingestion path: one worker thread, at most one evaluation waiting per line (a line whose
    evaluation is still running when more parts arrive is evaluated once, on the newest
    window, rather than queueing stale ones)."""

    def __init__(
        self,
        engine: Engine,
        profiles: ProfileLookup,
        metrics: ServiceMetrics | None = None,
        config: MonitorConfig | None = None,
        *,
        reference_disagreement: Callable[[str | None], float | None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.profiles = profiles
        self.metrics = metrics
        self.config = config or MonitorConfig()
        self.reference_disagreement = reference_disagreement
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._windows = _Windows()

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor")

    @staticmethod
    def warm_up() -> None:
        """Import what the drift tests import lazily (scipy.stats, scikit-learn), before the
        first part: imported at the first evaluation instead, under a line's load, it ran
        beside the requests for seconds (py-spy at 12 clients on a fresh service: 15% of its
        samples in 12 s on the import line). The app's start calls it in a worker thread."""
        import scipy.stats  # noqa: F401
        import sklearn.decomposition
        import sklearn.linear_model
        import sklearn.model_selection
        import sklearn.preprocessing  # noqa: F401

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def observe(self, line_id: str) -> Future[Evaluation | None] | None:
        """One more part on `line_id` (called after its inspection is committed)."""
        with self._lock:
            count = self._counts.get(line_id, 0) + 1
            self._counts[line_id] = count
            due = count % self.config.evaluate_every == 0
            if not due or line_id in self._pending or self._executor is None:
                return None
            self._pending.add(line_id)
            executor = self._executor
        return executor.submit(self._evaluate_pending, line_id)

    def _evaluate_pending(self, line_id: str) -> Evaluation | None:
        try:
            with self._lock:
                self._pending.discard(line_id)
            return self.evaluate(line_id)
        except Exception:
            logger.exception("monitoring: the evaluation of line %s failed", line_id)
            return None

    def evaluate(self, line_id: str) -> Evaluation | None:
        """Evaluate `line_id` now, act on what fires, commit. None for an unknown line."""
        now = self.clock()
        cfg = self.config
        with Session(self.engine, expire_on_commit=False) as session:
            line = session.get(Line, line_id)
            if line is None:
                return None
            rules = line_rules(session, line_id)
            longest = max(
                [cfg.input_window, cfg.slow_window]
                + [r.window_parts or 0 for r in rules if r.enabled]
            )
            parts = self._windows.recent(session, line_id, longest)
            if not parts:
                return Evaluation(line_id, now, None, {}, [])
            version = parts[0].model_version
            profile = self.profiles(version) if version is not None else None
            if profile is not None:  # the line's own baseline, where a supervisor set one
                profile = line_reference(session, line_id, profile)
            values, reports = self._values(session, line, parts, profile, rules, now)
            evaluation = Evaluation(line_id, now, version, values, [], reports=reports)
            # Reads first, writes last: on SQLite the first write takes the database's one
            # write lock until the commit, and ingestion's group commit waits for it, so
            # nothing but the writes and the commit's fsync may run while it is held.
            states = self._step_alarms(session, line, rules, values, evaluation, now)
            self._store(session, line_id, parts[0].id, version, values, reports, now)
            session.commit()
        self._export(line_id, values, rules, states)
        return evaluation

    def _values(
        self,
        session: Session,
        line: Line,
        parts: list[_Part],
        profile: ReferenceProfile | None,
        rules: list[AlarmRule],
        now: datetime,
    ) -> tuple[dict[str, float | None], list[DriftReport]]:
        cfg = self.config
        reports: list[DriftReport] = []
        values: dict[str, float | None] = {}
        # window shares per rule window (the gate rules name their own windows)
        for rule in rules:
            if rule.metric in ("gate_refusal_rate", "missing_output_rate"):
                size = rule.window_parts or cfg.input_window
                values[f"{rule.metric}@{size}"] = _share(p.gated for p in parts[:size])
        values["gate_refusal_rate"] = _share(p.gated for p in parts[: cfg.input_window])
        values["missing_output_rate"] = values["gate_refusal_rate"]
        values["review_backlog_age_s"] = _backlog_age(session, line.id, now)
        same_model = [p for p in parts if p.model_version == parts[0].model_version]
        values["input_drift"] = None
        if profile is not None and len(same_model) >= cfg.input_window:
            p, report = _input_drift_value(same_model[: cfg.input_window], profile)
            values["input_drift"] = p
            if report is not None:
                reports.append(report)
        values["embedding_drift"] = values["defect_rate_shift"] = values["confidence_shift"] = None
        if self._slow_due(session, line.id, parts[0].id) and len(same_model) >= cfg.slow_window:
            window = same_model[: cfg.slow_window]
            if profile is not None:
                p, report = _embedding_drift_value(window, profile, cfg.embedding_permutations)
                values["embedding_drift"] = p
                if report is not None:
                    reports.append(report)
            baseline = [
                b
                for b in _recent_parts(session, line.id, cfg.baseline_window, window[-1].id)
                if b.model_version == parts[0].model_version
            ]
            rate_p, hist_p, report = _prediction_drift_values(window, baseline, cfg)
            values["defect_rate_shift"], values["confidence_shift"] = rate_p, hist_p
            if report is not None:
                reports.append(report)
        reference = cfg.reference_disagreement
        if self.reference_disagreement is not None:
            reference = self.reference_disagreement(parts[0].model_version) or reference
        values["audit_disagreement"] = _disagreement_value(
            session, line, parts[0].model_version, cfg, reference, now
        )
        return values, reports

    def _slow_due(self, session: Session, line_id: str, newest_id: int) -> bool:
        """Whether `slow_window` parts arrived since the slow tests last ran on the line."""
        last = session.exec(
            select(MonitorSample.last_inspection_id)
            .where(MonitorSample.line_id == line_id, MonitorSample.metric == "slow_tests")
            .order_by(col(MonitorSample.id).desc())
            .limit(1)
        ).first()
        if last is None:
            return True
        since = session.exec(
            select(func.count())
            .select_from(Inspection)
            .where(Inspection.line_id == line_id, col(Inspection.id) > last)
        ).one()
        return since >= self.config.slow_window

    def _store(
        self,
        session: Session,
        line_id: str,
        newest_id: int,
        version: str | None,
        values: dict[str, float | None],
        reports: list[DriftReport],
        now: datetime,
    ) -> None:
        for metric, value in values.items():
            if "@" in metric:
                continue
            session.add(
                MonitorSample(
                    line_id=line_id,
                    at=now,
                    model_version=version,
                    metric=metric,
                    value=value,
                    window=self.config.input_window,
                    last_inspection_id=newest_id,
                )
            )
        if values.get("embedding_drift") is not None or values.get("defect_rate_shift") is not None:
            session.add(
                MonitorSample(
                    line_id=line_id,
                    at=now,
                    model_version=version,
                    metric="slow_tests",
                    value=1.0,
                    window=self.config.slow_window,
                    last_inspection_id=newest_id,
                )
            )
        for report in reports:
            report.line_id = line_id
            report.at = now
            report.model_version = version
            session.add(report)

    def _step_alarms(
        self,
        session: Session,
        line: Line,
        rules: list[AlarmRule],
        values: dict[str, float | None],
        evaluation: Evaluation,
        now: datetime,
    ) -> dict[str, AlarmState]:
        """Each rule's new state (by rule name). Writes nothing before the last read but on a
        transition (rare), whose actions read and write the line."""
        states: dict[str, AlarmState] = {}
        rows = {
            r.rule: r
            for r in session.exec(
                select(AlarmStateRow).where(AlarmStateRow.line_id == line.id).with_for_update()
            )
        }
        for rule in rules:
            value = values.get(f"{rule.metric}@{rule.window_parts}", values.get(rule.metric))
            row = rows.get(rule.name)
            state = AlarmState.from_dict(row.state) if row is not None else AlarmState()
            new_state, transitions = step(rule, state, value, now)
            states[rule.name] = new_state
            if row is None:
                row = AlarmStateRow(line_id=line.id, rule=rule.name, state=new_state.to_dict())
            row.state = new_state.to_dict()
            row.updated_at = now
            session.add(row)
            for transition in transitions:
                evaluation.transitions.append(transition)
                self._record_transition(session, line, transition, evaluation)
        return states

    def _record_transition(
        self, session: Session, line: Line, transition: Transition, evaluation: Evaluation
    ) -> None:
        details = {
            **transition.to_dict(),
            "model_version": evaluation.model_version,
            "values": evaluation.values,
        }
        record_event(
            session,
            kind=f"alarm_{transition.to_status.value}",
            actor="system",
            reason=f"alarm {transition.alarm} ({transition.severity.value}): {transition.reason}",
            line_id=line.id,
            details=details,
        )
        enqueue_alarm(session, line.id, transition.to_dict())  # the line's outputs learn it
        if transition.to_status is not AlarmStatus.FIRING:
            return
        why = f"Alarm {transition.alarm} fired: {transition.reason}."
        for action in transition.actions:
            if action is Action.STOP_AUTOMATION:
                lowered = stop_auto_decisions(
                    session,
                    line.id,
                    reason=why,
                    details=details,
                    within_era=MONITORED_METRICS[transition.metric].within_era,
                )
                evaluation.actions.append(
                    f"stop_automation -> {lowered}" if lowered else "stop_automation (no change)"
                )
            elif action is Action.RAISE_AUDIT_RATE and transition.audit_rate is not None:
                level = AutomationLevel(session.get(Line, line.id).level)  # type: ignore[union-attr]
                if level.needs_evidence:
                    new = raise_audit_rate(
                        session, line.id, transition.audit_rate, reason=why, details=details
                    )
                    evaluation.actions.append(f"raise_audit_rate -> {new}")
            elif action is Action.NOTIFY:
                record_event(
                    session,
                    kind="alarm_notify",
                    actor="system",
                    reason=why,
                    line_id=line.id,
                    details=details,
                )
                evaluation.actions.append("notify")
            elif action is Action.ROLLBACK_CANDIDATE:
                rolled = quarantine(
                    session,
                    line.id,
                    actor="system",
                    reason=why,
                    evidence={"alarm": details},
                    automatic=True,
                )
                if rolled is None:
                    record_event(
                        session,
                        kind="alarm_rollback_candidate",
                        actor="system",
                        reason=f"{why} The line has no candidate model deciding to roll back.",
                        line_id=line.id,
                        details=details,
                    )
                evaluation.actions.append(
                    f"rollback_candidate -> {rolled.candidate} quarantined"
                    if rolled is not None
                    else "rollback_candidate (none)"
                )

    def _export(
        self,
        line_id: str,
        values: dict[str, float | None],
        rules: list[AlarmRule],
        states: dict[str, AlarmState],
    ) -> None:
        """The values and each rule's state (as just committed) on the Prometheus gauges."""
        if self.metrics is None:
            return
        for metric, value in values.items():
            if "@" not in metric and value is not None:
                self.metrics.monitor_value.labels(line=line_id, metric=metric).set(value)
        for rule in rules:
            firing = states.get(rule.name, AlarmState()).status is AlarmStatus.FIRING
            self.metrics.alarm_firing.labels(
                line=line_id, alarm=rule.name, severity=rule.severity.value
            ).set(1.0 if firing else 0.0)
