"""The inspection-safety scenarios: does the line stop trusting the model when it should, and
only then? Measured against the truth; prints, asserts nothing.

Everything runs in this process through the service's own parts, as the app factory wires them:
SQLite in a temp folder, the default weights through `models.predictor.Predictor` and the
`MicroBatcher` (batches of up to 16), `InspectionPipeline.submit`, the image gate and the line
monitor from the weights' reference profile (`inspect_app.api.app._gate`, `_rollout` and
`_monitor`), the review queue (`claim_next_task`, `submit_label`) and
`lines.change_automation`. The monitor is evaluated synchronously every 10 parts
(`LineMonitor.evaluate`, its cadence), rather than by its thread, so a run does not depend on
thread timing. The image store keeps no bytes (nothing here reads
an image back, and 20,000 fsync'd files would measure the disk).

1. Warm-up. A plant-like stream (``--defect-share`` defective parts, 4% by default, the four
   defect classes equally; the generator's own mix is 60% defective) runs at ``shadow``; a
   simulated inspector labels the review queue blind, with the true class, every
   ``--label-every`` parts. Every ``--warmup-chunk`` parts the supervisor asks for the
   recommendation (`automation.recommend_for_line`); once it passes the gate on both sides,
   the line is raised to ``partial`` at the recommended thresholds (`change_automation`, the
   gated raise) with the product's 2% audit rate. The line's targets are lowered from the
   product's defaults so the warm-up takes a few thousand parts, not tens of thousands (at 4%
   defective, 200 labeled would-be auto-failed parts need ~6,000 parts); the printout says so.
   The database is then kept as it stands: every scenario below starts from a copy of it.
2. Scenarios, each ``--repeats`` times with its own seed: ``--lead-in`` clean parts at partial,
   then the stream changes for ``--after`` parts (or until the line has left partial):
   ``lighting`` (every pixel x0.6), ``blur`` (9 px Gaussian), ``lamp_failure`` (near-black
   frames with sensor noise), ``new_defect_look`` (``--new-look-share`` of the parts, on top
   of the usual defects, arrive with a chipped frame edge: a bite out of the phone's outline,
   which none of the trained defects is; the inspector labels it ``crack``, the nearest class).
   The perturbations are `bench/drift_tests.py`'s, on which the drift tests' defaults were set.
   Counted from the switch, against the truth: the parts the model still auto-decided and the
   last of them, the escapes shipped (defective parts it auto-passed, audited or not), when the
   line left partial and what made it (which alarm, or the audit test's auto-demotion), and the
   gate's refusals.
3. A clean stream of ``--clean-parts`` parts (the same mix, no change) at partial: every alarm
   that fired with an action is counted (the false alarms). After a false stop the bench puts
   the line back to partial at its raised settings (a supervisor's re-raise, logged as the
   bench's), so the whole stream is measured at partial. An alarm already firing at the start
   (the warm-up's) cannot fire again until it clears, so the printout also counts, per rule,
   the evaluations whose value was beyond its threshold whatever the alarm's state.

Parts are rendered by `data.synth.render_sample` (seeded), ~30 parts/s end to end on 2 quiet
cores (~10 at a load of 8), which makes the full run ~25 minutes on a quiet machine.
``--pool N`` instead renders N clean-stream parts once and draws them with replacement, each
drawn part turned 180
degrees half the time (the generator draws parts either way round) and shifted by up to 3 px:
faster where rendering dominates, and a little pessimistic for the drift tests (a pool's
empirical distribution differs from the generator's by its own sampling noise).

Targets (the issue): the model stops deciding within 50 parts of the lighting drop or the blur
with <= 1 escape shipped; on blank frames it never decides; <= 1 false alarm per 20,000 clean
parts.

Run: ``.venv/bin/python bench/drift_scenarios.py`` (the full run; ``--quick`` for a smoke run
of a few minutes; see ``--help``). With ``--work-dir D`` the databases are kept, and a later run
with the same ``D`` reuses the warm-up (``--scenarios`` with no names runs none of them).
"""

from __future__ import annotations

import os

