"""Re-baselining a line: a plant whose parts differ from the calibration set (its defect mix,
its lamps) stops drifting against its own known-good window, still drifts when it changes
again, and the choice is refused without enough parts or a reason, and logged."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlmodel import Session, select

from inspect_app.accounts import add_user
from inspect_app.lines import add_line
from inspect_app.monitoring.baseline import (
    MIN_BASELINE_PARTS,
    BaselineError,
    BaselineNotPermitted,
    line_reference,
    rebaseline,
)
from inspect_app.monitoring.drift import embedding_drift
from inspect_app.storage.tables import Event, Inspection
from inspect_app.timeutil import utcnow
from models import DEFAULT_WEIGHTS
from models.profile import ReferenceProfile, load_profile

T0 = utcnow() - timedelta(days=2)


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    loaded = load_profile(DEFAULT_WEIGHTS)
    assert loaded is not None
    return loaded


def _plant_parts(
    session: Session, profile: ReferenceProfile, n: int, *, shift: float, start: int, seed: int
) -> None:
    """Parts whose embeddings sit `shift` away from the calibration set's (a plant's mix)."""
    rng = np.random.default_rng(seed)
    reference = profile.reference_coordinates.astype(float)
    for i in range(n):
        row = reference[rng.integers(len(reference))] + rng.normal(0, 0.3, reference.shape[1])
        row[:4] += shift
        session.add(
            Inspection(
                line_id="line-1",
                received_at=T0 + timedelta(minutes=start + i),
                image_sha256=f"{start + i:064x}",
                image_format="png",
                width=256,
                height=256,
                brightness=float(rng.normal(110, 4)),
                contrast=float(rng.normal(40, 2)),
                sharpness=float(rng.normal(300, 20)),
                level="shadow",
                pass_threshold=0.98,
                fail_threshold=0.98,
                route="review",
                decision="pending",
                model_version=profile.model_version,
                p_defect=0.05,
                embedding=[float(v) for v in row],
            )
        )
    session.commit()


def _drift_p(reference: np.ndarray, session: Session, first: int, n: int) -> float:
    rows = session.exec(
        select(Inspection.embedding).where(Inspection.id > first).order_by(Inspection.id).limit(n)
    ).all()
    return embedding_drift(reference, np.array(rows, dtype=float), n_permutations=199).p_value


def test_a_line_stops_drifting_against_its_own_window_and_drifts_when_it_changes(
    session: Session, profile: ReferenceProfile
) -> None:
    add_line(session, "line-1", "shadow")
    sam = add_user(session, "sam", "supervisor", "a long test password")
    _plant_parts(session, profile, 300, shift=1.5, start=0, seed=1)  # the known-good weeks
    _plant_parts(session, profile, 200, shift=1.5, start=300, seed=2)  # later, the same line
    assert _drift_p(profile.reference_coordinates, session, 300, 200) < 0.01  # always firing

    made = rebaseline(
        session,
        "line-1",
        since=T0,
        until=T0 + timedelta(minutes=300),
        actor=sam,
        reason="shadow weeks, every part labeled",
        profile=profile,
    )
    assert made.n_parts == 300 and made.model_version == profile.model_version
    reference = line_reference(session, "line-1", profile)
    assert reference.n_images == 300 and "re-baselined by sam" in reference.source
    assert reference.embedding is profile.embedding  # the gate's space is the version's
    assert reference.metric_quantile("brightness", 0.5) == pytest.approx(110, abs=2)
    assert _drift_p(reference.reference_coordinates, session, 300, 200) > 0.01

    _plant_parts(session, profile, 200, shift=3.0, start=500, seed=3)  # the line changes
    assert _drift_p(reference.reference_coordinates, session, 500, 200) < 0.01
    event = session.exec(select(Event).where(Event.kind == "monitoring_rebaseline")).one()
    assert event.actor == "sam" and event.details["parts"] == 300


def test_a_baseline_holds_only_for_the_version_it_was_taken_under(
    session: Session, profile: ReferenceProfile
) -> None:
    add_line(session, "line-1", "shadow")
    sam = add_user(session, "sam", "supervisor", "a long test password")
    _plant_parts(session, profile, MIN_BASELINE_PARTS, shift=1.0, start=0, seed=1)
    rebaseline(session, "line-1", since=T0, until=utcnow(), actor=sam, reason="ok",
               profile=profile)  # fmt: skip
    other = ReferenceProfile(**{**profile.__dict__, "model_version": "defect-cnn-other"})
    assert line_reference(session, "line-1", other) is other


def test_a_window_without_enough_parts_a_reason_or_a_supervisor_is_refused(
    session: Session, profile: ReferenceProfile
) -> None:
    add_line(session, "line-1", "shadow")
    sam = add_user(session, "sam", "supervisor", "a long test password")
    ivy = add_user(session, "ivy", "inspector", "a long test password")
    _plant_parts(session, profile, MIN_BASELINE_PARTS - 1, shift=1.0, start=0, seed=1)
    window = {"since": T0, "until": utcnow(), "profile": profile}
    with pytest.raises(BaselineError, match=f"at least {MIN_BASELINE_PARTS}"):
        rebaseline(session, "line-1", actor=sam, reason="too few", **window)  # type: ignore[arg-type]
    with pytest.raises(BaselineError, match="reason is required"):
        rebaseline(session, "line-1", actor=sam, reason=" ", **window)  # type: ignore[arg-type]
    with pytest.raises(BaselineNotPermitted):
        rebaseline(session, "line-1", actor=ivy, reason="mine", **window)  # type: ignore[arg-type]
    with pytest.raises(BaselineError, match="window is empty"):
        rebaseline(session, "line-1", since=T0, until=T0, actor=sam, reason="x", profile=profile)
    assert line_reference(session, "line-1", profile) is profile
    assert not session.exec(select(Event).where(Event.kind == "monitoring_rebaseline")).all()
