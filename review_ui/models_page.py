"""The supervisors' Models page: the registered versions with their model cards, and per line
what runs (champion, candidate, mode), how the candidate compares on blind labels, how the
parts were split, and the buttons that move a rollout on.

Every handler reloads the user and checks the supervisor role before it reads or changes
anything, as the other supervisor pages do (`review_ui.supervisor`): the tab is hidden from
inspectors, but a hand-made request is refused all the same. The buttons call the use cases
the API and the CLI call (`inspect_app.rollout.deployments`: promote, rollback, re-arm,
finalize, set_deployment for a shadow), which check the role again, apply the evidence gate
and record the event; with this process's `Rollout` they load a version before traffic
moves to it (`warm`) and follow the change at once (`refresh`). A refusal is shown on the
page with its figures, never as an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from sqlmodel import Session

from inspect_app import lines
from inspect_app.api.params import LINE_ID_PATTERN, MAX_REASON_CHARS, parse_client_time
from inspect_app.domain import Role
from inspect_app.export import ExportRequest, export_on_server
from inspect_app.rollout import deployments, queries, registry
from inspect_app.rollout.deployments import (
    DeploymentError,
    DeploymentRequest,
    DeploymentView,
    RolloutRefused,
    Warm,
)
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.registry import RegistryError
from inspect_app.storage.tables import Deployment, ModelVersion, User
from review_ui import models_views as mv
from review_ui import views
from review_ui.auth import require_role
from review_ui.context import ReviewContext

# The supervisor check shared by every supervisor page: one way to do it.
from review_ui.supervisor import _as_supervisor

logger = logging.getLogger(__name__)

PAGE_OUTPUTS = 13  # the components `page_outputs` fills, `ModelsPage.outputs`
MAX_VERSION_CHARS = 64  # ModelVersion.version's column
ACTIONS: dict[str, str] = {  # a button's action -> what the role check names
    "promote": "promote a candidate",
    "rollback": "roll back a candidate",
    "rearm": "re-arm a candidate",
    "finalize": "finalize a rollout",
    "shadow": "start a shadow rollout",
    "export": "export a line's labels",
}


# -- what the page needs of the running service ----------------------------------------------


@dataclass(frozen=True)
class Serving:
    """The service's configured model, and this process's rollout where it has one."""

    default_version: str
    warm: Warm | None  # loads a version before traffic moves to it; None: no rollout here
    refresh: Callable[[], object] | None

    @property
    def can_change(self) -> bool:
        return self.refresh is not None


def serving(context: ReviewContext) -> Serving:
    rollout = context.rollout
    if rollout is not None:
        return Serving(rollout.default_version, rollout.warm, rollout.refresh)
    predictor = context.predictor
    if predictor is None:
        raise gr.Error("The service has not loaded its model yet: reload the page shortly.")
    return Serving(predictor.version, None, None)


# -- reading ---------------------------------------------------------------------------------


def line_uses(views_by_line: dict[str, DeploymentView]) -> dict[str, list[str]]:
    """Where each version runs: 'line-1 champion', 'line-2 candidate (shadow)'."""
    uses: dict[str, list[str]] = {}
    for line_id, view in views_by_line.items():
        uses.setdefault(view.champion, []).append(f"{line_id} champion")
        if view.candidate is not None:
            state = "quarantined" if view.quarantined else view.mode.value
            uses.setdefault(view.candidate, []).append(f"{line_id} candidate ({state})")
    return uses


def _buttons(view: DeploymentView | None) -> tuple[Any, ...]:
    """Promote, roll back, re-arm, finalize: which can do anything now (a hint only; the
    use cases decide, whatever the page shows)."""
    if view is None or view.candidate is None:
        return tuple(gr.update(interactive=False) for _ in range(4))
    armed = not view.quarantined
    next_step = view.mode is Mode.SHADOW or (
        view.mode is Mode.CANARY and view.step + 1 < len(view.steps)
    )
    return (
        gr.update(interactive=armed and next_step),
        gr.update(interactive=armed),
        gr.update(interactive=not armed),
        gr.update(interactive=armed),
    )


def page_outputs(
    session: Session, context: ReviewContext, line_id: str | None, version: str | None
) -> tuple[Any, ...]:
    """The page's components, in `ModelsPage.outputs` order, for `line_id` (the first line
    when it is not one) and the model card of `version` (the newest when it is not one)."""
    default = serving(context).default_version
    versions = registry.list_versions(session)
    line_ids = [ln.id for ln in lines.list_lines(session)]
    by_line = {lid: deployments.view(session, lid, default) for lid in line_ids}
    uses = line_uses(by_line)
    names = [v.version for v in versions]
    card = next((v for v in versions if v.version == version), versions[0] if versions else None)
    registry_outputs = (
        mv.registry_table_html(versions, uses),
        gr.update(choices=names, value=card.version if card else None),
        mv.version_card_html(card, uses.get(card.version, []) if card else []),
    )
    chosen = line_id if line_id in by_line else (line_ids[0] if line_ids else None)
    if chosen is None:
        empty = '<div class="empty-table">No lines yet.</div>'
        return (
            gr.update(choices=[], value=None),
            *registry_outputs,
            empty,
            "",
            None,
            "",
            gr.update(choices=[], value=None),
            *_buttons(None),
        )
    view = by_line[chosen]
    line = lines.get_line(session, chosen)
    comparison = deployments.comparison(session, chosen, default)
    traffic = queries.candidate_traffic(session, chosen)
    shadow_choices = [n for n in names if n != view.champion]
    return (
        gr.update(choices=line_ids, value=chosen),
        *registry_outputs,
        mv.deployment_html(view, line.level),
        mv.comparison_html(comparison, view),
        mv.traffic_figure(traffic, view.share if view.candidate is not None else None),
        mv.events_table_html(queries.deployment_events(session, chosen)),
        gr.update(
            choices=shadow_choices,
            value=view.candidate if view.candidate in shadow_choices else None,
        ),
        *_buttons(view),
    )


# -- changing a deployment -------------------------------------------------------------------


@dataclass(frozen=True)
class ActionOutcome:
    applied: bool
    html: str


def _bad_input(line_id: str, reason: str) -> str | None:
    """The checks the API's schema makes, made here on the server for the page's input."""
    if not re.fullmatch(LINE_ID_PATTERN, line_id or ""):
        return f"no line {(line_id or '')[:64]!r}"
    why = (reason or "").strip()
    if not why:
        return "a reason is required: it goes into the audit trail"
    if len(why) > MAX_REASON_CHARS or "\x00" in why:
        return f"a reason may have at most {MAX_REASON_CHARS} characters (no NUL), got {len(why)}"
    return None


def _applied_message(action: str, row: Deployment) -> str:
    share = f"{100 * row.share:g}%"
    if action == "promote":
        return (
            f"candidate {row.candidate} is on canary step {row.step + 1} of {len(row.steps)}: "
            f"it decides {share} of parts"
        )
    if action == "rollback":
        return (
            f"candidate {row.candidate} is rolled back and quarantined; {row.champion} decides "
            "every part until a supervisor re-arms it"
        )
    if action == "rearm":
        again = (
            f"; the canary starts again at step 1 ({share} of parts)"
            if row.mode == Mode.CANARY.value
            else ""
        )
        return f"candidate {row.candidate} is re-armed{again}"
    if action == "finalize":
        return f"{row.champion} is now the line's champion and decides every part"
    return (
        f"{row.candidate} runs in shadow beside {row.champion} on "
        f"{100 * row.shadow_share:g}% of parts; it decides nothing"
    )


def _change(
    session: Session,
    user: User,
    line_id: str,
    action: str,
    reason: str,
    run: Callable[[], Deployment],
    serve: Serving,
) -> ActionOutcome:
    """Run a use case; its refusal or error as the page shows it, its success followed."""
    bad = _bad_input(line_id, reason)
    if bad is not None:
        return ActionOutcome(False, mv.failed_html(bad))
    if not serve.can_change:
        return ActionOutcome(
            False, mv.failed_html("the service is still starting: try again in a moment")
        )
    try:
        row = run()
    except RolloutRefused as exc:
        session.rollback()
        return ActionOutcome(False, mv.refused_html(str(exc), exc.evidence))
    except (DeploymentError, RegistryError) as exc:
        session.rollback()
        return ActionOutcome(False, mv.failed_html(str(exc)))
    message = _applied_message(action, row)
    logger.info("review UI: %s: %s on line %s (%s)", user.name, action, line_id, message)
    assert serve.refresh is not None
    try:
        serve.refresh()
    except Exception:  # the change is committed; the poll thread follows it within seconds
        logger.exception("line %s: could not follow the change at once", line_id)
        message += " (this process follows it within seconds)"
    return ActionOutcome(True, mv.applied_html(message))


def apply_action(
    session: Session, user: User, line_id: str, action: str, reason: str, serve: Serving
) -> ActionOutcome:
    """promote, rollback, rearm or finalize on `line_id`, as the API's routes do."""
    if action not in ACTIONS or action == "shadow":
        raise ValueError(f"unknown action {action!r}")
    require_role(user, Role.SUPERVISOR, ACTIONS[action])
    why = (reason or "").strip()

    def run() -> Deployment:
        if action == "promote":
            return deployments.promote(
                session,
                line_id,
                actor=user,
                reason=why,
                default_version=serve.default_version,
                warm=serve.warm,
            )
        if action == "rollback":
            return deployments.rollback_by(session, line_id, actor=user, reason=why)
        if action == "rearm":
            return deployments.rearm(
                session, line_id, actor=user, reason=why, default_version=serve.default_version
            )
        return deployments.finalize(
            session,
            line_id,
            actor=user,
            reason=why,
            default_version=serve.default_version,
            warm=serve.warm,
        )

    return _change(session, user, line_id, action, why, run, serve)


