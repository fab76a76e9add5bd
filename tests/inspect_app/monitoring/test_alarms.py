"""The alarm state machine on scripted series, the shipped defaults, per-line edits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inspect_app.monitoring.alarms import (
    DEFAULT_RULES,
    MONITORED_METRICS,
    Action,
    AlarmRule,
    AlarmRuleError,
    AlarmState,
    AlarmStatus,
    Severity,
    Transition,
    effective_rules,
    step,
)

OK, PENDING, FIRING, RESOLVED = (
    AlarmStatus.OK,
    AlarmStatus.PENDING,
    AlarmStatus.FIRING,
    AlarmStatus.RESOLVED,
)
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)

RULE = AlarmRule(
    name="gate_refusals_high",
    metric="gate_refusal_rate",
    comparison="above",
    threshold=0.2,
    clear_threshold=0.05,
    window_parts=50,
    hold=2,
    clear_hold=1,
    severity="critical",
    actions=("stop_automation", "notify"),
    description="The gate refuses a fifth of the frames.",
)


def run(
    rule: AlarmRule,
    values: Sequence[float | None],
    *,
    state: AlarmState | None = None,
    every: timedelta = timedelta(minutes=1),
) -> tuple[list[AlarmStatus], list[Transition], AlarmState]:
    """Feed a series, one evaluation per `every`; the status after each, and every change."""
    state = state or AlarmState()
    statuses: list[AlarmStatus] = []
    transitions: list[Transition] = []
    for i, value in enumerate(values):
        state, made = step(rule, state, value, T0 + i * every)
        statuses.append(state.status)
        transitions.extend(made)
    return statuses, transitions, state


def moves(transitions: Sequence[Transition]) -> list[tuple[str, str]]:
    return [(t.from_status.value, t.to_status.value) for t in transitions]


# -- hold ------------------------------------------------------------------------------------


def test_pending_until_the_condition_held_for_hold_more_evaluations() -> None:
    statuses, transitions, _ = run(RULE, [0.1, 0.3, 0.3, 0.3, 0.3])
    assert statuses == [OK, PENDING, PENDING, FIRING, FIRING]
    assert moves(transitions) == [("ok", "pending"), ("pending", "firing")]
    fired = transitions[-1]
    assert fired.at == T0 + timedelta(minutes=3)
    assert fired.value == 0.3 and fired.threshold == 0.2 and fired.clear_threshold == 0.05
    assert "for 3 evaluations" in fired.reason


def test_hold_zero_fires_at_once() -> None:
    statuses, transitions, _ = run(replace(RULE, hold=0), [0.1, 0.5])
    assert statuses == [OK, FIRING]
    assert moves(transitions) == [("ok", "firing")]


def test_a_break_in_the_condition_before_the_hold_ends_goes_back_to_ok() -> None:
    statuses, transitions, _ = run(RULE, [0.3, 0.3, 0.15, 0.3, 0.3, 0.3])
    assert statuses == [PENDING, PENDING, OK, PENDING, PENDING, FIRING]
    assert moves(transitions)[:3] == [("ok", "pending"), ("pending", "ok"), ("ok", "pending")]


def test_hold_seconds_waits_for_the_time_as_well() -> None:
    rule = replace(RULE, hold=0, hold_seconds=300.0)
    statuses, _, _ = run(rule, [0.3] * 7)
    assert statuses == [PENDING] * 5 + [FIRING, FIRING]  # fires at the first evaluation >= 5 min


# -- actions ---------------------------------------------------------------------------------


def test_actions_come_only_with_the_transition_into_firing() -> None:
    rule = replace(RULE, actions=("raise_audit_rate", "notify"), audit_rate=0.2, clear_hold=0)
    _, transitions, _ = run(rule, [0.3, 0.3, 0.3, 0.3, 0.01, 0.01, 0.3, 0.3, 0.3])
    with_actions = [t for t in transitions if t.actions]
    assert all(t.to_status is FIRING for t in with_actions)
    assert len(with_actions) == 2  # fired twice: once, and again after resolving
    assert with_actions[0].actions == (Action.RAISE_AUDIT_RATE, Action.NOTIFY)
    assert with_actions[0].audit_rate == 0.2
    others = [t for t in transitions if t.to_status is not FIRING]
    assert others and all(t.actions == () and t.audit_rate is None for t in others)


# -- clearing: hysteresis and clear hold ------------------------------------------------------


def test_a_value_oscillating_between_the_two_thresholds_does_not_flap() -> None:
    firing = run(replace(RULE, hold=0), [0.3])[2]
    wobble = [0.19, 0.21, 0.06, 0.25, 0.1, 0.3, 0.05, 0.22] * 5
    statuses, transitions, _ = run(RULE, wobble, state=firing)
    assert set(statuses) == {FIRING}
    assert transitions == []


def test_without_hysteresis_the_same_series_would_flap() -> None:
    """What the clear threshold buys: with it at the threshold and no clear hold, it flaps."""
    bare = replace(RULE, hold=0, clear_threshold=0.2, clear_hold=0)
    _, transitions, _ = run(bare, [0.19, 0.21, 0.06, 0.25, 0.1, 0.3, 0.05, 0.22])
    assert sum(t.to_status is FIRING for t in transitions) == 4


def test_clears_after_clear_hold_more_evaluations_below_the_clear_threshold() -> None:
    firing = run(replace(RULE, hold=0), [0.3])[2]
    statuses, transitions, _ = run(RULE, [0.01, 0.01, 0.01], state=firing)
    assert statuses == [FIRING, RESOLVED, OK]
    assert moves(transitions) == [("firing", "resolved"), ("resolved", "ok")]
    resolved = transitions[0]
    assert resolved.value == 0.01 and "below the clear threshold 0.05" in resolved.reason


def test_a_value_in_the_band_restarts_the_clear_hold() -> None:
    firing = run(replace(RULE, hold=0), [0.3])[2]
    statuses, _, _ = run(RULE, [0.01, 0.1, 0.01, 0.01], state=firing)
    assert statuses == [FIRING, FIRING, FIRING, RESOLVED]


def test_clear_hold_seconds() -> None:
    rule = replace(RULE, hold=0, clear_hold=0, clear_hold_seconds=120.0)
    statuses, _, _ = run(rule, [0.3, 0.01, 0.01, 0.01])
    assert statuses == [FIRING, FIRING, FIRING, RESOLVED]


def test_resolved_goes_back_to_pending_or_straight_to_firing_when_it_returns() -> None:
    firing = run(replace(RULE, hold=0), [0.3])[2]
    resolved = run(RULE, [0.01, 0.01], state=firing)[2]
    assert resolved.status is RESOLVED
    statuses, transitions, _ = run(RULE, [0.3], state=resolved)
    assert statuses == [PENDING] and moves(transitions) == [("resolved", "pending")]
    statuses, transitions, _ = run(replace(RULE, hold=0), [0.3], state=resolved)
    assert statuses == [FIRING] and moves(transitions) == [("resolved", "firing")]


def test_below_rules_fire_on_small_values_and_clear_on_large_ones() -> None:
    rule = next(r for r in DEFAULT_RULES if r.name == "input_drift")  # p < 1e-4, clears > 0.01
    statuses, transitions, _ = run(rule, [0.4, 1e-6, 1e-7, 0.005, 0.02, 0.3, 0.5, 0.5])
    assert statuses == [OK, PENDING, FIRING, FIRING, FIRING, FIRING, RESOLVED, OK]
    assert transitions[1].reason.startswith("input drift p-value 1e-07 below 0.0001")


# -- no data ---------------------------------------------------------------------------------


def test_none_never_fires_never_clears_and_does_not_break_a_hold() -> None:
    assert run(replace(RULE, hold=0), [None] * 5)[0] == [OK] * 5
    statuses, _, _ = run(RULE, [0.3, None, 0.3, None, None, 0.3])
    assert statuses == [PENDING, PENDING, PENDING, PENDING, PENDING, FIRING]
    firing = run(replace(RULE, hold=0), [0.3])[2]
    statuses, transitions, state = run(RULE, [None] * 10, state=firing)
    assert statuses == [FIRING] * 10 and transitions == []
    assert state == firing


def test_nan_is_no_data() -> None:
    statuses, transitions, _ = run(replace(RULE, hold=0), [float("nan"), float("nan")])
    assert statuses == [OK, OK] and transitions == []


# -- disabling -------------------------------------------------------------------------------


def test_a_disabled_rule_winds_down_and_stays_quiet() -> None:
    firing = run(replace(RULE, hold=0), [0.3])[2]
    off = replace(RULE, enabled=False)
    statuses, transitions, _ = run(off, [0.9, 0.9, 0.9], state=firing)
    assert statuses == [RESOLVED, OK, OK]
    assert [t.reason for t in transitions] == ["the rule was disabled"] * 2
    assert run(off, [0.9] * 3)[1] == []


# -- what the event log and the database store -------------------------------------------------


def test_transitions_and_states_are_plain_json() -> None:
    _, transitions, state = run(replace(RULE, hold=0), [0.3, 0.01, 0.4])
    logged = json.loads(json.dumps([t.to_dict() for t in transitions]))
    assert logged[0] == {
        "alarm": "gate_refusals_high",
        "metric": "gate_refusal_rate",
        "severity": "critical",
        "from_status": "ok",
        "to_status": "firing",
        "value": 0.3,
        "comparison": "above",
        "threshold": 0.2,
        "clear_threshold": 0.05,
        "at": T0.isoformat(),
        "reason": "image gate refusal rate 0.3 above 0.2",
        "actions": ["stop_automation", "notify"],
        "audit_rate": None,
    }
    assert AlarmState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    pending = run(RULE, [0.3])[2]
    assert AlarmState.from_dict(pending.to_dict()) == pending


# -- the shipped defaults --------------------------------------------------------------------


def test_every_default_is_valid_named_once_and_survives_json() -> None:
    names = [rule.name for rule in DEFAULT_RULES]
    assert len(set(names)) == len(names)
    for rule in DEFAULT_RULES:
        assert AlarmRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert {rule.metric for rule in DEFAULT_RULES} == set(MONITORED_METRICS)


def test_the_defaults_the_design_asks_for() -> None:
    rules = {rule.name: rule for rule in DEFAULT_RULES}
    gate = rules["gate_refusals_high"]
    assert (gate.threshold, gate.window_parts, gate.severity) == (0.2, 50, Severity.CRITICAL)
    assert Action.STOP_AUTOMATION in gate.actions
    drift = rules["input_drift"]
    assert (drift.threshold, drift.window_parts, drift.hold) == (1e-4, 50, 1)
    assert Action.STOP_AUTOMATION in drift.actions
    assert Action.RAISE_AUDIT_RATE in rules["embedding_drift"].actions
    assert Action.STOP_AUTOMATION in rules["audit_disagreement"].actions
    backlog = rules["review_backlog_old"]
    assert (backlog.threshold, backlog.severity, backlog.actions) == (
        1800.0,
        Severity.INFO,
        (Action.NOTIFY,),
    )
    for rule in DEFAULT_RULES:  # every critical alarm takes the model off deciding
        if rule.severity is Severity.CRITICAL:
            assert Action.STOP_AUTOMATION in rule.actions


def test_a_lighting_drop_stops_automation_and_a_clean_stream_does_not() -> None:
    drift = next(r for r in DEFAULT_RULES if r.name == "input_drift")
    _, transitions, _ = run(drift, [0.3, 0.6, 1e-12, 1e-14, 1e-15])
    assert [t.actions for t in transitions if t.to_status is FIRING] == [
        (Action.STOP_AUTOMATION, Action.NOTIFY)
    ]
    clean = [0.9, 0.4, 0.00005, 0.2, 0.7, 0.00009, 0.5]  # single low p-values, never two in a row
    assert FIRING not in run(drift, clean)[0]


# -- validation ------------------------------------------------------------------------------


def _rule(**changes: Any) -> AlarmRule:
    return AlarmRule.from_dict({**RULE.to_dict(), **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"clear_threshold": 0.3}, r"clear_threshold 0.3 must be at or below threshold 0.2"),
        (
            {"metric": "input_drift", "comparison": "below", "threshold": 0.01,
             "clear_threshold": 0.001},
            r"clear_threshold 0.001 must be at or above threshold 0.01",
        ),
        ({"threshold": 1.5}, r"threshold 1.5 must lie in \[0, 1\]"),
        ({"metric": "review_backlog_age_s", "window_parts": None}, None),  # valid: no window
        ({"metric": "review_backlog_age_s"}, r"review_backlog_age_s has no window"),
        ({"window_parts": None}, r"computed over a window"),
        ({"window_parts": 0}, r"window_parts must be a whole number >= 1"),
        ({"metric": "lamp_colour"}, r"unknown metric 'lamp_colour' \(known: gate_refusal_rate"),
        ({"comparison": "sideways"}, r"unknown comparison 'sideways'"),
        ({"severity": "page"}, r"unknown severity 'page'"),
        ({"actions": ["stop_automation", "reboot"]}, r"unknown action 'reboot'"),
        ({"actions": ["notify", "notify"]}, r"listed twice"),
        ({"actions": "notify"}, r"actions must be a list"),
        ({"actions": ["raise_audit_rate"]}, r"raise_audit_rate needs an audit_rate"),
        ({"actions": ["raise_audit_rate"], "audit_rate": 1.2}, r"audit_rate 1.2 must lie in"),
        ({"audit_rate": 0.2}, r"audit_rate is set but raise_audit_rate is not"),
        ({"hold": -1}, r"hold must be a whole number >= 0"),
        ({"hold": 1.5}, r"hold must be a whole number"),
        ({"clear_hold_seconds": -5}, r"clear_hold_seconds must not be negative"),
        ({"threshold": "0.2"}, r"threshold must be a finite number"),
        ({"threshold": float("inf")}, r"threshold must be a finite number"),
        ({"name": "Gate Alarm"}, r"rule name 'Gate Alarm' must be lower case"),
        ({"description": "  "}, r"say in a description"),
        ({"enabled": "yes"}, r"enabled must be true or false"),
        ({"colour": "red"}, r"unknown fields colour"),
    ],
)  # fmt: skip
def test_invalid_rules_are_refused_with_what_to_change(
    changes: dict[str, Any], message: str | None
) -> None:
    if message is None:
        assert _rule(**changes).window_parts is None
        return
    with pytest.raises(AlarmRuleError, match=message):
        _rule(**changes)


def test_a_rule_without_a_required_field_is_refused() -> None:
    data = RULE.to_dict()
    del data["threshold"]
    with pytest.raises(AlarmRuleError, match="threshold"):
        AlarmRule.from_dict(data)


def test_actions_are_kept_in_one_order() -> None:
    assert _rule(actions=["notify", "stop_automation"]).actions == (
        Action.STOP_AUTOMATION,
        Action.NOTIFY,
    )


# -- per-line overrides ----------------------------------------------------------------------


def test_a_supervisors_edits_apply_to_their_rule_only() -> None:
    rules = effective_rules(
        DEFAULT_RULES,
        {
            "gate_refusals_high": {"threshold": 0.3, "hold": 2, "actions": ["notify"]},
            "review_backlog_old": {"enabled": False},
        },
    )
    assert [r.name for r in rules] == [r.name for r in DEFAULT_RULES]
    by_name = {r.name: r for r in rules}
    gate = by_name["gate_refusals_high"]
    assert (gate.threshold, gate.hold, gate.actions) == (0.3, 2, (Action.NOTIFY,))
    assert gate.clear_threshold == 0.05  # untouched fields stay the defaults'
    assert not by_name["review_backlog_old"].enabled
    defaults = {r.name: r for r in DEFAULT_RULES}
    for name, rule in by_name.items():
        if name not in ("gate_refusals_high", "review_backlog_old"):
            assert rule == defaults[name]
    assert effective_rules(DEFAULT_RULES, {}) == list(DEFAULT_RULES)


def test_dropping_raise_audit_rate_drops_its_rate() -> None:
    (embedding,) = [
        r
        for r in effective_rules(DEFAULT_RULES, {"embedding_drift": {"actions": ["notify"]}})
        if r.name == "embedding_drift"
    ]
    assert embedding.actions == (Action.NOTIFY,) and embedding.audit_rate is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lamp_check": {"threshold": 0.1}}, r"no default rule named lamp_check"),
        ({"gate_refusals_high": {"metric": "input_drift"}}, r"metric cannot be changed per line"),
        ({"gate_refusals_high": {"name": "other"}}, r"name cannot be changed per line"),
        ({"gate_refusals_high": {"threshold": 0.01}}, r"clear_threshold 0.05 must be at or below"),
        ({"input_drift": {"threshold": 2.0}}, r"threshold 2.0 must lie in \[0, 1\]"),
        ({"gate_refusals_high": {"actions": ["raise_audit_rate"]}}, r"needs an audit_rate"),
        ({"gate_refusals_high": {"hold": "two"}}, r"hold must be a whole number"),
    ],
)
def test_invalid_edits_are_refused_whole(
    overrides: dict[str, dict[str, Any]], message: str
) -> None:
    with pytest.raises(AlarmRuleError, match=message):
        effective_rules(DEFAULT_RULES, overrides)
