"""The Inspect page: one large part image, one key per verdict, nothing else in the way.

Layout: the image fills the left three quarters (zoom and pan in the browser, see
static/review.js), the key legend under it; on the right, top to bottom, the queue
counters, the part's card (line, serial, capture time, how long it has waited, why it is
here), the model's call where the line's level shows it, the verdict keys (each with its
key), a note, undo/skip and one line saying what just happened. Everything fits a
1440x900 screen without scrolling.

Every handler here is thin: it reads ``gr.Request`` for the session and the user's name,
calls `review_ui.desk.InspectorDesk` (which checks the user and calls
`inspect_app.review_queue`), and turns the resulting `DeskView` into HTML. The heatmap is a
separate, chained event so a part never waits for the model to appear; the page script
lays it over the part it was made for, never over a newer one.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import gradio as gr

from inspect_app.api.params import MAX_NOTE_CHARS
from inspect_app.domain import TaskReason
from inspect_app.imaging import decode_image
from inspect_app.review_queue import ClaimedTask
from models.heatmap import overlay
from review_ui import views
from review_ui.context import ReviewContext, data_uri, encode_jpeg_uri
from review_ui.desk import BadInput, DeskView, InspectorDesk, view_key

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0  # the page's heartbeat: lease renewal, idle check, new parts, counters
# How the page script reports inactivity to the tick (milliseconds since the last input).
IDLE_JS = "(idle) => [Date.now() - (window.inspectLastActivity || Date.now())]"
# Heatmaps computed at once in a process: each runs the model on a part, so a burst of
# verdicts must not take every core from ingestion. (The events are not queued, see
# `review_ui.app`, so Gradio's concurrency_limit would not apply.)
HEATMAP_SLOTS = 2


@dataclass
class InspectPage:
    """What the app wires into its page load."""

    timer: gr.Timer  # the heartbeat; the app activates it once the user is known
    chain_open: Callable[[Any], None]  # after `event`, claim a part and show it


def _blind_reason(task: ClaimedTask) -> str:
    if task.reason == TaskReason.AUDIT.value:
        return "audits are blind"
    return "blind at this line's level"


def _viewer(view: DeskView, context: ReviewContext) -> str:
    if view.mode == "paused":
        return views.empty_viewer_html(
            "Paused", "Press Space or any verdict key to continue.", kind="paused"
        )
    part = view.part
    if part is None:
        return views.empty_viewer_html(
            "Queue empty",
            "No part is waiting. New parts appear here by themselves.",
            kind="idle",
        )
    try:
        uri = data_uri(context.image_bytes(part.image_sha256), part.image_format)
    except (OSError, ValueError) as exc:
        logger.error(
            "review UI: image %s of inspection %d cannot be shown: %s",
            part.image_sha256,
            part.inspection_id,
            exc,
        )
        return views.empty_viewer_html(
            "Image missing",
            f"The stored image of part #{part.shown_id} cannot be read. "
            "Press s to send it to a supervisor.",
            kind="error",
        )
    banner = None
    if view.mode == "correcting":
        banner = (
            f"CORRECTING part #{part.shown_id}: you said "
            f"{(view.verdict_given or '').upper()}. Press the right key, Esc to cancel."
        )
    return views.viewer_html(views.PartView(key=view_key(view), image_uri=uri, banner=banner))


def _card(view: DeskView) -> str:
    part = view.part
    if part is None:
        return '<div class="part-card part-card-empty">No part claimed.</div>'
    return views.part_card_html(
        task_id=part.task_id,
        inspection_id=part.shown_id,
        line_id=part.line_id,
        reason=part.reason,
        part_serial=part.part_serial,
        captured_at=part.captured_at,
        received_at=part.received_at,
        now=datetime.now(UTC),
        escalated=part.escalated,
        escalation_note=part.note,
        gate_reason=part.gate_reason,
    )


def _model(view: DeskView) -> str:
    part = view.part
    if part is None:
        return ""
    return views.model_panel_html(
        part.predicted_class, part.confidence, blind_reason=_blind_reason(part)
    )


def _counters(view: DeskView) -> str | dict:
    c = view.counters
    if c is None:
        return gr.skip()
    return views.counters_html(
        waiting=c.waiting,
        oldest_wait_s=c.oldest_wait_s,
        my_labels=c.my_labels,
        shift_started=c.shift_started.astimezone(),
    )


def render(view: DeskView, context: ReviewContext) -> tuple[Any, ...]:
    """viewer, card, model, feedback, counters, note, state (the page's outputs, in order)."""
    feedback = (
        views.feedback_html(view.message, kind=view.message_kind)
        if view.message or view.changed
        else gr.skip()
    )
    if not view.changed:
        return (gr.skip(), gr.skip(), gr.skip(), feedback, _counters(view), gr.skip(), view.state)
    return (
        _viewer(view, context),
        _card(view),
        _model(view),
        feedback,
        _counters(view),
        "" if view.clear_note else gr.skip(),
        view.state,
    )


def heatmap_source(context: ReviewContext, view: DeskView) -> str:
    """The heatmap of the part on screen, as a hidden image the page script lays over it.

    Only for parts whose model output this inspector may see (the claim carries it only
    then); the model runs here, after the part is already on screen.
    """
    part = view.part
    predictor = context.predictor
    if part is None or part.predicted_class is None or predictor is None:
        return ""
    settings = context.settings
    try:
        decoded = decode_image(
            context.image_bytes(part.image_sha256),
            None,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
        prediction = predictor.predict([decoded.image], heatmap=True)[0]
        if prediction.heatmap is None:
            return ""
        uri = encode_jpeg_uri(overlay(decoded.image, prediction.heatmap), quality=85)
    except Exception:  # the part is already on screen: a failed heatmap must not hide it
        logger.exception("review UI: heatmap of inspection %d failed", part.inspection_id)
        return ""
    return f'<img class="overlay-src" data-for="{html.escape(view_key(view))}" alt="" src="{uri}">'


def build_inspect_page(context: ReviewContext, desk: InspectorDesk) -> InspectPage:
    """Lay out the Inspect page inside the current Blocks and wire its events."""
    verdict_buttons: dict[str, gr.Button] = {}
    with gr.Row(elem_id="inspect-page", equal_height=False):
        with gr.Column(scale=3, min_width=480, elem_classes=["viewer-col"]):
            viewer = gr.HTML(
                views.empty_viewer_html("Loading", "Claiming the next part..."),
                elem_id="part-viewer-box",
                js_on_load=None,
            )
            gr.HTML(views.hotkey_legend_html(), js_on_load=None, elem_id="hotkey-legend")
        with gr.Column(scale=1, min_width=340, elem_classes=["side-col"]):
            counters = gr.HTML(js_on_load=None, elem_id="counters-box")
            card = gr.HTML(js_on_load=None, elem_id="part-card-box")
            model = gr.HTML(js_on_load=None, elem_id="model-box")
            with gr.Column(elem_classes=["verdict-keys"]):
                for cls in views.VERDICT_KEYS.values():
                    verdict_buttons[cls.value] = gr.Button(
                        views.CLASS_TITLES[cls.value],
                        elem_id=f"verdict-{cls.value}",
                        elem_classes=[
                            "verdict",
                            "verdict-defect" if cls.is_defect else "verdict-ok",
                        ],
                    )
            note = gr.Textbox(
                label="Note",
                show_label=False,
                placeholder="Note (optional): press n to write, Esc to leave",
                lines=1,
                max_lines=4,
                max_length=MAX_NOTE_CHARS,
                elem_id="verdict-note",
            )
            with gr.Row(elem_classes=["command-keys"]):
                undo = gr.Button("Undo last", elem_id="cmd-undo", elem_classes=["command"])
                skip = gr.Button("Skip", elem_id="cmd-skip", elem_classes=["command"])
            feedback = gr.HTML(views.feedback_html(""), js_on_load=None, elem_id="feedback-box")
    with gr.Row(elem_classes=["ia-hidden"]):
        cancel = gr.Button("cancel", elem_id="cmd-cancel")
        resume = gr.Button("resume", elem_id="cmd-resume")
        idle = gr.Number(value=0, elem_id="idle-ms")
        state = gr.JSON(value={}, elem_id="desk-state")
        heat = gr.HTML("", js_on_load=None, elem_id="overlay-box")
    timer = gr.Timer(TICK_SECONDS, active=False)

    outputs: list[gr.components.Component] = [viewer, card, model, feedback, counters, note, state]
    heatmap_slots = threading.BoundedSemaphore(HEATMAP_SLOTS)

    def _run(action: Callable[[], DeskView]) -> tuple[Any, ...]:
        try:
            return render(action(), context)
        except BadInput as exc:
            raise gr.Error(html.escape(str(exc))) from exc

    def open_desk(request: gr.Request) -> tuple[Any, ...]:
        return _run(lambda: desk.open(request.session_hash, request.username))

    def make_verdict(label: str) -> Callable[..., tuple[Any, ...]]:
        def verdict(note_text: str, request: gr.Request) -> tuple[Any, ...]:
            return _run(
                lambda: desk.verdict(request.session_hash, request.username, label, note_text)
            )

        verdict.__name__ = f"label_{label}"
        return verdict

    def undo_last(request: gr.Request) -> tuple[Any, ...]:
        return _run(lambda: desk.undo(request.session_hash, request.username))

    def cancel_correction(request: gr.Request) -> tuple[Any, ...]:
        return _run(lambda: desk.cancel(request.session_hash, request.username))

    def skip_part(note_text: str, request: gr.Request) -> tuple[Any, ...]:
        return _run(lambda: desk.skip(request.session_hash, request.username, note_text))

    def tick(idle_ms: float | None, request: gr.Request) -> tuple[Any, ...]:
        return _run(lambda: desk.tick(request.session_hash, request.username, idle_ms))

    def load_heatmap(request: gr.Request) -> str | dict:
        # The part comes from the server's desk, never from the page: a forged request
        # cannot get the model's view of a blind part.
        view = desk.heatmap_due(request.session_hash, request.username)
        if view is None:
            return gr.skip()
        with heatmap_slots:
            return heatmap_source(context, view)

    def with_heatmap(event: Any) -> None:
        event.then(
            load_heatmap,
            inputs=None,
            outputs=[heat],
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )

    # Straight to the handler, not through the queue: ~30 ms less per key on a plant LAN,
    # and any process behind a load balancer may answer (`review_ui.app`).
    quick = {"show_progress": "hidden", "queue": False}
    for label, button in verdict_buttons.items():
        with_heatmap(
            button.click(make_verdict(label), [note], outputs, api_name=f"label_{label}", **quick)
        )
    with_heatmap(undo.click(undo_last, None, outputs, api_name="undo", **quick))
    with_heatmap(cancel.click(cancel_correction, None, outputs, api_name="cancel", **quick))
    with_heatmap(skip.click(skip_part, [note], outputs, api_name="skip", **quick))
    with_heatmap(resume.click(open_desk, None, outputs, api_name="resume", **quick))
    with_heatmap(
        timer.tick(
            tick,
            [idle],
            outputs,
            js=IDLE_JS,
            api_name="tick",
            api_visibility="undocumented",
            **quick,
        )
    )

    def chain_open(event: Any) -> None:
        with_heatmap(event.then(open_desk, None, outputs, api_visibility="private", **quick))

    return InspectPage(timer=timer, chain_open=chain_open)
