"""The supervisors' Monitoring page: is each line's camera still showing the model what it was
trusted on, which alarms fired, and what they did to the line.

Every handler reloads the user and checks the supervisor role before it reads or changes
anything, as the Lines and Evidence handlers do (`review_ui.supervisor`): the tab is hidden
from inspectors, but a hand-made request is refused all the same. The figures come from
`inspect_app.monitoring.queries` (the API's `GET /lines/{line}/monitoring` reads the same);
a rule edit goes through `inspect_app.monitoring.service.set_line_rule`, as the API's
`PUT /lines/{line}/alarms/{rule}` does. The reference band is the loaded model's profile
(`models.profile.load_profile`), read once per file version.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import gradio as gr
from sqlmodel import Session

from inspect_app import lines
from inspect_app.api.params import LINE_ID_PATTERN, MAX_REASON_CHARS
from inspect_app.domain import Role
from inspect_app.monitoring import queries
from inspect_app.monitoring.alarms import MONITORED_METRICS, AlarmRuleError
from inspect_app.monitoring.service import set_line_rule
from inspect_app.storage.tables import User
from models.profile import ProfileError, ReferenceProfile, load_profile, profile_path
from review_ui import monitoring_views as mv
from review_ui import views
from review_ui.auth import require_role
from review_ui.context import ReviewContext

# The Evidence page's supervisor check and thumbnails (stored image -> JPEG data URI):
# one way to do each, shared.
from review_ui.supervisor import _as_supervisor, _thumbnail

logger = logging.getLogger(__name__)

WINDOWS: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 8 hours": timedelta(hours=8),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "All time": None,
}
DEFAULT_WINDOW = "Last 24 hours"
PAGE_OUTPUTS = 15  # the components `page_outputs` fills, `MonitoringPage.outputs`
INPUT_PARTS = 500  # parts per input-metric plot
RESPONSIBLE_SHOWN = 12
METRIC_LABELS = {name: m.label for name, m in MONITORED_METRICS.items()}


# -- the reference profile -------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load_profile(weights: str, version: str, mtime_ns: int) -> ReferenceProfile | None:
    del mtime_ns  # part of the key: a regenerated profile is read again
    return load_profile(Path(weights), version=version)


def reference_profile(context: ReviewContext) -> ReferenceProfile | None:
    """The loaded model's reference profile, or None (no model, no profile, or a profile
    made for other weights: the page then shows the values without a band)."""
    predictor = context.predictor
    if predictor is None:
        return None
    weights = Path(context.settings.weights)
    try:
        mtime_ns = profile_path(weights).stat().st_mtime_ns
    except OSError:
        return None
    try:
        return _load_profile(str(weights), predictor.version, mtime_ns)
    except ProfileError as exc:
        logger.warning("review UI: no reference band on the Monitoring page: %s", exc)
        return None


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitoringView:
    """Everything the page shows of one line, in the page's terms."""

    overview: queries.MonitoringOverview
    inputs: dict[str, list[queries.MetricPoint]]
    responsible: list[mv.ResponsibleImage]
    profile: ReferenceProfile | None

    @property
    def embedding_report(self) -> queries.DriftSummary | None:
        return next((r for r in self.overview.drift if r.kind == "embedding"), None)

    def alarm(self, name: str | None) -> queries.LineAlarm | None:
        return next((a for a in self.overview.alarms if a.name == name), None)


def monitoring_view(
    session: Session, context: ReviewContext, line_id: str, *, since: datetime | None
) -> MonitoringView:
    """One line's monitoring since `since`; LineNotFound for an unknown line."""
    overview = queries.monitoring_overview(session, line_id, since=since)
    inputs = {
        m: queries.input_metric_series(session, line_id, m, INPUT_PARTS, since=since)
        for m in queries.INPUT_METRICS
    }
    report = next((r for r in overview.drift if r.kind == "embedding"), None)
    responsible = [
        mv.ResponsibleImage(part, _thumbnail(context, part.image_sha256))
        for part in (report.responsible[:RESPONSIBLE_SHOWN] if report else [])
    ]
    return MonitoringView(overview, inputs, responsible, reference_profile(context))


