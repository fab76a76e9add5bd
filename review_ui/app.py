"""The review UI: one Gradio Blocks app mounted in the service's FastAPI app under `/review`.

It calls the same service layer as the API (`review_queue`, `lines`, `accounts`,
`agreement`), so there is no second copy of any rule. Everyone logs in against the users
table; inspectors see the Inspect page, supervisors also Lines, Evidence, Monitoring and
Models; the header always shows who is logged in and a logout link. Hotkeys, zoom and the
heatmap overlay are plain browser script (static/review.js), since Gradio has no hotkeys of
its own.

Gradio settings that matter on a plant floor: no analytics or other outside requests
(the theme's font ships with Gradio), no API/"built with" footer, no run history kept in
the browser, events run concurrently (Gradio's default is one at a time per event, which
would queue eight inspectors behind each other), and none goes through Gradio's queue
(`unqueue`), so a load balancer needs no sticky sessions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from gradio.route_utils import API_PREFIX
from starlette.routing import Mount

from inspect_app.domain import Role
from review_ui import views
from review_ui.auth import current_user, guard_sessions, login_checker
from review_ui.context import ReviewContext
from review_ui.desk import InspectorDesk
from review_ui.errors import RefusalStatus
from review_ui.inspector import build_inspect_page
from review_ui.models_page import build_models_page
from review_ui.monitoring_page import build_monitoring_page
from review_ui.outputs_page import build_outputs_page
from review_ui.queue_owner import QueueOwner
from review_ui.supervisor import build_evidence_page, build_lines_page

logger = logging.getLogger(__name__)

MOUNT_PATH = "/review"
STATIC_DIR = Path(__file__).resolve().parent / "static"


def review_theme() -> gr.themes.Base:
    """Neutral greys so a part's colour is judged against nothing tinted; blue for actions."""
    return gr.themes.Base(
        primary_hue="blue",
        neutral_hue="slate",
        radius_size="sm",
        font=(gr.themes.LocalFont("IBM Plex Sans"), "system-ui", "Arial", "sans-serif"),
        font_mono=(gr.themes.LocalFont("IBM Plex Mono"), "ui-monospace", "monospace"),
    )


def page_head() -> str:
    """The hotkeys, zoom and heatmap script, run once per page in the document's head.

    The key of each button comes from `views.VERDICT_KEYS` / `views.BUTTON_KEYS`, so the
    script, the key badges on the buttons and the legend can never disagree.
    """
    script = (STATIC_DIR / "review.js").read_text(encoding="utf-8")
    verdicts = {key: f"verdict-{cls.value}" for key, cls in views.VERDICT_KEYS.items()}
    badges = "".join(
        f"#{button_id}::before {{ content: {json.dumps(key)}; }}\n"
        for button_id, key in views.button_keys().items()
    )
    return (
        f"<style>\n{badges}</style>\n"
        f"<script>\nwindow.inspectVerdictKeys = {json.dumps(verdicts)};\n{script}\n</script>"
    )


def build_review_blocks(context: ReviewContext, desk: InspectorDesk) -> gr.Blocks:
    with gr.Blocks(title="Inspection review", analytics_enabled=False, fill_width=True) as blocks:
        header = gr.HTML(js_on_load=None, elem_id="ia-header")
        with gr.Tabs(elem_id="ia-tabs"):
            with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"):
                inspect = build_inspect_page(context, desk)
            with gr.Tab("Lines", id="lines", visible=False, elem_id="tab-lines") as lines_tab:
                lines = build_lines_page(context)
            with gr.Tab(
                "Evidence", id="evidence", visible=False, elem_id="tab-evidence"
            ) as evidence_tab:
                evidence = build_evidence_page(context)
            with gr.Tab(
                "Monitoring", id="monitoring", visible=False, elem_id="tab-monitoring"
            ) as monitoring_tab:
                monitoring = build_monitoring_page(context)
            with gr.Tab(
                "Outputs", id="outputs", visible=False, elem_id="tab-outputs"
            ) as outputs_tab:
                line_outputs = build_outputs_page(context)
            with gr.Tab("Models", id="models", visible=False, elem_id="tab-models") as models_tab:
                models = build_models_page(context)

        def whoami(request: gr.Request) -> tuple[Any, ...]:
            with context.session() as db:
                user = current_user(db, request)
            supervisor = Role(user.role).may(Role.SUPERVISOR)
            logger.info("review UI: %s (%s) opened a page", user.name, user.role)
            return (
                views.header_html(user.name, user.role, f"{MOUNT_PATH}/logout"),
                gr.Tab(visible=supervisor),
                gr.Tab(visible=supervisor),
                gr.Tab(visible=supervisor),
                gr.Tab(visible=supervisor),
                gr.Tab(visible=supervisor),
                gr.Timer(active=True),
                gr.Timer(active=supervisor),
            )

        loaded = blocks.load(
            whoami,
            None,
            [
                header,
                lines_tab,
                evidence_tab,
                monitoring_tab,
                outputs_tab,
                models_tab,
                inspect.timer,
                lines.timer,
            ],
            api_visibility="private",
            show_progress="hidden",
        )
        inspect.chain_open(loaded)
        lines_tab.select(
            lines.load, None, lines.load_outputs, api_visibility="private", show_progress="hidden"
        )
        evidence_tab.select(evidence.load, None, evidence.outputs, api_visibility="private")
        monitoring_tab.select(monitoring.load, None, monitoring.outputs, api_visibility="private")
        outputs_tab.select(line_outputs.load, None, line_outputs.outputs, api_visibility="private")
        models_tab.select(models.load, None, models.outputs, api_visibility="private")

        def leave(request: gr.Request) -> None:
            desk.leave(request.session_hash, request.username)

        blocks.unload(leave)
    unqueue(blocks)
    return blocks