# as the models package does (see models/__init__.py), before anything imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import logging
import math
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch
from drift_tests import blur, darken  # bench/ helpers: the perturbations the tests were set on
from shadow_to_partial import pct, print_curve  # bench/ helpers
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from data.synth import PHONE_MODELS, class_schedule, image_seeds, render_sample
from inspect_app.accounts import add_user
from inspect_app.api.app import _gate, _monitor, _rollout
from inspect_app.automation import plain, recommend_for_line
from inspect_app.domain import DEFECT_CLASSES, AutomationLevel, DefectClass, Role
from inspect_app.events import record_event
from inspect_app.inference import MicroBatcher
from inspect_app.lines import add_line, change_automation
from inspect_app.metrics import ServiceMetrics
from inspect_app.monitoring.alarms import DEFAULT_RULES, Action, AlarmStatus, Comparison
from inspect_app.monitoring.baseline import rebaseline
from inspect_app.monitoring.service import LineMonitor, alarm_states
from inspect_app.pipeline import ImageSubmission, InspectionPipeline
from inspect_app.review_queue import claim_next_task, submit_label
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.images import LocalImageStore, sha256_of
from inspect_app.storage.tables import Event, Line, MonitorSample, User
from inspect_app.timeutil import utcnow
from models import DEFAULT_WEIGHTS
from models.predictor import Predictor

LINE = "scenario"
SCENARIOS = ("lighting", "blur", "lamp_failure", "new_defect_look")
EVALUATE_EVERY = 10  # MonitorConfig.evaluate_every: the monitor's cadence, in parts
BATCH = 16  # the service's batch_max_size
STOP_EVENTS = ("alarm_stop_automation", "auto_demotion")
# A fresh seed space per use, so the warm-up, the scenarios and the clean stream share no parts
# (training data uses generator seed 1, the tests 777/778/90210, the gate's tuning 31337 and
# 4242).
SEED_WARMUP, SEED_SCENARIO, SEED_CLEAN, SEED_POOL = 1, 2, 3, 4

logger = logging.getLogger("drift_scenarios")


# --------------------------------------------------------------------------------------------
# The stream of parts


@dataclass(frozen=True)
class Part:
    """One rendered part before the camera's perturbation, with what the bench knows of it."""

    image: np.ndarray  # (256, 256, 3) uint8 BGR
    true_class: str
    # the phone's outline in the image (centre x, centre y, angle in degrees, height, width),
    # where the new defect look is drawn
    outline: tuple[float, float, float, float, float]


def render_part(seed: int, true_class: str) -> Part:
    sample = render_sample(seed, true_class)
    p = sample.params
    height = float(p["height_px"])
    width = height / PHONE_MODELS[p["model"]].aspect
    outline = (float(p["cx"]), float(p["cy"]), float(p["angle_deg"]), height, width)
    return Part(sample.image, true_class, outline)


def plant_mix(defect_share: float) -> dict[str, float]:
    return {"ok": 1.0 - defect_share} | {
        c: defect_share / len(DEFECT_CLASSES) for c in DEFECT_CLASSES
    }


def chip_edge(part: Part, rng: np.random.Generator) -> Part:
    """The new defect look: a bite (radius 4-7 px) out of one long side of the frame, filled
    with the background just outside it. The trained defects are all drawn on the surface;
    measured on 64 parts, the default weights gave 53 of these P(ok) >= 0.9 (a faint 4-7 px
    dent, a sticker or a paint blob on the surface they failed nearly always)."""
    cx, cy, angle, height, width = part.outline
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    side, v = rng.choice([-1.0, 1.0]), rng.uniform(-0.3, 0.3) * height

    def to_image(u: float) -> tuple[float, float]:  # phone coordinates, as data.synth.Scene
        return u * c - v * s + cx, u * s + v * c + cy

    ex, ey = to_image(side * width / 2)
    ox, oy = to_image(side * (width / 2 + 8))
    background = part.image[int(np.clip(oy, 0, 255)), int(np.clip(ox, 0, 255))].astype(np.float32)
    mask = np.zeros(part.image.shape[:2], np.float32)
    radius = rng.uniform(4.0, 7.0)
    cv2.circle(mask, (round(ex * 16), round(ey * 16)), round(radius * 16), 1.0, -1, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (3, 3), 0.8)[..., None]
    noise = rng.normal(0.0, 2.0, part.image.shape).astype(np.float32)
    out = part.image.astype(np.float32) * (1 - mask) + (background + noise) * mask
    image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return Part(image, DefectClass.CRACK.value, part.outline)


