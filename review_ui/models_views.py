"""The Models page's tables, cards and plot, from the rollout service's results. Pure: the
registry's rows, a line's `DeploymentView`, `deployments.comparison`'s figures, the traffic
buckets and the events in; HTML or a matplotlib Figure out.

What a supervisor must see before pressing promote is whether the candidate earned it: its
own blind-labeled escape and false-reject bounds against the line's targets, side by side
with the champion's on the same parts, the paired test, and (in a canary) how many of the
labels the step needs are in. Every figure says how many parts it stands on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from inspect_app.export import ExportSummary
from inspect_app.rollout.deployments import DeploymentView
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.queries import TRAFFIC_BUCKET_PARTS, TrafficBucket
from inspect_app.storage.tables import Event, ModelVersion
from inspect_app.timeutil import as_utc

# One way to draw a time axis on the review UI's plots, shared with the Monitoring page.
from review_ui.monitoring_views import _empty, _local, _style, _time_axis
from review_ui.views import esc, evidence_table_html, format_time, gate_sides_html, level_badge

# The model card's validation figures shown in the registry (`models.train` writes them at
# the top of `metrics`; a card may also group them under "validation"). Rates in %, ECE as is.
VALIDATION_FIGURES: dict[str, str] = {
    "binary_accuracy": "Binary accuracy",
    "defect_recall": "Defect recall",
    "false_reject_rate": "False-reject rate",
    "ece": "ECE",
}
MODE_WORDS: dict[str, str] = {
    Mode.NONE.value: "champion alone",
    Mode.SHADOW.value: "shadow (the candidate runs hidden, never decides)",
    Mode.CANARY.value: "canary (the candidate decides a step's share)",
    Mode.BLUE_GREEN.value: "blue/green (the candidate decides every part)",
    Mode.AB.value: "A/B split (sticky by part serial)",
    Mode.BANDIT.value: "bandit (Thompson sampling)",
}
EVENT_TITLES: dict[str, str] = {
    "deployment_change": "Deployment changed",
    "rollout_promote": "Promoted",
    "rollout_rollback": "Rolled back",
    "rollout_rearm": "Re-armed",
    "model_switch": "Champion replaced",
    "model_registered": "Version registered",
}
# The deployment figures an event's before/after compares, in the order a person reads them.
CHANGE_FIGURES = ("champion", "candidate", "mode", "share", "step", "quarantined")


def _pct(value: Any, digits: int = 2) -> str:
    return "—" if not isinstance(value, int | float) else f"{100 * value:.{digits}f}%"


def _chip(ok: bool, yes: str, no: str) -> str:
    kind = "alarm-ok" if ok else "alarm-firing"
    return f'<span class="alarm-chip {kind}">{esc(yes if ok else no)}</span>'


def _empty_html(title: str, message: str) -> str:
    return f'<h3 class="panel-title">{esc(title)}</h3><div class="empty-table">{esc(message)}</div>'


# -- the registry ----------------------------------------------------------------------------


def validation_figures(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The card's validation figures that are numbers, under "validation" or at the top."""
    metrics = metrics or {}
    grouped = metrics.get("validation")
    source = grouped if isinstance(grouped, Mapping) else metrics
    return {
        key: float(source[key])
        for key in VALIDATION_FIGURES
        if isinstance(source.get(key), int | float) and not isinstance(source.get(key), bool)
    }


def figure_text(key: str, value: float) -> str:
    return f"{value:.4f}" if key == "ece" else _pct(value)