def apply_shadow(
    session: Session, user: User, line_id: str, candidate: str | None, reason: str, serve: Serving
) -> ActionOutcome:
    """Put a registered version beside the line's champion in shadow (replacing any
    candidate the line has): it runs hidden on the line's parts and decides nothing."""
    require_role(user, Role.SUPERVISOR, ACTIONS["shadow"])
    name = (candidate or "").strip()
    if not name or len(name) > MAX_VERSION_CHARS or "\x00" in name:
        return ActionOutcome(False, mv.failed_html("choose a registered version as candidate"))
    why = (reason or "").strip()

    def run() -> Deployment:
        return deployments.set_deployment(
            session,
            line_id,
            DeploymentRequest(candidate=name, mode=Mode.SHADOW),
            actor=user,
            reason=why,
            default_version=serve.default_version,
            warm=serve.warm,
        )

    return _change(session, user, line_id, "shadow", why, run, serve)


# -- the handlers (module level, so tests call them without a browser) -----------------------


def show_models(
    context: ReviewContext, line_id: str | None, version: str | None, request: gr.Request | None
) -> tuple[Any, ...]:
    with _as_supervisor(context, request, "see model rollouts") as (db, _user):
        return page_outputs(db, context, line_id, version)


def select_version(context: ReviewContext, version: str | None, request: gr.Request | None) -> str:
    """The model card of the chosen version."""
    with _as_supervisor(context, request, "see model rollouts") as (db, _user):
        if not version:
            return mv.version_card_html(None)
        name = str(version)[:MAX_VERSION_CHARS].replace("\x00", "")
        try:
            row: ModelVersion = registry.get_version(db, name)
        except registry.VersionNotFound as exc:
            raise gr.Error(views.esc(str(exc))) from exc
        default = serving(context).default_version
        by_line = {ln.id: deployments.view(db, ln.id, default) for ln in lines.list_lines(db)}
        return mv.version_card_html(row, line_uses(by_line).get(row.version, []))


