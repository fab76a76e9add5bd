"""HTML fragments of the review pages, as pure functions of plain values.

Kept apart from the handlers so the look can be tested without a server and the handlers
stay about who may do what. Everything a user or a camera typed (serials, notes, names,
reasons) goes through `html.escape`: the pages render it with ``innerHTML``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inspect_app.domain import AutomationLevel, DefectClass, TaskReason, threshold_text

# One key per class, in the model's class order: 1 ok, 2 scratch, 3 crack, 4 pit, 5 discoloration.
VERDICT_KEYS: dict[str, DefectClass] = {str(i + 1): c for i, c in enumerate(DefectClass)}
CLASS_TITLES: dict[str, str] = {
    c.value: "OK" if c is DefectClass.OK else c.value.capitalize() for c in DefectClass
}

# What each other key does; the page's script and the legend both read this.
COMMAND_KEYS: tuple[tuple[str, str], ...] = (
    ("u", "undo last verdict"),
    ("s", "skip to supervisor"),
    ("n", "write a note"),
    ("h", "heatmap on/off"),
    ("+ − 0", "zoom in, out, fit"),
    ("wheel, drag", "zoom, pan"),
    ("Esc", "leave note / cancel undo"),
)


def button_keys() -> dict[str, str]:
    """Button elem_id -> the key that presses it (shown as a badge on the button)."""
    keys = {f"verdict-{c.value}": key for key, c in VERDICT_KEYS.items()}
    return {**keys, "cmd-undo": "u", "cmd-skip": "s"}


LEVEL_COLOURS: dict[str, str] = {
    AutomationLevel.HUMAN_ONLY.value: "lvl-human",
    AutomationLevel.SHADOW.value: "lvl-shadow",
    AutomationLevel.ASSIST.value: "lvl-assist",
    AutomationLevel.PARTIAL.value: "lvl-partial",
    AutomationLevel.FULL.value: "lvl-full",
}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def format_duration(seconds: float, *, compact: bool = False) -> str:
    """How long, the way a person says it: 45 s, 3 min 05 s, 2 h 10 min, 3 d 4 h;
    `compact` for tight spaces: 45s, 3m05s, 2h10m, 3d4h."""
    s, m, h, d = ("s", "m", "h", "d") if compact else (" s", " min", " h", " d")
    sep = "" if compact else " "
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}{s}"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}{m}{sep}{secs:02d}{s}"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}{h}{sep}{minutes:02d}{m}"
    days, hours = divmod(hours, 24)
    return f"{days}{d}{sep}{hours}{h}"


def format_time(value: datetime | None) -> str:
    """Local wall-clock time, as the plant's clocks show it."""
    if value is None:
        return "—"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def wait_class(seconds: float) -> str:
    """A part waiting long holds up the line: amber after 2 minutes, red after 10."""
    if seconds >= 600:
        return "wait-late"
    if seconds >= 120:
        return "wait-slow"
    return "wait-ok"


def header_html(user_name: str, role: str, logout_url: str) -> str:
    return (
        '<div class="ia-header">'
        '<div class="ia-brand"><span class="ia-logo">◧</span> Inspection review</div>'
        '<div class="ia-user">'
        f'<span class="ia-user-name" data-testid="user-name">{esc(user_name)}</span>'
        f'<span class="ia-role role-{esc(role)}">{esc(role)}</span>'
        f'<a class="ia-logout" href="{esc(logout_url)}" data-testid="logout">Log out</a>'
        "</div></div>"
    )


# -- Inspect page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PartView:
    """What the Inspect page shows of one part; None fields are not shown."""

    key: str  # stable per part, so the zoom survives the heatmap arriving
    image_uri: str
    banner: str | None = None  # e.g. "Correcting your verdict on part 123"


def viewer_html(part: PartView) -> str:
    """The part, large, in a stage the page script zooms and pans. The overlay image is
    empty until the heatmap for this part (`key`) arrives."""
    banner = f'<div class="viewer-banner">{esc(part.banner)}</div>' if part.banner else ""
    mode = " correcting" if part.banner else ""
    return (
        f'<div class="part-viewer{mode}" data-key="{esc(part.key)}">{banner}'
        '<div class="part-stage"><div class="part-layers">'
        f'<img class="part-img" alt="part image" draggable="false" src="{part.image_uri}">'
        '<img class="part-overlay" alt="" draggable="false">'
        '</div><div class="zoom-level"></div></div></div>'
    )


