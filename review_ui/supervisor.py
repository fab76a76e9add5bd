"""The supervisors' pages: Lines (levels, thresholds, queue, the one way to change them) and
Evidence (how far the model can be trusted, per line and model version).

Every handler reloads the user and checks the supervisor role before it reads or changes
anything, whatever the page showed: the Lines and Evidence tabs are hidden from
inspectors, but a hand-made request to these handlers is refused all the same. Changing a
level goes through `inspect_app.lines.change_automation` (which checks the role again,
applies the evidence gate and records the event), changing targets through
`inspect_app.lines.set_targets`; the figures come from `inspect_app.agreement` and
`inspect_app.evidence`. Nothing here decides anything.

A threshold may be "never" (one-sided partial automation): the form has a "never" box per
side, filled from the line, and "Use the recommendation" fills the form with the
recommended thresholds, a side the evidence does not support yet as never.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr
from sqlmodel import Session, col, select

from inspect_app import agreement, lines, review_queue
from inspect_app.api.params import DB_ID_MAX, LINE_ID_PATTERN, MAX_REASON_CHARS
from inspect_app.automation import gate_targets, recommend_for_line
from inspect_app.domain import NEVER, AutomationLevel, DefectClass, Role
from inspect_app.events import list_events, record_event
from inspect_app.evidence import recommend_thresholds
from inspect_app.reference import service as reference_service
from inspect_app.storage.tables import Inspection, ReferencePart, User, utcnow
from inspect_app.timeutil import as_utc
from review_ui import evidence_views, views
from review_ui.auth import current_user, require_role
from review_ui.context import ReviewContext, encode_jpeg_uri

logger = logging.getLogger(__name__)

EVENTS_SHOWN = 50
DISAGREEMENTS_SHOWN = 24
THUMBNAIL_SIDE = 320
WINDOWS: dict[str, timedelta | None] = {
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}
CURRENT_MODEL = "current model"


# -- reading ---------------------------------------------------------------------------------


def local_midnight(now: datetime) -> datetime:
    """Today's start on the plant's clock, as an aware time."""
    local = now.astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def line_rows(session: Session, now: datetime) -> list[views.LineRow]:
    """Every line with its settings, queue and today's throughput."""
    midnight = local_midnight(now).astimezone(UTC)
    inspected = lines.inspection_counts_by_line(session, midnight)
    labeled = lines.label_counts_by_line(session, midnight)
    rows = []
    for line in lines.list_lines(session):
        oldest = review_queue.oldest_waiting(session, line.id)
        rows.append(
            views.LineRow(
                line_id=line.id,
                level=line.level,
                pass_threshold=line.pass_threshold,
                fail_threshold=line.fail_threshold,
                audit_rate=line.audit_rate,
                queue_depth=review_queue.queue_depth(session, line.id),
                oldest_wait_s=(now - oldest).total_seconds() if oldest is not None else None,
                inspected_today=inspected.get(line.id, 0),
                labeled_today=labeled.get(line.id, 0),
            )
        )
    return rows


def event_rows(session: Session, line_id: str) -> list[views.EventRow]:
    return [
        views.EventRow(
            at=as_utc(e.at) or e.at,
            kind=e.kind,
            actor=e.actor,
            reason=e.reason,
            summary=views.event_summary(e.kind, e.details),
        )
        for e in list_events(session, line_id=line_id, limit=EVENTS_SHOWN)
    ]


@dataclass(frozen=True)
class ChangeOutcome:
    applied: bool
    html: str


def _bad_input(line_id: str, reason: str) -> ChangeOutcome | None:
    """The checks the API's schema makes, made here on the server for the page's input."""
    if not re.fullmatch(LINE_ID_PATTERN, line_id):
        return ChangeOutcome(False, views.change_failed_html(f"no line {line_id[:64]!r}"))
    if len(reason) > MAX_REASON_CHARS or "\x00" in reason:
        return ChangeOutcome(
            False,
            views.change_failed_html(
                f"a reason may have at most {MAX_REASON_CHARS} characters (no NUL), "
                f"got {len(reason)}"
            ),
        )
    return None