def registry_table_html(versions: Sequence[ModelVersion], uses: Mapping[str, Sequence[str]]) -> str:
    """Every registered version, newest first; `uses` says where each runs ("line-1
    champion")."""
    title = "Registered versions"
    if not versions:
        return _empty_html(title, "No version is registered yet: inspect-app models add FILE.")
    rows = []
    for v in versions:
        figures = validation_figures(v.metrics)
        cells = "".join(
            f"<td>{esc(figure_text(k, figures[k])) if k in figures else '—'}</td>"
            for k in VALIDATION_FIGURES
        )
        runs = ", ".join(uses.get(v.version, ())) or "—"
        rows.append(
            f'<tr data-version="{esc(v.version)}"><td><code>{esc(v.version)}</code></td>'
            f"<td>{esc(v.registered_by)}</td>"
            f'<td class="nowrap">{esc(format_time(as_utc(v.registered_at)))}</td>'
            f"<td>{'<code>' + esc(v.parent_version) + '</code>' if v.parent_version else '—'}</td>"
            f"<td>{esc('—' if v.data_seed is None else v.data_seed)}</td>"
            f"<td>{'yes' if v.profile_sha256 else 'no'}</td>{cells}"
            f"<td>{esc(runs)}</td><td>{esc(v.notes)}</td></tr>"
        )
    heads = "".join(f"<th>{esc(t)}</th>" for t in VALIDATION_FIGURES.values())
    return (
        f'<h3 class="panel-title">{title}</h3>'
        '<table class="ia-table versions-table"><thead><tr><th>Version</th>'
        "<th>Registered by</th><th>Registered</th><th>Parent</th><th>Data seed</th>"
        f"<th>Profile</th>{heads}<th>Runs on</th><th>Notes</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _json_block(value: Any) -> str:
    return f"<pre class='model-json'>{esc(json.dumps(value, indent=2, sort_keys=True))}</pre>"


def version_card_html(version: ModelVersion | None, uses: Sequence[str] = ()) -> str:
    """One version's model card: who registered it from what, its validation figures, and
    (folded) everything the checkpoint's card holds."""
    if version is None:
        return '<div class="empty-table">Choose a version to see its model card.</div>'
    figures = validation_figures(version.metrics)
    figure_rows = "".join(
        f"<tr><th>{esc(VALIDATION_FIGURES[k])}</th><td>{esc(figure_text(k, value))}</td></tr>"
        for k, value in figures.items()
    )
    facts = [
        ("Version", f"<code>{esc(version.version)}</code>"),
        ("File SHA-256", f"<code>{esc(version.sha256)}</code>"),
        (
            "Registered",
            f"{esc(format_time(as_utc(version.registered_at)))} by {esc(version.registered_by)}",
        ),
        (
            "Parent version",
            f"<code>{esc(version.parent_version)}</code>" if version.parent_version else "—",
        ),
        ("Data seed", esc("—" if version.data_seed is None else version.data_seed)),
        ("Classes", esc(", ".join(str(c) for c in version.class_names))),
        ("Calibration temperature", f"{version.temperature:.4f}"),
        (
            "Reference profile",
            f"<code>{esc(version.profile_sha256[:12])}</code>"
            if version.profile_sha256
            else "none: no image gate or drift reference for this version",
        ),
        ("Runs on", esc(", ".join(uses) or "no line")),
        ("Notes", esc(version.notes or "—")),
    ]
    fact_rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    validation = (
        f'<h4 class="mon-subtitle">Validation (from its model card)</h4>'
        f'<table class="ia-table card-figures"><tbody>{figure_rows}</tbody></table>'
        if figure_rows
        else '<div class="mon-note">Its model card has no validation figures.</div>'
    )
    return (
        f'<div class="model-card" data-version="{esc(version.version)}">'
        f'<h3 class="panel-title">Model card</h3>'
        f'<table class="ia-table card-facts"><tbody>{fact_rows}</tbody></table>{validation}'
        f"<details><summary>Architecture</summary>{_json_block(version.architecture)}</details>"
        f"<details><summary>Data lineage</summary>{_json_block(version.lineage)}</details>"
        f"<details><summary>All metrics</summary>{_json_block(version.metrics)}</details></div>"
    )


# -- a line ----------------------------------------------------------------------------------


def step_text(view: DeploymentView) -> str:
    """'step 2 of 4 (25%)' for a canary, '' otherwise."""
    if view.mode is not Mode.CANARY or not view.steps:
        return ""
    step = min(view.step, len(view.steps) - 1)
    return f"step {step + 1} of {len(view.steps)} ({_pct(view.steps[step], 0)})"


SOURCE_WORDS = {
    "recommended": "recommended on its own shadow evidence",
    "supervisor": "stated by a supervisor",
    "line": "the line's: nothing to recommend on its evidence yet",
}


def candidate_thresholds_text(view: DeploymentView) -> str:
    """The thresholds the candidate decides at: its own (chosen when it left shadow), or the
    line's (in shadow, or a rollout from before candidates had their own)."""
    own = view.candidate_thresholds
    if own is None:
        return (
            "the line's (its own are recommended on its shadow evidence when it is promoted)"
            if view.mode is Mode.SHADOW
            else "the line's"
        )
    source = SOURCE_WORDS.get(str(own.get("source")), str(own.get("source")))
    return (
        f"pass ≥ <b>{esc(own.get('pass_threshold'))}</b> / fail ≥ "
        f"<b>{esc(own.get('fail_threshold'))}</b>, {esc(source)}; the line's at finalize"
    )


def deployment_html(view: DeploymentView, level: str) -> str:
    """What runs on the line now, as the pipeline assigns parts."""
    rows = [
        (
            "Champion",
            f"<code>{esc(view.champion)}</code> decides {_pct(1 - view.share, 1)} of parts",
        ),
    ]
    if view.candidate is None:
        rows.append(("Candidate", "none: the champion decides every part"))
    else:
        state = _chip(not view.quarantined, "armed", "quarantined")
        rows.append(("Candidate", f"<code>{esc(view.candidate)}</code> {state}"))
        rows.append(("Mode", esc(MODE_WORDS.get(view.mode.value, view.mode.value))))
        rows.append(("Candidate share of decisions", _pct(view.share, 1)))
        if view.mode is Mode.SHADOW:
            rows.append(("Runs hidden on", f"{_pct(view.shadow_share, 0)} of parts"))
        if view.mode is Mode.CANARY:
            steps = " → ".join(_pct(s, 0) for s in view.steps)
            rows.append(
                (
                    "Canary",
                    f"{esc(step_text(view))}; steps {esc(steps)}; a step needs "
                    f"{view.step_min_labels:,} blind labels of its decisions",
                )
            )
        if view.mode.candidate_decides:
            rows.append(("Audit rate of its decisions", _pct(view.candidate_audit_rate, 1)))
        rows.append(("Its thresholds", candidate_thresholds_text(view)))
        if view.mode is Mode.BANDIT and view.bandit:
            arms = "; ".join(
                f"{esc(version)}: {arm.get('successes', 0)} agreed, {arm.get('failures', 0)} not"
                for version, arm in view.bandit.items()
            )
            rows.append(("Bandit rewards", arms))
        if view.quarantined:
            rows.append(
                (
                    "Quarantined because",
                    f'<span class="refusal-reason">{esc(view.quarantine_reason or "—")}</span>',
                )
            )
    changed = (
        f"revision {view.revision}, by {esc(view.updated_by)} "
        f"{esc(format_time(as_utc(view.updated_at)))}"
        if view.revision
        else "the service's configured model; no deployment change yet"
    )
    rows.append(("Last change", changed))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        f'<div class="evidence-summary deployment-summary"><span class="line-id">'
        f"{esc(view.line_id)}</span> {level_badge(level)}</div>"
        f'<table class="ia-table deployment-table"><tbody>{body}</tbody></table>'
    )