def _after_change(
    db: Session, context: ReviewContext, outcome: ActionOutcome, line_id: str, version: str | None
) -> tuple[Any, ...]:
    """The result, the reason box cleared once applied, and the page redrawn."""
    known = bool(re.fullmatch(LINE_ID_PATTERN, line_id or ""))
    return (
        outcome.html,
        "" if outcome.applied else gr.skip(),
        *page_outputs(db, context, line_id if known else None, version),
    )


def run_action(
    context: ReviewContext,
    action: str,
    line_id: str | None,
    reason: str | None,
    version: str | None,
    request: gr.Request | None,
) -> tuple[Any, ...]:
    with _as_supervisor(context, request, ACTIONS.get(action, "change a deployment")) as (
        db,
        user,
    ):
        outcome = apply_action(db, user, line_id or "", action, reason or "", serving(context))
        return _after_change(db, context, outcome, line_id or "", version)


def start_shadow(
    context: ReviewContext,
    line_id: str | None,
    candidate: str | None,
    reason: str | None,
    version: str | None,
    request: gr.Request | None,
) -> tuple[Any, ...]:
    with _as_supervisor(context, request, ACTIONS["shadow"]) as (db, user):
        outcome = apply_shadow(db, user, line_id or "", candidate, reason or "", serving(context))
        return _after_change(db, context, outcome, line_id or "", version)


