"""The Monitoring page's plots and tables, from `inspect_app.monitoring.queries` results.
Pure: figures in, HTML or a matplotlib Figure out.

What a supervisor must see at a glance is whether a line's pictures still look like the
model's reference and which alarm acted on it. So each input metric is drawn against the
reference band it is tested against, and each monitored value against the thresholds its
alarm fires and clears at; p-values on a log axis, where 1e-4 and 1e-12 are not both zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from inspect_app.monitoring.queries import (
    DriftSummary,
    GateCounts,
    GateRefusal,
    LineAlarm,
    MetricPoint,
    MonitoringEvent,
    MonitoringOverview,
    ResponsiblePart,
    SeriesPoint,
)
from models.profile import ReferenceProfile
from review_ui.evidence_views import titled_empty
from review_ui.views import esc, format_duration, format_time, level_badge

# The band drawn around each input metric: where 98% of the reference images lie. The gate's
# own limits sit further out (0.1%..99.9%, widened); a part outside this band is unusual, not
# refused.
BAND_LEVELS = (0.01, 0.99)
# A p-value below this is drawn at it: the tests report p down to 1e-300, and an axis that
# spans that many decades squeezes the thresholds (1e-4, 2e-3) into one line.
P_FLOOR = 1e-16

INPUT_LABELS: dict[str, str] = {
    "brightness": "Brightness (grey level)",
    "contrast": "Contrast (std of grey)",
    "sharpness": "Sharpness (Laplacian variance)",
    "clipped_dark": "Clipped dark (share of pixels)",
    "clipped_bright": "Clipped bright (share of pixels)",
    "mean_blue": "Mean blue",
    "mean_green": "Mean green",
    "mean_red": "Mean red",
}
# Varies by factors, not by steps: drawn on a log axis.
LOG_METRICS = frozenset({"sharpness"})

SHARE_METRICS = frozenset({"gate_refusal_rate", "missing_output_rate"})
P_VALUE_METRICS = ("input_drift", "embedding_drift", "defect_rate_shift", "confidence_shift")
METRIC_COLOURS: dict[str, str] = {
    "gate_refusal_rate": "#b42318",
    "missing_output_rate": "#9a6700",
    "input_drift": "#0550ae",
    "embedding_drift": "#6f42c1",
    "defect_rate_shift": "#1a7f37",
    "confidence_shift": "#bc4c00",
    "review_backlog_age_s": "#57606a",
    "audit_disagreement": "#b42318",
}
STATUS_CLASSES: dict[str, str] = {
    "ok": "alarm-ok",
    "pending": "alarm-pending",
    "firing": "alarm-firing",
    "resolved": "alarm-resolved",
}
ACTION_TITLES: dict[str, str] = {
    "alarm_stop_automation": "Stopped auto-decisions",
    "alarm_raise_audit_rate": "Raised the audit rate",
    "alarm_notify": "Notified supervisors",
    "alarm_rollback_candidate": "Rolled back the candidate",
}
DRIFT_TITLES: dict[str, str] = {
    "input": "Input drift (image metrics, KS tests)",
    "embedding": "Embedding drift (classifier two-sample test)",
    "prediction": "Prediction drift (defect rate, confidence)",
    "concept": "Concept drift (audit disagreement)",
}


# -- numbers ---------------------------------------------------------------------------------


def metric_value_text(metric: str, value: float | None) -> str:
    """A monitored value the way its alarm reads it: shares in %, p-values in 3 digits,
    ages as durations, the disagreement flag in words."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if metric in SHARE_METRICS:
        return f"{100 * value:.1f}%"
    if metric == "review_backlog_age_s":
        return format_duration(value)
    if metric == "audit_disagreement":
        return "detected" if value >= 0.5 else "none"
    return f"{value:.3g}"


def condition_text(alarm: LineAlarm, *, clear: bool = False) -> str:
    """'> 20.0%' (fires) or '< 5.0%' (clears) for an above rule; the mirror for below."""
    if alarm.metric == "audit_disagreement":  # a flag: its thresholds are not a quantity
        return "no longer detected" if clear else "detected"
    above = alarm.comparison == "above"
    sign = ("<" if above else ">") if clear else (">" if above else "<")
    threshold = alarm.clear_threshold if clear else alarm.threshold
    return f"{sign} {metric_value_text(alarm.metric, threshold)}"


def _local(at: datetime) -> datetime:
    """Naive local time for the plots' axes: the plant reads its own clock."""
    return at.astimezone().replace(tzinfo=None)


# -- plots -----------------------------------------------------------------------------------


