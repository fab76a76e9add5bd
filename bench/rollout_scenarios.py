"""Rollout rehearsals against the truth: does a canary stop a worse candidate, and at what
cost; does a good one go through every step; does the bandit move traffic to the better
version? Prints the figures per seed; asserts nothing.

Everything runs through the product's own use cases on a fresh in-memory SQLite database per
run (`inspect_app.rollout.rehearsal`): the deployment use cases (`set_deployment`, `finalize`,
the after-label hooks that reward the bandit, judge the canary step and roll back), the
assignment of each part (`rollout.policy.assign` on `deployments.all_states`, re-read after
every tick as each process's `Rollout` poll does), the rows the pipeline writes (the arm, the
assignment probability, the audit rate, a `ModelPrediction` per version that ran, a review
task when routed to a human, by `routing.route_inspection`), the gated raise to partial
(`lines.change_automation`) and the review queue (`claim_next_task`, `submit_label`,
`escalate_task`). Simulated: the images and the network. Each version draws every part's
P(ok) from a distribution conditioned on the part's true class (`rehearsal.Behaviour`), so its
error rates are known; the inspectors label blind with the true class.

Scenarios (each over ``--seeds`` seeds; one candidate version, a little better than the
champion on standard parts and much worse on a new kind of part):

``canary-worse``
    A line at shadow runs the champion and the candidate (mode shadow) on standard parts until
    both pass the line's gate on their own blind labels; the line is raised to partial (the
    gated raise), and the canary starts (`set_deployment` checks the candidate's gate on its
    shadow evidence). Then the new kind of part arrives (``--new-share`` of the stream), on
    which the candidate is much worse than the line allows (its escape rate among the parts it
    auto-passes is printed, against the truth). Counted: the blind labels of the candidate's
    decisions until the automatic rollback (and every label inspectors gave in the canary),
    the parts it decided, its escapes (defective parts it auto-passed, shipped) before the
    rollback took effect, and what rolled it back (the canary step's verdict or the live audit
    test on its audits).
``canary-good``
    The same shadow phase, raise and canary start (a copy of the same database), then standard
    parts only: every step must pass on labels (5 -> 25 -> 50 -> 100%) with no rollback; once
    the last step passes a supervisor finalizes, retried every 200 parts while it is refused.
    Counted: labels and parts per step, and what finalize needed.
``bandit``
    A line at shadow (every part labeled blind, so 2,000 labels are ~2,000 parts; at partial
    only audits reward and the same labels take 1 / audit rate times as many parts), mode
    bandit, two versions ``--accuracies`` apart in binary agreement with the blind labels (the
    candidate the better one). ``--late-share`` of the tasks are held by slow inspectors and
    labeled ``--late-by`` parts later; ``--never-share`` are escalated and never labeled.
    Counted: the share of decisions the better version took over the last ``--last`` parts of
    a ``--bandit-labels`` run, the lowest assignment probability the worse one ever had
    (the floor is exploration / 2), and whether the rewards are exactly the blind labels of
    decided parts (late ones included, never-labeled ones nowhere).
``bandit-policy`` (not in the default list)
    No database: the product's `bandit_probability` alone, recomputed after every label, over
    ``--policy-runs`` runs: how often a run reaches the 80% share, which five seeds cannot say.
``fail-rule``
    No database: one side of one canary step judged after every label, as `after_label` does,
    for true rates from 0.05 to 3 times the target: how often the step's fail rule (the
    one-sided 95% lower bound above the target) fails it before it passes, against the live
    audit test's SPRT (`evidence.sequential.audit_alarm`) as the fail rule.

Line settings: the product's defaults need thousands of labels per canary step (a 0.5%
escape target cannot pass on fewer than 598 labels with no escape at all), which take long on
a 2-core machine; the line's targets, the defect rate and the candidate's audit rate are
therefore options, and the printout states them. The statistics are the product's own.
Escapes before a rollback scale with 1 / the candidate's audit rate (the rollback comes after
a number of labels, each label is an audit); ``--candidate-audit-rate 0.1`` is the product's.
Seeds run in ``--jobs`` processes (2 by default: ~10 minutes on 2 cores).

Run: ``.venv/bin/python bench/rollout_scenarios.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import logging
import math
import multiprocessing
import random
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import automation
from inspect_app.accounts import add_user
from inspect_app.domain import AutomationLevel, LinePolicy, Role
from inspect_app.evidence.intervals import (
    clopper_pearson_lower_array,
    clopper_pearson_upper_array,
)
from inspect_app.evidence.sequential import audit_log_likelihood_ratio
from inspect_app.lines import add_line, change_automation
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest, RolloutRefused
from inspect_app.rollout.evidence import gate_on_evidence, version_evidence
from inspect_app.rollout.policy import Mode, bandit_probability
from inspect_app.rollout.rehearsal import (
    Behaviour,
    Rehearsal,
    ScriptedInspector,
    SimulatedVersion,
    StreamPart,
    part_stream,
)
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import BanditArm, Deployment, Event, Inspection, Label, Line, User

LINE = "rehearsal"
CHAMPION = "champion-v1"
CANDIDATE = "candidate-v2"
NEW_VARIANT = "new-variant"
PASSWORD = "a rehearsal password"


# -- the world


@dataclass
class World:
    engine: Engine
    rehearsal: Rehearsal
    supervisor: User
    inspector: ScriptedInspector
    labels: int = 0  # every label the inspectors gave
    parts: int = 0


def build_world(
    args: argparse.Namespace, seed: int, versions: list[SimulatedVersion], **line: Any
) -> World:
    engine = make_engine("sqlite://")
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as session:
        supervisor = add_user(session, "sue", Role.SUPERVISOR, PASSWORD)
        ann = add_user(session, "ann", Role.INSPECTOR, PASSWORD)
        add_line(session, LINE, "shadow", **line)
        session.commit()
    rehearsal = Rehearsal.build(engine, versions, seed=seed)
    inspector = ScriptedInspector(engine, ann, random.Random(f"ann-{seed}"))
    return World(engine, rehearsal, supervisor, inspector)


def line_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        max_escape_rate=args.max_escape_rate,
        max_false_reject_rate=args.max_false_reject_rate,
        min_labels=args.min_labels,
        audit_rate=args.audit_rate,
    )


def deploy(world: World, request: DeploymentRequest, reason: str) -> None:
    with Session(world.engine, expire_on_commit=False) as session:
        deployments.set_deployment(
            session,
            LINE,
            request,
            actor=world.supervisor,
            reason=reason,
            default_version=world.rehearsal.default_version,
        )
    world.rehearsal.refresh(force=True)


def tick(world: World, stream: Iterator[StreamPart], n: int) -> None:
    """`n` parts arrive, the inspector empties the queue, the service polls its snapshot."""
    world.rehearsal.inspect_many(LINE, [next(stream) for _ in range(n)])
    world.parts += n
    world.labels += world.inspector.drain(LINE)
    world.rehearsal.refresh()


def deployment_row(world: World) -> Deployment:
    with Session(world.engine, expire_on_commit=False) as session:
        row = session.get(Deployment, LINE)
        assert row is not None
        return row


# -- shadow phase and the raise


@dataclass
class ShadowPhase:
    parts: int
    labels: int
    passed: bool


def shadow_phase(
    world: World, stream: Iterator[StreamPart], args: argparse.Namespace
) -> ShadowPhase:
    """Both versions run on every part at shadow, every part labeled blind, until each passes
    the line's gate at partial on its own evidence (checked every 100 parts)."""
    deploy(world, DeploymentRequest(candidate=CANDIDATE, mode=Mode.SHADOW), "shadow first")
    start_parts, start_labels = world.parts, world.labels
    while world.parts - start_parts < args.max_shadow_parts:
        for _ in range(100 // args.tick):
            tick(world, stream, args.tick)
        with Session(world.engine) as session:
            line = session.get(Line, LINE)
            assert line is not None
            target = LinePolicy(
                AutomationLevel.PARTIAL, line.pass_threshold, line.fail_threshold, line.audit_rate
            )
            champion = automation.evaluate_raise(session, line, target).allowed
            candidate = gate_on_evidence(line, version_evidence(session, line, CANDIDATE)).passed
        if champion and candidate:
            return ShadowPhase(world.parts - start_parts, world.labels - start_labels, True)
    return ShadowPhase(world.parts - start_parts, world.labels - start_labels, False)


def raise_to_partial(world: World) -> None:
    with Session(world.engine, expire_on_commit=False) as session:
        change_automation(
            session,
            LINE,
            level=AutomationLevel.PARTIAL,
            reason="the champion passed the gate at shadow",
            actor=world.supervisor,
        )


def start_canary(world: World, args: argparse.Namespace) -> RolloutRefused | None:
    request = DeploymentRequest(
        candidate=CANDIDATE,
        mode=Mode.CANARY,
        step_min_labels=args.step_min_labels,
        candidate_audit_rate=args.candidate_audit_rate,
    )
    try:
        deploy(world, request, "the candidate passed the gate on its shadow evidence")
    except RolloutRefused as exc:
        return exc
    return None


# -- canary phase


@dataclass
class StepRecord:
    step: int  # 1-based
    share: float
    parts: int  # parts of the line while the step lasted
    labels: int  # blind labels of the candidate's decisions the verdict counted
    outcome: str


@dataclass
class CanaryRun:
    steps: list[StepRecord] = field(default_factory=list)
    rolled_back_by: str | None = None  # "canary verdict" | "live audit test" | "..."
    rollback_reason: str | None = None
    rollback_labels: int | None = None  # blind labels of the candidate's decisions then
    finalized: bool = False
    finalize_refusals: int = 0  # a supervisor's finalize refused after the last step passed
    finalize_refused: str | None = None  # the first refusal's reason
    finalize_wait: tuple[int, int] | None = None  # (parts, labels) from the pass to finalize
    parts: int = 0
    labels: int = 0  # every label inspectors gave in the canary
    capped: bool = False


def canary_phase(
    world: World, stream: Iterator[StreamPart], args: argparse.Namespace, *, finalize: bool
) -> CanaryRun:
    """Parts flow until the candidate is rolled back, or (with `finalize`) its last step
    passes and a supervisor finalizes it, or `--max-canary-parts`."""
    run = CanaryRun()
    start_parts, start_labels = world.parts, world.labels
    row = deployment_row(world)
    step, step_parts = row.step, world.parts
    last_passed_at: tuple[int, int] | None = None  # (parts, labels) when the last step passed
    while True:
        if world.parts - start_parts >= args.max_canary_parts:
            run.capped = True
            break
        tick(world, stream, args.tick)
        row = deployment_row(world)
        if row.quarantined:
            run.rolled_back_by, run.rollback_reason, run.rollback_labels = rollback_cause(world)
            break
        if row.step != step:
            run.steps.append(promotion_record(world, step, row.steps[step], step_parts))
            step, step_parts = row.step, world.parts
        if finalize and row.step == len(row.steps) - 1:
            if last_passed_at is None:
                with Session(world.engine) as session:
                    line = session.get(Line, LINE)
                    assert line is not None
                    verdict = deployments.step_verdict(session, line, row)
                if verdict.outcome == "pass":
                    parts = world.parts - step_parts
                    run.steps.append(StepRecord(step + 1, row.steps[step], parts,
                                                verdict.labels, "pass"))  # fmt: skip
                    last_passed_at = (world.parts, world.labels)
            if last_passed_at is not None and (world.parts - last_passed_at[0]) % 200 == 0:
                try:
                    with Session(world.engine, expire_on_commit=False) as session:
                        deployments.finalize(
                            session,
                            LINE,
                            actor=world.supervisor,
                            reason="every canary step passed",
                            default_version=world.rehearsal.default_version,
                        )
                except RolloutRefused as exc:
                    run.finalize_refusals += 1
                    run.finalize_refused = run.finalize_refused or str(exc)
                    continue
                run.finalized = True
                run.finalize_wait = (
                    world.parts - last_passed_at[0],
                    world.labels - last_passed_at[1],
                )
                break
    run.parts = world.parts - start_parts
    run.labels = world.labels - start_labels
    return run


def promotion_record(world: World, step: int, share: float, since_parts: int) -> StepRecord:
    with Session(world.engine) as session:
        event = session.exec(
            select(Event)
            .where(Event.line_id == LINE, Event.kind == "rollout_promote")
            .order_by(col(Event.id).desc())
        ).first()
    details = (event.details or {}).get("step", {}) if event is not None else {}
    return StepRecord(
        step + 1, float(share), world.parts - since_parts, int(details.get("labels", -1)), "pass"
    )


def rollback_cause(world: World) -> tuple[str, str, int | None]:
    with Session(world.engine) as session:
        event = session.exec(
            select(Event)
            .where(Event.line_id == LINE, Event.kind == "rollout_rollback")
            .order_by(col(Event.id).desc())
        ).first()
    assert event is not None
    details = event.details or {}
    if "step" in details:
        return "canary verdict", event.reason, int(details["step"]["labels"])
    checks = details.get("checks")
    if checks:
        n = max(int(c.get("n", 0)) for c in checks)
        return "live audit test", event.reason, n
    return f"{event.actor}", event.reason, None


@dataclass(frozen=True)
class CandidateTruth:
    decided: int
    auto_passed: int
    escapes: int  # defective parts it auto-passed: shipped
    escapes_audited: int  # ... of which a blind audit saw
    auto_failed: int
    false_rejects: int
    blind_labels: int  # blind labels of the parts it decided


def candidate_truth(world: World) -> CandidateTruth:
    with Session(world.engine) as session:
        rows = session.exec(
            select(Inspection.decision, Inspection.decided_by, Inspection.route,
                   Inspection.true_class)
            .where(Inspection.line_id == LINE, Inspection.arm == "candidate",
                   Inspection.level == AutomationLevel.PARTIAL.value)
        ).all()  # fmt: skip
        blind = session.exec(
            select(func.count(func.distinct(Label.inspection_id)))
            .join(Inspection, col(Inspection.id) == col(Label.inspection_id))
            .where(Inspection.line_id == LINE, Inspection.arm == "candidate",
                   Inspection.level == AutomationLevel.PARTIAL.value,
                   col(Label.model_shown).is_(False))
        ).one()  # fmt: skip
    model = [r for r in rows if r[1] == "model"]
    passed = [r for r in model if r[0] == "pass"]
    failed = [r for r in model if r[0] == "fail"]
    escapes = [r for r in passed if r[3] != "ok"]
    return CandidateTruth(
        decided=len(rows),
        auto_passed=len(passed),
        escapes=len(escapes),
        escapes_audited=sum(1 for r in escapes if r[2] == "audit"),
        auto_failed=len(failed),
        false_rejects=sum(1 for r in failed if r[3] == "ok"),
        blind_labels=int(blind),
    )


# -- versions


def champion(args: argparse.Namespace) -> SimulatedVersion:
    return SimulatedVersion(CHAMPION, Behaviour(0.98, 0.97, 0.99, 0.10))


def candidate(args: argparse.Namespace) -> SimulatedVersion:
    """A little better than the champion on the standard parts (all the shadow phase shows),
    much worse on a new kind of part: the canary-worse stream brings that kind, the
    canary-good stream does not."""
    return SimulatedVersion(
        CANDIDATE,
        Behaviour(0.985, 0.975, 0.99, 0.10),
        by_variant={NEW_VARIANT: Behaviour(0.98, args.worse_defect_accuracy, 0.99, 0.80)},
    )


# -- scenarios


def fork(world: World) -> World:
    """A copy of the world's database and generators: both canaries start from one shadow
    phase, one raise and one canary start (the same evidence, the same step start)."""
    engine = make_engine("sqlite://")
    source, target = world.engine.raw_connection(), engine.raw_connection()
    try:
        source.driver_connection.backup(target.driver_connection)  # type: ignore[union-attr]
    finally:
        source.close()
        target.close()
    old = world.rehearsal
    rehearsal = dataclasses.replace(
        old,
        engine=engine,
        rng=copy.deepcopy(old.rng),
        model_rng=copy.deepcopy(old.model_rng),
        states=dict(old.states),
    )
    inspector = copy.copy(world.inspector)
    inspector.engine, inspector.rng = engine, copy.deepcopy(world.inspector.rng)
    return World(engine, rehearsal, world.supervisor, inspector, world.labels, world.parts)


def run_canaries(seed: int, args: argparse.Namespace, names: list[str]) -> dict[str, dict]:
    """One shadow phase, the raise and the canary start, then each canary on its own copy."""
    world = build_world(args, seed, [champion(args), candidate(args)], **line_settings(args))
    shadow = part_stream(random.Random(f"shadow-{seed}"), defect_rate=args.defect_rate,
                         prefix="s-")  # fmt: skip
    phase = shadow_phase(world, shadow, args)
    base: dict[str, Any] = {"seed": seed, "shadow_parts": phase.parts,
                            "shadow_labels": phase.labels}  # fmt: skip
    if not phase.passed:
        return {name: {**base, "outcome": "shadow phase did not pass the gate"} for name in names}
    raise_to_partial(world)
    refused = start_canary(world, args)
    if refused is not None:
        return {name: {**base, "outcome": f"canary refused: {refused}"} for name in names}
    results = {}
    for name in names:
        worse = name == "canary-worse"
        mix = {"standard": 1.0 - args.new_share, NEW_VARIANT: args.new_share} if worse else None
        stream = part_stream(random.Random(f"{name}-{seed}"), defect_rate=args.defect_rate,
                             variants=mix, prefix="c-")  # fmt: skip
        copied = fork(world)
        run = canary_phase(copied, stream, args, finalize=not worse)
        results[name] = {**base, "run": run, "truth": candidate_truth(copied)}
        copied.engine.dispose()
    return results


def run_bandit(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    better, worse = args.accuracies
    versions = [
        SimulatedVersion(CHAMPION, Behaviour(worse, worse)),
        SimulatedVersion(CANDIDATE, Behaviour(better, better)),
    ]
    world = build_world(args, seed, versions)
    with Session(world.engine, expire_on_commit=False) as session:
        slow = [
            ScriptedInspector(
                world.engine,
                add_user(session, f"slow-{i:02d}", Role.INSPECTOR, PASSWORD),
                random.Random(f"slow-{seed}-{i}"),
            )
            for i in range(args.slow_inspectors)
        ]
    deploy(world, DeploymentRequest(candidate=CANDIDATE, mode=Mode.BANDIT,
                                    exploration=args.exploration), "bandit")  # fmt: skip
    fate = random.Random(f"fate-{seed}")
    stream = part_stream(random.Random(f"bandit-{seed}"), defect_rate=args.defect_rate)
    due: dict[int, int] = {}  # slow inspector index -> part count when they label
    late = never = 0
    while world.labels < args.bandit_labels:
        world.rehearsal.inspect(LINE, next(stream))
        world.parts += 1
        u = fate.random()
        free = [i for i in range(len(slow)) if i not in due]
        if u < args.never_share:
            if world.inspector.claim(LINE) is not None:
                world.inspector.escalate_held("unclear part: never labeled in this run")
                never += 1
        elif u < args.never_share + args.late_share and free:
            if slow[free[0]].claim(LINE) is not None:
                due[free[0]] = world.parts + args.late_by
        else:
            world.labels += world.inspector.drain(LINE)
        for i, when in list(due.items()):
            if world.parts >= when and world.labels < args.bandit_labels:
                slow[i].label_held()
                world.labels += 1
                late += 1
                del due[i]
        world.rehearsal.refresh()
    return {"seed": seed, **bandit_figures(world, args, late=late, never=never)}


def bandit_figures(world: World, args: argparse.Namespace, *, late: int, never: int) -> dict:
    with Session(world.engine) as session:
        parts = session.exec(
            select(Inspection.id, Inspection.arm, Inspection.assignment_p,
                   Inspection.probabilities, Inspection.true_class)
            .where(Inspection.line_id == LINE).order_by(col(Inspection.id))
        ).all()  # fmt: skip
        arms = {
            a.model_version: (a.successes, a.failures)
            for a in session.exec(select(BanditArm).where(BanditArm.line_id == LINE))
        }
        first_blind: dict[int, str] = {}
        for inspection_id, label in session.exec(
            select(Label.inspection_id, Label.label)
            .where(col(Label.model_shown).is_(False))
            .order_by(col(Label.created_at), col(Label.id))
        ):
            first_blind.setdefault(int(inspection_id), label)
        state = deployments.all_states(session)[LINE]
    # P(the better version decides) at each part, from the stored assignment probability
    p_better = [p if arm == "candidate" else 1.0 - p for _, arm, p, _, _ in parts]
    last = parts[-args.last :]
    better_last = sum(1 for _, arm, _, _, _ in last if arm == "candidate")
    expected = {CHAMPION: [0, 0], CANDIDATE: [0, 0]}  # rewards the labels should have given
    for inspection_id, arm, _, probabilities, _ in parts:
        label = first_blind.get(int(inspection_id))
        if label is None:
            continue
        version = CANDIDATE if arm == "candidate" else CHAMPION
        agreed = (probabilities["ok"] >= 0.5) == (label == "ok")
        expected[version][0 if agreed else 1] += 1
    return {
        "parts": len(parts),
        "labels": world.labels,
        "late": late,
        "never": never,
        "share_last": better_last / len(last),
        "p_better_last": statistics.fmean(p_better[-args.last :]),
        "p_better_final": state.bandit_candidate_p,
        "min_p_worse": min(1.0 - p for p in p_better),
        "arms": arms,
        "rewards_exact": all(tuple(expected[v]) == arms[v] for v in (CHAMPION, CANDIDATE)),
        "rewarded": sum(s + f for s, f in arms.values()),
        "labeled_parts": len(first_blind),
    }


# -- the step's fail rule, on its own (no database)


@dataclass(frozen=True)
class LooksResult:
    target: float
    rate: float
    fail_fixed: float  # P(the step fails before it passes), the canary's rule
    fail_sprt: float  # the same with the live audit test's SPRT as the fail rule
    labels_to_pass: float | None  # median, among runs that pass
    labels_to_fail_fixed: float | None  # median, among runs that fail
    labels_to_fail_sprt: float | None


def _first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True in each row, or the row length when there is none."""
    return np.where(mask.any(axis=1), mask.argmax(axis=1), mask.shape[1])


@functools.cache
def boundaries(target: float, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """For n = 1..max_n: the fewest errors whose one-sided lower bound is above the target
    (the canary's fail; n + 1 if none), and the most whose upper bound is within it (-1: none).
    Both bounds grow with the errors, so a binary search per n, all n at once."""
    n = np.arange(1, max_n + 1)
    lo, hi = np.ones(max_n, dtype=np.int64), n + 1
    while (lo < hi).any():
        mid = (lo + hi) // 2
        above = clopper_pearson_lower_array(np.minimum(mid, n), n) > target
        hi, lo = np.where(above & (lo < hi), mid, hi), np.where(~above & (lo < hi), mid + 1, lo)
    fail = lo
    lo, hi = np.full(max_n, -1, dtype=np.int64), n.copy()
    while (lo < hi).any():
        mid = (lo + hi + 1) // 2
        within = clopper_pearson_upper_array(np.clip(mid, 0, n), n) <= target
        lo, hi = np.where(within & (lo < hi), mid, lo), np.where(~within & (lo < hi), mid - 1, hi)
    return fail, lo


def step_looks(
    target: float, rate: float, min_labels: int, *, sims: int, max_n: int, seed: int
) -> LooksResult:
    """One side of one canary step, judged after every label as `after_label` does: it
    passes at the first n >= min_labels whose upper bound is within the target, fails at the
    first n whose lower bound is above it; the SPRT column swaps in the live audit test."""
    fail_at, pass_at = boundaries(target, max_n)
    n = np.arange(1, max_n + 1)
    errors = np.cumsum(np.random.default_rng(seed).random((sims, max_n)) < rate, axis=1)
    passes = _first((errors <= pass_at) & (n >= min_labels))
    fails = _first(errors >= fail_at)
    sprt = _first(audit_log_likelihood_ratio(errors, n, target) >= math.log(1 / 0.05))
    fixed_failed = fails < passes
    sprt_failed = sprt < passes
    passed = ~fixed_failed & (passes < max_n)

    def median(values: np.ndarray) -> float | None:
        return float(np.median(values + 1)) if values.size else None

    return LooksResult(
        target=target,
        rate=rate,
        fail_fixed=float(fixed_failed.mean()),
        fail_sprt=float(sprt_failed.mean()),
        labels_to_pass=median(passes[passed]),
        labels_to_fail_fixed=median(fails[fixed_failed]),
        labels_to_fail_sprt=median(sprt[sprt_failed]),
    )


def print_fail_rule(args: argparse.Namespace) -> None:
    print(
        "\n## fail-rule: one side of one canary step, judged after every label (no database; "
        f"{args.looks_sims} runs per row, step min labels {args.step_min_labels}); fail = the "
        "one-sided 95% lower bound above the target (the canary's rule) vs the live audit "
        "test's SPRT (factor 3, 5% false alarm)"
    )
    print("| target | true rate | P(fail before pass), canary rule | P(fail before pass), SPRT "
          "| median labels to pass | median labels to fail, canary rule | ... SPRT |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for target in (args.max_escape_rate, 0.005):
        max_n = 3000 if target >= 0.01 else 12000
        sims = args.looks_sims if target >= 0.01 else max(args.looks_sims // 4, 500)
        for multiple in (0.05, 0.25, 0.5, 0.75, 1.0, 2.0, 3.0):
            r = step_looks(target, multiple * target, args.step_min_labels, sims=sims,
                           max_n=max_n, seed=int(1000 * multiple))  # fmt: skip
            print(
                f"| {pct(target)} | {pct(r.rate, 3)} ({multiple:g} x) | {pct(r.fail_fixed, 1)} | "
                f"{pct(r.fail_sprt, 1)} | {r.labels_to_pass or '-'} | "
                f"{r.labels_to_fail_fixed or '-'} | {r.labels_to_fail_sprt or '-'} |"
            )


# -- the bandit's policy on its own (no database)


def bandit_policy_share(seed: int, args: argparse.Namespace) -> float:
    """The product's `bandit_probability` recomputed after every label (labels at once, none
    lost): the better version's share of the last `--last` of `--bandit-labels` decisions."""
    better, worse = args.accuracies
    rng = random.Random(f"policy-{seed}")
    arms = {CANDIDATE: [0, 0], CHAMPION: [0, 0]}
    decided = []
    for _ in range(args.bandit_labels):
        p = bandit_probability(
            (arms[CHAMPION][0], arms[CHAMPION][1]),
            (arms[CANDIDATE][0], arms[CANDIDATE][1]),
            args.exploration,
        )
        arm = CANDIDATE if rng.random() < p else CHAMPION
        decided.append(arm)
        right = rng.random() < (better if arm == CANDIDATE else worse)
        arms[arm][0 if right else 1] += 1
    return sum(a == CANDIDATE for a in decided[-args.last :]) / args.last


def print_bandit_policy(shares: list[float], args: argparse.Namespace) -> None:
    print(
        f"\n## bandit-policy: the same bandit probability without the database, "
        f"{len(shares)} runs of {args.bandit_labels} labels, every label at once"
    )
    at_target = sum(s >= 0.8 for s in shares) / len(shares)
    quantiles = np.quantile(shares, [0.05, 0.25, 0.5, 0.75])
    print(
        f"share to the better over the last {args.last}: mean {pct(statistics.fmean(shares), 1)}"
        f", quantiles 5/25/50/75% {' / '.join(pct(q, 1) for q in quantiles)}, min "
        f"{pct(min(shares), 1)}; runs at >= 80%: {pct(at_target, 1)}"
    )


# -- printing


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):g}, min {min(values):g}, max {max(values):g}"