def export_labels(
    context: ReviewContext,
    line_id: str | None,
    since: str | None,
    labeled_only: bool,
    request: gr.Request | None,
) -> str:
    """Run an export of the line's labels into the service's data folder (the CLI's export,
    `inspect_app.export`), for a plant engineer to retrain from; logged with who asked."""
    with _as_supervisor(context, request, ACTIONS["export"]) as (db, user):
        if not re.fullmatch(LINE_ID_PATTERN, line_id or ""):
            return mv.failed_html(f"no line {(line_id or '')[:64]!r}")
        try:
            start = parse_client_time(since, "since") if (since or "").strip() else None
            export = ExportRequest(line_id or "", since=start, labeled_only=bool(labeled_only))
            folder, summary = export_on_server(
                db,
                context.image_store,
                export,
                context.settings.exports_dir,
                actor=user.name,
                now=context.now(),
            )
        except (ValueError, lines.LineNotFound) as exc:  # ExportError, TimeOutOfRange
            return mv.failed_html(str(exc))
        champion = deployments.view(db, export.line_id, serving(context).default_version).champion
        return mv.export_html(folder, summary, export.line_id, champion, context.settings.data_dir)


# -- the page --------------------------------------------------------------------------------


@dataclass
class ModelsPage:
    load: Callable[..., tuple[Any, ...]]
    outputs: list[Any]