# -- changing a rule -------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleEditOutcome:
    applied: bool
    html: str


def apply_rule_edit(
    session: Session,
    user: User,
    line_id: str,
    rule: str,
    *,
    threshold: float | None,
    clear_threshold: float | None,
    enabled: bool | None,
    reason: str,
) -> RuleEditOutcome:
    """`set_line_rule` with what the form changed, every outcome in words a supervisor reads.

    Only the fields that differ from the rule's current values are changed (a form always
    sends all of them). The role and the reason are checked here, on the server: the
    service function records whoever it is given.
    """
    require_role(user, Role.SUPERVISOR, "edit an alarm rule")

    def failed(message: str) -> RuleEditOutcome:
        return RuleEditOutcome(False, views.change_failed_html(message))

    if not re.fullmatch(LINE_ID_PATTERN, line_id or ""):
        return failed(f"no line {line_id[:64]!r}")
    why = (reason or "").strip()
    if not why:
        return failed("a reason is required: it goes into the audit trail")
    if len(why) > MAX_REASON_CHARS or "\x00" in why:
        return failed(
            f"a reason may have at most {MAX_REASON_CHARS} characters (no NUL), got {len(why)}"
        )
    try:
        current = queries.line_alarm(session, line_id, rule)
    except LookupError as exc:  # the line or the rule
        return failed(str(exc))
    changes: dict[str, Any] = {}
    if threshold is not None and float(threshold) != current.threshold:
        changes["threshold"] = float(threshold)
    if clear_threshold is not None and float(clear_threshold) != current.clear_threshold:
        changes["clear_threshold"] = float(clear_threshold)
    if enabled is not None and bool(enabled) != current.enabled:
        changes["enabled"] = bool(enabled)
    if not changes:
        return failed(f"nothing to change: {rule} already has these values")
    try:
        set_line_rule(session, line_id, rule, changes, actor=user.name, reason=why)
    except AlarmRuleError as exc:
        session.rollback()
        return failed(str(exc))
    session.commit()
    return RuleEditOutcome(True, mv.rule_edited_html(queries.line_alarm(session, line_id, rule)))


# -- the handlers (module level, so tests call them without a browser) -----------------------


def _since(context: ReviewContext, window_name: str | None) -> datetime | None:
    span = WINDOWS.get(window_name or "", WINDOWS[DEFAULT_WINDOW])
    return context.now() - span if span is not None else None


def _empty_outputs(message: str) -> tuple[Any, ...]:
    empty = f'<div class="empty-table">{views.esc(message)}</div>'
    return (
        gr.update(choices=[], value=None),
        empty,
        None,
        None,
        "",
        gr.update(choices=[], value=None),
        None,
        None,
        False,
        "",
        "",
        "",
        "",
        "",
        "",
    )


def page_outputs(view: MonitoringView, line_ids: list[str], rule: str | None) -> tuple[Any, ...]:
    """The page's components, in `MonitoringPage.outputs` order."""
    overview = view.overview
    names = [a.name for a in overview.alarms]
    chosen = view.alarm(rule) or (overview.alarms[0] if overview.alarms else None)
    return (
        gr.update(choices=line_ids, value=overview.line_id),
        mv.summary_html(overview),
        mv.monitored_values_figure(overview.series, overview.alarms, METRIC_LABELS),
        mv.input_metrics_figure(view.inputs, view.profile),
        mv.alarms_table_html(overview.alarms),
        gr.update(choices=names, value=chosen.name if chosen else None),
        chosen.threshold if chosen else None,
        chosen.clear_threshold if chosen else None,
        chosen.enabled if chosen else False,
        mv.rule_help_html(chosen),
        mv.history_table_html(overview.history),
        mv.actions_table_html(overview.actions),
        mv.drift_reports_html(overview.drift),
        mv.responsible_gallery_html(view.embedding_report, view.responsible),
        mv.gate_html(overview.gate_counts, overview.gate_refusals),
    )