def _threshold_choice(
    name: str, side: str, value: float | None, never: bool, current: float | None
) -> float | str | None:
    """A side of the form as `change_automation` takes it: NEVER, a number, or None (keep).

    An unticked "never" with no number on a side that is never now would keep it never,
    which is not what unticking says: refused with the reason."""
    if never:
        return NEVER
    if value is None and current is None:
        raise lines.InvalidLineSettings(
            f"auto-{side} is never on this line: give {name} to turn it on, or tick never"
        )
    return value


def apply_change(
    session: Session,
    user: User,
    line_id: str,
    *,
    level: str,
    pass_threshold: float | None,
    fail_threshold: float | None,
    audit_rate_percent: float | None,
    reason: str,
    pass_never: bool = False,
    fail_never: bool = False,
) -> ChangeOutcome:
    """`lines.change_automation`, its every outcome turned into something a supervisor reads.

    A threshold left empty keeps the line's; `pass_never`/`fail_never` turn that side of
    partial automation off. The reason's limit is checked here, on the server, as the API
    checks it: the page's 500-character cap on the box is only the browser's.
    """
    refused = _bad_input(line_id, reason)
    if refused is not None:
        return refused
    audit_rate = None if audit_rate_percent is None else float(audit_rate_percent) / 100.0
    try:
        current = lines.get_line(session, line_id)
        line = lines.change_automation(
            session,
            line_id,
            level=level,
            pass_threshold=_threshold_choice(
                "a pass threshold", "pass", pass_threshold, pass_never, current.pass_threshold
            ),
            fail_threshold=_threshold_choice(
                "a fail threshold", "fail", fail_threshold, fail_never, current.fail_threshold
            ),
            audit_rate=audit_rate,
            reason=reason,
            actor=user,
        )
    except lines.AutomationRefused as exc:
        return ChangeOutcome(False, views.refusal_html(str(exc), exc.verdict.evidence))
    except (lines.InvalidLineSettings, lines.LineNotFound, lines.NotPermitted) as exc:
        return ChangeOutcome(False, views.change_failed_html(str(exc)))
    return ChangeOutcome(
        True,
        views.change_applied_html(
            line.id, line.level, line.pass_threshold, line.fail_threshold, line.audit_rate
        ),
    )


def apply_targets(
    session: Session,
    user: User,
    line_id: str,
    *,
    max_escape_percent: float | None,
    max_false_reject_percent: float | None,
    min_labels: float | None,
    auto_demote: bool | None,
    reason: str,
) -> ChangeOutcome:
    """`lines.set_targets` with the page's input (rates in percent; empty keeps a target),
    its outcome in words: a target change may lower the line, never raise it."""
    refused = _bad_input(line_id, reason)
    if refused is not None:
        return refused
    if min_labels is not None and float(min_labels) != int(min_labels):
        return ChangeOutcome(
            False, views.change_failed_html(f"min labels must be a whole number, got {min_labels}")
        )
    try:
        outcome = lines.set_targets(
            session,
            line_id,
            max_escape_rate=None if max_escape_percent is None else max_escape_percent / 100.0,
            max_false_reject_rate=(
                None if max_false_reject_percent is None else max_false_reject_percent / 100.0
            ),
            min_labels=None if min_labels is None else int(min_labels),
            auto_demote=auto_demote,
            reason=reason,
            actor=user,
        )
    except (lines.InvalidLineSettings, lines.LineNotFound, lines.NotPermitted) as exc:
        return ChangeOutcome(False, views.change_failed_html(str(exc)))
    demoted = outcome.live is not None and outcome.live.demoted_to is not None
    return ChangeOutcome(True, views.targets_applied_html(outcome.message, demoted))


@dataclass(frozen=True)
class FormSettings:
    """What the Lines page's change form shows for a line."""

    level: str
    pass_threshold: float | None  # None: empty box (with never ticked, or nothing to keep)
    fail_threshold: float | None
    pass_never: bool
    fail_never: bool


def recommended_settings(session: Session, line_id: str) -> tuple[FormSettings | None, str]:
    """The recommendation as the change form takes it (partial, each side a threshold or
    never), and its reason; None when the evidence recommends nothing yet."""
    line = lines.get_line(session, line_id)
    rec = recommend_for_line(session, line).recommendation
    if rec.gate is None:
        return None, rec.reason
    settings = FormSettings(
        level=AutomationLevel.PARTIAL.value,
        pass_threshold=rec.pass_threshold,
        fail_threshold=rec.fail_threshold,
        pass_never=rec.pass_threshold is None,
        fail_never=rec.fail_threshold is None,
    )
    return settings, rec.reason