def _time_axis(ax: Axes) -> None:
    locator = AutoDateLocator(minticks=3, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    # times only: the date is in the tables, and an offset under every small plot is clutter
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=False))


def _style(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)


def _empty(ax: Axes, message: str) -> None:
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        fontsize=8,
        color="#57606a",
        transform=ax.transAxes,
    )
    ax.set_xticks([])


def input_metrics_figure(
    series: Mapping[str, Sequence[MetricPoint]], profile: ReferenceProfile | None
) -> Figure:
    """Each input metric per part over time, the reference's 1%..99% band shaded and its
    median dashed; parts the gate refused marked in red."""
    metrics = list(INPUT_LABELS)
    fig = Figure(figsize=(12.0, 4.8), dpi=100, layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    for ax, metric in zip(axes, metrics, strict=True):
        points = series.get(metric, [])
        _style(ax, INPUT_LABELS[metric])
        known = profile is not None and metric in profile.metric_quantiles
        if known:
            assert profile is not None
            low, high = (profile.metric_quantile(metric, q) for q in BAND_LEVELS)
            ax.axhspan(low, high, color="#1a7f37", alpha=0.12, lw=0, label="reference 1–99%")
            ax.axhline(
                profile.metric_quantile(metric, 0.5),
                color="#1a7f37",
                ls="--",
                lw=0.8,
                label="reference median",
            )
        if not points:
            _empty(ax, "no parts yet")
            continue
        usable = [p for p in points if not p.gated]
        refused = [p for p in points if p.gated]
        ax.plot(
            [_local(p.at) for p in usable],
            [p.value for p in usable],
            ".",
            ms=3,
            color="#0550ae",
            label="part",
        )
        if refused:
            ax.plot(
                [_local(p.at) for p in refused],
                [p.value for p in refused],
                "x",
                ms=5,
                color="#b42318",
                label="refused by the gate",
            )
        values = [p.value for p in points]
        if metric in LOG_METRICS and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")
        _time_axis(ax)
    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    return fig


def _rules_for(
    alarms: Sequence[LineAlarm],
    metrics: Sequence[str],
    series: Mapping[str, Sequence[SeriesPoint]],
) -> list[LineAlarm]:
    """The enabled rules on `metrics` that have values to compare with (a threshold drawn
    without its series only crowds the legend)."""
    return [a for a in alarms if a.metric in metrics and a.enabled and series.get(a.metric)]


def _threshold_lines(ax: Axes, alarm: LineAlarm, scale: float = 1.0, floor: float = 0.0) -> None:
    colour = METRIC_COLOURS.get(alarm.metric, "#57606a")
    ax.axhline(
        max(alarm.threshold * scale, floor),
        color=colour,
        ls="--",
        lw=1,
        label=f"{alarm.name} fires {condition_text(alarm)}",
    )
    if alarm.clear_threshold != alarm.threshold:
        ax.axhline(
            max(alarm.clear_threshold * scale, floor),
            color=colour,
            ls=":",
            lw=1,
            label=f"… clears {condition_text(alarm, clear=True)}",
        )


def _series_lines(
    ax: Axes,
    series: Mapping[str, Sequence[SeriesPoint]],
    metrics: Sequence[str],
    labels: Mapping[str, str],
    *,
    scale: float = 1.0,
    floor: float | None = None,
    step: bool = False,
) -> bool:
    drawn = False
    for metric in metrics:
        points = series.get(metric, [])
        if not points:
            continue
        values = [p.value * scale for p in points]
        if floor is not None:
            values = [max(v, floor) for v in values]
        style = "-" if len(points) > 1 else "o"
        ax.plot(
            [_local(p.at) for p in points],
            values,
            style,
            lw=1.4,
            ms=4,
            color=METRIC_COLOURS.get(metric),
            label=labels.get(metric, metric),
            drawstyle="steps-post" if step else "default",
        )
        drawn = True
    return drawn


def monitored_values_figure(
    series: Mapping[str, Sequence[SeriesPoint]],
    alarms: Sequence[LineAlarm],
    labels: Mapping[str, str],
) -> Figure:
    """The monitor's values per evaluation, each with its alarm's fire (dashed) and clear
    (dotted) thresholds: gate refusals and missing outputs (%), the drift tests' p-values
    (log axis), the review backlog's age and the audit disagreement flag."""
    fig = Figure(figsize=(12.0, 5.6), dpi=100, layout="constrained")
    (shares, pvalues), (backlog, disagreement) = fig.subplots(2, 2)

    _style(shares, "Gate refusals and missing outputs (% of the window)")
    share_metrics = ("gate_refusal_rate", "missing_output_rate")
    if _series_lines(shares, series, share_metrics, labels, scale=100.0):
        for alarm in _rules_for(alarms, share_metrics, series):
            _threshold_lines(shares, alarm, scale=100.0)
        shares.set_ylim(bottom=0)
        _time_axis(shares)
    else:
        _empty(shares, "no evaluations yet")

    _style(pvalues, "Drift tests: p-value (log axis; small means drift)")
    if _series_lines(pvalues, series, P_VALUE_METRICS, labels, floor=P_FLOOR):
        for alarm in _rules_for(alarms, P_VALUE_METRICS, series):
            _threshold_lines(pvalues, alarm, floor=P_FLOOR)
        pvalues.set_yscale("log")
        pvalues.set_ylim(top=1.5)
        _time_axis(pvalues)
    else:
        _empty(pvalues, "no drift test has run yet")

    _style(backlog, "Oldest waiting review (minutes)")
    if _series_lines(backlog, series, ("review_backlog_age_s",), labels, scale=1 / 60):
        for alarm in _rules_for(alarms, ("review_backlog_age_s",), series):
            _threshold_lines(backlog, alarm, scale=1 / 60)
        backlog.set_ylim(bottom=0)
        _time_axis(backlog)
    else:
        _empty(backlog, "no evaluations yet")

    _style(disagreement, "Blind audits disagree more than when trusted (1: detected)")
    if _series_lines(disagreement, series, ("audit_disagreement",), labels, step=True):
        disagreement.set_ylim(-0.1, 1.1)
        disagreement.set_yticks([0, 1])
        _time_axis(disagreement)
    else:
        _empty(disagreement, "no blind labels yet")

    for ax in (shares, pvalues, backlog):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="best")
    return fig