def print_header(args: argparse.Namespace) -> None:
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    print(f"# {command}")
    print(
        f"# line: targets escape <= {pct(args.max_escape_rate)}, false reject <= "
        f"{pct(args.max_false_reject_rate)}, gate min labels {args.min_labels} a side, "
        f"thresholds 0.98/0.98, audit rate {pct(args.audit_rate)}; canary: steps 5/25/50/100%, "
        f"{args.step_min_labels} labels a side per step, candidate audit rate "
        f"{pct(args.candidate_audit_rate)}; defect rate {pct(args.defect_rate)}; "
        f"inspectors label blind with the true class; tick {args.tick} parts"
    )
    d = args.defect_rate
    ch, good = champion(args).behaviour, candidate(args).behaviour
    bad = candidate(args).by_variant[NEW_VARIANT]
    print(
        f"# versions (nominal, against the truth): champion escape {pct(ch.escape_rate(d))} "
        f"false reject {pct(ch.false_reject_rate(d))}; candidate on standard parts escape "
        f"{pct(good.escape_rate(d))} false reject {pct(good.false_reject_rate(d))}, on the new "
        f"kind of part escape {pct(bad.escape_rate(d))} false reject "
        f"{pct(bad.false_reject_rate(d))}; the shadow phase and canary-good see standard parts "
        f"only, canary-worse {pct(args.new_share, 0)} of the new kind"
    )