# -- the pages -------------------------------------------------------------------------------


@dataclass
class LinesPage:
    load: Callable[..., tuple[Any, ...]]  # fills the page (a supervisor's tab select)
    load_outputs: list[Any]
    timer: gr.Timer  # refreshes the table; the app activates it for supervisors only


@dataclass
class EvidencePage:
    load: Callable[..., tuple[Any, ...]]
    outputs: list[Any]


@contextmanager
def _as_supervisor(
    context: ReviewContext, request: gr.Request | None, action: str
) -> Iterator[tuple[Session, User]]:
    """A database session and the user, once the user is known to be a supervisor."""
    with context.session() as db:
        user = current_user(db, request)
        require_role(user, Role.SUPERVISOR, action)
        yield db, user


def build_lines_page(context: ReviewContext) -> LinesPage:
    levels = [lv.value for lv in AutomationLevel]
    with gr.Row(elem_classes=["lines-head"]):
        gr.HTML('<h2 class="page-title">Lines</h2>', js_on_load=None)
        refresh = gr.Button("Refresh", elem_id="lines-refresh", size="sm", scale=0)
    table = gr.HTML(js_on_load=None, elem_id="lines-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, elem_classes=["panel"]):
            gr.HTML(
                '<h3 class="panel-title">Change automation</h3><p class="panel-help">Lowering is '
                "always allowed and immediate. Raising to partial or full, or loosening a "
                "threshold there, must pass the evidence gate. Tick never to automate only "
                "one side at partial. Every change is logged with your name and reason.</p>",
                js_on_load=None,
            )
            with gr.Row():
                # Lines come and go: the handler checks the id, not the page's list.
                line = gr.Dropdown(
                    label="Line",
                    choices=[],
                    elem_id="change-line",
                    interactive=True,
                    allow_custom_value=True,
                )
                level = gr.Dropdown(
                    label="Level", choices=levels, elem_id="change-level", interactive=True
                )
            with gr.Row():
                pass_t = gr.Number(
                    label="Pass when P(ok) ≥",
                    precision=4,
                    elem_id="change-pass",
                    minimum=0.5,
                    maximum=1.0,
                )
                fail_t = gr.Number(
                    label="Fail when P(defect) ≥",
                    precision=4,
                    elem_id="change-fail",
                    minimum=0.5,
                    maximum=1.0,
                )
                audit = gr.Number(
                    label="Audit rate (%)",
                    precision=2,
                    elem_id="change-audit",
                    minimum=0,
                    maximum=100,
                )
            with gr.Row():
                pass_never = gr.Checkbox(label="Never auto-pass", elem_id="change-pass-never")
                fail_never = gr.Checkbox(label="Never auto-fail", elem_id="change-fail-never")
            reason = gr.Textbox(
                label="Reason (goes into the audit trail)",
                elem_id="change-reason",
                max_length=MAX_REASON_CHARS,
            )
            with gr.Row():
                use_rec = gr.Button(
                    "Use the recommendation", size="sm", elem_id="change-use-recommendation"
                )
                apply_btn = gr.Button("Apply change", variant="primary", elem_id="change-apply")
            gr.HTML(
                '<h3 class="panel-title">Targets</h3><p class="panel-help">What the evidence '
                "gate and the live audits hold this line to. A change never raises the line; "
                "at partial or full, live audits clearly above a stricter target lower it one "
                "level at once (with auto-demotion on). Empty keeps a target.</p>",
                js_on_load=None,
            )
            with gr.Row():
                t_escape = gr.Number(
                    label="Max escape rate (%)",
                    precision=4,
                    elem_id="targets-escape",
                    minimum=0,
                    maximum=100 * lines.MAX_TARGET_RATE,
                )
                t_false_reject = gr.Number(
                    label="Max false-reject rate (%)",
                    precision=4,
                    elem_id="targets-false-reject",
                    minimum=0,
                    maximum=100 * lines.MAX_TARGET_RATE,
                )
                t_min_labels = gr.Number(
                    label="Min labels per side",
                    precision=0,
                    elem_id="targets-min-labels",
                    minimum=1,
                    maximum=lines.MAX_MIN_LABELS,
                )
                t_auto_demote = gr.Checkbox(label="Auto-demote", elem_id="targets-auto-demote")
            t_reason = gr.Textbox(
                label="Reason for the target change",
                elem_id="targets-reason",
                max_length=MAX_REASON_CHARS,
            )
            targets_btn = gr.Button("Apply targets", elem_id="targets-apply")
        with gr.Column(scale=3, elem_classes=["panel"]):
            result = gr.HTML(js_on_load=None, elem_id="change-result")
            gr.HTML('<h3 class="panel-title">Event log</h3>', js_on_load=None)
            events = gr.HTML(js_on_load=None, elem_id="events-table")
    timer = gr.Timer(15.0, active=False)
    # What choosing a line fills in: the change form, the targets form, then its events.
    line_form = [
        level,
        pass_t,
        fail_t,
        audit,
        pass_never,
        fail_never,
        t_escape,
        t_false_reject,
        t_min_labels,
        t_auto_demote,
        events,
    ]

    def refresh_lines(selected: str | None, request: gr.Request) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "see lines") as (db, _user):
            rows = line_rows(db, utcnow())
            ids = [r.line_id for r in rows]
            chosen = selected if selected in ids else (ids[0] if ids else None)
            return (
                views.lines_table_html(rows),
                gr.update(choices=ids, value=chosen),
                views.events_table_html(event_rows(db, chosen)) if chosen else "",
            )

    def select_line(line_id: str | None, request: gr.Request) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "see lines") as (db, _user):
            if not line_id:
                return (*([gr.skip()] * (len(line_form) - 1)), "")
            if not re.fullmatch(LINE_ID_PATTERN, line_id):
                raise gr.Error(html.escape(f"no line {line_id[:64]!r}"))
            try:
                current = lines.get_line(db, line_id)
            except lines.LineNotFound as exc:
                raise gr.Error(html.escape(str(exc))) from exc
            return (
                current.level,
                current.pass_threshold,
                current.fail_threshold,
                round(100 * current.audit_rate, 2),
                current.pass_threshold is None,
                current.fail_threshold is None,
                round(100 * current.max_escape_rate, 4),
                round(100 * current.max_false_reject_rate, 4),
                current.min_labels,
                current.auto_demote,
                views.events_table_html(event_rows(db, line_id)),
            )

    def use_recommendation(line_id: str | None, request: gr.Request) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "see the evidence") as (db, _user):
            unchanged = (gr.skip(),) * 5
            if not line_id or not re.fullmatch(LINE_ID_PATTERN, line_id):
                return (views.change_failed_html("choose a line"), *unchanged)
            try:
                settings, why = recommended_settings(db, line_id)
            except lines.LineNotFound as exc:
                return (views.change_failed_html(str(exc)), *unchanged)
            if settings is None:
                return (views.change_failed_html(why), *unchanged)
            return (
                f'<div class="result result-ok">Filled in (not applied yet): {html.escape(why)}'
                "</div>",
                settings.level,
                settings.pass_threshold,
                settings.fail_threshold,
                settings.pass_never,
                settings.fail_never,
            )

    def change_automation(
        line_id: str | None,
        new_level: str | None,
        pass_threshold: float | None,
        fail_threshold: float | None,
        audit_percent: float | None,
        never_pass: bool | None,
        never_fail: bool | None,
        why: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "change a line's automation") as (db, user):
            if not line_id or not new_level:
                return (
                    views.change_failed_html("choose a line and a level"),
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                )
            outcome = apply_change(
                db,
                user,
                line_id,
                level=new_level,
                pass_threshold=pass_threshold,
                fail_threshold=fail_threshold,
                audit_rate_percent=audit_percent,
                reason=why or "",
                pass_never=bool(never_pass),
                fail_never=bool(never_fail),
            )
            return (
                outcome.html,
                views.lines_table_html(line_rows(db, utcnow())),
                views.events_table_html(event_rows(db, line_id)),
                "" if outcome.applied else gr.skip(),
            )

    def change_targets(
        line_id: str | None,
        escape_percent: float | None,
        false_reject_percent: float | None,
        min_labels: float | None,
        auto_demote: bool | None,
        why: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "change a line's targets") as (db, user):
            if not line_id:
                return views.change_failed_html("choose a line"), gr.skip(), gr.skip(), gr.skip()
            outcome = apply_targets(
                db,
                user,
                line_id,
                max_escape_percent=escape_percent,
                max_false_reject_percent=false_reject_percent,
                min_labels=min_labels,
                auto_demote=auto_demote,
                reason=why or "",
            )
            return (
                outcome.html,
                views.lines_table_html(line_rows(db, utcnow())),
                views.events_table_html(event_rows(db, line_id)),
                "" if outcome.applied else gr.skip(),
            )

    outputs = [table, line, events]
    refresh.click(refresh_lines, [line], outputs, api_name="lines", show_progress="hidden")
    timer.tick(
        refresh_lines, [line], outputs, api_visibility="undocumented", show_progress="hidden"
    )
    line.input(select_line, [line], line_form, api_name="select_line", show_progress="hidden")
    use_rec.click(
        use_recommendation,
        [line],
        [result, level, pass_t, fail_t, pass_never, fail_never],
        api_name="use_recommendation",
    )
    apply_btn.click(
        change_automation,
        [line, level, pass_t, fail_t, audit, pass_never, fail_never, reason],
        [result, table, events, reason],
        api_name="change_automation",
    )
    targets_btn.click(
        change_targets,
        [line, t_escape, t_false_reject, t_min_labels, t_auto_demote, t_reason],
        [result, table, events, t_reason],
        api_name="change_targets",
    )
    return LinesPage(
        load=_lines_on_load(refresh_lines, select_line),
        load_outputs=[*outputs, *line_form[:-1]],
        timer=timer,
    )