def lamp_failure(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The lamp is out: 3% of the light is left (stray light) plus the sensor's read noise."""
    dark = image.astype(np.float32) * 0.03 + 2.0 + rng.normal(0.0, 1.5, image.shape)
    return np.clip(dark + 0.5, 0, 255).astype(np.uint8)


class PartStream:
    """The plant's parts, seeded: rendered one by one, or drawn from a pre-rendered pool."""

    def __init__(
        self, seed: int, defect_share: float, pool: Sequence[Part] = (), new_look_share: float = 0
    ) -> None:
        self.rng = np.random.default_rng([seed, 0xD21F7])
        self.mix = plant_mix(defect_share)
        self.pool = list(pool)
        self.new_look_share = new_look_share
        self._seeds = iter(image_seeds(1_000_000, seed))

    def _base(self) -> Part:
        if not self.pool:
            classes, shares = zip(*self.mix.items(), strict=True)
            return render_part(next(self._seeds), str(self.rng.choice(classes, p=shares)))
        part = self.pool[int(self.rng.integers(len(self.pool)))]
        image = part.image[::-1, ::-1] if self.rng.random() < 0.5 else part.image
        dx, dy = self.rng.integers(-3, 4, 2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        image = cv2.warpAffine(image, shift, (256, 256), borderMode=cv2.BORDER_REFLECT_101)
        return Part(image, part.true_class, part.outline)

    def next(self, perturbation: str | None) -> Part:
        if perturbation == "new_defect_look" and self.rng.random() < self.new_look_share:
            part = chip_edge(render_part(next(self._seeds), DefectClass.OK.value), self.rng)
        else:
            part = self._base()
        if perturbation == "lighting":
            part = Part(darken(part.image, 0.6), part.true_class, part.outline)
        elif perturbation == "blur":
            part = Part(blur(part.image, 9), part.true_class, part.outline)
        elif perturbation == "lamp_failure":
            part = Part(lamp_failure(part.image, self.rng), part.true_class, part.outline)
        return part


def render_pool(n: int, seed: int, defect_share: float) -> list[Part]:
    classes = class_schedule(n, seed, plant_mix(defect_share))
    return [render_part(s, c) for s, c in zip(image_seeds(n, seed), classes, strict=True)]


# --------------------------------------------------------------------------------------------
# One line, in one database


class NoBytesStore(LocalImageStore):
    """An image store that keeps nothing: the bench never reads an image back."""

    def put(self, data: bytes, session: Session | None = None) -> str:
        return sha256_of(data)


@dataclass
class Outcome:
    """One part as the line handled it, against the truth."""

    index: int  # 1-based within its phase
    defective: bool
    route: str
    decision: str
    auto: bool  # decided by the model
    gated: bool  # refused by the image gate


@dataclass
class Acted:
    """An alarm that fired with actions."""

    index: int  # the phase's part count when it fired
    alarm: str
    actions: list[str]
    value: float | None


@dataclass
class Phase:
    outcomes: list[Outcome] = field(default_factory=list)
    acted: list[Acted] = field(default_factory=list)
    stopped_at: int | None = None  # part count at the first evaluation after the line left partial
    stopped_by: str | None = None
    restores: int = 0
    labels: int = 0
    seconds: float = 0.0

    def auto_passed_defective(self) -> int:
        return sum(o.auto and o.decision == "pass" and o.defective for o in self.outcomes)


class LineRun:
    """The line in one database file: the pipeline, the monitor and the inspector around it."""

    def __init__(
        self, db: Path, predictor: Predictor, batcher: MicroBatcher, seed: int, label_every: int
    ) -> None:
        self.settings = Settings(data_dir=db.parent, database_url=f"sqlite:///{db}")
        self.engine: Engine = make_engine(self.settings.resolved_database_url)
        self.metrics = ServiceMetrics()
        gate, profile = _gate(self.settings, predictor)
        rollout = _rollout(
            self.settings, self.engine, predictor, batcher, profile, gate, self.metrics
        )
        monitor = _monitor(self.engine, rollout, predictor, self.metrics)
        self.monitor: LineMonitor = monitor
        self.pipeline = InspectionPipeline(
            engine=self.engine,
            store=NoBytesStore(db.parent / "images"),
            batcher=batcher,
            metrics=self.metrics,
            max_image_bytes=self.settings.max_image_bytes,
            max_image_pixels=self.settings.max_image_pixels,
            rng=random.Random(seed),
            gate=gate,
            monitor=None,  # evaluated here, synchronously
        )
        self.label_every = label_every
        self.truth: dict[int, str] = {}
        with Session(self.engine, expire_on_commit=False) as session:
            self.inspector = session.exec(select(User).where(User.name == "ina")).one()
            self.supervisor = session.exec(select(User).where(User.name == "sam")).one()

    def close(self) -> None:
        self.engine.dispose()

    def line(self) -> Line:
        with Session(self.engine, expire_on_commit=False) as session:
            line = session.get(Line, LINE)
            assert line is not None
            return line

    def label_queue(self) -> int:
        """The inspector: claim and label (the truth) until the queue is empty."""
        done = 0
        with Session(self.engine) as session:
            while (task := claim_next_task(session, self.inspector, lease_seconds=60)) is not None:
                label = self.truth[task.inspection_id]
                submit_label(session, task.task_id, self.inspector, label, duration_ms=1500)
                done += 1
        return done

    async def run(
        self,
        stream: PartStream,
        n: int,
        perturbation: str | None,
        phase: Phase,
        *,
        stop_when_lowered: bool = False,
        restore: Line | None = None,
    ) -> Phase:
        """`n` parts through the pipeline, 10 at a time (one monitor evaluation each)."""
        started = time.monotonic()
        since_label = 0
        first_event = self._last_event_id()
        watched = self.line().level == AutomationLevel.PARTIAL
        while len(phase.outcomes) < n:
            parts = [
                stream.next(perturbation)
                for _ in range(min(EVALUATE_EVERY, n - len(phase.outcomes)))
            ]
            submissions = [
                ImageSubmission(
                    line_id=LINE,
                    data=cv2.imencode(".bmp", p.image)[1].tobytes(),
                    content_type="image/bmp",
                    source="replay",
                    true_class=p.true_class,
                )
                for p in parts
            ]
            # concurrently, as a camera's burst: the batcher gathers them into one model call
            results = await asyncio.gather(*(self.pipeline.submit(s) for s in submissions))
            for part, result in zip(parts, results, strict=True):
                row = result.inspection
                assert row.id is not None
                self.truth[row.id] = part.true_class
                phase.outcomes.append(
                    Outcome(
                        index=len(phase.outcomes) + 1,
                        defective=part.true_class != DefectClass.OK,
                        route=row.route,
                        decision=row.decision,
                        auto=row.decided_by == "model",
                        gated=row.gate_codes is not None,
                    )
                )
            evaluation = self.monitor.evaluate(LINE)
            assert evaluation is not None
            for t in evaluation.transitions:
                if t.to_status is AlarmStatus.FIRING and t.actions:
                    phase.acted.append(
                        Acted(len(phase.outcomes), t.alarm, [a.value for a in t.actions], t.value)
                    )
            since_label += len(parts)
            if since_label >= self.label_every:
                phase.labels += self.label_queue()
                since_label = 0
            if watched and self.line().level != AutomationLevel.PARTIAL:
                if phase.stopped_at is None:
                    phase.stopped_at = len(phase.outcomes)
                    phase.stopped_by = self._stopped_by(first_event)
                if restore is not None:
                    self._restore(restore)
                    phase.restores += 1
                elif stop_when_lowered:
                    break
        phase.labels += self.label_queue()
        phase.seconds += time.monotonic() - started
        return phase

    def _last_event_id(self) -> int:
        with Session(self.engine) as session:
            return session.exec(select(func.max(Event.id))).one() or 0

    def _stopped_by(self, after_id: int) -> str:
        with Session(self.engine) as session:
            events = session.exec(
                select(Event)
                .where(col(Event.id) > after_id, col(Event.kind).in_(STOP_EVENTS))
                .order_by(col(Event.id))
            ).all()
        if not events:
            return "?"
        first = events[0]
        if first.kind == "auto_demotion":
            return "audit test (auto-demotion)"
        return f"alarm {(first.details or {}).get('alarm', '?')}"

    def _restore(self, raised: Line) -> None:
        """Back to partial at the raised settings, as a supervisor's re-raise after checking a
        false alarm would (the bench bypasses the gate: the evidence is the same)."""
        with Session(self.engine) as session:
            line = session.get(Line, LINE)
            assert line is not None
            line.level = raised.level
            line.pass_threshold = raised.pass_threshold
            line.fail_threshold = raised.fail_threshold
            line.audit_rate = raised.audit_rate
            line.evidence_since = raised.evidence_since
            line.updated_at = utcnow()  # a new audit era, as a raise starts one
            session.add(line)
            record_event(
                session,
                kind="level_change",
                actor="bench",
                reason="bench: back to partial after a false alarm on a clean stream",
                line_id=LINE,
            )
            session.commit()


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database in WAL mode (the backup API, not a file copy)."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


# --------------------------------------------------------------------------------------------
# The phases


def new_line_database(db: Path, args: argparse.Namespace) -> None:
    engine = make_engine(f"sqlite:///{db}")
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as session:
        add_line(
            session,
            LINE,
            "shadow",
            actor="bench",
            max_escape_rate=args.max_escape_rate,
            max_false_reject_rate=args.max_false_reject_rate,
            min_labels=args.min_labels,
        )
        add_user(session, "ina", Role.INSPECTOR, "scenario-pw")
        add_user(session, "sam", Role.SUPERVISOR, "scenario-pw")
    engine.dispose()


async def warm_up(run: LineRun, stream: PartStream, args: argparse.Namespace) -> Line | None:
    """Shadow until the recommendation passes the gate, then the gated raise to partial."""
    phase = Phase()
    while len(phase.outcomes) < args.warmup_max:
        await run.run(stream, len(phase.outcomes) + args.warmup_chunk, None, phase)
        with Session(run.engine, expire_on_commit=False) as session:
            line = session.get(Line, LINE)
            assert line is not None
            advice = recommend_for_line(session, line)
            rec = advice.recommendation
            print(f"  {len(phase.outcomes)} parts, {phase.labels} blind labels: {rec.reason}")
            if rec.pass_threshold is None or rec.fail_threshold is None:
                continue
            print_curve(plain(rec))
            raised = change_automation(
                session,
                LINE,
                level=AutomationLevel.PARTIAL,
                pass_threshold=rec.pass_threshold,
                fail_threshold=rec.fail_threshold,
                audit_rate=args.audit_rate,
                reason="bench: the recommended thresholds",
                actor=run.supervisor,
            )
            gate = rec.gate
            assert gate is not None
            if args.rebaseline and run.pipeline.gate is not None:
                # what a supervisor does at the raise: the shadow weeks become the line's own
                # drift reference (the plant's defect mix is not the calibration set's)
                made = rebaseline(
                    session,
                    LINE,
                    since=datetime(2000, 1, 1, tzinfo=UTC),
                    until=utcnow(),
                    actor=run.supervisor,
                    reason="bench: the shadow warm-up as the line's baseline",
                    profile=run.pipeline.gate.profile,
                )
                print(f"re-baselined the line's drift tests on its {made.n_parts} warm-up parts")
            states = {
                k: v.status.value
                for k, v in alarm_states(session, LINE).items()
                if v.status != "ok"
            }
        print(
            f"raised to partial after {len(phase.outcomes)} parts ({phase.seconds:.0f} s): "
            f"pass_threshold {raised.pass_threshold}, fail_threshold {raised.fail_threshold}, "
            f"audit_rate {pct(raised.audit_rate)}; gate: coverage {pct(gate.what_if.coverage)}, "
            f"escape bound {pct(gate.escape.upper_bound)} over {gate.escape.n}, false-reject "
            f"bound {pct(gate.false_reject.upper_bound)} over {gate.false_reject.n}"
        )
        print(f"alarms acted during the warm-up: {describe_acted(phase.acted)}; "
              f"not ok at the raise: {states or 'none'}")  # fmt: skip
        return raised
    print(f"no raise within {args.warmup_max} parts: the evidence does not pass the gate")
    return None


def describe_acted(acted: Sequence[Acted]) -> str:
    if not acted:
        return "none"
    return ", ".join(f"{a.alarm} at part {a.index} ({'+'.join(a.actions)})" for a in acted)


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    repeat: int
    lead_in_acted: list[Acted]
    after: int  # perturbed parts run
    auto: int  # perturbed parts the model auto-decided
    last_auto: int  # the last of them (0: none)
    escapes: int
    gated: int
    stopped_at: int | None  # perturbed part count when the line was found below partial
    stopped_by: str | None
    acted: list[Acted]
    seconds: float


async def scenario(
    raised_db: Path,
    work: Path,
    name: str,
    repeat: int,
    predictor: Predictor,
    batcher: MicroBatcher,
    args: argparse.Namespace,
) -> ScenarioResult:
    db = work / f"{name}-{repeat}.db"
    copy_database(raised_db, db)
    seed = 1000 * SEED_SCENARIO + 10 * SCENARIOS.index(name) + repeat
    run = LineRun(db, predictor, batcher, seed, args.label_every)
    stream = PartStream(seed, args.defect_share, new_look_share=args.new_look_share)
    try:
        lead = await run.run(stream, args.lead_in, None, Phase())
        after = await run.run(stream, args.after, name, Phase(), stop_when_lowered=True)
    finally:
        run.close()
        db.unlink(missing_ok=True)
    auto = [o.index for o in after.outcomes if o.auto]
    return ScenarioResult(
        scenario=name,
        repeat=repeat,
        lead_in_acted=lead.acted,
        after=len(after.outcomes),
        auto=len(auto),
        last_auto=max(auto, default=0),
        escapes=after.auto_passed_defective(),
        gated=sum(o.gated for o in after.outcomes),
        stopped_at=after.stopped_at,
        stopped_by=after.stopped_by,
        acted=after.acted,
        seconds=lead.seconds + after.seconds,
    )


def print_scenarios(results: Sequence[ScenarioResult], args: argparse.Namespace) -> None:
    print(
        f"\n== scenarios: {args.lead_in} clean parts at partial, then the change for up to "
        f"{args.after} parts (a run ends once the line has left partial); counted from the "
        "change"
    )
    print(f"{'scenario':16s} {'run':>3s} {'auto':>5s} {'last':>5s} {'esc':>4s} {'gated':>7s} "
          f"{'left partial':>13s}  by / alarms that acted")  # fmt: skip
    for r in results:
        left = f"at part {r.stopped_at}" if r.stopped_at is not None else f"no ({r.after})"
        print(
            f"{r.scenario:16s} {r.repeat:3d} {r.auto:5d} {r.last_auto:5d} {r.escapes:4d} "
            f"{r.gated:3d}/{r.after:<3d} {left:>13s}  {r.stopped_by or '-'}; "
            f"{describe_acted(r.acted)}"
            + (f"; lead-in: {describe_acted(r.lead_in_acted)}" if r.lead_in_acted else "")
        )
    print("auto: perturbed parts the model decided; last: the last of them (0 = none); esc: "
          "defective parts it auto-passed (shipped)")  # fmt: skip
    print("\n== against the targets")
    for name in dict.fromkeys(r.scenario for r in results):
        rs = [r for r in results if r.scenario == name]
        lasts = [r.last_auto for r in rs]
        stops = [r.stopped_at for r in rs if r.stopped_at is not None]
        escapes = [r.escapes for r in rs]
        if name in ("lighting", "blur"):
            met = all(r.last_auto <= 50 and r.escapes <= 1 for r in rs)
            target = "stops deciding within 50 parts, <= 1 escape"
        elif name == "lamp_failure":
            met = all(r.auto == 0 for r in rs)
            target = "never decides a blank frame"
        else:
            met, target = None, "(no target: reported)"
        verdict = "" if met is None else ("MET" if met else "MISSED")
        print(
            f"{name:16s} last auto-decision at part {summary(lasts)}; left partial at "
            f"{summary(stops) if stops else '-'} ({len(stops)}/{len(rs)} runs); escapes "
            f"{summary(escapes)} (total {sum(escapes)}) | target: {target} {verdict}"
        )


def summary(values: Sequence[int]) -> str:
    if len(values) == 1:
        return str(values[0])
    return f"median {statistics.median(values):g} (max {max(values)}, {values})"


async def clean_stream(
    raised_db: Path,
    work: Path,
    raised: Line,
    predictor: Predictor,
    batcher: MicroBatcher,
    pool: Sequence[Part],
    args: argparse.Namespace,
) -> None:
    db = work / "clean.db"
    copy_database(raised_db, db)
    run = LineRun(db, predictor, batcher, 1000 * SEED_CLEAN, args.label_every)
    stream = PartStream(1000 * SEED_CLEAN, args.defect_share, pool)
    phase = Phase()
    first_sample = last_sample_id(run.engine)
    try:
        chunk = 1000
        while len(phase.outcomes) < args.clean_parts:
            n = min(len(phase.outcomes) + chunk, args.clean_parts)
            await run.run(stream, n, None, phase, restore=raised)
            rate = len(phase.outcomes) / phase.seconds
            print(f"  {len(phase.outcomes)} clean parts, {rate:.1f} parts/s; alarms acted so far: "
                  f"{len(phase.acted)}", flush=True)  # fmt: skip
        with Session(run.engine) as session:
            firing = [k for k, v in alarm_states(session, LINE).items() if v.status == "firing"]
        breached = breaches(run.engine, first_sample)
    finally:
        run.close()
    n = len(phase.outcomes)
    auto = [o for o in phase.outcomes if o.auto]
    passed = [o for o in auto if o.decision == "pass"]
    failed = [o for o in auto if o.decision == "fail"]
    stops = [a for a in phase.acted if Action.STOP_AUTOMATION.value in a.actions]
    by_alarm = Counter(a.alarm for a in phase.acted)
    print(f"\n== clean stream: {n} parts at partial ({phase.seconds / 60:.1f} min, "
          f"{n / phase.seconds:.1f} parts/s), {phase.labels} labels")  # fmt: skip
    print(f"coverage {pct(len(auto) / n)}; gate refusals {sum(o.gated for o in phase.outcomes)}; "
          f"escapes shipped {sum(o.defective for o in passed)}/{len(passed)} auto-passed; false "
          f"rejects {sum(not o.defective for o in failed)}/{len(failed)} auto-failed")  # fmt: skip
    per = 20_000 / n
    print(f"alarms that acted: {len(phase.acted)} = {len(phase.acted) * per:.2f} per 20,000 parts "
          f"(target <= 1); stopped automation: {len(stops)} = {len(stops) * per:.2f} per 20,000; "
          f"by alarm: {dict(by_alarm) or 'none'}")  # fmt: skip
    for a in phase.acted:
        print(f"  part {a.index}: {a.alarm} (value {a.value}) -> {', '.join(a.actions)}")
    print(f"line put back to partial after a false stop: {phase.restores} times; alarms "
          f"firing at the end: {firing or 'none'} (an alarm already firing fires no more until "
          "it clears)")  # fmt: skip
    print("monitored values beyond their alarm's threshold, whatever the alarm's state "
          "(breaches / evaluations with a value; the value closest to firing):")  # fmt: skip
    for rule in DEFAULT_RULES:
        hits, total, closest = breached.get(rule.metric, (0, 0, None))
        near = "-" if closest is None else f"{closest:.3g}"
        print(f"  {rule.name:22s} {rule.metric:22s} {rule.comparison.value} "
              f"{rule.threshold:g}: {hits}/{total}, closest {near}")  # fmt: skip


def last_sample_id(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.max(MonitorSample.id))).one() or 0


def breaches(engine: Engine, after_id: int) -> dict[str, tuple[int, int, float | None]]:
    """Per monitored metric: the evaluations since `after_id` whose value met its rule's fire
    condition, those with a value at all, and the value nearest the fire condition. Counts the
    tests' own false positives, which an alarm already firing (or holding) does not show as
    new alarms."""
    rules = {r.metric: r for r in DEFAULT_RULES}
    with Session(engine) as session:
        rows = session.exec(
            select(MonitorSample.metric, MonitorSample.value).where(
                MonitorSample.line_id == LINE,
                col(MonitorSample.id) > after_id,
                col(MonitorSample.value).is_not(None),
            )
        ).all()
    counts: dict[str, tuple[int, int, float | None]] = {}
    for metric, value in rows:
        if metric in rules and value is not None:
            rule = rules[metric]
            hits, total, closest = counts.get(metric, (0, 0, None))
            if closest is None:
                closest = value
            elif rule.comparison is Comparison.ABOVE:
                closest = max(closest, value)
            else:
                closest = min(closest, value)
            counts[metric] = (hits + rule.breached(value), total + 1, closest)
    return counts


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 repeat, 1,000 clean parts")
    p.add_argument(
        "--no-rebaseline",
        dest="rebaseline",
        action="store_false",
        help="keep the calibration profile as the drift reference (no re-baseline at the raise)",
    )
    p.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--repeats", type=int, default=5, help="runs of each scenario (seeded)")
    p.add_argument("--lead-in", type=int, default=100, help="clean parts before the change")
    p.add_argument("--after", type=int, default=200, help="most parts after the change")
    p.add_argument("--clean-parts", type=int, default=20_000, help="0: no clean stream")
    p.add_argument("--defect-share", type=float, default=0.04, help="defective parts")
    p.add_argument("--new-look-share", type=float, default=0.04, help="new-look parts, extra")
    p.add_argument("--new-look-after", type=int, default=2000, help="--after for the new look")
    p.add_argument("--pool", type=int, default=0, help="draw the clean stream from N renders")
    p.add_argument("--label-every", type=int, default=10, help="drain the queue every N parts")
    p.add_argument("--audit-rate", type=float, default=0.02, help="at partial (product: 0.02)")
    p.add_argument("--max-escape-rate", type=float, default=0.01, help="line target (0.005)")
    p.add_argument("--max-false-reject-rate", type=float, default=0.10, help="target (0.02)")
    p.add_argument("--min-labels", type=int, default=50, help="per side (product: 200)")
    p.add_argument("--warmup-chunk", type=int, default=200, help="ask for a raise every N parts")
    p.add_argument("--warmup-max", type=int, default=6000, help="give up after N parts")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="kept (default: a temp folder); a raised.db there from an earlier run is reused",
    )
    args = p.parse_args()
    if args.quick:
        args.repeats, args.clean_parts, args.new_look_after = 1, 1000, 400
    return args


