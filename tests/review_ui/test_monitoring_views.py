"""The Monitoring page's handlers and views, called without a browser against a real database:
what a supervisor sees of a line's monitoring, the rule edit, and the role checked in every
handler."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from matplotlib.figure import Figure
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app.accounts import get_user
from inspect_app.monitoring.alarms import DEFAULT_RULES
from inspect_app.monitoring.queries import LineAlarm, MetricPoint, SeriesPoint, alarm_view
from inspect_app.monitoring.service import line_rules
from inspect_app.settings import Settings
from inspect_app.storage.tables import Event
from models.profile import write_profile
from review_ui import monitoring_views as mv
from review_ui.auth import AccessDenied, NotLoggedIn
from review_ui.context import ReviewContext
from review_ui.monitoring_page import (
    PAGE_OUTPUTS,
    apply_rule_edit,
    edit_rule,
    reference_profile,
    select_rule,
    show_monitoring,
)
from tests.inspect_app.monitoring.monitoring_world import (
    T0,
    MonitoringWorld,
    make_profile,
    seed_monitoring,
)
from tests.review_ui.conftest import add_people

SAM = SimpleNamespace(username="sam")  # what a handler reads of Gradio's request
INES = SimpleNamespace(username="ines")
VERSION = "test"


@pytest.fixture
def context(engine: Engine, tmp_path: Path) -> ReviewContext:
    """The service as the page's handlers see it: a database, an image store, a loaded
    model (its version only) whose reference profile lies beside its weights."""
    weights = tmp_path / "model.pt"
    write_profile(make_profile(VERSION), weights)
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path / "service", weights=weights)
    app.state.engine = engine
    app.state.predictor = SimpleNamespace(version=VERSION)
    return ReviewContext(app)


@pytest.fixture
def world(engine: Engine, context: ReviewContext) -> MonitoringWorld:
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    with Session(engine, expire_on_commit=False) as db:
        return seed_monitoring(db, image_dir=context.settings.image_dir)


def outputs_by_name(outputs: tuple[Any, ...]) -> dict[str, Any]:
    names = ["line", "summary", "values", "inputs", "alarms", "rule", "threshold", "clear",
             "enabled", "rule_help", "history", "actions", "drift", "gallery", "gate"]  # fmt: skip
    assert len(outputs) == len(names) == PAGE_OUTPUTS
    return dict(zip(names, outputs, strict=True))


def test_a_supervisor_sees_the_lines_monitoring(
    context: ReviewContext, world: MonitoringWorld
) -> None:
    page = outputs_by_name(show_monitoring(context, None, "All time", None, SAM))
    assert page["line"]["value"] == "line-1"
    assert "line-1" in page["summary"] and "1 firing" in page["summary"]
    assert "gate_refusals_high" in page["summary"]
    # the alarm table: every rule, the firing one marked
    assert page["alarms"].count("data-alarm=") == len(DEFAULT_RULES)
    assert 'data-alarm="gate_refusals_high" class="alarm-firing-row"' in page["alarms"]
    assert "&gt; 20.0%" in page["alarms"] and "&lt; 5.0%" in page["alarms"]
    # the form shows the first rule's values
    assert page["rule"]["value"] == "gate_refusals_high"
    assert (page["threshold"], page["clear"], page["enabled"]) == (0.2, 0.05, True)
    # plots, not tables only
    assert isinstance(page["values"], Figure) and isinstance(page["inputs"], Figure)
    brightness = page["inputs"].axes[0]
    assert brightness.get_title().startswith("Brightness")
    assert len(brightness.patches) == 1  # the reference band
    assert len(brightness.lines[-1].get_xdata()) == 6  # the refused parts, marked apart
    pvalues = page["values"].axes[1]
    assert pvalues.get_yscale() == "log"
    labels = [line.get_label() or "" for line in pvalues.lines]
    assert any("input_drift fires" in label for label in labels)
    assert not any("defect_rate_shift" in label for label in labels)  # no values: no threshold
    # history, actions, drift, the gallery of the most responsible parts, the gate
    assert "alarm_firing" in page["history"] and "alarm_pending" in page["history"]
    assert "Stopped auto-decisions" in page["actions"] and "Notified" in page["actions"]
    assert 'data-kind="input"' in page["drift"] and "Brightness" in page["drift"]
    assert "ROC AUC 0.93" in page["drift"]
    assert page["gallery"].count("data:image/jpeg;base64,") == 3  # one of 4 ids is gone
    assert "6 of the last 60 parts refused" in page["gate"]
    assert 'data-code="underexposed"' in page["gate"]


def test_the_window_bounds_what_is_shown(context: ReviewContext, world: MonitoringWorld) -> None:
    # the seeded history is from T0; an hour after it, "Last hour" shows nothing of it
    context._app.state.clock = lambda: T0 + timedelta(hours=2)  # type: ignore[attr-defined]
    page = outputs_by_name(show_monitoring(context, "line-1", "Last hour", None, SAM))
    assert "No alarm has changed state" in page["history"]
    assert "no parts yet" in [t.get_text() for t in page["inputs"].axes[0].texts]
    # the alarms are now, whatever the window
    assert "alarm-firing-row" in page["alarms"]


def test_no_lines_and_unknown_lines(engine: Engine, context: ReviewContext) -> None:
    add_people(engine, ("sam", "supervisor"))
    empty = outputs_by_name(show_monitoring(context, "line-9", None, None, SAM))
    assert "No lines yet" in empty["summary"] and empty["values"] is None


@pytest.mark.parametrize(
    "call",
    [
        lambda c: show_monitoring(c, "line-1", None, None, INES),
        lambda c: select_rule(c, "line-1", "input_drift", INES),
        lambda c: edit_rule(c, "line-1", "input_drift", 0.5, 0.5, False, "no", None, INES),
        lambda c: show_monitoring(c, "line-1", None, None, None),  # not logged in
    ],
)
def test_every_handler_refuses_an_inspector(
    context: ReviewContext, world: MonitoringWorld, call: Any
) -> None:
    with pytest.raises((AccessDenied, NotLoggedIn), match=r"may not|not logged in"):
        call(context)
    with Session(context.engine) as db:
        assert line_rules(db, "line-1") == list(DEFAULT_RULES)


def test_the_form_edits_only_what_changed_and_logs_it(
    context: ReviewContext, world: MonitoringWorld
) -> None:
    result, reason, *rest = edit_rule(
        context, "line-1", "gate_refusals_high", 0.3, 0.05, True, " dusty lens ", None, SAM
    )
    assert "result-ok" in result and "&gt; 30.0%" in result
    assert reason == ""  # the reason box is cleared once applied
    page = outputs_by_name(tuple(rest))
    assert page["threshold"] == 0.3 and "edited by sam" in page["alarms"]
    with Session(context.engine) as db:
        rule = {r.name: r for r in line_rules(db, "line-1")}["gate_refusals_high"]
        events = db.exec(select(Event).where(Event.kind == "alarm_rule_changed")).all()
    assert rule.threshold == 0.3
    assert [(e.actor, e.reason, e.details["changes"]) for e in events if e.details] == [
        ("sam", "dusty lens", {"threshold": 0.3})
    ]
    # the form's other fields pick up the rule when it is chosen
    assert select_rule(context, "line-1", "input_drift", SAM)[:3] == (1e-4, 0.01, True)


@pytest.mark.parametrize(
    ("rule", "threshold", "clear", "enabled", "reason", "message"),
    [
        ("gate_refusals_high", 0.01, 0.05, True, "x", "must be at or below threshold 0.01"),
        ("input_drift", 2.0, 0.01, True, "x", "must lie in [0, 1]"),
        ("input_drift", 1e-4, 0.01, True, "x", "nothing to change"),
        ("input_drift", None, None, False, "   ", "a reason is required"),
        ("input_drift", None, None, False, "x" * 501, "at most 500 characters"),
        ("lamp_off", None, None, False, "x", "no alarm rule &#x27;lamp_off&#x27;"),
    ],
)
def test_what_cannot_be_applied_says_why(
    context: ReviewContext,
    world: MonitoringWorld,
    rule: str,
    threshold: float | None,
    clear: float | None,
    enabled: bool,
    reason: str,
    message: str,
) -> None:
    with Session(context.engine, expire_on_commit=False) as db:
        outcome = apply_rule_edit(
            db,
            get_user(db, "sam"),
            "line-1",
            rule,
            threshold=threshold,
            clear_threshold=clear,
            enabled=enabled,
            reason=reason,
        )
        assert not outcome.applied and message in outcome.html, outcome.html
        assert line_rules(db, "line-1") == list(DEFAULT_RULES)
        assert not db.exec(select(Event).where(Event.kind == "alarm_rule_changed")).all()


def test_the_edit_function_checks_the_role_itself(
    context: ReviewContext, world: MonitoringWorld
) -> None:
    with (
        Session(context.engine, expire_on_commit=False) as db,
        pytest.raises(AccessDenied, match="may not edit an alarm rule"),
    ):
        apply_rule_edit(
            db, get_user(db, "ines"), "line-1", "input_drift",
            threshold=None, clear_threshold=None, enabled=False, reason="why not",
        )  # fmt: skip
    on_other_line = edit_rule(context, "line-9", "input_drift", None, None, False, "x", None, SAM)
    assert "no line &#x27;line-9&#x27;" in on_other_line[0]


def test_the_reference_band_needs_the_loaded_models_own_profile(
    context: ReviewContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert reference_profile(context) is not None
    state = context._app.state  # type: ignore[attr-defined]
    other = tmp_path / "other.pt"
    write_profile(make_profile("someone-elses"), other)
    state.settings = state.settings.model_copy(update={"weights": other})
    with caplog.at_level(logging.WARNING):
        assert reference_profile(context) is None
    assert "made for model someone-elses" in caplog.text
    state.predictor = None
    assert reference_profile(context) is None


# -- the views, with plain values ------------------------------------------------------------


def _alarm(name: str = "input_drift") -> LineAlarm:
    return alarm_view({r.name: r for r in DEFAULT_RULES}[name])


def test_values_read_the_way_their_alarm_does() -> None:
    assert mv.metric_value_text("gate_refusal_rate", 0.215) == "21.5%"
    assert mv.metric_value_text("input_drift", 3.14159e-7) == "3.14e-07"
    assert mv.metric_value_text("review_backlog_age_s", 1900) == "31 min 40 s"
    assert mv.metric_value_text("audit_disagreement", 1.0) == "detected"
    assert mv.metric_value_text("input_drift", None) == "—"
    drift = _alarm(name="input_drift")
    assert (mv.condition_text(drift), mv.condition_text(drift, clear=True)) == (
        "< 0.0001",
        "> 0.01",
    )
    flag = _alarm(name="audit_disagreement")
    assert (mv.condition_text(flag), mv.condition_text(flag, clear=True)) == (
        "detected",
        "no longer detected",
    )


def test_the_plots_say_when_there_is_nothing_to_draw_yet() -> None:
    values = mv.monitored_values_figure({}, [_alarm()], {})
    texts = [t.get_text() for ax in values.axes for t in ax.texts]
    assert "no evaluations yet" in texts and "no drift test has run yet" in texts
    inputs = mv.input_metrics_figure({}, None)
    assert all(not ax.patches for ax in inputs.axes)  # no profile: no band


def test_a_p_value_of_zero_is_drawn_at_the_floor_on_the_log_axis() -> None:
    at = T0
    series = {"input_drift": [SeriesPoint(at, 0.0), SeriesPoint(at + timedelta(minutes=1), 0.2)]}
    fig = mv.monitored_values_figure(series, [_alarm()], {"input_drift": "input drift"})
    line = fig.axes[1].lines[0]
    assert list(line.get_ydata()) == [mv.P_FLOOR, 0.2]


def test_the_reference_band_is_the_profiles_1_to_99_percent() -> None:
    profile = make_profile(VERSION)
    points = {"brightness": [MetricPoint(1, T0, 120.0, False), MetricPoint(2, T0, 5.0, True)]}
    band = mv.input_metrics_figure(points, profile).axes[0].patches[0]
    low, high = (profile.metric_quantile("brightness", q) for q in (0.01, 0.99))
    assert band.get_y() == pytest.approx(low)  # type: ignore[attr-defined]
    assert band.get_y() + band.get_height() == pytest.approx(high)  # type: ignore[attr-defined]