def _lines_on_load(
    refresh_lines: Callable[..., tuple[Any, ...]], select_line: Callable[..., tuple[Any, ...]]
) -> Callable[..., tuple[Any, ...]]:
    def load(request: gr.Request) -> tuple[Any, ...]:
        table, line_update, events = refresh_lines(None, request)
        chosen = line_update.get("value") if isinstance(line_update, dict) else None
        if not chosen:
            return table, line_update, events, *([gr.skip()] * 10)
        *form, events = select_line(chosen, request)
        return table, line_update, events, *form

    return load


# -- Evidence page ---------------------------------------------------------------------------


def disagreements(
    session: Session, context: ReviewContext, rows: list[agreement.LabeledInspection]
) -> list[evidence_views.Disagreement]:
    """The most recent parts where the human's label and the model's call differ."""
    differ = sorted(
        (r for r in rows if r.label != r.predicted_class), key=lambda r: r.labeled_at, reverse=True
    )[:DISAGREEMENTS_SHOWN]
    if not differ:
        return []
    images = agreement.disagreement_images(session, [r.inspection_id for r in differ])
    marked = set(
        session.exec(
            select(ReferencePart.inspection_id).where(
                col(ReferencePart.inspection_id).in_([r.inspection_id for r in differ]),
                col(ReferencePart.removed_at).is_(None),
            )
        )
    )
    out = []
    for r in differ:
        sha = images.get(r.inspection_id)
        thumb = _thumbnail(context, sha) if sha else None
        out.append(
            evidence_views.Disagreement(
                inspection_id=r.inspection_id,
                image_uri=thumb,
                model_call=r.predicted_class,
                model_p_ok=r.p_ok,
                human_call=r.label,
                labeler=r.labeler,
                labeled_at=r.labeled_at,
                model_shown=r.model_shown,
                reference=r.inspection_id in marked,
            )
        )
    return out