def _rate_cell(side: Mapping[str, Any]) -> str:
    if side.get("automated") is False:
        return "not automated"
    n = side.get("n") or 0
    if not n:
        return "no parts on this side yet"
    return (
        f"{_pct(side.get('rate'))} ({side.get('errors', 0):,} of {n:,}); "
        f"95% upper bound <b>{_pct(side.get('upper_bound'))}</b> vs target "
        f"{_pct(side.get('target'))}"
    )


def _version_block(role: str, report: Mapping[str, Any]) -> str:
    escape = report.get("escape") or {}
    false_reject = report.get("false_reject") or {}
    passed = bool(report.get("passes_gate"))
    return (
        f'<div class="drift-card {"steady" if passed else "drifted"}" data-role="{esc(role)}">'
        f'<div class="drift-head"><b>{esc(role.title())}</b> '
        f"<code>{esc(report.get('model_version'))}</code> "
        f"{_chip(passed, 'passes the gate', 'does not pass the gate')}</div>"
        f'<table class="ia-table comparison-table"><tbody>'
        f"<tr><th>Blind labels</th><td>{int(report.get('n_labeled') or 0):,}</td></tr>"
        f"<tr><th>Escape rate</th><td>{_rate_cell(escape)}</td></tr>"
        f"<tr><th>False-reject rate</th><td>{_rate_cell(false_reject)}</td></tr>"
        f"<tr><th>Would automate</th><td>{_pct(report.get('coverage'), 1)} of labeled parts"
        f"</td></tr></tbody></table>"
        f'<div class="mon-note gate-reason">Gate: {esc(report.get("gate_reason"))}</div></div>'
    )