def empty_viewer_html(title: str, detail: str, *, kind: str = "idle") -> str:
    """The viewer when there is no part: queue empty, paused, or an error."""
    return (
        f'<div class="part-viewer part-empty empty-{esc(kind)}" data-key="">'
        f'<div class="empty-title">{esc(title)}</div>'
        f'<div class="empty-detail">{esc(detail)}</div></div>'
    )


def reason_badge(reason: str, *, escalated: bool) -> str:
    if escalated:
        return '<span class="badge badge-escalated">ESCALATED · supervisor decides</span>'
    if reason == TaskReason.DECIDE.value:
        return '<span class="badge badge-decide">DECIDE · the line is waiting</span>'
    if reason == TaskReason.AUDIT.value:
        return '<span class="badge badge-audit">AUDIT · blind check</span>'
    return f'<span class="badge">{esc(reason)}</span>'


def part_card_html(
    *,
    task_id: int,
    inspection_id: int,
    line_id: str,
    reason: str,
    part_serial: str | None,
    captured_at: datetime | None,
    received_at: datetime,
    now: datetime,
    escalated: bool = False,
    escalation_note: str | None = None,
    gate_reason: str | None = None,
) -> str:
    waited = (now - received_at).total_seconds()
    note = (
        f'<div class="card-note">Inspector\'s note: {esc(escalation_note)}</div>'
        if escalated and escalation_note
        else ""
    )
    if gate_reason:
        note += (
            '<div class="card-gate" data-testid="gate-reason">Image gate: the model was not'
            f" allowed to decide this frame: {esc(gate_reason)}</div>"
        )
    rows = (
        ("Line", esc(line_id)),
        ("Part serial", esc(part_serial) if part_serial else "—"),
        ("Captured", esc(format_time(captured_at))),
        ("Waiting", f'<span class="{wait_class(waited)}">{esc(format_duration(waited))}</span>'),
        ("Inspection", f"#{inspection_id} · task {task_id}"),
    )
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<div class="part-card" data-task-id="{task_id}" data-inspection-id="{inspection_id}">'
        f"{reason_badge(reason, escalated=escalated)}<dl>{body}</dl>{note}</div>"
    )


def model_panel_html(
    predicted_class: str | None,
    confidence: float | None,
    *,
    blind_reason: str,
) -> str:
    """The model's call where the line's level shows it; otherwise say why it is hidden."""
    if predicted_class is None:
        return f'<div class="model-panel model-hidden">Model hidden: {esc(blind_reason)}</div>'
    share = 100 * confidence if confidence is not None else 0.0
    conf = f"{share:.1f}%" if confidence is not None else "—"
    kind = "cls-ok" if predicted_class == DefectClass.OK.value else "cls-defect"
    title = esc(CLASS_TITLES.get(predicted_class, predicted_class))
    return (
        '<div class="model-panel"><div class="model-head">'
        f'<span>Model says <span class="model-call {kind}">{title}</span></span>'
        f'<span class="model-conf" title="calibrated confidence">{conf}</span>'
        '<button class="heatmap-toggle" data-action="toggle-heatmap" type="button">'
        "<kbd>h</kbd> heatmap</button></div>"
        f'<div class="conf-bar {kind}"><span style="width:{share:.1f}%"></span></div></div>'
    )


def feedback_html(text: str, *, kind: str = "info") -> str:
    """One line under the verdict keys: what just happened (ok, warn, error, info)."""
    if not text:
        return '<div class="feedback feedback-none"></div>'
    return f'<div class="feedback feedback-{esc(kind)}">{esc(text)}</div>'


def counters_html(
    *, waiting: int, oldest_wait_s: float | None, my_labels: int, shift_started: datetime
) -> str:
    oldest = (
        f'<span class="{wait_class(oldest_wait_s)}">'
        f"{esc(format_duration(oldest_wait_s, compact=True))}</span>"
        if oldest_wait_s is not None
        else "—"
    )
    return (
        '<div class="counters">'
        f'<div class="counter"><div class="counter-val" data-testid="queue-waiting">{waiting}'
        '</div><div class="counter-label">waiting in queue</div></div>'
        f'<div class="counter"><div class="counter-val">{oldest}</div>'
        '<div class="counter-label">oldest waiting</div></div>'
        f'<div class="counter"><div class="counter-val" data-testid="my-labels">{my_labels}</div>'
        f'<div class="counter-label">my labels since {shift_started.strftime("%H:%M")}</div>'
        "</div></div>"
    )


