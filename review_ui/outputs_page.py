"""The supervisors' Outputs page: what each line's webhooks and MQTT brokers have received,
which are failing and why, and a replay.

The figures and the replay are `inspect_app.outputs.outbox`'s (the API's `/api/v1/outputs/...`
and `inspect-app outputs` call the same); every handler checks the supervisor role first, as
the other supervisors' pages do (`review_ui.supervisor._as_supervisor`).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from sqlmodel import Session

from inspect_app.lines import LineNotFound, list_lines
from inspect_app.outputs import outbox
from inspect_app.outputs.core import DeliveryState, DestinationError
from inspect_app.storage.tables import User
from review_ui.context import ReviewContext
from review_ui.supervisor import _as_supervisor

MESSAGES_SHOWN = 50
STATES = ["all", *(s.value for s in DeliveryState)]


def _when(value: Any) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def outputs_html(session: Session, line_id: str | None, state: str | None) -> str:
    """The line's destinations and its newest messages with their delivery at each."""
    if not line_id:
        return "<p>No line yet.</p>"
    e = html.escape
    dests = outbox.list_destinations(session, line_id)
    rows = "".join(
        f"<tr><td>{d.id}</td><td>{e(d.kind)}</td><td>{e(d.url)}</td>"
        f"<td>{'on' if d.enabled else 'paused'}</td><td>{d.undelivered}</td>"
        f"<td>{e(_when(d.failing_since))}</td><td>{e(d.last_error or '')}</td></tr>"
        for d in dests
    )
    parts = [
        '<h3 class="panel-title">Destinations</h3>',
        "<p>None: add one with <code>inspect-app outputs add</code> or the API.</p>"
        if not dests
        else "<table><tr><th>id</th><th>kind</th><th>where</th><th>state</th>"
        f"<th>undelivered</th><th>failing since</th><th>last error</th></tr>{rows}</table>",
    ]
    wanted = DeliveryState(state) if state and state != "all" else None
    messages = outbox.list_messages(session, line_id=line_id, state=wanted, limit=MESSAGES_SHOWN)
    rows = "".join(
        f"<tr><td>{m.seq}</td><td>{e(m.kind)}</td>"
        f"<td>{e(str(m.payload.get('decision') or m.payload.get('to_status') or ''))}</td>"
        f"<td>{e(str(m.payload.get('inspection_id') or m.payload.get('alarm') or ''))}</td>"
        f"<td>{e(_when(m.created_at))}</td><td>"
        + "<br>".join(
            f"{d.destination_id}: {d.state.value} ({d.attempts} tries)"
            + (f" {e(d.last_error)}" if d.last_error else "")
            for d in m.deliveries
        )
        + "</td></tr>"
        for m in messages
    )
    parts += [
        f'<h3 class="panel-title">Newest messages ({e(state or "all")})</h3>',
        "<p>No message.</p>"
        if not messages
        else "<table><tr><th>seq</th><th>kind</th><th>what</th><th>part / alarm</th>"
        f"<th>written</th><th>delivery</th></tr>{rows}</table>",
    ]
    return "".join(parts)


def replay_from_ui(
    session: Session,
    user: User,
    line_id: str | None,
    from_seq: float | None,
    to_seq: float | None,
    reason: str | None,
) -> str:
    """Queue messages again for every destination of the line; the outcome in words."""
    if not line_id:
        return "Choose a line."
    if from_seq is None or not (reason or "").strip():
        return "Give the first message to send again and a reason (it goes into the log)."
    try:
        queued = outbox.replay(
            session,
            line_id,
            from_seq=int(from_seq),
            to_seq=int(to_seq) if to_seq is not None else None,
            actor=user.name,
            reason=(reason or "").strip(),
        )
    except (DestinationError, LineNotFound, outbox.OutputNotFound) as exc:
        return f"Refused: {html.escape(str(exc))}"
    return f"{queued} deliveries queued again; they go out next, in order."


@dataclass
class OutputsPage:
    load: Callable[..., tuple[Any, ...]]
    outputs: list[Any]


def build_outputs_page(context: ReviewContext) -> OutputsPage:
    gr.HTML('<h2 class="page-title">Outputs</h2>', js_on_load=None)
    with gr.Row(elem_classes=["panel", "evidence-controls"]):
        # Any value is passed on (the handlers check it against the lines): the choices are
        # filled in when the page loads, through whichever process answered that, and
        # Gradio would hold the next request's value against the choices it knows itself.
        line = gr.Dropdown(
            label="Line", choices=[], elem_id="outputs-line", scale=1, allow_custom_value=True
        )
        state = gr.Radio(STATES, value="all", label="Messages", elem_id="outputs-state", scale=2)
        show = gr.Button("Show", variant="primary", elem_id="outputs-show", scale=0)
    table = gr.HTML(js_on_load=None, elem_id="outputs-table", elem_classes=["panel"])
    with gr.Row(elem_classes=["panel"]):
        first = gr.Number(label="Replay from seq", precision=0, elem_id="outputs-from")
        last = gr.Number(label="to seq (empty: newest)", precision=0, elem_id="outputs-to")
        reason = gr.Textbox(label="Reason", max_lines=1, elem_id="outputs-reason", scale=2)
        replay = gr.Button("Replay", elem_id="outputs-replay", scale=0)
    result = gr.HTML(js_on_load=None, elem_id="outputs-result")
    outputs = [line, table]

    def show_outputs(
        line_id: str | None, state_name: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "see line outputs") as (db, _user):
            ids = [ln.id for ln in list_lines(db)]
            chosen = line_id if line_id in ids else (ids[0] if ids else None)
            return gr.Dropdown(choices=ids, value=chosen), outputs_html(db, chosen, state_name)

    def on_replay(
        line_id: str | None,
        from_seq: float | None,
        to_seq: float | None,
        why: str | None,
        state_name: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        with _as_supervisor(context, request, "replay line outputs") as (db, user):
            said = replay_from_ui(db, user, line_id, from_seq, to_seq, why)
        return (said, *show_outputs(line_id, state_name, request))

    show.click(show_outputs, [line, state], outputs, api_visibility="private")
    line.input(show_outputs, [line, state], outputs, api_visibility="private")
    state.input(show_outputs, [line, state], outputs, api_visibility="private")
    replay.click(
        on_replay, [line, first, last, reason, state], [result, *outputs], api_visibility="private"
    )

    def load(request: gr.Request) -> tuple[Any, ...]:
        return show_outputs(None, "all", request)

    return OutputsPage(load=load, outputs=outputs)