def show_monitoring(
    context: ReviewContext,
    line_id: str | None,
    window_name: str | None,
    rule: str | None,
    request: gr.Request | None,
) -> tuple[Any, ...]:
    """The page for `line_id` (the first line when it is not one)."""
    with _as_supervisor(context, request, "see monitoring") as (db, _user):
        ids = [ln.id for ln in lines.list_lines(db)]
        chosen = line_id if line_id in ids else (ids[0] if ids else None)
        if chosen is None:
            return _empty_outputs("No lines yet.")
        view = monitoring_view(db, context, chosen, since=_since(context, window_name))
        return page_outputs(view, ids, rule)


def select_rule(
    context: ReviewContext, line_id: str | None, rule: str | None, request: gr.Request | None
) -> tuple[Any, ...]:
    """The form's fields for the chosen rule: its current threshold, clear threshold, state."""
    with _as_supervisor(context, request, "see monitoring") as (db, _user):
        if not line_id or not rule:
            return gr.skip(), gr.skip(), gr.skip(), ""
        try:
            alarm = queries.line_alarm(db, line_id, rule)
        except LookupError as exc:
            raise gr.Error(views.esc(str(exc))) from exc
        return alarm.threshold, alarm.clear_threshold, alarm.enabled, mv.rule_help_html(alarm)


def edit_rule(
    context: ReviewContext,
    line_id: str | None,
    rule: str | None,
    threshold: float | None,
    clear_threshold: float | None,
    enabled: bool | None,
    reason: str | None,
    window_name: str | None,
    request: gr.Request | None,
) -> tuple[Any, ...]:
    """Apply the form; then the result, the page redrawn (thresholds move on the plots), and
    the reason box cleared when the edit was applied."""
    with _as_supervisor(context, request, "edit an alarm rule") as (db, user):
        if not line_id or not rule:
            return (
                views.change_failed_html("choose a line and a rule"),
                gr.skip(),
                *(gr.skip() for _ in range(PAGE_OUTPUTS)),
            )
        outcome = apply_rule_edit(
            db,
            user,
            line_id,
            rule,
            threshold=threshold,
            clear_threshold=clear_threshold,
            enabled=enabled,
            reason=reason or "",
        )
        try:
            view = monitoring_view(db, context, line_id, since=_since(context, window_name))
        except lines.LineNotFound:
            return outcome.html, gr.skip(), *(gr.skip() for _ in range(PAGE_OUTPUTS))
        ids = [ln.id for ln in lines.list_lines(db)]
        return (
            outcome.html,
            "" if outcome.applied else gr.skip(),
            *page_outputs(view, ids, rule),
        )


# -- the page --------------------------------------------------------------------------------


@dataclass
class MonitoringPage:
    load: Callable[..., tuple[Any, ...]]
    outputs: list[Any]


