"""Which labels count, and where: latest label only, relabels counted, blind apart from shown,
the gate's sample representative, audits only for their own settings era."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from inspect_app import agreement
from inspect_app.accounts import add_user
from inspect_app.domain import Role
from inspect_app.lines import add_line
from inspect_app.review_queue import relabel
from inspect_app.storage.tables import Inspection, Line, User, utcnow

AddParts = Callable[..., list[int]]


@pytest.fixture
def inspector(session: Session) -> User:
    add_line(session, "line-1")
    return add_user(session, "ida", Role.INSPECTOR, "inspector-pw")


@pytest.fixture
def other(session: Session) -> User:
    return add_user(session, "otto", Role.INSPECTOR, "inspector-pw")


def test_latest_label_counts_and_the_relabel_is_counted(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    first, second = add_labeled_parts(
        session, "line-1", [0.99, 0.1], ["ok", "scratch"], user_id=inspector.id
    )
    relabel(session, first, inspector, "pit", note="looked again")
    rows = {r.inspection_id: r for r in agreement.labeled_inspections(session, "line-1")}
    assert set(rows) == {first, second}
    assert rows[first].label == "pit" and rows[first].label_count == 2
    assert rows[second].label == "scratch" and rows[second].label_count == 1
    report = agreement.agreement_report(session, "line-1")
    assert report.labeled == 2
    assert (report.redo_rate.count, report.redo_rate.n) == (1, 2)
    # The relabel turned an agreement (ok/ok) into an escape of the model's plain answer.
    assert report.blind.binary.escapes == 1


def test_unlabeled_and_unpredicted_parts_are_not_evidence_but_count_for_coverage(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    add_labeled_parts(session, "line-1", [0.9, 0.8, 0.1], ["ok", None, None], user_id=inspector.id)
    report = agreement.agreement_report(session, "line-1")
    assert report.predicted == 3
    assert report.labeled == 1
    assert (report.coverage.count, report.coverage.n) == (1, 3)


def test_blind_and_shown_labels_are_reported_apart_and_per_inspector(
    session: Session, inspector: User, other: User, add_labeled_parts: AddParts
) -> None:
    add_labeled_parts(session, "line-1", [0.99, 0.99, 0.1], ["ok", "crack", "crack"],
                      user_id=inspector.id)  # fmt: skip
    add_labeled_parts(session, "line-1", [0.99, 0.1], ["ok", "pit"], user_id=other.id,
                      level="assist", model_shown=True)  # fmt: skip
    report = agreement.agreement_report(session, "line-1")
    assert report.blind.n == 3 and report.shown.n == 2
    assert report.blind.binary.escapes == 1 and report.shown.binary.escapes == 0
    by_name = {i.inspector: i for i in report.by_inspector}
    assert by_name["ida"].blind.n == 3 and by_name["ida"].shown.n == 0
    assert by_name["otto"].shown.n == 2 and by_name["otto"].blind.n == 0
    assert by_name["otto"].shown.binary_accuracy.rate == 1.0
    assert by_name["ida"].median_duration_ms == 1001.0


def test_the_report_is_for_one_model_version_by_default_the_current_one(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    add_labeled_parts(session, "line-1", [0.9, 0.9], ["ok", "ok"], user_id=inspector.id,
                      model_version="v1")  # fmt: skip
    add_labeled_parts(session, "line-1", [0.9], ["crack"], user_id=inspector.id,
                      model_version="v2")  # fmt: skip
    current = agreement.agreement_report(session, "line-1")
    assert current.model_version == "v2" and current.labeled == 1
    assert current.model_versions == ["v2", "v1"]
    older = agreement.agreement_report(session, "line-1", model_version="v1")
    assert older.labeled == 2 and older.blind.accuracy.rate == 1.0


def test_the_time_window_is_half_open_on_received_time(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    t0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    for hours in (0, 1, 2):
        add_labeled_parts(session, "line-1", [0.9], ["ok"], user_id=inspector.id,
                          received_at=t0 + timedelta(hours=hours))  # fmt: skip
    report = agreement.agreement_report(
        session, "line-1", since=t0 + timedelta(hours=1), until=t0 + timedelta(hours=2)
    )
    assert report.labeled == 1 and report.predicted == 1
    with pytest.raises(ValueError, match="window is empty"):
        agreement.agreement_report(session, "line-1", since=t0, until=t0)


def test_a_line_without_predictions_reports_empty_figures(
    session: Session, inspector: User
) -> None:
    report = agreement.agreement_report(session, "line-1")
    assert report.model_version is None
    assert report.labeled == 0 and report.blind.n == 0
    assert report.blind.accuracy.rate is None and report.blind.kappa is None


def test_gate_evidence_is_the_representative_blind_sample(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    shadow = add_labeled_parts(session, "line-1", [0.99, 0.1], ["ok", "crack"],
                               user_id=inspector.id)  # fmt: skip
    human_only = add_labeled_parts(session, "line-1", [0.95], ["ok"], user_id=inspector.id,
                                   level="human_only")  # fmt: skip
    assist = add_labeled_parts(session, "line-1", [0.97], ["pit"], user_id=inspector.id,
                               level="assist", model_shown=True)  # fmt: skip
    # Parts the model picked for humans are not a representative sample of the stream:
    add_labeled_parts(session, "line-1", [0.7], ["ok"], user_id=inspector.id, level="partial",
                      model_shown=True)  # fmt: skip
    add_labeled_parts(session, "line-1", [0.995], ["ok"], user_id=inspector.id,
                      level="partial", route="audit")  # fmt: skip
    evidence = agreement.gate_evidence(session, "line-1")
    assert sorted(evidence.inspection_ids.tolist()) == sorted(shadow + human_only)
    assert evidence.human_defect.tolist() == [False, True, False]
    assert evidence.p_ok.tolist() == [0.99, 0.1, 0.95]
    assert "blind labels only" in evidence.source
    with_shown = agreement.gate_evidence(session, "line-1", include_shown=True)
    assert sorted(with_shown.inspection_ids.tolist()) == sorted(shadow + human_only + assist)


def test_live_audit_counts_only_the_current_settings_era(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    line = session.get(Line, "line-1")
    assert line is not None
    before = utcnow() - timedelta(hours=1)
    line.level, line.pass_threshold, line.fail_threshold = "partial", 0.97, 0.96
    line.updated_at = utcnow()
    session.add(line)
    session.commit()
    audits = dict(level="partial", route="audit", pass_threshold=0.97, fail_threshold=0.96)
    add_labeled_parts(session, "line-1", [0.99, 0.99, 0.98, 0.01, 0.02],
                      ["ok", "crack", "scratch", "ok", "pit"], user_id=inspector.id,
                      **audits)  # fmt: skip
    # Not this era: other thresholds, an earlier identical era, a non-audit, another model.
    add_labeled_parts(session, "line-1", [0.99], ["crack"], user_id=inspector.id,
                      **{**audits, "pass_threshold": 0.95})  # fmt: skip
    add_labeled_parts(session, "line-1", [0.99], ["crack"], user_id=inspector.id,
                      received_at=before, **audits)  # fmt: skip
    add_labeled_parts(session, "line-1", [0.99], ["crack"], user_id=inspector.id,
                      **{**audits, "route": "review"})  # fmt: skip
    add_labeled_parts(session, "line-1", [0.99], ["crack"], user_id=inspector.id,
                      model_version="other", **audits)  # fmt: skip
    counts = agreement.live_audit_counts(session, line, "test")
    assert (counts.passed, counts.escapes) == (3, 2)
    assert (counts.failed, counts.false_rejects) == (2, 1)


def test_disagreement_images_name_each_inspections_stored_image(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    first, second = add_labeled_parts(
        session, "line-1", [0.99, 0.1], ["scratch", "ok"], user_id=inspector.id
    )
    images = agreement.disagreement_images(session, [first, second, 10**6])
    assert set(images) == {first, second}  # an unknown id has no image
    for inspection_id in (first, second):
        inspection = session.get(Inspection, inspection_id)
        assert inspection is not None
        assert images[inspection_id] == inspection.image_sha256
    assert agreement.disagreement_images(session, []) == {}
