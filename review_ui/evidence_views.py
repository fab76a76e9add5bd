"""The Evidence page's tables, plot and gallery, from `inspect_app.agreement` /
`inspect_app.evidence` results. Pure: figures in, HTML or a matplotlib Figure out.

Every rate is shown with its count and its 95% interval, the way `evidence.RateEstimate`
carries it, because a supervisor deciding on automation must see how sure a number is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from matplotlib.figure import Figure

from inspect_app.agreement import AgreementReport
from inspect_app.domain import threshold_text
from inspect_app.evidence import AgreementFigures, GateTargets, RateEstimate, Recommendation
from inspect_app.reference.accuracy import InspectorAccuracy
from inspect_app.storage.tables import Line
from review_ui.views import CLASS_TITLES, esc, format_time, level_badge


def titled_empty(title: str, message: str, tag: str = "h3") -> str:
    cls = ' class="panel-title"' if tag == "h3" else ""
    return f'<{tag}{cls}>{esc(title)}</{tag}><div class="empty-table">{esc(message)}</div>'


def pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def rate_html(r: RateEstimate, *, compact: bool = False) -> str:
    """0.40% (2 / 500) [0.05%–1.44%]; compact: the interval on hover only."""
    if r.n == 0:
        return '<span class="rate rate-none">no data</span>'
    if compact:
        return (
            f'<span class="rate" title="95% interval {pct(r.lower)} – {pct(r.upper)}">'
            f'<b>{pct(r.rate, 1)}</b> <span class="rate-count">{r.count:,}/{r.n:,}</span></span>'
        )
    return (
        f'<span class="rate"><b>{pct(r.rate)}</b> <span class="rate-count">({r.count:,} / '
        f'{r.n:,})</span> <span class="rate-ci">[{pct(r.lower)} – {pct(r.upper)}]</span></span>'
    )


def kappa_html(k: float | None) -> str:
    return "—" if k is None else f"{k:.3f}"


def summary_html(report: AgreementReport, level: str, window: str) -> str:
    version = report.model_version or "no model predictions yet"
    return (
        '<div class="evidence-summary">'
        f'<span class="line-id">{esc(report.line_id)}</span> {level_badge(level)} '
        f"model <code>{esc(version)}</code> · {esc(window)} · "
        f"{report.predicted:,} predicted, {report.labeled:,} labeled "
        f"({pct(report.coverage.rate, 1)}) · redo rate {pct(report.redo_rate.rate, 1)}"
        "</div>"
    )


def _matrix_html(
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    m: Sequence[Sequence[int]],
    bad: set[tuple[int, int]],
) -> str:
    peak = max((v for row in m for v in row), default=0) or 1
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = ""
    for i, name in enumerate(rows):
        cells = ""
        for j, v in enumerate(m[i]):
            kind = "diag" if i == j else ("bad" if (i, j) in bad else "off")
            alpha = 0.08 + 0.6 * v / peak if v else 0.0
            cells += f'<td class="cm-{kind}" style="--a:{alpha:.2f}">{v:,}</td>'
        body += f"<tr><th>{esc(name)}</th>{cells}</tr>"
    return (
        f'<div class="matrix"><div class="matrix-title">{esc(title)}</div>'
        '<table class="ia-table cm"><thead><tr><th class="cm-corner">human ↓ · model →</th>'
        f"{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def agreement_block_html(title: str, f: AgreementFigures) -> str:
    if f.n == 0:
        return f'<div class="agreement-block">{titled_empty(title, "No labels.", "h4")}</div>'
    rates = (
        ("Accuracy (class)", rate_html(f.accuracy)),
        ("Accuracy (ok / defect)", rate_html(f.binary_accuracy)),
        ("Cohen's kappa (class / binary)", f"{kappa_html(f.kappa)} / {kappa_html(f.binary_kappa)}"),
        ("Defect recall", rate_html(f.defect_recall)),
        ("Escape rate (model ok, human defect)", rate_html(f.escape_rate)),
        ("False-reject rate (model defect, human ok)", rate_html(f.false_reject_rate)),
    )
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rates)
    b = f.binary
    binary = _matrix_html(
        "ok / defect",
        ["ok", "defect"],
        ["ok", "defect"],
        b.as_matrix(),
        {(1, 0), (0, 1)},
    )
    names = [CLASS_TITLES.get(c, c) for c in f.classes]
    ok = f.classes.index("ok") if "ok" in f.classes else -1
    bad = {(i, ok) for i in range(len(f.classes)) if i != ok} | {
        (ok, j) for j in range(len(f.classes)) if j != ok
    }
    classes = _matrix_html("per class", names, names, f.class_matrix, bad)
    return (
        f'<div class="agreement-block"><h4>{esc(title)} · {f.n:,} parts</h4>'
        f'<table class="ia-table rates">{table}</table>'
        f'<div class="matrices">{binary}{classes}</div></div>'
    )


def figures_html(report: AgreementReport) -> str:
    return (
        '<h3 class="panel-title">Model against humans</h3>'
        + agreement_block_html("Blind labels (evidence)", report.blind)
        + agreement_block_html("Labels with the model shown (swayed towards it)", report.shown)
    )


def versions_table_html(reports: Sequence[AgreementReport]) -> str:
    if not reports:
        return titled_empty("Per model version", "No model predictions on this line yet.")
    body = "".join(
        f"<tr><td><code>{esc(r.model_version)}</code></td><td>{r.labeled:,} / {r.predicted:,}</td>"
        f"<td>{rate_html(r.blind.accuracy, compact=True)}</td><td>{kappa_html(r.blind.kappa)}</td>"
        f"<td>{rate_html(r.blind.escape_rate, compact=True)}</td>"
        f"<td>{rate_html(r.blind.false_reject_rate, compact=True)}</td></tr>"
        for r in reports
    )
    return (
        '<h3 class="panel-title">Per model version (blind labels)</h3>'
        '<table class="ia-table"><thead><tr><th>Version</th><th>Labeled / predicted</th>'
        "<th>Accuracy</th><th>Kappa</th><th>Escape rate</th><th>False-reject rate</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def inspectors_table_html(report: AgreementReport) -> str:
    if not report.by_inspector:
        return titled_empty("Agreement per inspector", "No labels in this window.")
    body = "".join(
        f"<tr><td>{esc(i.inspector)}</td><td>{i.labels:,}</td>"
        f"<td>{rate_html(i.blind.accuracy, compact=True)}</td><td>{kappa_html(i.blind.kappa)}</td>"
        f"<td>{rate_html(i.shown.accuracy, compact=True)}</td>"
        f"<td>{rate_html(i.redo_rate, compact=True)}</td>"
        f"<td>{_seconds(i.median_duration_ms)}</td></tr>"
        for i in report.by_inspector
    )
    return (
        '<h3 class="panel-title">Agreement per inspector</h3>'
        '<table class="ia-table"><thead><tr><th>Inspector</th><th>Labels</th>'
        "<th>Agrees with model (blind)</th><th>Kappa (blind)</th><th>Agrees (model shown)</th>"
        "<th>Redo rate</th><th>Median time</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def reference_accuracy_html(
    figures: Sequence[InspectorAccuracy],
    missed_defects: RateEstimate,
    false_rejects: RateEstimate,
    model_escape: RateEstimate,
    model_false_reject: RateEstimate,
) -> str:
    """Each inspector against known answers (reference parts), and the inspectors' measured
    error rates beside the model's: the gate measures the model against these inspectors, so
    it cannot certify an escape rate below the rate at which they miss defects themselves."""
    side_by_side = (
        '<table class="ia-table" id="error-rates"><thead><tr><th></th><th>Misses a defect</th>'
        "<th>Rejects a good part</th></tr></thead><tbody>"
        f"<tr><td>Inspectors, on reference parts</td><td>{rate_html(missed_defects)}</td>"
        f"<td>{rate_html(false_rejects)}</td></tr>"
        f"<tr><td>Model, against blind labels (escape, false-reject)</td>"
        f"<td>{rate_html(model_escape)}</td><td>{rate_html(model_false_reject)}</td></tr>"
        "</tbody></table>"
        '<div class="hint">An escape bound below the inspectors\' own miss rate cannot be '
        "certified: the labels it is measured against are no better than that.</div>"
    )
    if not figures:
        return (
            '<h3 class="panel-title">Inspectors on reference parts</h3>'
            + side_by_side
            + '<div class="empty-table">No answers on reference parts yet.</div>'
        )
    body = "".join(
        f"<tr><td>{esc(f.inspector)}{' <b>flagged</b>' if f.flagged else ''}</td>"
        f"<td>{f.answers:,}</td><td>{rate_html(f.binary)}</td>"
        f"<td>{rate_html(f.exact, compact=True)}</td>"
        f"<td>{rate_html(f.missed_defects, compact=True)}</td>"
        f"<td>{rate_html(f.false_rejects, compact=True)}</td>"
        "<td>"
        + ", ".join(
            f"{esc(CLASS_TITLES.get(c, c))} {rate_html(r, compact=True)}"
            for c, r in f.per_class.items()
        )
        + "</td></tr>"
        for f in figures
    )
    return (
        '<h3 class="panel-title">Inspectors on reference parts</h3>'
        + side_by_side
        + '<table class="ia-table" id="reference-accuracy"><thead><tr><th>Inspector</th>'
        "<th>Answers</th><th>Ok/defect right</th><th>Class right</th><th>Missed defects</th>"
        "<th>False rejects</th><th>Per class</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _seconds(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.1f} s"


def recommendation_html(rec: Recommendation | None, source: str, line: Line) -> str:
    if rec is None:
        return (
            '<div class="recommendation rec-none">No blind labels of this model at human_only or '
            "shadow yet: nothing to recommend. Run the line at shadow and label its parts.</div>"
        )
    current = (
        f"Line now: {level_badge(line.level)} pass ≥ {threshold_text(line.pass_threshold, '.4g')}, "
        f"fail ≥ {threshold_text(line.fail_threshold, '.4g')}."
    )
    kind = "rec-ok" if rec.gate is not None and rec.gate.passed else "rec-none"
    full = "supports full automation too" if rec.full.passed else "does not support full"
    return (
        f'<div class="recommendation {kind}"><div class="rec-reason">{esc(rec.reason)}</div>'
        f'<div class="rec-meta">{current} The evidence {full}. '
        f"Based on {rec.n_labeled:,} {esc(source)}.</div></div>"
    )


def coverage_risk_figure(rec: Recommendation, targets: GateTargets, line: Line) -> Figure:
    """Coverage (share of labeled parts auto-decided) against the 95% upper bound of the error
    rate on each side, one point per candidate threshold; the recommended and the line's
    current thresholds marked, the targets drawn as lines."""
    fig = Figure(figsize=(7.2, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2, sharey=False)
    sides = (
        (
            "Auto-pass: escapes",
            rec.pass_curve,
            rec.pass_threshold,
            line.pass_threshold,
            targets.max_escape_rate,
            "#1f6feb",
        ),
        (
            "Auto-fail: false rejects",
            rec.fail_curve,
            rec.fail_threshold,
            line.fail_threshold,
            targets.max_false_reject_rate,
            "#d1242f",
        ),
    )
    for ax, (title, curve, chosen, current, target, colour) in zip(axes, sides, strict=True):
        xs = [100 * p.share for p in curve]
        ys = [100 * p.upper_bound for p in curve]
        observed = [100 * p.rate if p.rate is not None else float("nan") for p in curve]
        ax.plot(xs, ys, "-o", color=colour, ms=3, lw=1.5, label="95% upper bound")
        ax.plot(xs, observed, ":", color=colour, lw=1, alpha=0.7, label="observed rate")
        ax.axhline(100 * target, color="#57606a", ls="--", lw=1, label=f"target {pct(target)}")
        for p in curve:
            if chosen is not None and p.threshold == chosen:
                ax.plot(
                    [100 * p.share],
                    [100 * p.upper_bound],
                    "*",
                    color="#1a7f37",
                    ms=14,
                    label=f"recommended {p.threshold:g}",
                )
            if p.threshold == current:
                ax.plot(
                    [100 * p.share],
                    [100 * p.upper_bound],
                    "s",
                    mfc="none",
                    mec="#000",
                    ms=9,
                    label=f"line now {p.threshold:g}",
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("coverage: labeled parts auto-decided (%)", fontsize=8)
        ax.set_ylabel("error rate (%)", fontsize=8)
        top = max([100 * target * 3, *[y for y in observed if y == y]], default=1.0)
        ax.set_ylim(0, min(100.0, top))
        ax.set_xlim(0, max([5.0, *xs]) * 1.05)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper left")
    return fig


@dataclass(frozen=True)
class Disagreement:
    inspection_id: int
    image_uri: str | None
    model_call: str
    model_p_ok: float
    human_call: str
    labeler: str
    labeled_at: datetime
    model_shown: bool
    reference: bool = False  # already a reference part (served to inspectors blind)


def gallery_html(items: Sequence[Disagreement]) -> str:
    title = '<h3 class="panel-title">Recent disagreements</h3>'
    if not items:
        return title + '<div class="empty-table">No disagreements in this window.</div>'
    cards = "".join(
        '<figure class="dis-card">'
        + (
            f'<img src="{d.image_uri}" alt="part {d.inspection_id}" data-action="zoom-thumb">'
            if d.image_uri
            else '<div class="dis-missing">image missing</div>'
        )
        + f'<figcaption><div class="dis-calls"><span class="dis-model">model: '
        f"{esc(CLASS_TITLES.get(d.model_call, d.model_call))} (P(ok) {d.model_p_ok:.2f})</span>"
        f'<span class="dis-human">human: {esc(CLASS_TITLES.get(d.human_call, d.human_call))}'
        f'</span></div><div class="dis-meta">#{d.inspection_id} · {esc(d.labeler)} · '
        f"{esc(format_time(d.labeled_at))}"
        f"{' · model shown' if d.model_shown else ''}"
        f"{' · <b>reference part</b>' if d.reference else ''}</div></figcaption></figure>"
        for d in items
    )
    return title + f'<div class="dis-grid">{cards}</div>'
