"""A line's monitoring history as `LineMonitor` would have left it, written straight into the
tables: the reading side (queries, API, Monitoring page) is tested without running drift
tests. Shared by the query, route and page tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from sqlmodel import Session

from inspect_app.lines import add_line
from inspect_app.monitoring.alarms import AlarmState, AlarmStatus
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.tables import (
    AlarmStateRow,
    DriftReport,
    Event,
    Inspection,
    MonitorSample,
)
from models.profile import ReferenceProfile, profile_from_outputs

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PARTS = 60
GATED_EVERY = 10  # every 10th part refused by the gate (underexposed; every 20th also blurred)


@dataclass(frozen=True)
class MonitoringWorld:
    line_id: str
    inspection_ids: list[int]  # oldest first
    gated_ids: list[int]
    responsible: list[int]  # the embedding report's, most responsible first (one unknown)


def make_profile(version: str) -> ReferenceProfile:
    """A reference for `version` that the seeded parts start inside (brightness about 125)
    and drift out of; embeddings of 8 numbers, made up."""
    rng = np.random.default_rng(3)
    n = 60
    p_ok = rng.uniform(0.0, 1.0, n)
    metrics = [
        {
            "brightness": float(rng.normal(125, 4)),
            "contrast": float(rng.normal(30, 2)),
            "sharpness": float(rng.lognormal(5.3, 0.2)),
            "clipped_dark": float(rng.uniform(0, 0.01)),
            "clipped_bright": float(rng.uniform(0, 0.02)),
            "mean_blue": float(rng.normal(110, 3)),
            "mean_green": float(rng.normal(115, 3)),
            "mean_red": float(rng.normal(120, 3)),
        }
        for _ in range(n)
    ]
    return profile_from_outputs(
        np.column_stack([p_ok] + [(1 - p_ok) / 4] * 4),
        rng.normal(size=(n, 8)),
        metrics,
        model_version=version,
        source="numbers made up for the test",
    )


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.full((64, 64, 3), 70, np.uint8)
    cv2.rectangle(image, (16, 8), (48, 56), (160, 150, 140), -1)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def inspection(line_id: str, at: datetime, **columns: object) -> Inspection:
    values: dict[str, object] = dict(
        line_id=line_id, received_at=at, image_sha256=uuid.uuid4().hex * 2,
        image_format="png", width=64, height=64, brightness=120.0, contrast=30.0,
        sharpness=200.0, clipped_dark=0.0, clipped_bright=0.01, mean_blue=110.0,
        mean_green=115.0, mean_red=120.0, model_version="test", level="shadow",
        pass_threshold=0.98, fail_threshold=0.98, route="review", decision="pending",
    )  # fmt: skip
    values.update(columns)
    return Inspection(**values)  # type: ignore[arg-type]


def seed_monitoring(
    session: Session,
    line_id: str = "line-1",
    *,
    image_dir: Path | None = None,
    start: datetime = T0,
) -> MonitoringWorld:
    """`PARTS` inspections (brightness falling from 130 to 71; a few refused by the gate),
    12 evaluations of every metric, input and embedding drift reports, the gate alarm
    firing, and its events, from `start` on (a minute per evaluation); images in
    `image_dir` for every part."""
    add_line(session, line_id, "shadow")
    store = LocalImageStore(image_dir) if image_dir is not None else None
    ids, gated = [], []
    for i in range(PARTS):
        refused = i % GATED_EVERY == GATED_EVERY - 1
        codes = ("underexposed,blurred" if i % 20 == 19 else "underexposed") if refused else None
        row = inspection(
            line_id,
            start + timedelta(seconds=6 * i),
            brightness=130.0 - i,
            gate_codes=codes,
            gate_reason="too dark: brightness below the reference" if refused else None,
            ood_distance=40.0 + i,
        )
        if store is not None:
            row.image_sha256 = store.put(_image(i))
        session.add(row)
        session.flush()
        assert row.id is not None
        ids.append(row.id)
        if refused:
            gated.append(row.id)
    for k in range(12):
        at = start + timedelta(minutes=k)
        values: dict[str, float | None] = {
            "gate_refusal_rate": 0.02 * k,
            "missing_output_rate": 0.02 * k,
            "input_drift": None if k == 0 else 10.0 ** (-k),
            "embedding_drift": 0.001 if k == 11 else None,
            "review_backlog_age_s": 30.0 * k,
            "audit_disagreement": 0.0,
        }
        for metric, value in values.items():
            session.add(
                MonitorSample(
                    line_id=line_id,
                    at=at,
                    model_version="test",
                    metric=metric,
                    value=value,
                    window=50,
                    last_inspection_id=ids[min(len(ids) - 1, 5 * k)],
                )
            )
    responsible = [ids[-1], ids[-3], 987_654_321, ids[-2]]
    session.add(
        DriftReport(line_id=line_id, at=start + timedelta(minutes=5), kind="input", window=50,
                    p_value=0.5, drifted=False, details={"metrics": [], "alpha": 0.001})
    )  # fmt: skip
    session.add(
        DriftReport(
            line_id=line_id,
            at=start + timedelta(minutes=11),
            model_version="test",
            kind="input",
            window=50,
            p_value=1e-11,
            drifted=True,
            details={
                "metrics": [
                    {"metric": "brightness", "statistic": 0.9, "adjusted_p": 1e-11,
                     "reference_median": 128.0, "recent_median": 80.0, "direction": "lower",
                     "drifted": True},
                    {"metric": "contrast", "statistic": 0.1, "adjusted_p": 0.7,
                     "reference_median": 30.0, "recent_median": 30.5, "direction": "higher",
                     "drifted": False},
                ],
                "alpha": 0.001,
            },
        )
    )  # fmt: skip
    session.add(
        DriftReport(line_id=line_id, at=start + timedelta(minutes=11), model_version="test",
                    kind="embedding", window=60, p_value=0.001, drifted=True,
                    details={"auc": 0.93, "alpha": 0.001, "permutations": 999},
                    responsible=responsible)
    )  # fmt: skip
    fired_at = start + timedelta(minutes=10)
    state = AlarmState(status=AlarmStatus.FIRING, since=fired_at, value=0.22)
    session.add(AlarmStateRow(line_id=line_id, rule="gate_refusals_high", state=state.to_dict()))
    transition = {
        "alarm": "gate_refusals_high",
        "severity": "critical",
        "metric": "gate_refusal_rate",
    }
    events = [
        ("alarm_pending", start + timedelta(minutes=9), {**transition, "from_status": "ok",
         "to_status": "pending", "value": 0.18}),
        ("alarm_firing", fired_at, {**transition, "from_status": "pending",
         "to_status": "firing", "value": 0.22}),
        ("alarm_stop_automation", fired_at, {**transition, "old": {"level": "partial"},
         "new": {"level": "assist"}}),
        ("alarm_notify", fired_at, {**transition}),
        ("level_change", fired_at, {"old": {"level": "shadow"}, "new": {"level": "partial"}}),
    ]  # fmt: skip
    for kind, at, details in events:
        session.add(
            Event(at=at, line_id=line_id, kind=kind, actor="system", reason=f"{kind} at {at:%H:%M}",
                  details=details)
        )  # fmt: skip
    session.commit()
    return MonitoringWorld(line_id, ids, gated, responsible)