def build_monitoring_page(context: ReviewContext) -> MonitoringPage:
    gr.HTML('<h2 class="page-title">Monitoring</h2>', js_on_load=None)
    with gr.Row(elem_classes=["panel", "evidence-controls"]):
        line = gr.Dropdown(
            label="Line",
            choices=[],
            elem_id="monitoring-line",
            interactive=True,
            allow_custom_value=True,
        )
        window = gr.Radio(
            label="Window", choices=list(WINDOWS), value=DEFAULT_WINDOW, elem_id="monitoring-window"
        )
        show = gr.Button("Show", variant="primary", elem_id="monitoring-show", scale=0)
    summary = gr.HTML(js_on_load=None, elem_id="monitoring-summary")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, elem_classes=["panel"]):
            alarms = gr.HTML(js_on_load=None, elem_id="monitoring-alarms")
        with gr.Column(scale=1, elem_classes=["panel"]):
            gr.HTML(
                '<h3 class="panel-title">Edit a rule on this line</h3><p class="panel-help">'
                "The monitor uses the edit from its next evaluation. Every edit is logged with "
                "your name and reason.</p>",
                js_on_load=None,
            )
            # Rules are the line's: the handler checks the name, not the page's list.
            rule = gr.Dropdown(
                label="Rule",
                choices=[],
                elem_id="rule-name",
                interactive=True,
                allow_custom_value=True,
            )
            rule_help = gr.HTML(js_on_load=None, elem_id="rule-help")
            with gr.Row():
                threshold = gr.Number(label="Fires past", elem_id="rule-threshold")
                clear = gr.Number(label="Clears past", elem_id="rule-clear")
            enabled = gr.Checkbox(label="Rule on", elem_id="rule-enabled")
            reason = gr.Textbox(
                label="Reason (goes into the audit trail)",
                elem_id="rule-reason",
                max_length=MAX_REASON_CHARS,
            )
            apply_btn = gr.Button("Apply to this line", variant="primary", elem_id="rule-apply")
            result = gr.HTML(js_on_load=None, elem_id="rule-result")
    with gr.Column(elem_classes=["panel"]):
        gr.HTML('<h3 class="panel-title">Monitored values</h3>', js_on_load=None)
        values_plot = gr.Plot(show_label=False, elem_id="monitoring-values")
    with gr.Column(elem_classes=["panel"]):
        gr.HTML(
            '<h3 class="panel-title">Input metrics per part against the reference</h3>',
            js_on_load=None,
        )
        inputs_plot = gr.Plot(show_label=False, elem_id="monitoring-inputs")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, elem_classes=["panel"]):
            drift = gr.HTML(js_on_load=None, elem_id="monitoring-drift")
        with gr.Column(scale=1, elem_classes=["panel"]):
            gate = gr.HTML(js_on_load=None, elem_id="monitoring-gate")
    gallery = gr.HTML(js_on_load=None, elem_id="monitoring-responsible", elem_classes=["panel"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, elem_classes=["panel"]):
            actions = gr.HTML(js_on_load=None, elem_id="monitoring-actions")
        with gr.Column(scale=1, elem_classes=["panel"]):
            history = gr.HTML(js_on_load=None, elem_id="monitoring-history")

    outputs = [
        line,
        summary,
        values_plot,
        inputs_plot,
        alarms,
        rule,
        threshold,
        clear,
        enabled,
        rule_help,
        history,
        actions,
        drift,
        gallery,
        gate,
    ]
    assert len(outputs) == PAGE_OUTPUTS

    def on_show(
        line_id: str | None, window_name: str | None, rule_name: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        return show_monitoring(context, line_id, window_name, rule_name, request)

    def on_rule(line_id: str | None, rule_name: str | None, request: gr.Request) -> tuple[Any, ...]:
        return select_rule(context, line_id, rule_name, request)

    def on_edit(
        line_id: str | None,
        rule_name: str | None,
        new_threshold: float | None,
        new_clear: float | None,
        on: bool | None,
        why: str | None,
        window_name: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        return edit_rule(
            context, line_id, rule_name, new_threshold, new_clear, on, why, window_name, request
        )

    show.click(on_show, [line, window, rule], outputs, api_name="monitoring")
    line.input(on_show, [line, window, rule], outputs, api_visibility="undocumented")
    window.input(on_show, [line, window, rule], outputs, api_visibility="undocumented")
    rule.input(
        on_rule,
        [line, rule],
        [threshold, clear, enabled, rule_help],
        api_name="select_rule",
        show_progress="hidden",
    )
    apply_btn.click(
        on_edit,
        [line, rule, threshold, clear, enabled, reason, window],
        [result, reason, *outputs],
        api_name="edit_alarm_rule",
    )

    def load(request: gr.Request) -> tuple[Any, ...]:
        return show_monitoring(context, None, DEFAULT_WINDOW, None, request)

    return MonitoringPage(load=load, outputs=outputs)
