"""The line monitor on a small world: an in-memory database, a reference profile made of
plain numbers, and inspection rows written as the pipeline writes them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.agreement import gate_evidence
from inspect_app.automation import evaluate_raise
from inspect_app.domain import AutomationLevel, LinePolicy
from inspect_app.lines import add_line
from inspect_app.monitoring.service import (
    DRIFT_METRICS,
    LineMonitor,
    MonitorConfig,
    _recent_parts,
    _Windows,
    line_rules,
    set_line_rule,
)
from inspect_app.storage.tables import (
    Event,
    Inspection,
    Line,
    MonitorSample,
    OutboxMessage,
    User,
)
from inspect_app.timeutil import utcnow
from models.profile import ReferenceProfile, profile_from_outputs

VERSION = "test"
MEANS = {
    "brightness": 120.0,
    "contrast": 40.0,
    "sharpness": 300.0,
    "clipped_dark": 0.01,
    "clipped_bright": 0.01,
    "mean_blue": 110.0,
    "mean_green": 120.0,
    "mean_red": 130.0,
}


def metrics_row(rng: np.random.Generator, brightness_gain: float = 1.0) -> dict[str, float]:
    row = {k: float(v * rng.uniform(0.9, 1.1)) for k, v in MEANS.items()}
    for k in ("brightness", "mean_blue", "mean_green", "mean_red"):
        row[k] *= brightness_gain
    return row


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(1)
    n = 300
    p_ok = rng.uniform(0.0, 1.0, n)
    probabilities = np.column_stack([p_ok] + [(1 - p_ok) / 4] * 4)
    return profile_from_outputs(
        probabilities,
        rng.normal(size=(n, 12)),
        [metrics_row(rng) for _ in range(n)],
        model_version=VERSION,
        source="numbers made up for the test",
    )


@pytest.fixture
def partial_line(engine: Engine) -> str:
    with Session(engine) as db:
        add_line(db, "line-1", "shadow")
        line = db.get(Line, "line-1")
        assert line is not None
        line.level, line.pass_threshold, line.fail_threshold = "partial", 0.9, 0.9
        db.add(line)
        db.commit()
    return "line-1"


@pytest.fixture
def inspector(engine: Engine) -> int:
    with Session(engine) as db:
        user = User(name="ins", role="inspector", password_hash="x")
        db.add(user)
        db.commit()
        db.refresh(user)
        assert user.id is not None
        return user.id


def add_parts(
    engine: Engine, line_id: str, rng: np.random.Generator, n: int, gain: float = 1.0
) -> None:
    rows = []
    for _ in range(n):
        p_ok = float(rng.uniform(0.95, 1.0)) if rng.random() < 0.9 else float(rng.uniform(0, 0.05))
        m = metrics_row(rng, gain)
        rows.append(
            dict(
                line_id=line_id, source="http", received_at=utcnow(),
                image_sha256=uuid.uuid4().hex * 2, image_format="png", width=64, height=64,
                **m, model_version=VERSION, p_defect=1 - p_ok, predicted_class="ok",
                confidence=p_ok, probabilities={"ok": p_ok}, level="partial",
                pass_threshold=0.9, fail_threshold=0.9, route="auto", show_model=True,
                decision="pass" if p_ok > 0.5 else "fail", decided_by="model",
            )
        )  # fmt: skip
    with Session(engine) as db:
        db.execute(insert(Inspection), rows)
        db.commit()


def run(
    monitor: LineMonitor,
    engine: Engine,
    line_id: str,
    rng: np.random.Generator,
    parts: int,
    gain: float = 1.0,
    until: Callable[[], bool] | None = None,
) -> int:
    """Feed `parts` parts, evaluating every 10 as the service does; the parts fed when
    `until` first held (or `parts`)."""
    for fed in range(10, parts + 1, 10):
        add_parts(engine, line_id, rng, 10, gain)
        monitor.evaluate(line_id)
        if until is not None and until():
            return fed
    return parts


def _line(engine: Engine, line_id: str) -> Line:
    with Session(engine, expire_on_commit=False) as db:
        line = db.get(Line, line_id)
        assert line is not None
        return line


def level(engine: Engine, line_id: str) -> str:
    return _line(engine, line_id).level


def events(engine: Engine, kind_prefix: str = "alarm") -> list[Event]:
    with Session(engine) as db:
        return [
            e for e in db.exec(select(Event).order_by(Event.id)) if e.kind.startswith(kind_prefix)
        ]


def test_a_lighting_drop_stops_auto_decisions_within_fifty_parts(
    engine: Engine, partial_line: str, profile: ReferenceProfile
) -> None:
    monitor = LineMonitor(engine, profiles=lambda v: profile if v == VERSION else None)
    rng = np.random.default_rng(7)
    run(monitor, engine, partial_line, rng, 100)
    assert level(engine, partial_line) == "partial"
    assert not [e for e in events(engine) if e.kind == "alarm_firing"]

    fed = run(
        monitor, engine, partial_line, rng, 200, gain=0.6,
        until=lambda: level(engine, partial_line) != "partial",
    )  # fmt: skip
    assert level(engine, partial_line) == "assist"
    assert fed <= 50
    kinds = [e.kind for e in events(engine)]
    assert "alarm_pending" in kinds and "alarm_firing" in kinds
    assert "alarm_stop_automation" in kinds
    firing = next(e for e in events(engine) if e.kind == "alarm_firing")
    assert firing.actor == "system"
    assert firing.details is not None and firing.details["alarm"] == "input_drift"
    with Session(engine) as db:
        line = db.get(Line, partial_line)
        assert line is not None and line.evidence_since is not None
        samples = db.exec(select(MonitorSample).where(MonitorSample.metric == "input_drift")).all()
    assert samples and min(s.value for s in samples if s.value is not None) < 1e-4
    # each change of the alarm's state went to the line's outputs, in the same transaction
    with Session(engine) as db:
        told = db.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq))).all()
    changes = [e.details for e in events(engine) if e.kind in ("alarm_pending", "alarm_firing")]
    assert [(m.kind, m.payload["alarm"], m.payload["to_status"]) for m in told] == [
        ("alarm", d["alarm"], d["to_status"]) for d in changes if d is not None
    ]


def test_a_clean_stream_raises_no_alarm(
    engine: Engine, partial_line: str, profile: ReferenceProfile
) -> None:
    monitor = LineMonitor(engine, profiles=lambda v: profile if v == VERSION else None)
    run(monitor, engine, partial_line, np.random.default_rng(3), 400)
    assert level(engine, partial_line) == "partial"
    assert not [e for e in events(engine) if e.kind in ("alarm_firing", "alarm_pending")]


def test_a_demoted_line_cannot_be_raised_back_on_evidence_from_before_the_alarm(
    engine: Engine,
    partial_line: str,
    profile: ReferenceProfile,
    add_labeled_parts: Callable[..., list[int]],
    inspector: int,
) -> None:
    with Session(engine) as db:
        # plenty of clean shadow evidence for the model, all from before the alarm
        add_labeled_parts(db, partial_line, [0.999] * 600, ["ok"] * 600, user_id=inspector,
                          model_version=VERSION)  # fmt: skip
        line = db.get(Line, partial_line)
        assert line is not None
        assert gate_evidence(db, partial_line).n == 600
    monitor = LineMonitor(engine, profiles=lambda v: profile if v == VERSION else None)
    run(monitor, engine, partial_line, np.random.default_rng(5), 100, gain=0.6,
        until=lambda: level(engine, partial_line) != "partial")  # fmt: skip
    assert level(engine, partial_line) == "assist"
    with Session(engine) as db:
        line = db.get(Line, partial_line)
        assert line is not None
        assert gate_evidence(db, partial_line, since=line.evidence_since).n == 0
        verdict = evaluate_raise(
            db, line, LinePolicy(AutomationLevel.PARTIAL, pass_threshold=0.9, fail_threshold=0.9)
        )
    assert not verdict.allowed


def test_a_supervisor_edits_a_rule_per_line_and_it_is_logged(
    engine: Engine, partial_line: str
) -> None:
    with Session(engine) as db:
        rule = set_line_rule(
            db, partial_line, "input_drift", {"enabled": False},
            actor="sue", reason="camera swap this morning",
        )  # fmt: skip
        db.commit()
        assert not rule.enabled
        assert not next(r for r in line_rules(db, partial_line) if r.name == "input_drift").enabled
    (event,) = events(engine, "alarm_rule_changed")
    assert event.actor == "sue" and event.reason == "camera swap this morning"


def test_drift_metrics_are_the_profiles_input_metrics(profile: ReferenceProfile) -> None:
    assert set(DRIFT_METRICS) <= set(profile.metric_quantiles)
    assert MonitorConfig().input_window == 50


def test_the_window_read_incrementally_is_the_window_read_in_full(
    engine: Engine, partial_line: str
) -> None:
    """Evaluations read in full only the parts new since the last one; the window is still
    the database's: a part another transaction committed late, with a lower id than parts
    already read, is in it."""
    windows = _Windows()
    rng = np.random.default_rng(11)
    with Session(engine) as db:
        db.execute(insert(Inspection), [_row(rng, partial_line, 2000 + 2 * i) for i in range(30)])
        db.commit()
        first = windows.recent(db, partial_line, 20)
        assert first == _recent_parts(db, partial_line, 20)
        assert [p.id for p in first] == list(range(2058, 2018, -2))
    with Session(engine) as db:
        # the next parts, and one committed late: its id is below those already read
        db.execute(insert(Inspection), [_row(rng, partial_line, 2060 + 2 * i) for i in range(5)])
        db.execute(insert(Inspection), [_row(rng, partial_line, 2031)])
        db.commit()
        again = windows.recent(db, partial_line, 40)
        assert again == _recent_parts(db, partial_line, 40)
        ids = [p.id for p in again]
        assert 2031 in ids and ids[0] == 2068 and ids[-1] == 2000


def _row(rng: np.random.Generator, line_id: str, ident: int) -> dict[str, object]:
    return dict(
        id=ident, line_id=line_id, source="http", received_at=utcnow(),
        image_sha256=uuid.uuid4().hex * 2, image_format="png", width=64, height=64,
        **metrics_row(rng), model_version=VERSION, p_defect=0.5, predicted_class="ok",
        confidence=0.5, probabilities={"ok": 0.5}, level="partial", pass_threshold=0.9,
        fail_threshold=0.9, route="auto", show_model=True, decision="pass", decided_by="model",
    )  # fmt: skip


def _disagreeing(
    engine: Engine,
    add_labeled_parts: Callable[..., list[int]],
    line_id: str,
    user_id: int,
    n: int,
    model_version: str = VERSION,
) -> None:
    """`n` blind labels on parts the model passed at P(ok) 0.99 that inspectors found
    scratched: the model is wrong on every one."""
    with Session(engine) as db:
        add_labeled_parts(db, line_id, [0.99] * n, ["scratch"] * n, user_id=user_id,
                          model_version=model_version)  # fmt: skip


def _start_era(engine: Engine, line_id: str) -> datetime:
    """An earlier alarm's evidence era, started now; its start as stored."""
    with Session(engine) as db:
        line = db.get(Line, line_id)
        assert line is not None
        line.evidence_since = utcnow()
        db.add(line)
        db.commit()
    era = _line(engine, line_id).evidence_since
    assert era is not None
    return era