def _thumbnail(context: ReviewContext, sha: str) -> str | None:
    import cv2
    import numpy as np

    try:
        data = context.image_bytes(sha)
    except (OSError, ValueError) as exc:
        logger.warning("review UI: image %s for the disagreement gallery: %s", sha, exc)
        return None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    return encode_jpeg_uri(image, max_side=THUMBNAIL_SIDE, quality=85)


def _reference_accuracy(db: Session, report: agreement.AgreementReport) -> str:
    """The inspectors' accuracy on known answers, beside the model's error rates; flagged
    as the stored flag says (the one the export and the events follow)."""
    flagged = set(reference_service.flagged_users(db).values())
    figures = [
        dataclasses.replace(f, flagged=f.inspector in flagged)
        for f in reference_service.inspector_accuracies(db)
    ]
    missed, false_rejects = reference_service.pooled_inspector_errors(db)
    return evidence_views.reference_accuracy_html(
        figures, missed, false_rejects, report.blind.escape_rate, report.blind.false_reject_rate
    )


def gallery_choices(items: list[evidence_views.Disagreement]) -> list[tuple[str, int]]:
    """The gallery's parts for the "mark as reference" picker: (what it shows, the id); those
    already reference parts are left out."""
    return [
        (
            f"#{d.inspection_id} · human {d.human_call} · model {d.model_call} · {d.labeler}",
            d.inspection_id,
        )
        for d in items
        if not d.reference
    ]