def hotkey_legend_html() -> str:
    """The keys besides the verdicts (those are on their buttons)."""
    commands = "".join(f"<li><kbd>{esc(k)}</kbd> {esc(v)}</li>" for k, v in COMMAND_KEYS)
    return (
        '<div class="hotkeys"><ul><li class="hotkeys-title">Keys</li>'
        "<li><kbd>1</kbd>…<kbd>5</kbd> verdict (on the buttons)</li>"
        f"{commands}</ul></div>"
    )


# -- Lines page -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRow:
    line_id: str
    level: str
    pass_threshold: float | None  # None: never auto-pass
    fail_threshold: float | None  # None: never auto-fail
    audit_rate: float
    queue_depth: int
    oldest_wait_s: float | None
    inspected_today: int
    labeled_today: int


def level_badge(level: str) -> str:
    return f'<span class="level {LEVEL_COLOURS.get(level, "")}">{esc(level)}</span>'


def lines_table_html(rows: Sequence[LineRow]) -> str:
    if not rows:
        return (
            '<div class="empty-table">No lines yet: add one with '
            "<code>inspect-app lines add</code>.</div>"
        )
    head = (
        "<tr><th>Line</th><th>Level</th><th>Pass ≥ P(ok)</th><th>Fail ≥ P(defect)</th>"
        "<th>Audit rate</th><th>Queue</th><th>Oldest waiting</th><th>Inspected today</th>"
        "<th>Labeled today</th></tr>"
    )
    body = "".join(
        f'<tr data-line="{esc(r.line_id)}"><td class="line-id">{esc(r.line_id)}</td>'
        f"<td>{level_badge(r.level)}</td><td>{threshold_text(r.pass_threshold, '.3f')}</td>"
        f"<td>{threshold_text(r.fail_threshold, '.3f')}</td><td>{100 * r.audit_rate:.1f}%</td>"
        f"<td>{r.queue_depth}</td>"
        f"<td>{_wait_cell(r.oldest_wait_s)}</td><td>{r.inspected_today}</td>"
        f"<td>{r.labeled_today}</td></tr>"
        for r in rows
    )
    return f'<table class="ia-table lines-table"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _wait_cell(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f'<span class="{wait_class(seconds)}">{esc(format_duration(seconds))}</span>'


def change_applied_html(
    line_id: str, level: str, pass_t: float | None, fail_t: float | None, audit: float
) -> str:
    return (
        '<div class="result result-ok">'
        f"Applied: line {esc(line_id)} is now {level_badge(level)} "
        f"(pass ≥ {threshold_text(pass_t, '.3f')}, fail ≥ {threshold_text(fail_t, '.3f')}, "
        f"audit {100 * audit:.1f}%)</div>"
    )


def targets_applied_html(message: str, demoted: bool) -> str:
    kind = "result-warn" if demoted else "result-ok"
    return f'<div class="result {kind}">Targets applied. {esc(message)}</div>'


def change_failed_html(message: str) -> str:
    return f'<div class="result result-warn">Not applied: {esc(message)}</div>'


def refusal_html(reason: str, evidence: Mapping[str, Any]) -> str:
    """The gate said no: say why, the figures of each side against its target, and (folded)
    every figure it looked at. Nothing fails silently."""
    return (
        '<div class="result result-refused" data-testid="refusal">'
        '<div class="refusal-title">Refused by the evidence gate</div>'
        f'<div class="refusal-reason">{esc(reason)}</div>'
        f"{gate_sides_html(evidence)}"
        "<details><summary>All figures</summary>"
        f"{evidence_table_html(evidence)}</details></div>"
    )


# The sides of the gate as `inspect_app.automation.gate_figures` reports them.
_GATE_SIDES = (
    ("escape", "Escapes (auto-passed, human: defect)"),
    ("false_reject", "False rejects (auto-failed, human: ok)"),
)