def _stops(engine: Engine) -> list[Event]:
    return events(engine, "alarm_stop_automation")


def test_a_disagreement_alarm_on_a_stopped_line_keeps_its_evidence_era(
    engine: Engine, add_labeled_parts: Callable[..., list[int]], inspector: int
) -> None:
    """The era starts after the change already; the labels that fire the alarm are its
    evidence, and restarting on each firing would leave a drifted line none to recover on."""
    with Session(engine) as db:
        add_line(db, "line-1", "shadow")
    era = _start_era(engine, "line-1")
    monitor = LineMonitor(engine, profiles=lambda v: None)
    _disagreeing(engine, add_labeled_parts, "line-1", inspector, 60)
    evaluation = monitor.evaluate("line-1")
    assert evaluation is not None and evaluation.values["audit_disagreement"] == 1.0
    (stop,) = _stops(engine)
    assert stop.details is not None and stop.details["evidence_restarted"] is False
    assert "evidence era stays" in stop.reason
    assert _line(engine, "line-1").evidence_since == era
    assert level(engine, "line-1") == "shadow"


def test_a_disagreement_alarm_on_a_deciding_line_stops_it_and_restarts_the_era(
    engine: Engine,
    partial_line: str,
    add_labeled_parts: Callable[..., list[int]],
    inspector: int,
) -> None:
    era = _start_era(engine, partial_line)
    _disagreeing(engine, add_labeled_parts, partial_line, inspector, 60)
    LineMonitor(engine, profiles=lambda v: None).evaluate(partial_line)
    (stop,) = _stops(engine)
    assert stop.details is not None and stop.details["evidence_restarted"] is True
    assert level(engine, partial_line) == "assist"
    assert _line(engine, partial_line).evidence_since != era


def test_disagreement_counts_only_the_line_s_current_model(
    engine: Engine, add_labeled_parts: Callable[..., list[int]], inspector: int
) -> None:
    """After a switch the old version's disagreements say nothing of the new one's."""
    with Session(engine) as db:
        add_line(db, "line-1", "shadow")
    _disagreeing(engine, add_labeled_parts, "line-1", inspector, 60, model_version="old")
    with Session(engine) as db:
        add_labeled_parts(db, "line-1", [0.99] * 20, ["ok"] * 20, user_id=inspector,
                          model_version="new")  # fmt: skip
    evaluation = LineMonitor(engine, profiles=lambda v: None).evaluate("line-1")
    assert evaluation is not None and evaluation.model_version == "new"
    assert evaluation.values["audit_disagreement"] == 0.0
    assert not _stops(engine)