def _paired_html(paired: Mapping[str, Any]) -> str:
    n = int(paired.get("n") or 0)
    if not n:
        return (
            '<div class="mon-note paired">No part has a blind label and both versions\' '
            "answers yet, so they cannot be compared on the same parts.</div>"
        )
    champion_only = int(paired.get("champion_only") or 0)
    candidate_only = int(paired.get("candidate_only") or 0)
    p_value = paired.get("p_value")
    p_text = f"{p_value:.3g}" if isinstance(p_value, int | float) else "—"
    return (
        '<div class="mon-note paired">'
        f"On the same {n:,} blind-labeled parts: champion right "
        f"{_pct(paired.get('champion_accuracy'), 1)}, candidate right "
        f"{_pct(paired.get('candidate_accuracy'), 1)} (ok vs defect at P(ok) 0.5). "
        f"Discordant: {champion_only:,} only the champion got right, {candidate_only:,} only "
        f"the candidate did. McNemar exact p = {p_text}"
        f"{' (a real difference)' if isinstance(p_value, int | float) and p_value < 0.05 else ''}"
        ".</div>"
    )


def _step_html(view: DeploymentView, step: Mapping[str, Any]) -> str:
    outcome = str(step.get("outcome") or "hold")
    kind = {"pass": "alarm-ok", "fail": "alarm-firing"}.get(outcome, "alarm-pending")
    labels, needed = int(step.get("labels") or 0), int(step.get("min_labels") or 0)
    return (
        f'<div class="drift-card step-verdict" data-outcome="{esc(outcome)}">'
        f'<div class="drift-head"><b>Canary {esc(step_text(view))}</b> '
        f'<span class="alarm-chip {kind}">{esc(outcome)}</span> '
        f"{labels:,} of {needed:,} labels</div>"
        f'<div class="mon-note">{esc(step.get("reason"))}</div>'
        f"{gate_sides_html(step)}</div>"
    )


def _own_block(own: Mapping[str, Any]) -> str:
    """The candidate judged at its own thresholds, beside its figures at the line's."""
    passed = bool(own.get("passed"))
    source = SOURCE_WORDS.get(str(own.get("source")), str(own.get("source")))
    return (
        f'<div class="drift-card {"steady" if passed else "drifted"}" data-role="candidate-own">'
        f'<div class="drift-head"><b>Candidate at its own thresholds</b> pass ≥ '
        f"{esc(own.get('pass_threshold'))} / fail ≥ {esc(own.get('fail_threshold'))} "
        f"({esc(source)}) {_chip(passed, 'passes the gate', 'does not pass the gate')}</div>"
        f'<table class="ia-table comparison-table"><tbody>'
        f"<tr><th>Escape rate</th><td>{_rate_cell(own.get('escape') or {})}</td></tr>"
        f"<tr><th>False-reject rate</th><td>{_rate_cell(own.get('false_reject') or {})}</td></tr>"
        f"<tr><th>Would automate</th><td>{_pct(own.get('coverage'), 1)} of labeled parts"
        f"</td></tr></tbody></table>"
        f'<div class="mon-note gate-reason">Gate: {esc(own.get("reason"))}</div></div>'
    )


def comparison_html(comparison: Mapping[str, Any] | None, view: DeploymentView) -> str:
    """Champion and candidate on their own blind labels, then paired; the canary step."""
    title = "Champion and candidate"
    if comparison is None:
        return _empty_html(title, "No candidate on this line: nothing to compare.")
    step = comparison.get("step")
    return (
        f'<h3 class="panel-title">{title}</h3>'
        + (_step_html(view, step) if isinstance(step, Mapping) else "")
        + '<div class="comparison-grid">'
        + _version_block("champion", comparison.get("champion") or {})
        + _version_block("candidate", comparison.get("candidate") or {})
        + (_own_block(own) if isinstance(own := comparison.get("candidate_own"), Mapping) else "")
        + "</div>"
        + _paired_html(comparison.get("paired") or {})
    )