async def amain(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.torch_threads)
    predictor = Predictor.from_checkpoint(args.weights)
    batcher = MicroBatcher(predictor, BATCH, 5.0)
    batcher.start()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="drift-scenarios-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print("drift scenarios")
    print(f"stream: {pct(args.defect_share)} defective parts (the defect classes equally), "
          f"rendered fresh by data.synth (seeded); model {predictor.version}, torch threads "
          f"{args.torch_threads}")  # fmt: skip
    print(f"line {LINE!r}, SCENARIO SETTINGS (lowered from the product's defaults so the warm-up "
          f"takes minutes): max_escape_rate {pct(args.max_escape_rate)} (default 0.50%), "
          f"max_false_reject_rate {pct(args.max_false_reject_rate)} (default 2.00%), min_labels "
          f"{args.min_labels} (default 200); audit_rate at partial {pct(args.audit_rate)} "
          "(default 2.00%); the monitor and the alarms at their shipped defaults")  # fmt: skip
    try:
        raised_db = work / "raised.db"
        if raised_db.is_file():  # an earlier run's, in --work-dir
            engine = make_engine(f"sqlite:///{raised_db}")
            upgrade_database(engine)  # the code may be newer than the database
            engine.dispose()
            earlier = LineRun(raised_db, predictor, batcher, 0, args.label_every)
            raised = earlier.line()
            earlier.close()
            print(f"\n== the warm-up of an earlier run, {raised_db}: {raised.level} at pass "
                  f"{raised.pass_threshold} / fail {raised.fail_threshold}")  # fmt: skip
        else:
            new_line_database(raised_db, args)
            run = LineRun(raised_db, predictor, batcher, 1000 * SEED_WARMUP, args.label_every)
            print("\n== warm-up at shadow")
            try:
                raised = await warm_up(run, PartStream(1000 * SEED_WARMUP, args.defect_share), args)
            finally:
                run.close()
        if raised is None:
            return
        results = []
        for name in args.scenarios:
            after = args.after
            if name == "new_defect_look":
                args.after = args.new_look_after
            for repeat in range(1, args.repeats + 1):
                result = await scenario(raised_db, work, name, repeat, predictor, batcher, args)
                print(f"  {name} run {repeat}: {result.after} parts after the change, "
                      f"{result.seconds:.0f} s", flush=True)  # fmt: skip
                results.append(result)
            args.after = after
        if results:
            print_scenarios(results, args)
        if args.clean_parts:
            pool: list[Part] = []
            if args.pool:
                t0 = time.monotonic()
                pool = render_pool(args.pool, 1000 * SEED_POOL, args.defect_share)
                print(f"\nclean stream drawn from a pool of {len(pool)} parts (rendered in "
                      f"{time.monotonic() - t0:.0f} s), turned and shifted per draw")  # fmt: skip
            print(f"\n== clean stream at partial: {args.clean_parts} parts")
            await clean_stream(raised_db, work, raised, predictor, batcher, pool, args)
    finally:
        batcher.stop()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwhole run: {(time.monotonic() - started) / 60:.1f} min")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("inspect_app").setLevel(logging.ERROR)  # alarms are printed here
    asyncio.run(amain(parse_args()))


if __name__ == "__main__":
    main()