def print_canary_worse(results: list[dict[str, Any]]) -> None:
    print("\n## canary-worse: a candidate much worse on a new kind of part, at partial")
    print("| seed | shadow parts/labels | rolled back by | blind labels of its decisions "
          "at rollback | labels given in canary | parts | its decisions | its auto-passed | "
          "escapes (audited) | its escape rate (truth) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    labels, escapes = [], []
    for r in results:
        if "run" not in r:
            print(f"| {r['seed']} | {r['shadow_parts']}/{r['shadow_labels']} | "
                  f"{r.get('outcome')} |||||||")  # fmt: skip
            continue
        run: CanaryRun = r["run"]
        t: CandidateTruth = r["truth"]
        by = run.rolled_back_by or ("NOT ROLLED BACK (cap)" if run.capped else "-")
        print(
            f"| {r['seed']} | {r['shadow_parts']}/{r['shadow_labels']} | {by} | "
            f"{run.rollback_labels} | {run.labels} | {run.parts} | {t.decided} | "
            f"{t.auto_passed} | {t.escapes} ({t.escapes_audited}) | "
            f"{pct(t.escapes / t.auto_passed if t.auto_passed else None)} |"
        )
        if run.rollback_labels is not None:
            labels.append(run.rollback_labels)
            escapes.append(t.escapes)
    print(f"blind labels until rollback: {summary(labels)}; escapes before it: {summary(escapes)}")
    for r in results:
        if "run" in r and r["run"].rollback_reason:
            print(f"  seed {r['seed']}: {r['run'].rollback_reason[:300]}")


def false_rollback(run: CanaryRun) -> str:
    if run.rolled_back_by is None:
        return "none"
    return f"FALSE ROLLBACK by {run.rolled_back_by}: {(run.rollback_reason or '')[:120]}"


def finalized(run: CanaryRun) -> str:
    if not run.finalized:
        return f"no ({run.finalize_refusals} refusals)" if run.finalize_refusals else "no"
    if not run.finalize_refusals:
        return "yes, at once"
    parts, labels = run.finalize_wait or (0, 0)
    return f"yes, after {run.finalize_refusals} refusals, {parts} parts / {labels} labels later"


def print_canary_good(results: list[dict[str, Any]]) -> None:
    print("\n## canary-good: a candidate as good as the champion, every step on evidence")
    print("| seed | shadow parts/labels | steps passed | rollback | finalized | "
          "labels per step (blind, its decisions) | parts per step | labels given in canary | "
          "its escapes / auto-passed (truth) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "run" not in r:
            print(f"| {r['seed']} | {r['shadow_parts']}/{r['shadow_labels']} | "
                  f"{r.get('outcome')} ||||||")  # fmt: skip
            continue
        run: CanaryRun = r["run"]
        t: CandidateTruth = r["truth"]
        steps = run.steps
        print(
            f"| {r['seed']} | {r['shadow_parts']}/{r['shadow_labels']} | "
            f"{sum(s.outcome == 'pass' for s in steps)} of 4 | "
            f"{false_rollback(run)}"
            f"{' (capped)' if run.capped else ''} | {finalized(run)} | "
            f"{' / '.join(str(s.labels) for s in steps)} | "
            f"{' / '.join(str(s.parts) for s in steps)} | {run.labels} | "
            f"{t.escapes}/{t.auto_passed} |"
        )
    for r in results:
        if "run" in r and r["run"].finalize_refused:
            print(f"  seed {r['seed']}, first finalize refusal: {r['run'].finalize_refused[:400]}")


def print_bandit(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    better, worse = args.accuracies
    print(
        f"\n## bandit: binary agreement {better:.2f} (candidate) vs {worse:.2f} (champion), "
        f"line at shadow, exploration {args.exploration:g} (floor {args.exploration / 2:g} "
        f"each), {pct(args.late_share, 0)} of labels {args.late_by} parts late, "
        f"{pct(args.never_share, 0)} never"
    )
    print(f"| seed | labels | parts | late | never | share to the better, last {args.last} "
          "decisions | mean P(better) there | P(better) at the end | lowest P(worse) ever | "
          "rewards (s/f) champion, candidate | rewards == blind labels of decided parts "
          "|")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        arms = r["arms"]
        print(
            f"| {r['seed']} | {r['labels']} | {r['parts']} | {r['late']} | {r['never']} | "
            f"{pct(r['share_last'], 1)} | {pct(r['p_better_last'], 1)} | "
            f"{pct(r['p_better_final'], 1)} | {pct(r['min_p_worse'], 2)} | "
            f"{arms[CHAMPION]}, {arms[CANDIDATE]} | "
            f"{'yes' if r['rewards_exact'] else 'NO'} ({r['rewarded']} of {r['labeled_parts']}) |"
        )
    shares = [r["share_last"] for r in results]
    lowest = min(r["min_p_worse"] for r in results)
    print(f"share to the better over the last {args.last}: "
          f"{summary([round(100 * s, 1) for s in shares])} (%); target >= 80%; "
          f"lowest P(worse) over all seeds {pct(lowest)}")  # fmt: skip


# -- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default="canary-worse,canary-good,bandit,fail-rule")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--defect-rate", type=float, default=0.30)
    p.add_argument("--max-escape-rate", type=float, default=0.03)
    p.add_argument("--max-false-reject-rate", type=float, default=0.05)
    p.add_argument("--min-labels", type=int, default=100)
    p.add_argument("--audit-rate", type=float, default=0.02)
    p.add_argument("--candidate-audit-rate", type=float, default=0.5)
    p.add_argument("--step-min-labels", type=int, default=50)
    p.add_argument("--new-share", type=float, default=0.5)
    p.add_argument("--worse-defect-accuracy", type=float, default=0.5)
    p.add_argument("--tick", type=int, default=20)
    p.add_argument("--max-shadow-parts", type=int, default=5000)
    p.add_argument("--max-canary-parts", type=int, default=60000)
    p.add_argument("--bandit-labels", type=int, default=2000)
    p.add_argument("--accuracies", type=float, nargs=2, default=(0.95, 0.92),
                   metavar=("BETTER", "WORSE"))  # fmt: skip
    p.add_argument("--exploration", type=float, default=0.10)
    p.add_argument("--late-share", type=float, default=0.20)
    p.add_argument("--late-by", type=int, default=50)
    p.add_argument("--never-share", type=float, default=0.05)
    p.add_argument("--slow-inspectors", type=int, default=16)
    p.add_argument("--last", type=int, default=500)
    p.add_argument("--looks-sims", type=int, default=4000)
    p.add_argument("--policy-runs", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2, help="seeds run in parallel processes")
    return p.parse_args()


def run_task(task: tuple[str, int, argparse.Namespace, list[str]]) -> tuple[str, int, Any]:
    kind, seed, args, names = task
    if kind == "canary":
        return kind, seed, run_canaries(seed, args, names)
    if kind == "bandit-policy":
        return kind, seed, bandit_policy_share(seed, args)
    return kind, seed, run_bandit(seed, args)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.ERROR)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    known = {"canary-worse", "canary-good", "bandit", "fail-rule", "bandit-policy"}
    unknown = set(scenarios) - known
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}")
    print_header(args)
    started = time.perf_counter()
    seeds = range(1, args.seeds + 1)
    canaries = [s for s in scenarios if s.startswith("canary-")]
    tasks = [("canary", seed, args, canaries) for seed in seeds if canaries]
    tasks += [("bandit", seed, args, []) for seed in seeds if "bandit" in scenarios]
    if "bandit-policy" in scenarios:
        runs = range(1, args.policy_runs + 1)
        tasks += [("bandit-policy", seed, args, []) for seed in runs]
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            done = pool.map(run_task, tasks, chunksize=1)
    else:
        done = [run_task(task) for task in tasks]
    canary_results = {seed: result for kind, seed, result in done if kind == "canary"}
    bandit_results = [result for kind, _, result in done if kind == "bandit"]
    if "canary-worse" in scenarios:
        print_canary_worse([canary_results[s]["canary-worse"] for s in seeds])
    if "canary-good" in scenarios:
        print_canary_good([canary_results[s]["canary-good"] for s in seeds])
    if bandit_results:
        print_bandit(bandit_results, args)
    policy_shares = [result for kind, _, result in done if kind == "bandit-policy"]
    if policy_shares:
        print_bandit_policy(policy_shares, args)
    if "fail-rule" in scenarios:
        print_fail_rule(args)
    print(f"\n(all scenarios: {time.perf_counter() - started:.0f} s wall, {args.jobs} jobs)")


if __name__ == "__main__":
    main()