# -- tables ----------------------------------------------------------------------------------


def status_chip(status: str) -> str:
    return f'<span class="alarm-chip {STATUS_CLASSES.get(status, "")}">{esc(status)}</span>'


def severity_chip(severity: str) -> str:
    return f'<span class="alarm-sev sev-{esc(severity)}">{esc(severity)}</span>'


def summary_html(overview: MonitoringOverview) -> str:
    firing = [a for a in overview.alarms if a.status == "firing"]
    pending = [a for a in overview.alarms if a.status == "pending"]
    if firing:
        state = f'<span class="alarm-chip alarm-firing">{len(firing)} firing</span> ' + ", ".join(
            f"<b>{esc(a.name)}</b>" for a in firing
        )
    elif pending:
        state = f'<span class="alarm-chip alarm-pending">{len(pending)} pending</span>'
    else:
        state = '<span class="alarm-chip alarm-ok">all clear</span>'
    evaluated = (
        f"last evaluated {esc(format_time(overview.evaluated_at))}"
        if overview.evaluated_at
        else "not evaluated yet (every 10 parts)"
    )
    version = overview.model_version or "—"
    since = (
        f' · <span class="mon-note">evidence restarts from '
        f"{esc(format_time(overview.evidence_since))} (an alarm stopped automation)</span>"
        if overview.evidence_since
        else ""
    )
    return (
        '<div class="evidence-summary monitoring-summary">'
        f'<span class="line-id">{esc(overview.line_id)}</span> {level_badge(overview.level)} '
        f"audit {100 * overview.audit_rate:.1f}% · model <code>{esc(version)}</code> · "
        f"{evaluated} · {state}{since}</div>"
    )