def traffic_figure(
    buckets: Sequence[TrafficBucket],
    current_share: float | None,
    bucket_parts: int = TRAFFIC_BUCKET_PARTS,
) -> Figure:
    """The candidate's share of the parts a model decided, per bucket of `bucket_parts`
    (the newest may be partly filled), over time; the deployment's share now dashed."""
    fig = Figure(figsize=(12.0, 2.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    _style(ax, f"Parts the candidate decided (% of each {bucket_parts} parts a model decided)")
    if not buckets:
        _empty(ax, "no parts decided under a deployment yet")
        return fig
    times = [_local(b.ended_at) for b in buckets]
    shares = [100 * b.candidate_share for b in buckets]
    ax.plot(
        times,
        shares,
        "-o" if len(buckets) > 1 else "o",
        lw=1.4,
        ms=3,
        color="#0550ae",
        label="candidate share",
    )
    if current_share is not None:
        ax.axhline(100 * current_share, color="#1a7f37", ls="--", lw=1, label="share now")
    ax.set_ylim(-2, 102)
    ax.set_ylabel("%", fontsize=8)
    _time_axis(ax)
    ax.legend(fontsize=7, loc="best")
    return fig


# -- events ----------------------------------------------------------------------------------


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def event_change_text(event: Event) -> str:
    """What the event changed, in a line: 'mode shadow → canary, share 0 → 0.05'."""
    details = event.details or {}
    if event.kind == "model_registered":
        parent = details.get("parent_version")
        profile = "with" if details.get("has_profile") else "without"
        return f"{details.get('version')} ({profile} a profile" + (
            f", parent {parent})" if parent else ")"
        )
    before, after = details.get("before"), details.get("after")
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return ""
    changed = [
        f"{key} {_short(before.get(key))} → {_short(after.get(key))}"
        for key in CHANGE_FIGURES
        if before.get(key) != after.get(key)
    ]
    text = ", ".join(changed) or "no change"
    return text + (" (automatic)" if details.get("automatic") else "")


def events_table_html(events: Sequence[Event]) -> str:
    title = "Deployment events"
    if not events:
        return _empty_html(title, "No deployment change on this line and no registration yet.")
    rows = "".join(
        f'<tr class="ev-{esc(e.kind)}" data-kind="{esc(e.kind)}">'
        f'<td class="nowrap">{esc(format_time(as_utc(e.at)))}</td>'
        f"<td><b>{esc(EVENT_TITLES.get(e.kind, e.kind))}</b></td><td>{esc(e.actor)}</td>"
        f"<td>{esc(e.reason)}</td><td>{esc(event_change_text(e))}</td></tr>"
        for e in events
    )
    return (
        f'<h3 class="panel-title">{title}</h3><table class="ia-table events-table"><thead>'
        "<tr><th>When</th><th>What</th><th>Who</th><th>Why</th><th>Change</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


# -- outcomes of the buttons -----------------------------------------------------------------


def applied_html(message: str) -> str:
    return f'<div class="result result-ok">Applied: {esc(message)}</div>'


def failed_html(message: str) -> str:
    return f'<div class="result result-warn">Not applied: {esc(message)}</div>'


def refused_html(message: str, evidence: Mapping[str, Any]) -> str:
    """A refused rollout: the reason, the figures of the gate or step it failed, and
    (folded) every figure it looked at."""
    # The gate's figures are the evidence itself (a candidate's gate) or under "step"/"gate".
    sides = gate_sides_html(evidence)
    for key in ("step", "gate"):
        part = evidence.get(key)
        if isinstance(part, Mapping):
            sides += gate_sides_html(part)
    folded = (
        f"<details><summary>All figures</summary>{evidence_table_html(evidence)}</details>"
        if evidence
        else ""
    )
    return (
        '<div class="result result-refused" data-testid="refusal">'
        '<div class="refusal-title">Refused</div>'
        f'<div class="refusal-reason">{esc(message)}</div>{sides}{folded}</div>'
    )


# -- an export for retraining ---------------------------------------------------------------


def export_html(
    folder: Path, summary: ExportSummary, line_id: str, champion: str, data_dir: Path
) -> str:
    """What the export holds, where it is, and the one command that retrains from it: the
    page runs the export, a plant engineer runs the training on purpose."""
    rows = "".join(f"<li>{esc(text)}</li>" for text in summary.lines())
    command = (
        f"inspect-app train --init-from {champion} --data BASE_DATA --data {folder} "
        f"--out {folder}.pt --register --shadow-on {line_id} --as YOUR_NAME --data-dir {data_dir}"
    )
    nothing = '<p class="panel-help">No labeled images: nothing to train on.</p>'
    empty = "" if summary.images else nothing
    return (
        f'<div class="result result-ok">Exported {summary.images} labeled images of '
        f"{esc(line_id)} to <code>{esc(str(folder))}</code> on the service's machine.</div>"
        f"<ul>{rows}</ul>{empty}"
        '<p class="panel-help">Retrain from it (minutes; BASE_DATA is the base training set):</p>'
        f"<pre class='model-json'>{esc(command)}</pre>"
    )