def _row_id(value: float | int | None) -> int | None:
    """A row id from the page's input, or None when it is not one."""
    try:
        number = int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    if number is None or number != value or not 1 <= number <= DB_ID_MAX:
        return None
    return number


def mark_reference_part(
    session: Session, user: User, inspection_id: float | int | None, label: str | None, reason: str
) -> ChangeOutcome:
    """`reference.service.add_reference` (the one the API and the CLI call) for a part picked
    in the disagreement gallery, its outcome in words. A refusal is logged and recorded as an
    event (`reference_part_refused`, with who and why), as the service records a success."""
    reason = (reason or "").strip()
    part = _row_id(inspection_id)
    refusal: str | None = None
    if part is None:
        refusal = "pick a part in the gallery first"
    elif label not in {c.value for c in DefectClass}:
        refusal = f"pick the verified class: one of {', '.join(c.value for c in DefectClass)}"
    elif len(reason) > MAX_REASON_CHARS or "\x00" in reason:
        refusal = f"a reason may have at most {MAX_REASON_CHARS} characters (no NUL)"
    if refusal is None:
        assert part is not None and label is not None
        try:
            marked = reference_service.add_reference(
                session, part, label, reason=reason, actor=user
            )
        except reference_service.ReferenceError as exc:
            session.rollback()
            refusal = str(exc)
        else:
            logger.info(
                "review UI: %s marked inspection %d as reference part %d (%s)",
                user.name, part, marked.id, marked.label,
            )  # fmt: skip
            return ChangeOutcome(
                True,
                '<div class="result result-ok" data-testid="reference-marked">'
                f"Part #{part} is reference part {marked.id}, verified "
                f"{views.esc(views.CLASS_TITLES.get(marked.label, marked.label))}. Inspectors "
                "are served it blind at the line's reference rate.</div>",
            )
    inspection = session.get(Inspection, part) if part is not None else None
    record_event(
        session,
        kind="reference_part_refused",
        actor=user.name,
        reason=reason.replace("\x00", "")[:MAX_REASON_CHARS],  # as given, where it can be
        line_id=inspection.line_id if inspection is not None else None,
        details={
            "inspection_id": part,
            "label": (label or "").replace("\x00", "")[:64] or None,
            "refusal": refusal,
            "via": "review UI",
        },
    )
    session.commit()
    logger.warning(
        "review UI: %s may not mark inspection %s as a reference part: %s",
        user.name, part, refusal,
    )  # fmt: skip
    return ChangeOutcome(False, views.change_failed_html(refusal or ""))


