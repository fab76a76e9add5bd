"""Re-baselining a line: its drift monitoring compares it with a window of its own parts.

A model's reference profile describes its calibration images: the generator's balanced mix
(60% defective) under the lab's lighting. A plant runs a few percent defective under its own
lamps, so a classifier two-sample test of the plant's embeddings against the calibration set
finds the difference at once and keeps the embedding-drift alarm firing on a healthy line.
The design's answer: a supervisor picks a window the line was known good (e.g. its shadow
weeks, every part labeled), and from then on the input and embedding drift tests compare the
line with that window. The choice is logged with who, why and the figures.

Only the drift tests' reference changes. The image gate keeps the version's own profile
(re-baselining never lets a frame through that the model's reference would refuse), and a
baseline holds only for the version it was taken under: after a model switch the line
monitors against the new version's profile until it is re-baselined again.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import numpy as np
from sqlmodel import Session, col, select

from inspect_app.agreement import current_model_version
from inspect_app.domain import Role
from inspect_app.events import record_event
from inspect_app.storage.tables import Inspection, LineBaseline, User
from inspect_app.timeutil import as_utc
from models.profile import ReferenceProfile

# At least as many as the embedding test's window (200) so the reference is no noisier than
# what it is compared with.
MIN_BASELINE_PARTS = 200
MAX_BASELINE_PARTS = 5000  # the most recent ones of a longer window


class BaselineError(ValueError):
    """The window cannot serve as the line's reference; the message says why."""


class BaselineNotPermitted(PermissionError):
    pass


def _metric_names(profile: ReferenceProfile) -> list[str]:
    return [m for m in profile.metric_quantiles if hasattr(Inspection, m)]


def rebaseline(
    session: Session,
    line_id: str,
    *,
    since: datetime,
    until: datetime,
    actor: User,
    reason: str,
    profile: ReferenceProfile,
) -> LineBaseline:
    """Take the line's usable parts received in [since, until) by its current model as its
    drift reference. `profile` is that version's (its embedding space and quantile levels)."""
    if not Role(actor.role).may(Role.SUPERVISOR):
        raise BaselineNotPermitted(
            f"user {actor.name!r} ({actor.role}) may not re-baseline a line: supervisors only"
        )
    reason = (reason or "").strip()
    if not reason:
        raise BaselineError("a reason is required: it goes into the audit trail")
    since_utc, until_utc = as_utc(since), as_utc(until)
    assert since_utc is not None and until_utc is not None
    if until_utc <= since_utc:
        raise BaselineError(f"the window is empty: until ({until}) is not after since ({since})")
    version = current_model_version(session, line_id)
    if version != profile.model_version:
        raise BaselineError(
            f"line {line_id} runs {version or 'no model'}, not {profile.model_version}"
        )
    names = _metric_names(profile)
    rows = session.exec(
        select(Inspection.embedding, *[getattr(Inspection, m) for m in names])
        .where(
            Inspection.line_id == line_id,
            Inspection.model_version == version,
            col(Inspection.gate_codes).is_(None),
            col(Inspection.embedding).is_not(None),
            col(Inspection.received_at) >= since_utc,
            col(Inspection.received_at) < until_utc,
        )
        .order_by(col(Inspection.id).desc())
        .limit(MAX_BASELINE_PARTS)
    ).all()
    if len(rows) < MIN_BASELINE_PARTS:
        raise BaselineError(
            f"the window holds {len(rows)} usable parts of model {version}; a baseline needs "
            f"at least {MIN_BASELINE_PARTS}"
        )
    coordinates = np.array([row[0] for row in rows], dtype=float)
    if coordinates.shape[1] != profile.reference_coordinates.shape[1]:
        raise BaselineError("the window's embeddings were stored in another profile's space")
    quantiles: dict[str, list[float]] = {}
    for j, name in enumerate(names, start=1):
        values = np.array([row[j] for row in rows if row[j] is not None], dtype=float)
        if values.size >= MIN_BASELINE_PARTS:
            quantiles[name] = [float(q) for q in np.quantile(values, profile.quantile_levels)]
    baseline = session.get(LineBaseline, line_id) or LineBaseline(
        line_id=line_id,
        model_version=version,
        window_since=since_utc,
        window_until=until_utc,
        n_parts=0,
        metric_quantiles={},
        coordinates=[],
        created_by=actor.name,
        reason=reason,
    )
    previous = (
        None
        if baseline.n_parts == 0
        else {"since": baseline.window_since, "until": baseline.window_until}
    )
    baseline.model_version = version
    baseline.window_since, baseline.window_until = since_utc, until_utc
    baseline.n_parts = len(rows)
    baseline.metric_quantiles = quantiles
    baseline.coordinates = [[round(float(v), 4) for v in row] for row in coordinates]
    baseline.created_by, baseline.reason = actor.name, reason
    session.add(baseline)
    record_event(
        session,
        kind="monitoring_rebaseline",
        actor=actor.name,
        reason=reason,
        line_id=line_id,
        details={
            "model_version": version,
            "since": since_utc,
            "until": until_utc,
            "parts": len(rows),
            "previous": previous,
            "medians": {
                name: {
                    "profile": profile.metric_quantile(name, 0.5),
                    "line": float(np.interp(0.5, profile.quantile_levels, q)),
                }
                for name, q in quantiles.items()
            },
        },
    )
    session.commit()
    session.refresh(baseline)
    return baseline


def line_reference(session: Session, line_id: str, profile: ReferenceProfile) -> ReferenceProfile:
    """The drift tests' reference for the line: its baseline where it has one for this
    version, the version's profile otherwise."""
    baseline = session.get(LineBaseline, line_id)
    if baseline is None or baseline.model_version != profile.model_version:
        return profile
    return dataclasses.replace(
        profile,
        source=(
            f"line {line_id}'s parts received {baseline.window_since:%Y-%m-%d %H:%M} to "
            f"{baseline.window_until:%Y-%m-%d %H:%M} UTC (re-baselined by {baseline.created_by})"
        ),
        n_images=baseline.n_parts,
        metric_quantiles={
            **profile.metric_quantiles,
            **{k: tuple(v) for k, v in baseline.metric_quantiles.items()},
        },
        reference_coordinates=np.asarray(baseline.coordinates, dtype=float),
    )