def gate_sides_html(evidence: Mapping[str, Any]) -> str:
    """One row per side: parts, errors, rate, the 95% bound against its target, and what is
    missing. Empty when the evidence does not have that shape."""
    rows = ""
    for key, title in _GATE_SIDES:
        side = evidence.get(key)
        if not isinstance(side, Mapping):
            continue
        if side.get("automated") is False:
            rows += (
                f'<tr class="met"><th>{esc(title)}</th><td colspan="4">never automated on this '
                "side</td><td>not gated</td></tr>"
            )
            continue
        passed = bool(side.get("passed"))
        missing = []
        if side.get("labels_short"):
            have = side.get("n") or 0
            missing.append(f"{have:,} of {side.get('min_labels'):,} labeled parts needed")
        if side.get("bound_excess"):
            missing.append(f"bound {_pct(side.get('bound_excess'))} over target")
        if side.get("more_labels_needed") is not None and not passed:
            missing.append(f"≈{side['more_labels_needed']:,} more labels needed")
        rows += (
            f'<tr class="{"met" if passed else "short"}"><th>{esc(title)}</th>'
            f"<td>{_count(side.get('n'))}</td><td>{_count(side.get('errors'))}</td>"
            f"<td>{_pct(side.get('rate'))}</td>"
            f"<td><b>{_pct(side.get('upper_bound'))}</b> vs {_pct(side.get('target'))}</td>"
            f"<td>{'✓ met' if passed else '✗ ' + esc('; '.join(missing) or 'short')}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<table class="ia-table gate-table"><thead><tr><th>Side</th><th>Parts</th>'
        "<th>Errors</th><th>Rate</th><th>95% upper bound vs target</th><th>Verdict</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _pct(value: Any) -> str:
    return "—" if not isinstance(value, int | float) else f"{100 * value:.2f}%"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"


def evidence_table_html(evidence: Mapping[str, Any]) -> str:
    """Any nesting of figures as one flat table: `a.b.c | value`."""
    rows = list(_flatten(evidence))
    if not rows:
        return '<div class="empty-table">No figures were given.</div>'
    body = "".join(
        f'<tr class="{_shortfall_class(k, v)}"><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>'
        for k, v in rows
    )
    return f'<table class="ia-table evidence-table"><tbody>{body}</tbody></table>'


def _flatten(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _shortfall_class(key: str, value: Any) -> str:
    """Highlight the figures that say the gate failed (allowed/passed/ok flags set False)."""
    last = key.rsplit(".", 1)[-1].lower()
    if value is False and last in ("allowed", "passed", "passes", "ok", "met", "sufficient"):
        return "short"
    return ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


@dataclass(frozen=True)
class EventRow:
    at: datetime
    kind: str
    actor: str
    reason: str
    summary: str


def events_table_html(events: Sequence[EventRow]) -> str:
    if not events:
        return '<div class="empty-table">No events for this line yet.</div>'
    body = "".join(
        f'<tr class="ev-{esc(e.kind)}"><td class="nowrap">{esc(format_time(e.at))}</td>'
        f"<td>{esc(e.kind)}</td><td>{esc(e.actor)}</td><td>{esc(e.reason)}</td>"
        f"<td>{esc(e.summary)}</td></tr>"
        for e in events
    )
    return (
        '<table class="ia-table events-table"><thead><tr><th>When</th><th>What</th><th>Who</th>'
        f"<th>Why</th><th>Details</th></tr></thead><tbody>{body}</tbody></table>"
    )


def event_summary(kind: str, details: Mapping[str, Any] | None) -> str:
    """One line an operator can read: old -> new settings for level changes, else key figures."""
    if not details:
        return ""
    old, new = details.get("old"), details.get("new")
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changed = [
            f"{k} {_fmt(old.get(k))} → {_fmt(new.get(k))}"
            for k in dict.fromkeys([*old, *new])  # settings, or targets, in their order
            if old.get(k) != new.get(k)
        ]
        gate = details.get("gate")
        suffix = ""
        if isinstance(gate, Mapping) and gate.get("gated"):
            suffix = " (gate: allowed)" if gate.get("allowed") else " (gate: refused)"
        return (", ".join(changed) or "no change") + suffix
    if kind == "relabel":
        old_label, new_label = details.get("old_label"), details.get("new_label")
        return f"inspection {details.get('inspection_id')}: {old_label} → {new_label}"
    return ", ".join(f"{k}={_fmt(v)}" for k, v in details.items() if not isinstance(v, Mapping))