def alarms_table_html(alarms: Sequence[LineAlarm]) -> str:
    if not alarms:
        return titled_empty("Alarms", "No alarm rules.")
    rows = []
    for a in alarms:
        edited = (
            f'<div class="mon-note" title="{esc(a.edit_reason)}">edited by {esc(a.edited_by)}'
            f" {esc(format_time(a.edited_at))}</div>"
            if a.edited_by
            else ""
        )
        rule_state = "" if a.enabled else ' <span class="alarm-off">off</span>'
        actions = ", ".join(a.actions) or "—"
        if a.audit_rate is not None:
            actions += f" ({100 * a.audit_rate:g}%)"
        rows.append(
            f'<tr data-alarm="{esc(a.name)}" class="{STATUS_CLASSES.get(a.status, "")}-row">'
            f'<td><b>{esc(a.name)}</b>{rule_state}<div class="mon-note">{esc(a.description)}'
            f"</div>{edited}</td>"
            f"<td>{esc(a.metric_label)}</td><td>{severity_chip(a.severity)}</td>"
            f"<td>{status_chip(a.status)}</td>"
            f'<td class="nowrap">{esc(format_time(a.since)) if a.since else "—"}</td>'
            f"<td>{esc(metric_value_text(a.metric, a.value))}</td>"
            f'<td class="nowrap">{esc(condition_text(a))}</td>'
            f'<td class="nowrap">{esc(condition_text(a, clear=True))}</td>'
            f"<td>{esc(actions)}</td></tr>"
        )
    return (
        '<h3 class="panel-title">Alarms</h3>'
        '<table class="ia-table alarms-table"><thead><tr><th>Rule</th><th>Watches</th>'
        "<th>Severity</th><th>State</th><th>Since</th><th>Last value</th><th>Fires</th>"
        f"<th>Clears</th><th>Actions</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def history_table_html(events: Sequence[MonitoringEvent]) -> str:
    title = "Alarm history"
    if not events:
        return titled_empty(title, "No alarm has changed state on this line.")
    rows = []
    for e in events:
        if e.kind == "alarm_rule_changed":
            change = f"rule edited by {esc(e.actor)}"
        else:
            change = f"{status_chip(e.from_status or '?')} → {status_chip(e.to_status or '?')}"
        rows.append(
            f'<tr class="ev-{esc(e.kind)}"><td class="nowrap">{esc(format_time(e.at))}</td>'
            f'<td><b>{esc(e.alarm or "—")}</b></td><td class="nowrap">{change}</td>'
            f"<td>{esc(e.reason)}</td></tr>"
        )
    return (
        f'<h3 class="panel-title">{title}</h3><table class="ia-table history-table"><thead>'
        "<tr><th>When</th><th>Alarm</th><th>Change</th><th>Why</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def actions_table_html(events: Sequence[MonitoringEvent]) -> str:
    title = "Actions taken"
    if not events:
        return titled_empty(title, "No alarm has acted on this line.")
    rows = "".join(
        f'<tr class="ev-{esc(e.kind)}"><td class="nowrap">{esc(format_time(e.at))}</td>'
        f"<td><b>{esc(ACTION_TITLES.get(e.kind, e.kind))}</b></td>"
        f"<td>{esc(e.alarm or '—')}</td><td>{esc(e.reason)}</td></tr>"
        for e in events
    )
    return (
        f'<h3 class="panel-title">{title}</h3><table class="ia-table actions-table"><thead>'
        "<tr><th>When</th><th>Action</th><th>Alarm</th><th>What happened</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return esc(value)


def _drift_details_html(report: DriftSummary) -> str:
    d = report.details
    if report.kind == "input" and d.get("metrics"):
        rows = "".join(
            f'<tr class="{"short" if m.get("drifted") else ""}">'
            f"<td>{esc(INPUT_LABELS.get(m.get('metric', ''), m.get('metric')))}</td>"
            f"<td>{_fmt(m.get('reference_median'))}</td><td>{_fmt(m.get('recent_median'))}</td>"
            f"<td>{esc(m.get('direction', ''))}</td><td>{_fmt(m.get('adjusted_p'))}</td>"
            f"<td>{'drifted' if m.get('drifted') else ''}</td></tr>"
            for m in d["metrics"]
        )
        return (
            '<table class="ia-table drift-metrics"><thead><tr><th>Metric</th>'
            "<th>Reference median</th><th>Recent median</th><th>Moved</th>"
            f"<th>Adjusted p</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        )
    if report.kind == "embedding":
        return (
            f'<div class="mon-note">Classifier ROC AUC {_fmt(d.get("auc"))} (0.5: the window'
            f" and the reference cannot be told apart) · {d.get('permutations', '?')}"
            " permutations</div>"
        )
    if report.kind == "prediction":
        rate, base = d.get("defect_rate"), d.get("baseline_defect_rate")
        return (
            '<div class="mon-note">Predicted defect rate '
            f"{'—' if rate is None else f'{100 * rate:.1f}%'} against "
            f"{'—' if base is None else f'{100 * base:.1f}%'} on the line's "
            f"{d.get('baseline_parts', '?')} parts before · p (rate) "
            f"{_fmt(d.get('defect_rate_p'))}, p (confidence) {_fmt(d.get('histogram_p'))}</div>"
        )
    return ""


def drift_reports_html(reports: Sequence[DriftSummary]) -> str:
    title = "Latest drift tests"
    if not reports:
        return titled_empty(
            title,
            "No drift test has run on this line yet: the input test needs 50 parts of one"
            " model, the embedding and prediction tests 200.",
        )
    cards = "".join(
        f'<div class="drift-card {"drifted" if r.drifted else "steady"}" data-kind="{esc(r.kind)}">'
        f'<div class="drift-head"><b>{esc(DRIFT_TITLES.get(r.kind, r.kind))}</b> '
        + (
            '<span class="alarm-chip alarm-firing">drift</span>'
            if r.drifted
            else '<span class="alarm-chip alarm-ok">no drift</span>'
        )
        + f'</div><div class="mon-note">{esc(format_time(r.at))} · last {r.window} parts · '
        f"p = {_fmt(r.p_value) if r.p_value is not None else '—'} · model "
        f"<code>{esc(r.model_version or '—')}</code></div>{_drift_details_html(r)}</div>"
        for r in reports
    )
    return f'<h3 class="panel-title">{title}</h3>{cards}'


@dataclass(frozen=True)
class ResponsibleImage:
    part: ResponsiblePart
    image_uri: str | None  # None: the image is no longer stored


def responsible_gallery_html(
    report: DriftSummary | None, images: Sequence[ResponsibleImage]
) -> str:
    title = "Most responsible images (embedding drift)"
    if report is None:
        return titled_empty(title, "No embedding drift test has run on this line yet.")
    if not images:
        return titled_empty(title, "The latest embedding test named no parts.")
    lead = (
        "The parts the test's classifier told apart from the reference most surely, most"
        " surely first: what has changed, if anything has."
    )
    cards = "".join(
        '<figure class="dis-card">'
        + (
            f'<img src="{i.image_uri}" alt="part {i.part.inspection_id}" data-action="zoom-thumb">'
            if i.image_uri
            else '<div class="dis-missing">image missing</div>'
        )
        + f'<figcaption><div class="dis-calls"><span>#{i.part.inspection_id}</span></div>'
        f'<div class="dis-meta">{esc(format_time(i.part.received_at))}'
        + (f" · gate: {esc(', '.join(i.part.gate_codes))}" if i.part.gate_codes else "")
        + "</div></figcaption></figure>"
        for i in images
    )
    return (
        f'<h3 class="panel-title">{title}</h3><p class="panel-help">{lead}</p>'
        f'<div class="dis-grid responsible-grid">{cards}</div>'
    )


def gate_html(counts: GateCounts, refusals: Sequence[GateRefusal]) -> str:
    title = "Image gate refusals"
    if counts.parts == 0:
        return titled_empty(title, "No parts on this line yet.")
    share = counts.refused / counts.parts
    head = (
        f'<div class="mon-note">{counts.refused:,} of the last {counts.parts:,} parts refused'
        f" ({100 * share:.1f}%)</div>"
    )
    if not counts.by_code:
        return f'<h3 class="panel-title">{title}</h3>{head}'
    by_code = "".join(
        f'<tr data-code="{esc(code)}"><td>{esc(code)}</td><td>{n:,}</td>'
        f"<td>{100 * n / counts.parts:.1f}%</td></tr>"
        for code, n in counts.by_code.items()
    )
    recent = "".join(
        f'<tr><td class="nowrap">#{r.inspection_id}</td>'
        f'<td class="nowrap">{esc(format_time(r.at))}</td><td>{esc(", ".join(r.codes))}</td>'
        f"<td>{esc(r.reason or '')}</td></tr>"
        for r in refusals
    )
    return (
        f'<h3 class="panel-title">{title}</h3>{head}'
        '<table class="ia-table gate-codes"><thead><tr><th>Reason</th><th>Parts</th>'
        f"<th>Share of parts</th></tr></thead><tbody>{by_code}</tbody></table>"
        '<h4 class="mon-subtitle">Latest refusals</h4>'
        '<table class="ia-table gate-refusals"><thead><tr><th>Part</th><th>When</th>'
        f"<th>Codes</th><th>Why</th></tr></thead><tbody>{recent}</tbody></table>"
    )


def rule_edited_html(alarm: LineAlarm) -> str:
    state = "on" if alarm.enabled else "off"
    return (
        '<div class="result result-ok">'
        f"Applied: <b>{esc(alarm.name)}</b> fires {esc(condition_text(alarm))}, clears "
        f"{esc(condition_text(alarm, clear=True))}, {state}. The monitor uses it from its next"
        " evaluation.</div>"
    )


def _unit(metric: str) -> str:
    if metric in SHARE_METRICS:
        return "a share, 0 to 1"
    if metric == "review_backlog_age_s":
        return "seconds"
    if metric == "audit_disagreement":
        return "1 detected, 0 not"
    return "a p-value, 0 to 1"


def rule_help_html(alarm: LineAlarm | None) -> str:
    if alarm is None:
        return ""
    return (
        f'<div class="mon-note">Watches {esc(alarm.metric_label)}; fires '
        f"{esc(condition_text(alarm))}, clears {esc(condition_text(alarm, clear=True))}. "
        f"Thresholds are in the metric's own unit: {_unit(alarm.metric)}.</div>"
    )