def build_evidence_page(context: ReviewContext) -> EvidencePage:
    gr.HTML('<h2 class="page-title">Evidence</h2>', js_on_load=None)
    with gr.Row(elem_classes=["panel", "evidence-controls"]):
        line = gr.Dropdown(
            label="Line",
            choices=[],
            elem_id="evidence-line",
            interactive=True,
            allow_custom_value=True,
        )
        version = gr.Dropdown(
            label="Model version",
            choices=[CURRENT_MODEL],
            value=CURRENT_MODEL,
            allow_custom_value=True,
            elem_id="evidence-version",
            interactive=True,
        )
        window = gr.Radio(
            label="Window", choices=list(WINDOWS), value="Last 7 days", elem_id="evidence-window"
        )
        show = gr.Button("Show", variant="primary", elem_id="evidence-show")
    summary = gr.HTML(js_on_load=None, elem_id="evidence-summary")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, elem_classes=["panel"]):
            figures = gr.HTML(js_on_load=None, elem_id="evidence-figures")
        with gr.Column(scale=1, elem_classes=["panel"]):
            gr.HTML('<h3 class="panel-title">Coverage versus risk</h3>', js_on_load=None)
            plot = gr.Plot(show_label=False, elem_id="evidence-curve")
            recommendation = gr.HTML(js_on_load=None, elem_id="evidence-recommendation")
    versions = gr.HTML(js_on_load=None, elem_id="evidence-versions")
    inspectors = gr.HTML(js_on_load=None, elem_id="evidence-inspectors")
    gallery = gr.HTML(js_on_load=None, elem_id="evidence-gallery")
    with gr.Row(elem_classes=["panel", "evidence-mark-reference"]):
        mark_part = gr.Dropdown(
            label="Part from the gallery",
            choices=[],
            elem_id="reference-part",
            interactive=True,
            allow_custom_value=True,  # checked by the handler, whose refusal is recorded
        )
        mark_label = gr.Dropdown(
            label="Verified class",
            choices=[(views.CLASS_TITLES.get(c.value, c.value), c.value) for c in DefectClass],
            elem_id="reference-label",
            interactive=True,
        )
        mark_reason = gr.Textbox(
            label="Reason (how it was verified)",
            max_length=MAX_REASON_CHARS,
            elem_id="reference-reason",
        )
        mark = gr.Button("Mark as reference part", elem_id="reference-mark")
    mark_result = gr.HTML(js_on_load=None, elem_id="reference-mark-result")

    def show_evidence(
        line_id: str | None, model_version: str | None, window_name: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "see the evidence") as (db, _user):
            ids = [ln.id for ln in lines.list_lines(db)]
            chosen = line_id if line_id in ids else (ids[0] if ids else None)
            if chosen is None:
                empty = '<div class="empty-table">No lines yet.</div>'
                return (
                    gr.update(choices=[], value=None),
                    gr.skip(),
                    empty,
                    "",
                    None,
                    "",
                    "",
                    "",
                    "",
                    gr.update(choices=[], value=None),
                )
            known = agreement.model_versions(db, chosen)
            version_choice = model_version if model_version in known else CURRENT_MODEL
            selected = None if version_choice == CURRENT_MODEL else version_choice
            now = utcnow()
            span = WINDOWS.get(window_name or "")
            since = now - span if span is not None else None
            report = agreement.agreement_report(db, chosen, model_version=selected, since=since)
            line_obj = lines.get_line(db, chosen)
            gate = agreement.gate_evidence(db, chosen, model_version=report.model_version)
            rec = (
                recommend_thresholds(gate.p_ok, gate.human_defect, gate_targets(line_obj))
                if gate.n
                else None
            )
            per_version = [
                agreement.agreement_report(db, chosen, model_version=v, since=since) for v in known
            ]
            rows = (
                agreement.labeled_inspections(
                    db, chosen, model_version=report.model_version, since=since
                )
                if report.model_version
                else []
            )
            gallery_items = disagreements(db, context, rows)
            return (
                gr.update(choices=ids, value=chosen),
                gr.update(choices=[CURRENT_MODEL, *known], value=version_choice),
                evidence_views.summary_html(report, line_obj.level, window_name or "All time"),
                evidence_views.figures_html(report),
                evidence_views.coverage_risk_figure(rec, gate_targets(line_obj), line_obj)
                if rec
                else None,
                evidence_views.recommendation_html(rec, gate.source, line_obj),
                evidence_views.versions_table_html(per_version),
                evidence_views.inspectors_table_html(report) + _reference_accuracy(db, report),
                evidence_views.gallery_html(gallery_items),
                gr.update(choices=gallery_choices(gallery_items), value=None),
            )

    def mark_as_reference(
        inspection_id: float | None, label: str | None, reason: str | None, request: gr.Request
    ) -> str:
        with _as_supervisor(context, request, "mark reference parts") as (db, user):
            return mark_reference_part(db, user, inspection_id, label, reason or "").html

    outputs = [
        line, version, summary, figures, plot, recommendation, versions, inspectors, gallery,
        mark_part,
    ]  # fmt: skip
    mark.click(
        mark_as_reference,
        [mark_part, mark_label, mark_reason],
        [mark_result],
        api_name="mark_reference",
    )
    show.click(show_evidence, [line, version, window], outputs, api_name="evidence")
    line.input(
        show_evidence,
        [line, gr.State(CURRENT_MODEL), window],
        outputs,
        api_visibility="undocumented",
    )

    def load(request: gr.Request) -> tuple[Any, ...]:
        return show_evidence(None, CURRENT_MODEL, "Last 7 days", request)

    return EvidencePage(load=load, outputs=outputs)
