"""Alarms: when a monitored number says the line is no longer what the model was trusted on.

Pure: rules and states are frozen values, `step` turns (rule, state, value, time) into the next
state and the transitions the event log records; no database, no clock, no metrics registry.
The service computes each monitored metric per line (the vocabulary in `MONITORED_METRICS`),
feeds every rule its metric at each evaluation, stores the returned state, writes each
transition as an event, and executes the actions a transition into `firing` carries.

A rule has a threshold, a window (what the service computes the metric over), a hold (how
long the condition must last before the alarm fires) and a clear condition with its own
threshold and hold. The two thresholds are the hysteresis: an alarm that fired at a gate
refusal rate above 0.2 clears only once the rate is back below 0.05, so a value wobbling
around 0.2 cannot make it flap. States::

    ok --(condition)--> pending --(held)--> firing --(clear held)--> resolved
     ^                     |                                             |
     +-----(condition gone before held)                                  |
     +------------------(next evaluation: no condition)------------------+
                         pending <---(next evaluation: condition again)--+

`pending -> firing` is skipped (ok -> firing at once) when the hold is zero. An evaluation
without a value (`None`: not enough parts in the window yet, a test that could not run) changes
nothing: it neither fires nor clears, and does not break a hold that was counting.

Actions are never undone by a resolve: an alarm that stopped automation leaves the line in
assist until a supervisor raises it again through the evidence gate. The same rules ship as a
Prometheus rules file (`inspect_app.monitoring.prometheus_rules`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)


class AlarmRuleError(ValueError):
    """A rule (or a supervisor's edit of one) that cannot be used, with what to change."""


class Comparison(StrEnum):
    ABOVE = "above"  # fires when value > threshold, clears when value < clear_threshold
    BELOW = "below"  # fires when value < threshold, clears when value > clear_threshold


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Action(StrEnum):
    RAISE_AUDIT_RATE = "raise_audit_rate"  # audit more of the auto-decided parts
    STOP_AUTOMATION = "stop_automation"  # demote the line to assist: humans decide every part
    ROLLBACK_CANDIDATE = "rollback_candidate"  # withdraw a candidate model version
    NOTIFY = "notify"  # tell the supervisors (and the plant's Alertmanager)


class AlarmStatus(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class MonitoredMetric:
    """One number the service computes per line, the only things a rule may watch."""

    name: str
    label: str  # in plant words, for the event log and the alert summary
    description: str
    probability: bool  # a share or a p-value: thresholds must lie in [0, 1]
    windowed: bool  # computed over a window of parts or seconds, which the rule must give
    # computed on the line's evidence era only (`Line.evidence_since` on): its alarm cannot
    # show a change the era does not already start at (`automation.stop_auto_decisions`)
    within_era: bool = False


_METRICS = (
    MonitoredMetric(
        "gate_refusal_rate",
        "image gate refusal rate",
        "Share of the frames in the window that the image gate refused (blank, badly exposed,"
        " out of focus, wrong size, or unlike the reference to the model).",
        probability=True,
        windowed=True,
    ),
    MonitoredMetric(
        "input_drift",
        "input drift p-value",
        "Smallest Benjamini-Hochberg adjusted p-value of the per-metric KS tests of the"
        " window's image metrics against the reference (small: the camera's images changed).",
        probability=True,
        windowed=True,
    ),
    MonitoredMetric(
        "embedding_drift",
        "embedding drift p-value",
        "Permutation p-value of the classifier two-sample test of the window's embeddings"
        " against the reference's (small: the images look different to the model).",
        probability=True,
        windowed=True,
    ),
    MonitoredMetric(
        "defect_rate_shift",
        "defect rate shift p-value",
        "p-value of the exact binomial test of the window's predicted defect rate against"
        " the reference's (small: the model calls defects more, or less, often).",
        probability=True,
        windowed=True,
    ),
    MonitoredMetric(
        "confidence_shift",
        "confidence shift p-value",
        "p-value of the chi-square test of the window's P(defect) histogram against the"
        " reference's (small: the model is more, or less, sure than it was).",
        probability=True,
        windowed=True,
    ),
    MonitoredMetric(
        "audit_disagreement",
        "audit disagreement detected",
        "1 when the sequential test on blind-audit disagreements detected within the window"
        " (the model is wrong more often than when it was trusted), else 0.",
        probability=True,
        windowed=True,
        within_era=True,
    ),
    MonitoredMetric(
        "missing_output_rate",
        "missing output rate",
        "Share of the parts in the window without a model decision: refused by the image"
        " gate or failed in the model.",
        probability=True,
        windowed=True,
    ),
    MonitoredMetric(
        "review_backlog_age_s",
        "age of the oldest waiting review (s)",
        "Seconds the oldest waiting review task has waited.",
        probability=False,
        windowed=False,
    ),
)
MONITORED_METRICS: Mapping[str, MonitoredMetric] = {m.name: m for m in _METRICS}

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Fields a supervisor may change per line; name, metric and comparison make a different rule.
EDITABLE_FIELDS = frozenset(
    {
        "threshold",
        "clear_threshold",
        "window_parts",
        "window_seconds",
        "hold",
        "hold_seconds",
        "clear_hold",
        "clear_hold_seconds",
        "severity",
        "actions",
        "audit_rate",
        "enabled",
        "description",
    }
)


def _number(rule: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlarmRuleError(f"rule {rule!r}: {what} must be a finite number, got {value!r}")
    return float(value)


def _count(rule: str, what: str, value: object, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise AlarmRuleError(
            f"rule {rule!r}: {what} must be a whole number >= {least}, got {value!r}"
        )
    return value


def _choice(rule: str, what: str, kind: type[_E], value: object) -> _E:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(m.value for m in kind)
        raise AlarmRuleError(f"rule {rule!r}: unknown {what} {value!r} (known: {known})") from None


@dataclass(frozen=True, kw_only=True)
class AlarmRule:
    """What to watch, when to fire, when to clear, and what to do when it fires.

    * `threshold` / `clear_threshold`: the hysteresis. For `above`, fires when the value is
      above `threshold` and clears when it is below `clear_threshold` (<= threshold); for
      `below` (p-values), the mirror image. Between the two the alarm keeps its state.
    * `window_parts` / `window_seconds`: what the service computes the metric over (the last
      N parts of the line, none older than S seconds); at least one for a windowed metric.
    * `hold` / `hold_seconds`: after the first evaluation with the condition (pending), how
      many more consecutive evaluations, and how many seconds, it must last before the alarm
      fires; both zero fires at once. As Prometheus's `for:`.
    * `clear_hold` / `clear_hold_seconds`: the same for the clear condition while firing.
    * `actions`, executed by the service when the alarm fires; `audit_rate` is the share of
      auto-decided parts to audit while `raise_audit_rate` is among them.
    """

    name: str
    metric: str
    comparison: Comparison
    threshold: float
    clear_threshold: float
    severity: Severity
    description: str
    window_parts: int | None = None
    window_seconds: float | None = None
    hold: int = 0
    hold_seconds: float = 0.0
    clear_hold: int = 0
    clear_hold_seconds: float = 0.0
    actions: tuple[Action, ...] = ()
    audit_rate: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise AlarmRuleError(
                f"rule name {name!r} must be lower case letters, digits and _ (at most 64),"
                " starting with a letter"
            )
        spec = MONITORED_METRICS.get(self.metric)
        if spec is None:
            known = ", ".join(MONITORED_METRICS)
            raise AlarmRuleError(f"rule {name!r}: unknown metric {self.metric!r} (known: {known})")
        set_ = object.__setattr__  # frozen: normalise the inputs once, here
        set_(self, "comparison", _choice(name, "comparison", Comparison, self.comparison))
        set_(self, "severity", _choice(name, "severity", Severity, self.severity))
        threshold = _number(name, "threshold", self.threshold)
        clear = _number(name, "clear_threshold", self.clear_threshold)
        for what, value in (("threshold", threshold), ("clear_threshold", clear)):
            if spec.probability and not 0.0 <= value <= 1.0:
                raise AlarmRuleError(
                    f"rule {name!r}: {what} {value} must lie in [0, 1]: {spec.name} is a"
                    " share or a probability"
                )
            if not spec.probability and value < 0.0:
                raise AlarmRuleError(f"rule {name!r}: {what} {value} must not be negative")
        if self.comparison is Comparison.ABOVE and clear > threshold:
            raise AlarmRuleError(
                f"rule {name!r}: clear_threshold {clear} must be at or below threshold"
                f" {threshold}: an 'above' alarm clears when the value falls back below it"
            )
        if self.comparison is Comparison.BELOW and clear < threshold:
            raise AlarmRuleError(
                f"rule {name!r}: clear_threshold {clear} must be at or above threshold"
                f" {threshold}: a 'below' alarm clears when the value climbs back above it"
            )
        set_(self, "threshold", threshold)
        set_(self, "clear_threshold", clear)
        if self.window_parts is not None:
            _count(name, "window_parts", self.window_parts, least=1)
        if self.window_seconds is not None:
            seconds = _number(name, "window_seconds", self.window_seconds)
            if seconds <= 0.0:
                raise AlarmRuleError(f"rule {name!r}: window_seconds must be positive")
            set_(self, "window_seconds", seconds)
        has_window = self.window_parts is not None or self.window_seconds is not None
        if spec.windowed and not has_window:
            raise AlarmRuleError(
                f"rule {name!r}: {spec.name} is computed over a window: give window_parts"
                " and/or window_seconds"
            )
        if not spec.windowed and has_window:
            raise AlarmRuleError(f"rule {name!r}: {spec.name} has no window; leave it unset")
        _count(name, "hold", self.hold, least=0)
        _count(name, "clear_hold", self.clear_hold, least=0)
        for what in ("hold_seconds", "clear_hold_seconds"):
            seconds = _number(name, what, getattr(self, what))
            if seconds < 0.0:
                raise AlarmRuleError(f"rule {name!r}: {what} must not be negative")
            set_(self, what, seconds)
        if isinstance(self.actions, str):
            raise AlarmRuleError(f"rule {name!r}: actions must be a list of action names")
        actions = [_choice(name, "action", Action, a) for a in self.actions]
        if len(set(actions)) != len(actions):
            raise AlarmRuleError(f"rule {name!r}: an action is listed twice in {self.actions!r}")
        set_(self, "actions", tuple(a for a in Action if a in actions))  # one canonical order
        if Action.RAISE_AUDIT_RATE in self.actions:
            if self.audit_rate is None:
                raise AlarmRuleError(
                    f"rule {name!r}: raise_audit_rate needs an audit_rate (share of parts)"
                )
            rate = _number(name, "audit_rate", self.audit_rate)
            if not 0.0 < rate <= 1.0:
                raise AlarmRuleError(f"rule {name!r}: audit_rate {rate} must lie in (0, 1]")
            set_(self, "audit_rate", rate)
        elif self.audit_rate is not None:
            raise AlarmRuleError(
                f"rule {name!r}: audit_rate is set but raise_audit_rate is not among the actions"
            )
        if not isinstance(self.enabled, bool):
            raise AlarmRuleError(f"rule {name!r}: enabled must be true or false")
        if not isinstance(self.description, str) or not self.description.strip():
            raise AlarmRuleError(f"rule {name!r}: say in a description what the alarm means")

    @property
    def watched(self) -> MonitoredMetric:
        return MONITORED_METRICS[self.metric]

    def breached(self, value: float) -> bool:
        """Is the fire condition met?"""
        if self.comparison is Comparison.ABOVE:
            return value > self.threshold
        return value < self.threshold

    def cleared(self, value: float) -> bool:
        """Is the clear condition met? (Never together with `breached`.)"""
        if self.comparison is Comparison.ABOVE:
            return value < self.clear_threshold
        return value > self.clear_threshold

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: for the database, the API and the event log."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["comparison"] = self.comparison.value
        data["severity"] = self.severity.value
        data["actions"] = [a.value for a in self.actions]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlarmRule:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise AlarmRuleError(
                f"rule {data.get('name')!r}: unknown fields {', '.join(sorted(unknown))}"
            )
        values = dict(data)
        if "actions" in values and not isinstance(values["actions"], str):
            values["actions"] = tuple(values["actions"])
        try:
            return cls(**values)
        except TypeError as exc:  # a required field left out
            raise AlarmRuleError(f"rule {data.get('name')!r}: {exc}") from None


def effective_rules(
    defaults: Iterable[AlarmRule], overrides: Mapping[str, Mapping[str, Any]]
) -> list[AlarmRule]:
    """A line's rules: the defaults with a supervisor's edits, `{rule name: {field: value}}`.

    Only `EDITABLE_FIELDS` may change; an edit that names an unknown rule or field, or leaves
    a rule invalid (say a threshold moved past its clear threshold), is refused whole, with
    what to change, rather than half applied.
    """
    rules = list(defaults)
    by_name = {rule.name: rule for rule in rules}
    unknown = set(overrides) - set(by_name)
    if unknown:
        raise AlarmRuleError(
            f"no default rule named {', '.join(sorted(unknown))} (known: {', '.join(by_name)})"
        )
    edited: dict[str, AlarmRule] = {}
    for name, changes in overrides.items():
        not_editable = set(changes) - EDITABLE_FIELDS
        if not_editable:
            raise AlarmRuleError(
                f"rule {name!r}: {', '.join(sorted(not_editable))} cannot be changed per line"
                f" (editable: {', '.join(sorted(EDITABLE_FIELDS))})"
            )
        values = dict(changes)
        if "actions" in values and not isinstance(values["actions"], str):
            values["actions"] = tuple(values["actions"])
            if Action.RAISE_AUDIT_RATE.value not in [str(a) for a in values["actions"]]:
                values.setdefault("audit_rate", None)  # dropping the action drops its rate
        edited[name] = replace(by_name[name], **values)
    return [edited.get(rule.name, rule) for rule in rules]


# --------------------------------------------------------------------------------------------
# The shipped defaults. Provisional numbers, to be calibrated against the system targets
# (stop deciding within 50 parts of a lighting drop or a blur with <= 1 escape; <= 1 false
# alarm per 20,000 clean parts) by measuring them on clean and drifted streams. The service is
# assumed to evaluate every rule about every 10 parts (about once a minute at 10 parts a
# minute); holds are counted in those evaluations.

DEFAULT_RULES: tuple[AlarmRule, ...] = (
    # A working camera has a few percent of its frames refused at most (the gate's thresholds
    # sit at reference quantiles). 10 of 50 is no chance at that rate (binomial tail ~1e-5 at
    # 3%): the camera or the light has changed, and the frames the gate still passes are the
    # borderline ones of a shifted stream, so automation stops at once (hold 0). It clears at
    # 0.05, a plainly working camera again, and only after three clean evaluations in a row.
    AlarmRule(
        name="gate_refusals_high",
        metric="gate_refusal_rate",
        comparison="above",
        threshold=0.2,
        clear_threshold=0.05,
        window_parts=50,
        hold=0,
        clear_hold=2,
        severity="critical",
        actions=("stop_automation", "notify"),
        description=(
            "The image gate refuses more than a fifth of the frames: the camera, its light or"
            " its focus has changed. The model stops deciding; every part goes to a person."
        ),
    ),
    # Each KS test runs at 0.001; with an evaluation every 10 parts a line makes ~2,000 per
    # 20,000 parts, so the alarm asks ten times less (1e-4) and two evaluations in a row
    # (hold 1). A 40% lighting drop or a blur gives p far below 1e-10 on 50 parts, so the
    # strict level costs no delay; 50 parts is the smallest window the target allows.
    AlarmRule(
        name="input_drift",
        metric="input_drift",
        comparison="below",
        threshold=1e-4,
        clear_threshold=0.01,
        window_parts=50,
        hold=1,
        clear_hold=2,
        severity="critical",
        actions=("stop_automation", "notify"),
        description=(
            "The camera's images have changed (brightness, contrast, sharpness, colour) from"
            " what the model was checked on. The model stops deciding until a person looks."
        ),
    ),
    # 999 permutations make 0.001 the smallest p the test can give; the threshold sits just
    # above it, so "no permuted labelling did as well" fires. 200 parts: the classifier test
    # has little power on fewer. A look-alike shift the model may still handle: audit more
    # (a fifth of the auto-decided parts) rather than stop.
    AlarmRule(
        name="embedding_drift",
        metric="embedding_drift",
        comparison="below",
        threshold=0.002,
        clear_threshold=0.05,
        window_parts=200,
        hold=1,
        clear_hold=2,
        severity="warning",
        actions=("raise_audit_rate", "notify"),
        audit_rate=0.2,
        description=(
            "The recent images look different to the model from those it was checked on,"
            " though no single image metric shows it. A fifth of its decisions are audited."
        ),
    ),
    # Defects are a few percent of parts: 200 parts see about ten, the least for the binomial
    # test to tell a doubled rate. A changed defect rate may be the line's, not the model's:
    # audit more to find out which.
    AlarmRule(
        name="defect_rate_shift",
        metric="defect_rate_shift",
        comparison="below",
        threshold=1e-4,
        clear_threshold=0.01,
        window_parts=200,
        hold=1,
        clear_hold=2,
        severity="warning",
        actions=("raise_audit_rate", "notify"),
        audit_rate=0.2,
        description=(
            "The model calls defects more, or less, often than on its reference: the line or"
            " the model has changed. A fifth of its decisions are audited."
        ),
    ),
    # The confidence histogram moves before the defect rate does (good parts grow less sure
    # first); same level and window as the defect rate, same answer: audit more.
    AlarmRule(
        name="confidence_shift",
        metric="confidence_shift",
        comparison="below",
        threshold=1e-4,
        clear_threshold=0.01,
        window_parts=200,
        hold=1,
        clear_hold=2,
        severity="warning",
        actions=("raise_audit_rate", "notify"),
        audit_rate=0.2,
        description=(
            "The model is more, or less, sure of its answers than on its reference. A fifth"
            " of its decisions are audited."
        ),
    ),
    # The CUSUM carries its own false-alarm level (one per 10,000 labels) and restarts after
    # it fires, so its detection is a flag over the last hour: a persisting drift detects again
    # well within it and keeps the alarm firing without flapping. Labels showing the model
    # wrong more often is the strongest evidence there is: stop at once.
    AlarmRule(
        name="audit_disagreement",
        metric="audit_disagreement",
        comparison="above",
        threshold=0.5,
        clear_threshold=0.5,
        window_seconds=3600.0,
        hold=0,
        clear_hold=0,
        severity="critical",
        actions=("stop_automation", "notify"),
        description=(
            "Blind audits disagree with the model more often than when it was trusted: its"
            " answers have got worse. The model stops deciding; every part goes to a person."
        ),
    ),
    # Parts without a model output go to people anyway, so nothing is decided wrongly; a
    # quarter of them (the gate's refusals are watched above, this adds model failures) means
    # the reviewers are flooded and someone must look at the service.
    AlarmRule(
        name="missing_outputs_high",
        metric="missing_output_rate",
        comparison="above",
        threshold=0.25,
        clear_threshold=0.05,
        window_parts=50,
        hold=1,
        clear_hold=2,
        severity="warning",
        actions=("notify",),
        description=(
            "More than a quarter of the parts get no decision from the model (refused frames"
            " or model errors); they all wait for people."
        ),
    ),
    # Half an hour unreviewed is a part held off the line for a shift's break; the age only
    # grows while nobody reviews, so no hold is needed, and it clears under a quarter of an hour.
    AlarmRule(
        name="review_backlog_old",
        metric="review_backlog_age_s",
        comparison="above",
        threshold=1800.0,
        clear_threshold=900.0,
        hold=0,
        clear_hold=0,
        severity="info",
        actions=("notify",),
        description="A part has waited more than half an hour for a person's review.",
    ),
)


# --------------------------------------------------------------------------------------------
# The state machine


@dataclass(frozen=True)
class AlarmState:
    """Where one rule stands on one line: all `step` needs, a few values to store per rule.

    `streak` counts consecutive evaluations meeting the fire condition (while pending) or the
    clear condition (while firing), since `streak_since`.
    """

    status: AlarmStatus = AlarmStatus.OK
    since: datetime | None = None  # when it entered `status`
    streak: int = 0
    streak_since: datetime | None = None
    value: float | None = None  # the last value seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "since": None if self.since is None else self.since.isoformat(),
            "streak": self.streak,
            "streak_since": None if self.streak_since is None else self.streak_since.isoformat(),
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlarmState:
        def when(text: str | None) -> datetime | None:
            return None if text is None else datetime.fromisoformat(text)

        return cls(
            status=AlarmStatus(data["status"]),
            since=when(data.get("since")),
            streak=int(data.get("streak", 0)),
            streak_since=when(data.get("streak_since")),
            value=data.get("value"),
        )


@dataclass(frozen=True)
class Transition:
    """One change of an alarm's state: one event in the log, with what it rested on."""

    alarm: str
    metric: str
    severity: Severity
    from_status: AlarmStatus
    to_status: AlarmStatus
    value: float | None
    comparison: Comparison
    threshold: float
    clear_threshold: float
    at: datetime
    reason: str
    # what the service must do: set only on the transition into firing
    actions: tuple[Action, ...] = field(default=())
    audit_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm": self.alarm,
            "metric": self.metric,
            "severity": self.severity.value,
            "from_status": self.from_status.value,
            "to_status": self.to_status.value,
            "value": self.value,
            "comparison": self.comparison.value,
            "threshold": self.threshold,
            "clear_threshold": self.clear_threshold,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "actions": [a.value for a in self.actions],
            "audit_rate": self.audit_rate,
        }


def _held(count: int, since: datetime, now: datetime, evaluations: int, seconds: float) -> bool:
    return count > evaluations and (now - since).total_seconds() >= seconds


def _times(n: int) -> str:
    return "1 evaluation" if n == 1 else f"{n} evaluations"


def step(
    rule: AlarmRule, state: AlarmState, value: float | None, now: datetime
) -> tuple[AlarmState, list[Transition]]:
    """One evaluation of `rule` on the value the service computed at `now`.

    Returns the next state and the transitions made (none, or one). `None`, or a NaN, is no
    data: nothing changes. A disabled rule winds down: pending and resolved go to ok, firing
    to resolved.
    """
    if value is not None and math.isnan(value):
        value = None
    label = rule.watched.label

    def move(to: AlarmStatus, reason: str, **kept: Any) -> tuple[AlarmState, list[Transition]]:
        firing = to is AlarmStatus.FIRING
        transition = Transition(
            alarm=rule.name,
            metric=rule.metric,
            severity=rule.severity,
            from_status=state.status,
            to_status=to,
            value=value,
            comparison=rule.comparison,
            threshold=rule.threshold,
            clear_threshold=rule.clear_threshold,
            at=now,
            reason=reason,
            actions=rule.actions if firing else (),
            audit_rate=rule.audit_rate if firing else None,
        )
        new = AlarmState(status=to, since=now, value=value if value is not None else state.value)
        return replace(new, **kept), [transition]

    if not rule.enabled:
        if state.status is AlarmStatus.OK:
            return state, []
        to = AlarmStatus.RESOLVED if state.status is AlarmStatus.FIRING else AlarmStatus.OK
        return move(to, "the rule was disabled")
    if value is None:
        return state, []

    beyond = f"{label} {value:g} {rule.comparison.value} {rule.threshold:g}"
    status = state.status
    if status in (AlarmStatus.OK, AlarmStatus.RESOLVED):
        if rule.breached(value):
            if _held(1, now, now, rule.hold, rule.hold_seconds):
                return move(AlarmStatus.FIRING, beyond)
            return move(AlarmStatus.PENDING, beyond, streak=1, streak_since=now)
        if status is AlarmStatus.RESOLVED:
            return move(AlarmStatus.OK, f"{label} {value:g} stays clear")
        return replace(state, value=value), []

    if status is AlarmStatus.PENDING:
        if not rule.breached(value):
            return move(
                AlarmStatus.OK,
                f"{label} {value:g} no longer {rule.comparison.value} {rule.threshold:g}"
                " before the hold ended",
            )
        streak = state.streak + 1
        since = state.streak_since or state.since or now
        if _held(streak, since, now, rule.hold, rule.hold_seconds):
            return move(AlarmStatus.FIRING, f"{beyond} for {_times(streak)}")
        return replace(state, streak=streak, value=value), []

    # firing: count the clear condition; a value in the hysteresis band restarts the count
    if not rule.cleared(value):
        return replace(state, streak=0, streak_since=None, value=value), []
    streak = state.streak + 1
    since = state.streak_since or now
    if _held(streak, since, now, rule.clear_hold, rule.clear_hold_seconds):
        back = "below" if rule.comparison is Comparison.ABOVE else "above"
        return move(
            AlarmStatus.RESOLVED,
            f"{label} {value:g} {back} the clear threshold {rule.clear_threshold:g}"
            f" for {_times(streak)}",
        )
    return replace(state, streak=streak, streak_since=since, value=value), []