def unqueue(blocks: gr.Blocks) -> None:
    """Every event of the review UI is one plain HTTP request, answered whole by whichever
    process receives it: the page posts it to ``/gradio_api/run/...`` instead of joining
    Gradio's queue.

    Gradio's queue keeps a tab's events in the memory of one process: ``queue/join`` puts
    the event there and the tab's ``queue/data`` stream must reach that same process to
    get the answer, so a load balancer without sticky sessions loses about every other
    answer. Unqueued, an event needs nothing of the process but the database: the desk
    (`review_ui.desk.DeskStore`), the login (`review_ui.auth.SessionTokens`), the images
    (the shared store). No handler streams or reports progress, which only the queue
    carries. gradio_client still joins the queue (it always does): there the queue's owner
    check (`review_ui.queue_owner`) applies.
    """
    for fn in blocks.fns.values():
        fn.queue = False


# Gradio's routes that store a file the client sends. The review UI has no upload
# component, so they are closed: any logged-in user could otherwise fill the disk.
UPLOAD_ROUTES = ("upload", "process_recording")


def _close_upload_routes(app: FastAPI, path: str) -> None:
    """Routes on `app` itself, matched before the mount, that refuse Gradio's uploads."""

    def no_uploads() -> JSONResponse:
        return JSONResponse({"detail": "the review UI takes no file uploads"}, status_code=404)

    for name in UPLOAD_ROUTES:
        app.add_api_route(
            f"{path}{API_PREFIX}/{name}", no_uploads, methods=["POST"], include_in_schema=False
        )


def _guard_queue_streams(app: FastAPI, path: str) -> None:
    """A session's queue (its results stream, heartbeat, cancel) answers only the user who
    opened it (`review_ui.queue_owner`); the login behind a request is Gradio's own cookie
    look-up, the one its routes make."""
    (mounted,) = [r.app for r in app.routes if isinstance(r, Mount) and r.path == path]

    def user_of(cookies: dict[str, str]) -> str | None:
        cookie_id = mounted.cookie_id  # type: ignore[attr-defined]
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(
            f"access-token-unsecure-{cookie_id}"
        )
        return mounted.tokens.get(token) if token else None  # type: ignore[attr-defined]

    app.add_middleware(QueueOwner, prefix=f"{path}{API_PREFIX}", user_of=user_of)


def mount_review_ui(app: FastAPI, path: str = MOUNT_PATH) -> None:
    """Mount the review UI on `app` (the service's, from `create_app`) at `path`.

    Nothing is read from ``app.state`` now: the lifespan fills it when the server starts.
    """
    if path != MOUNT_PATH:
        raise ValueError(f"the review UI is served at {MOUNT_PATH}; its pages link there")
    _close_upload_routes(app, path)
    app.add_middleware(
        RefusalStatus, prefixes=(f"{path}{API_PREFIX}/run/", f"{path}{API_PREFIX}/api/")
    )
    context = ReviewContext(app)
    desk = InspectorDesk(context)
    blocks = build_review_blocks(context, desk)
    blocks.queue(default_concurrency_limit=None)
    gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth=login_checker(context),
        auth_message="Inspection review: log in with your inspect_app user name and password.",
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        show_error=True,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        theme=review_theme(),
        css_paths=[STATIC_DIR / "review.css"],
        head=page_head(),
    )
    guard_sessions(app, context, path)  # deactivation and password changes end sessions
    _guard_queue_streams(app, path)
    app.state.review_desk = desk
    logger.info("review UI mounted at %s", path)