def build_models_page(context: ReviewContext) -> ModelsPage:
    gr.HTML('<h2 class="page-title">Models</h2>', js_on_load=None)
    with gr.Row(elem_classes=["panel", "evidence-controls"]):
        # Lines and versions are the database's: the handlers check a name, not the list.
        line = gr.Dropdown(
            label="Line",
            choices=[],
            elem_id="models-line",
            interactive=True,
            allow_custom_value=True,
        )
        show = gr.Button("Show", variant="primary", elem_id="models-show", scale=0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, elem_classes=["panel"]):
            deployment = gr.HTML(js_on_load=None, elem_id="models-deployment")
        with gr.Column(scale=1, elem_classes=["panel"]):
            gr.HTML(
                '<h3 class="panel-title">Move the rollout on</h3><p class="panel-help">'
                "Promote: shadow to canary, or a canary's next step once the step passed on "
                "evidence. Roll back: the candidate stops deciding at once and is quarantined "
                "until re-armed. Finalize: the candidate becomes the champion. Every change is "
                "logged with your name and reason.</p>",
                js_on_load=None,
            )
            reason = gr.Textbox(
                label="Reason (goes into the audit trail)",
                elem_id="models-reason",
                max_length=MAX_REASON_CHARS,
            )
            with gr.Row():
                promote = gr.Button("Promote", variant="primary", elem_id="models-promote")
                rollback = gr.Button("Roll back", variant="stop", elem_id="models-rollback")
            with gr.Row():
                rearm = gr.Button("Re-arm", elem_id="models-rearm")
                finalize = gr.Button("Finalize", elem_id="models-finalize")
            result = gr.HTML(js_on_load=None, elem_id="models-result")
    comparison = gr.HTML(js_on_load=None, elem_id="models-comparison", elem_classes=["panel"])
    with gr.Column(elem_classes=["panel"]):
        gr.HTML('<h3 class="panel-title">Traffic split</h3>', js_on_load=None)
        traffic = gr.Plot(show_label=False, elem_id="models-traffic")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, elem_classes=["panel"]):
            events = gr.HTML(js_on_load=None, elem_id="models-events")
        with gr.Column(scale=1, elem_classes=["panel"]):
            gr.HTML(
                '<h3 class="panel-title">Start a shadow</h3><p class="panel-help">The version '
                "runs hidden beside the champion on this line's parts and decides nothing, so "
                "its evidence builds on blind labels. It replaces the line's current "
                "candidate.</p>",
                js_on_load=None,
            )
            candidate = gr.Dropdown(
                label="Candidate version",
                choices=[],
                elem_id="models-candidate",
                interactive=True,
                allow_custom_value=True,
            )
            shadow_reason = gr.Textbox(
                label="Reason (goes into the audit trail)",
                elem_id="models-shadow-reason",
                max_length=MAX_REASON_CHARS,
            )
            shadow = gr.Button("Start shadow", variant="primary", elem_id="models-shadow")
            shadow_result = gr.HTML(js_on_load=None, elem_id="models-shadow-result")
    with gr.Column(elem_classes=["panel"]):
        gr.HTML(
            '<h3 class="panel-title">Export the line\'s labels for retraining</h3><p '
            'class="panel-help">Writes the line\'s labeled parts (one folder per class, a '
            "manifest of who labeled each and how, the parts whose image is gone) into the "
            "service's data folder, and shows the command that retrains from them. Training "
            "stays a command: it is heavy, and a plant runs it on purpose.</p>",
            js_on_load=None,
        )
        with gr.Row():
            export_since = gr.Textbox(
                label="Received since (ISO 8601, UTC; empty: the line's whole history)",
                elem_id="models-export-since",
                max_length=40,
            )
            export_labeled = gr.Checkbox(
                label="Labeled parts only", value=True, elem_id="models-export-labeled"
            )
            export = gr.Button("Run export", elem_id="models-export", scale=0)
        export_result = gr.HTML(js_on_load=None, elem_id="models-export-result")
    with gr.Column(elem_classes=["panel"]):
        registry_table = gr.HTML(js_on_load=None, elem_id="models-registry")
        version = gr.Dropdown(
            label="Model card of",
            choices=[],
            elem_id="models-version",
            interactive=True,
            allow_custom_value=True,
        )
        card = gr.HTML(js_on_load=None, elem_id="models-card")

    outputs = [
        line,
        registry_table,
        version,
        card,
        deployment,
        comparison,
        traffic,
        events,
        candidate,
        promote,
        rollback,
        rearm,
        finalize,
    ]
    assert len(outputs) == PAGE_OUTPUTS

    def on_show(line_id: str | None, chosen: str | None, request: gr.Request) -> tuple[Any, ...]:
        return show_models(context, line_id, chosen, request)

    def on_version(chosen: str | None, request: gr.Request) -> str:
        return select_version(context, chosen, request)

    def action_handler(action: str) -> Callable[..., tuple[Any, ...]]:
        def on_action(
            line_id: str | None, why: str | None, chosen: str | None, request: gr.Request
        ) -> tuple[Any, ...]:
            return run_action(context, action, line_id, why, chosen, request)

        return on_action

    def on_shadow(
        line_id: str | None,
        name: str | None,
        why: str | None,
        chosen: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        return start_shadow(context, line_id, name, why, chosen, request)

    show.click(on_show, [line, version], outputs, api_name="models")
    line.input(on_show, [line, version], outputs, api_visibility="undocumented")
    version.input(on_version, [version], [card], api_name="model_card", show_progress="hidden")
    for button, action in (
        (promote, "promote"),
        (rollback, "rollback"),
        (rearm, "rearm"),
        (finalize, "finalize"),
    ):
        button.click(
            action_handler(action),
            [line, reason, version],
            [result, reason, *outputs],
            api_name=f"{action}_candidate",
        )
    shadow.click(
        on_shadow,
        [line, candidate, shadow_reason, version],
        [shadow_result, shadow_reason, *outputs],
        api_name="start_shadow",
    )

    def on_export(
        line_id: str | None, since: str | None, labeled_only: bool, request: gr.Request
    ) -> str:
        return export_labels(context, line_id, since, labeled_only, request)

    export.click(
        on_export, [line, export_since, export_labeled], [export_result], api_name="export_labels"
    )

    def load(request: gr.Request) -> tuple[Any, ...]:
        return show_models(context, None, None, request)

    return ModelsPage(load=load, outputs=outputs)
