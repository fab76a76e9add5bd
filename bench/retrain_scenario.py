"""Issue 12's scenario: the lighting drops, the line stops deciding, inspectors label the dark
parts, the plant's labels retrain the model, and the retrained version earns its way back on
shadow evidence. Measured against the truth; prints, asserts nothing.

Everything runs in this process through the service's own parts, as `bench/drift_scenarios.py`
wires them (its `LineRun`: SQLite in a temp folder, the default weights through the
`MicroBatcher`, `InspectionPipeline.submit`, the image gate, the line monitor evaluated every
10 parts, the review queue), with two differences: the pipeline gets the app's `Rollout`
(``rollout=``), so a shadow candidate runs beside the champion and every version's answer is
written as a `ModelPrediction`; and the image store keeps the bytes of the parts received from
the lighting drop on (the export reads them back), none before.

1. Warm-up at ``shadow`` on a plant-like stream (``--defect-share`` defective, the four defect
   classes equally), a scripted inspector labeling blind with the true class; the line is
   raised to ``partial`` at the recommended thresholds once they pass the gate
   (drift_scenarios' `warm_up`, at its ``--quick`` targets, lowered from the product's; at the
   raise it re-baselines the line's drift tests on the warm-up, unless ``--no-rebaseline``).
2. ``--lead-in`` clean parts at partial, then every image x0.6 (drift_tests' `darken`) until
   the monitor stops automation (at most ``--after`` parts): the part at which it stopped, the
   alarm, the dark parts auto-decided and the escapes shipped.
3. The alarm left the line at ``assist`` (the model's answer shown to the inspector, so its
   labels are not blind). The supervisor lowers it to ``shadow`` so that the inspectors label
   every part blind, and ``--label-parts`` dark parts run so.
4. `inspect_app.export.export_to_folder` writes the line's labeled parts received since the
   stop (`Line.evidence_since`, which the alarm moved to its time).
5. Base data: ``inspect-app data generate`` (``--base-n`` images, seed ``--base-seed``, used
   nowhere else). The fine-tune is the CLI, as a person would run it: ``inspect-app train
   --init-from <current version> --data BASE --data EXPORT --plant-weight W --distill-weight D
   --register --shadow-on <line> --as sam`` (the exact command is printed); the bench then
   refreshes its rollout so the candidate runs.
6. ``--shadow-parts`` more dark parts at shadow, labeled blind, both versions running.
   `deployments.comparison` as the API/UI show it (each version's gate verdict at partial at
   the line's thresholds on its own evidence; McNemar on the parts both ran on); because that
   champion evidence has no start date (it includes the clean warm-up), the same comparison
   restricted to the shadow phase (`evidence.compare_versions(since=)`) is printed too, and
   each version's recommended thresholds from its shadow-phase evidence
   (`evidence.recommendation.recommend_thresholds`, the line's targets).
6b. The supervisor promotes the candidate (`deployments.promote`, shadow -> canary): its own
   thresholds are recommended on its own shadow evidence (`evidence.recommend_on_evidence`,
   the fixed-sequence walk) and its gate judged at them, beside the gate at the line's; then
   finalizes it (`deployments.finalize`): the thresholds become the line's (event
   ``line_thresholds``). ``--after-parts`` more dark parts run at shadow with the retrained
   version deciding (the line's raise judges its champion's own decided parts), then the
   supervisor asks for ``partial`` at the line's (now the retrained version's) thresholds
   through `lines.change_automation`, gated as always: allowed or refused, with the reason.
7. Fresh test sets rendered with seeds used nowhere else: ``--test-n`` dark parts (x0.6) and
   ``--test-n`` normal parts, half defective (the defect classes equally) so both sides have
   enough errors to count. For each version: escape rate (defective among auto-passed),
   false-reject rate (ok among auto-failed), coverage (auto-decided share), binary accuracy at
   P(ok) = 0.5, at (a) the line's thresholds (the warm-up's raise) and (b) each version's own
   recommendation from the shadow evidence. The escape and false-reject rates at the test's
   50% defect share are also re-weighted to the plant's ``--defect-share`` (per-class pass/fail
   rates are what a test set measures; the rates a line sees depend on its mix). At each
   version's recommended thresholds the escape rate and the coverage also get exact
   (Clopper-Pearson) 95% intervals, and old and new are compared paired on the same parts
   with McNemar's exact test: on the defective parts (escaped or not) and on all parts
   (auto-decided or not).

Run: ``.venv/bin/python bench/retrain_scenario.py`` (see ``--help``; 10-15 min on 2 busy cores
at the defaults, the fine-tune 4-7 of them; with 1,500 shadow parts the candidate had 32 of
the 50 would-be auto-failed labels the gate needs, hence 2,600).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import json
import logging
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from drift_scenarios import (  # bench/ helpers: the plant-like stream and the warm-up
    LINE,
    LineRun,
    PartStream,
    Phase,
    describe_acted,
    new_line_database,
    render_part,
    warm_up,
)
from drift_tests import darken
from scipy.stats import binomtest
from shadow_to_partial import pct
from sqlmodel import Session, col, select

from data.synth import class_schedule, image_seeds
from inspect_app.api.app import _gate, _monitor, _rollout
from inspect_app.automation import recommend_for_line
from inspect_app.domain import DEFECT_CLASSES, NEVER, AutomationLevel, DefectClass
from inspect_app.evidence.gate import automated_masks
from inspect_app.evidence.recommendation import recommend_thresholds
from inspect_app.export import ExportRequest, export_to_folder
from inspect_app.inference import MicroBatcher
from inspect_app.lines import AutomationRefused, change_automation
from inspect_app.metrics import ServiceMetrics
from inspect_app.pipeline import InspectionPipeline
from inspect_app.rollout import deployments
from inspect_app.rollout.evidence import compare_versions, line_targets
from inspect_app.rollout.policy import paired_comparison
from inspect_app.rollout.registry import checkpoint_path, get_version
from inspect_app.storage.images import LocalImageStore, sha256_of
from inspect_app.storage.tables import Event, Line
from inspect_app.timeutil import utcnow
from models import DEFAULT_WEIGHTS
from models.predictor import Predictor

REPO = Path(__file__).resolve().parent.parent
INSPECT_APP = Path(sys.executable).parent / "inspect-app"
# Seeds used nowhere else (drift_scenarios uses 1000-4999 for its streams, training data 1,
# the tests 777/778/90210, the gate's tuning 31337 and 4242; 12_004/12_005 are spare test seeds,
# 12_010/12_011 were the fine-tune options' tuning sets).
SEED_WARMUP, SEED_DRIFT = 12_100, 12_200
SEED_BASE, SEED_TEST_DARK, SEED_TEST_NORMAL = 12_001, 12_002, 12_003

logger = logging.getLogger("retrain_scenario")


class KeepWhenAsked(LocalImageStore):
    """Keeps an image's bytes only while `keep` is set: the export needs the dark parts, and
    nothing reads the thousands of warm-up parts back."""

    keep = False

    def put(self, data: bytes, session: Session | None = None) -> str:
        return super().put(data, session) if self.keep else sha256_of(data)


class RolloutLineRun(LineRun):
    """`LineRun` with the app's rollout in the pipeline (shadow candidates run) and a store
    that keeps the bytes the export will read."""

    def __init__(
        self, db: Path, predictor: Predictor, batcher: MicroBatcher, seed: int, label_every: int
    ) -> None:
        super().__init__(db, predictor, batcher, seed, label_every)
        self.metrics = ServiceMetrics()
        gate, profile = _gate(self.settings, predictor)
        self.rollout = _rollout(
            self.settings, self.engine, predictor, batcher, profile, gate, self.metrics
        )
        self.monitor = _monitor(self.engine, self.rollout, predictor, self.metrics)
        self.store = KeepWhenAsked(db.parent / "images")
        self.pipeline = InspectionPipeline(
            engine=self.engine,
            store=self.store,
            batcher=batcher,
            metrics=self.metrics,
            max_image_bytes=self.settings.max_image_bytes,
            max_image_pixels=self.settings.max_image_pixels,
            rng=random.Random(seed),
            gate=gate,
            monitor=None,  # evaluated by LineRun.run, synchronously
            rollout=self.rollout,
        )

    def close(self) -> None:
        self.rollout.stop()  # the candidate's batcher, and the shared one
        super().close()


# --------------------------------------------------------------------------------------------
# Test sets


@dataclass
class TestSet:
    name: str
    images: list[np.ndarray]
    defective: np.ndarray  # bool per image


def render_test_set(name: str, n: int, seed: int, factor: float | None) -> TestSet:
    mix = {"ok": 0.5} | {c: 0.5 / len(DEFECT_CLASSES) for c in DEFECT_CLASSES}
    classes = class_schedule(n, seed, mix)
    images, defective = [], []
    for s, c in zip(image_seeds(n, seed), classes, strict=True):
        image = render_part(s, c).image
        images.append(darken(image, factor) if factor is not None else image)
        defective.append(c != DefectClass.OK.value)
    return TestSet(name, images, np.array(defective, dtype=bool))


def p_ok_of(predictor: Predictor, images: list[np.ndarray], batch: int = 32) -> np.ndarray:
    ok = predictor.class_names.index(DefectClass.OK.value)
    out = []
    for start in range(0, len(images), batch):
        probs = predictor.predict_tensor(predictor.preprocess(images[start : start + batch]))
        out.append(np.asarray(probs)[:, ok])
    return np.concatenate(out).astype(np.float64)


def test_figures(
    p_ok: np.ndarray, defective: np.ndarray, thresholds: tuple[float | None, float | None],
    plant_share: float,
) -> dict[str, Any]:  # fmt: skip
    passed, failed = automated_masks(p_ok, AutomationLevel.PARTIAL, *thresholds)
    esc, fr = int((passed & defective).sum()), int((failed & ~defective).sum())
    # per-class rates, then re-weighted to the plant's defect share
    d, o = max(int(defective.sum()), 1), max(int((~defective).sum()), 1)
    miss, ok_pass = (passed & defective).sum() / d, (passed & ~defective).sum() / o
    catch, ok_fail = (failed & defective).sum() / d, (failed & ~defective).sum() / o
    pi = plant_share
    plant_passed = miss * pi + ok_pass * (1 - pi)
    plant_failed = catch * pi + ok_fail * (1 - pi)
    return {
        "passed": int(passed.sum()),
        "escapes": esc,
        "failed": int(failed.sum()),
        "false_rejects": fr,
        "escape_rate": esc / passed.sum() if passed.sum() else None,
        "false_reject_rate": fr / failed.sum() if failed.sum() else None,
        "coverage": float((passed | failed).mean()),
        "plant_escape_rate": miss * pi / plant_passed if plant_passed else None,
        "plant_false_reject_rate": ok_fail * (1 - pi) / plant_failed if plant_failed else None,
        "plant_coverage": plant_passed + plant_failed,
        "binary_accuracy": float(((p_ok < 0.5) == defective).mean()),
    }


def rate(value: float | None) -> str:
    return "-" if value is None else pct(value)


def exact(k: int, n: int) -> str:
    """k/n with its exact (Clopper-Pearson) 95% interval."""
    if n == 0:
        return f"{k}/0"
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return f"{k}/{n} = {pct(k / n)} [{pct(ci.low)}, {pct(ci.high)}]"


def paired_at_own(
    probs: dict[str, np.ndarray],
    defective: np.ndarray,
    recs: dict[str, tuple[float | None, float | None]],
) -> str:
    """McNemar old vs new, each at the thresholds in `recs`: escapes on the defective parts,
    auto-decisions on all."""
    masks = {n: automated_masks(probs[n], AutomationLevel.PARTIAL, *recs[n]) for n in probs}
    escaped = {n: masks[n][0] & defective for n in probs}
    decided = {n: masks[n][0] | masks[n][1] for n in probs}
    esc = paired_comparison(~escaped["old"][defective], ~escaped["new"][defective])
    cov = paired_comparison(decided["old"], decided["new"])
    return (
        f"McNemar old vs new at those thresholds: escapes on {int(defective.sum())} "
        f"defective parts: only old {esc.candidate_only}, only new {esc.champion_only}, exact "
        f"p = {esc.p_value:.3g}; auto-decided on {defective.size} parts: only old "
        f"{cov.champion_only}, only new {cov.candidate_only}, exact p = {cov.p_value:.3g}"
    )


# --------------------------------------------------------------------------------------------


def run_cli(argv: list[str], threads: int) -> str:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
        raise SystemExit(f"command failed ({done.returncode}): {shlex.join(argv)}")
    print(f"  ({took:.0f} s)")
    return done.stdout


def raise_to_partial(
    run: LineRun, what: str, pass_threshold: float | str | None,
    fail_threshold: float | str | None,
) -> tuple[float | None, float | None] | None:  # fmt: skip
    """The supervisor's gated raise (None keeps the line's thresholds); the thresholds the
    line then runs, or None when the gate refused."""
    with Session(run.engine, expire_on_commit=False) as session:
        try:
            line = change_automation(
                session, LINE, level=AutomationLevel.PARTIAL, pass_threshold=pass_threshold,
                fail_threshold=fail_threshold, actor=run.supervisor,
                reason=f"bench: the retrained version {what}",
            )  # fmt: skip
        except AutomationRefused as refused:
            print(f"  raise to partial {what} REFUSED: {refused.verdict.reason}")
            return None
    print(f"  raise to partial {what} ALLOWED: line {line.level} at pass "
          f"{line.pass_threshold} / fail {line.fail_threshold}")  # fmt: skip
    return line.pass_threshold, line.fail_threshold


def line_of(run: LineRun) -> Line:
    return run.line()


def deployments_events(session: Session, kind: str) -> list[Event]:
    return list(
        session.exec(
            select(Event).where(Event.line_id == LINE, Event.kind == kind).order_by(col(Event.id))
        )
    )


def deployment_summary(result: dict[str, Any] | None) -> None:
    if result is None:
        print("  no candidate")
        return
    for role in ("champion", "candidate"):
        r = result[role]
        print(f"  {role:9s} {r['model_version']}: labeled {r['n_labeled']}, passes gate "
              f"{r['passes_gate']}, coverage {pct(r['coverage'])}, escape "
              f"{r['escape']['errors']}/{r['escape']['n']} (bound "
              f"{pct(r['escape']['upper_bound'])}), false-reject "
              f"{r['false_reject']['errors']}/{r['false_reject']['n']} (bound "
              f"{pct(r['false_reject']['upper_bound'])}); {r['gate_reason']}")  # fmt: skip
    p = result["paired"]
    print("  paired (binary at P(ok)=0.5): " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items()))  # fmt: skip


def report_of(rep: Any) -> dict[str, Any]:
    return deployments._report(rep)


async def amain(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.torch_threads)
    started = time.monotonic()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="retrain-scenario-"))
    work.mkdir(parents=True, exist_ok=True)
    print("retrain scenario (issue 12)")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"sizes: defect share {pct(args.defect_share)}; lead-in {args.lead_in}, drift at most "
          f"{args.after}; labeled dark parts {args.label_parts}; base data {args.base_n} "
          f"(seed {args.base_seed}); fine-tune seed {args.train_seed}, {args.epochs} epochs "
          f"(patience {args.patience}), "
          f"plant weight {args.plant_weight}, distill weight {args.distill_weight}, base share "
          f"{'the CLI default' if args.base_share is None else args.base_share}, class mix "
          f"{'kept at the base data' if args.keep_prior else 'as weighted'}, lr default (3e-4 "
          f"from a parent); shadow dark parts {args.shadow_parts}; test sets {args.test_n} dark "
          f"+ {args.test_n} normal (seeds {args.test_seeds}; half defective); torch threads "
          f"{args.torch_threads}, training threads {args.train_threads}; re-baseline at the "
          f"raise {args.rebaseline}")  # fmt: skip
    print(f"line {LINE!r} targets (drift_scenarios --quick's, lowered from the product's): "
          f"max_escape_rate {pct(args.max_escape_rate)} (default 0.50%), max_false_reject_rate "
          f"{pct(args.max_false_reject_rate)} (default 2.00%), min_labels {args.min_labels} "
          f"(default 200); audit_rate at partial {pct(args.audit_rate)}; "
          f"work dir {work}")  # fmt: skip

    predictor = Predictor.from_checkpoint(args.weights)
    batcher = MicroBatcher(predictor, 16, 5.0)
    batcher.start()
    db = work / "line.db"
    new_line_database(db, args)
    run = RolloutLineRun(db, predictor, batcher, SEED_WARMUP, args.label_every)
    try:
        # 1. warm-up
        print("\n== 1. warm-up at shadow (clean parts)")
        raised = await warm_up(run, PartStream(SEED_WARMUP, args.defect_share), args)
        if raised is None:
            return
        thresholds = (raised.pass_threshold, raised.fail_threshold)
        # 2. lighting x0.6
        stream = PartStream(SEED_DRIFT, args.defect_share)
        lead = await run.run(stream, args.lead_in, None, Phase())
        print(f"\n== 2. {args.lead_in} clean parts at partial (alarms that acted: "
              f"{describe_acted(lead.acted)}), then lighting x0.6")  # fmt: skip
        run.store.keep = True
        drift = await run.run(stream, args.after, "lighting", Phase(), stop_when_lowered=True)
        auto = [o for o in drift.outcomes if o.auto]
        print(f"stopped: {drift.stopped_at is not None} at dark part {drift.stopped_at} by "
              f"{drift.stopped_by}; dark parts auto-decided {len(auto)} (last at part "
              f"{max((o.index for o in auto), default=0)}), escapes shipped "
              f"{drift.auto_passed_defective()}; gate refusals "
              f"{sum(o.gated for o in drift.outcomes)}; alarms: {describe_acted(drift.acted)}; "
              f"line now {line_of(run).level}")  # fmt: skip
        stopped_line = line_of(run)
        since = stopped_line.evidence_since
        # 3. blind labeling of dark parts
        with Session(run.engine, expire_on_commit=False) as session:
            change_automation(
                session, LINE, level=AutomationLevel.SHADOW, actor=run.supervisor,
                reason="bench: lighting changed; inspectors label every part blind for retraining",
            )  # fmt: skip
        labeled = await run.run(stream, args.label_parts, "lighting", Phase())
        print(f"\n== 3. line at shadow: {len(labeled.outcomes)} dark parts labeled blind "
              f"({sum(o.defective for o in labeled.outcomes)} defective; refused by the image "
              f"gate {sum(o.gated for o in labeled.outcomes)}), "
              f"{labeled.seconds:.0f} s")  # fmt: skip
        # 4. export
        export = work / "export"
        with Session(run.engine) as session:
            summary = export_to_folder(
                session, run.store, ExportRequest(LINE, since=since, labeled_only=True), export
            )
        print(f"\n== 4. export since {since} -> {export}")
        for text in summary.lines():
            print(f"  {text}")
        # 5. base data, fine-tune, register, shadow
        base = work / f"base-{args.base_seed}"
        gen = [str(INSPECT_APP), "data", "generate", "--out", str(base), "--n",
               str(args.base_n), "--seed", str(args.base_seed)]  # fmt: skip
        print(f"\n== 5. base data: {shlex.join(gen)}")
        run_cli(gen, args.train_threads)
        with Session(run.engine) as session:
            parent = deployments.view(session, LINE, run.rollout.default_version)
        parent_version = run.rollout.default_version
        out = work / "retrained.pt"
        train = [str(INSPECT_APP), "train", "--init-from", parent_version, "--data", str(base),
                 "--data", str(export), "--plant-weight", str(args.plant_weight),
                 "--distill-weight", str(args.distill_weight),
                 *(["--base-share", str(args.base_share)] if args.base_share is not None else []),
                 "--keep-prior" if args.keep_prior else "--no-keep-prior", "--register",
                 "--shadow-on", LINE, "--as", "sam", "--out", str(out), "--epochs",
                 str(args.epochs), "--patience", str(args.patience), "--seed",
                 str(args.train_seed), "--data-seed",
                 str(args.base_seed), "--threads", str(args.train_threads),
                 "--notes", "issue 12 scenario: the lighting dropped 40%",
                 "--data-dir", str(work), "--database-url",
                 run.settings.resolved_database_url]  # fmt: skip
        print(f"fine-tune: {shlex.join(train)}")
        stdout = run_cli(train, args.train_threads)
        print("\n".join(f"  | {x}" for x in stdout.strip().splitlines()[-14:]))
        run.rollout.refresh()
        with Session(run.engine) as session:
            view = deployments.view(session, LINE, run.rollout.default_version)
            candidate = view.candidate
            assert candidate is not None, "the train command started no shadow candidate"
            version = get_version(session, candidate)
            cand_path = checkpoint_path(work, version)
            print(f"registered {candidate} (parent {version.parent_version}); deployment: mode "
                  f"{view.mode}, champion {view.champion}; was {parent.mode}")  # fmt: skip
            print(f"  lineage: {json.dumps(version.lineage)[:600]}")
        run.rollout.warm(candidate)
        # 6. shadow on dark parts
        shadow_since = utcnow()
        shadow = await run.run(stream, args.shadow_parts, "lighting", Phase())
        print(f"\n== 6. shadow: {len(shadow.outcomes)} dark parts labeled blind "
              f"({sum(o.defective for o in shadow.outcomes)} defective; refused by the image "
              f"gate {sum(o.gated for o in shadow.outcomes)}, which the evidence leaves out), "
              "both versions running, "
              f"{shadow.seconds:.0f} s; alarms acted {describe_acted(shadow.acted)}")  # fmt: skip
        with Session(run.engine) as session:
            line = session.get(Line, LINE)
            assert line is not None
            print(f"deployments.comparison (as the API/UI; the line at {line.level}, judged at "
                  f"partial at its thresholds pass {line.pass_threshold} / fail "
                  f"{line.fail_threshold}; no start date):")  # fmt: skip
            deployment_summary(deployments.comparison(session, LINE, run.rollout.default_version))
            compared = compare_versions(session, line, parent_version, candidate,
                                        since=shadow_since)  # fmt: skip
            print("the same on the shadow phase only (compare_versions(since=shadow start)):")
            deployment_summary({
                "champion": report_of(compared.champion),
                "candidate": report_of(compared.candidate),
                "paired": {**asdict(compared.paired),
                           "champion_accuracy": compared.paired.champion_accuracy,
                           "candidate_accuracy": compared.paired.candidate_accuracy},
            })  # fmt: skip
            targets = line_targets(line)
            recs: dict[str, tuple[float | None, float | None]] = {}
            for name, rep in (("old", compared.champion), ("new", compared.candidate)):
                rec = recommend_thresholds(rep.evidence.p_ok, rep.evidence.human_defect, targets)
                recs[name] = (rec.pass_threshold, rec.fail_threshold)
                print(f"  recommendation for {name} ({rep.model_version}) on its shadow "
                      f"evidence: pass {rec.pass_threshold} / fail {rec.fail_threshold}; "
                      f"{rec.reason}")  # fmt: skip
        # 6b. promote at its own thresholds, finalize, back to partial
        print("\n== 6b. promote (shadow -> canary at its own thresholds), finalize, raise")
        with Session(run.engine, expire_on_commit=False) as session:
            deployments.promote(
                session, LINE, actor=run.supervisor, default_version=run.rollout.default_version,
                reason="bench: the retrained version's shadow evidence", warm=run.rollout.warm,
            )  # fmt: skip
            promoted = deployments.view(session, LINE, run.rollout.default_version)
            event = deployments_events(session, "rollout_promote")[-1]
            assert event.details is not None
            gate = event.details["gate"]
        own = promoted.candidate_thresholds or {}
        # As promoted; with none of its own (too few labels in the line's evidence era: an
        # alarm moves `Line.evidence_since`), the recommendation on the shadow phase above.
        recs["new (promoted)"] = (
            (
                None if own["pass_threshold"] == "never" else own["pass_threshold"],
                None if own["fail_threshold"] == "never" else own["fail_threshold"],
            )
            if own
            else recs["new"]
        )
        theirs = own or "the line's (nothing recommended in the line's evidence era)"
        print(f"  promoted: mode {promoted.mode}, its thresholds {theirs}")
        print(f"  gate at its own thresholds ({gate['source']}, pass {gate['pass_threshold']} / "
              f"fail {gate['fail_threshold']}) on {gate['n_labeled']} blind labels: passed "
              f"{gate['passed']}; escape {gate['escape']['errors']}/{gate['escape']['n']} (bound "
              f"{pct(gate['escape']['upper_bound'])}), false-reject "
              f"{gate['false_reject']['errors']}/{gate['false_reject']['n']} (bound "
              f"{pct(gate['false_reject']['upper_bound'])}), coverage {pct(gate['coverage'])}; "
              f"{gate['reason']}")  # fmt: skip
        at_line = gate["at_line_thresholds"]
        print(f"  the same evidence at the line's pass {at_line['pass_threshold']} / fail "
              f"{at_line['fail_threshold']}: passed {at_line['passed']}; "
              f"{at_line['reason']}")  # fmt: skip
        print(f"  recommendation: {(gate.get('recommendation') or {}).get('reason')}")
        with Session(run.engine, expire_on_commit=False) as session:
            deployments.finalize(
                session, LINE, actor=run.supervisor, default_version=run.rollout.default_version,
                reason="bench: passed at its own thresholds", warm=run.rollout.warm,
            )  # fmt: skip
            changed = deployments_events(session, "line_thresholds")
            line = session.get(Line, LINE)
            assert line is not None
        run.rollout.refresh()
        for e in changed:
            print(f"  event line_thresholds by {e.actor}: {e.details['before']} -> "
                  f"{e.details['after']}; {e.reason}")  # fmt: skip
        print(f"  finalized: champion {candidate}; line {line.level} at pass "
              f"{line.pass_threshold} / fail {line.fail_threshold}")  # fmt: skip
        after = await run.run(stream, args.after_parts, "lighting", Phase())
        print(f"  {len(after.outcomes)} more dark parts at shadow, the retrained version "
              f"deciding, labeled blind ({after.seconds:.0f} s)")  # fmt: skip
        # The supervisor asks for partial at the line's thresholds; refused, at what the
        # line's recommendation (the Evidence page's, on the same evidence) says, gated again.
        final = raise_to_partial(run, "at the line's thresholds", None, None)
        if final is None:
            with Session(run.engine, expire_on_commit=False) as session:
                line = session.get(Line, LINE)
                assert line is not None
                advice = recommend_for_line(session, line).recommendation
            print(f"  the line's recommendation now: {advice.reason}")
            if advice.gate is not None:  # a side that cannot pass is "never"
                final = raise_to_partial(
                    run, "at the recommendation",
                    NEVER if advice.pass_threshold is None else advice.pass_threshold,
                    NEVER if advice.fail_threshold is None else advice.fail_threshold,
                )  # fmt: skip
        if final is not None:
            # what the line runs now, and so what the fresh sets judge it at
            recs["new (promoted)"] = final
        # 7. fresh test sets
        t0 = time.monotonic()
        tests = []
        for dark_seed, normal_seed in args.test_seeds:
            tests += [
                render_test_set(f"dark {dark_seed}", args.test_n, dark_seed, 0.6),
                render_test_set(f"normal {normal_seed}", args.test_n, normal_seed, None),
            ]
        new = Predictor.from_checkpoint(cand_path)
        print(f"\n== 7. fresh test sets, dark x0.6 and normal (rendered in "
              f"{time.monotonic() - t0:.0f} s), each "
              f"{args.test_n} parts, {int(tests[0].defective.sum())} defective")  # fmt: skip
        print("rates at the test's 50% defect share; [plant] = re-weighted to "
              f"{pct(args.defect_share)} defective")  # fmt: skip
        header = (f"{'test':12s} {'version':4s} {'thresholds':22s} {'escape':>16s} "
                  f"{'[plant]':>7s} {'false-rej':>16s} {'[plant]':>7s} {'coverage':>8s} "
                  f"{'[plant]':>7s} {'bin.acc':>7s}")  # fmt: skip
        print(header)
        own_lines = []
        for test in tests:
            probs = {"old": p_ok_of(predictor, test.images), "new": p_ok_of(new, test.images)}
            # What each version decides these parts with: the new one its promoted thresholds
            # whatever the lighting (the line runs them now); the old one, on dark parts, what
            # its dark shadow evidence recommends, and on normal parts the thresholds it ran at
            # before the drift (a dark recommendation would make it look safer on normal
            # parts than it ever was, at a coverage it never had).
            dark = test.name.startswith("dark")
            used = {
                "old": recs["old"] if dark else thresholds,
                "new": recs["new (promoted)"],
            }
            own_lines.append(f"{test.name}:")
            for name in ("old", "new"):
                th = used[name]
                passed, failed = automated_masks(probs[name], AutomationLevel.PARTIAL, *th)
                f = test_figures(probs[name], test.defective, th, args.defect_share)
                why = ("its recommended" if name == "new" or dark
                       else "the line's pre-drift")  # fmt: skip
                within = (
                    f["plant_escape_rate"] is not None
                    and f["plant_escape_rate"] <= args.max_escape_rate
                    and (f["plant_false_reject_rate"] or 0.0) <= args.max_false_reject_rate
                )
                own_lines.append(
                    f"  {name} at {why} pass {th[0]} / fail {th[1]}: escape rate "
                    f"{exact(int((passed & test.defective).sum()), int(passed.sum()))}; "
                    f"coverage {exact(int((passed | failed).sum()), test.defective.size)}; "
                    f"false-reject rate "
                    f"{exact(int((failed & ~test.defective).sum()), int(failed.sum()))}; "
                    f"at the plant's mix: escape {rate(f['plant_escape_rate'])}, false-reject "
                    f"{rate(f['plant_false_reject_rate'])}, coverage "
                    f"{pct(f['plant_coverage'])}: "
                    f"{'within' if within else 'NOT within'} the line's targets"
                )
            own_lines.append("  " + paired_at_own(probs, test.defective, used))
            for label, pick in (("line", None), ("own rec", "rec")):
                for name in ("old", "new"):
                    th = thresholds if pick is None else recs[name]
                    f = test_figures(probs[name], test.defective, th, args.defect_share)
                    named = f"{label} {th[0]}/{th[1]}"
                    print(f"{test.name:12s} {name:4s} {named:22s} "
                          f"{f['escapes']:4d}/{f['passed']:<4d} {rate(f['escape_rate']):>6s} "
                          f"{rate(f['plant_escape_rate']):>7s} {f['false_rejects']:4d}/"
                          f"{f['failed']:<4d} {rate(f['false_reject_rate']):>6s} "
                          f"{rate(f['plant_false_reject_rate']):>7s} {pct(f['coverage']):>8s} "
                          f"{pct(f['plant_coverage']):>7s} "
                          f"{pct(f['binary_accuracy']):>7s}")  # fmt: skip
        print(f"line targets: escape <= {pct(args.max_escape_rate)}, false-reject <= "
              f"{pct(args.max_false_reject_rate)}")  # fmt: skip
        print("\nat the thresholds each version decides with (new: as promoted, else its "
              "shadow-phase recommendation; old: on dark parts its shadow-phase "
              "recommendation, on normal parts the line's pre-drift thresholds), exact 95% "
              "intervals:")  # fmt: skip
        print("\n".join(own_lines))
    finally:
        run.close()
        batcher.stop()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwhole run: {(time.monotonic() - started) / 60:.1f} min")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--defect-share", type=float, default=0.04)
    p.add_argument(
        "--no-rebaseline",
        dest="rebaseline",
        action="store_false",
        help="as drift_scenarios: keep the calibration profile as the drift reference",
    )
    p.add_argument("--lead-in", type=int, default=100)
    p.add_argument("--after", type=int, default=200, help="most dark parts before the stop")
    p.add_argument("--label-parts", type=int, default=800, help="dark parts labeled blind")
    p.add_argument("--shadow-parts", type=int, default=2600, help="dark parts in shadow")
    p.add_argument(
        "--after-parts",
        type=int,
        default=2600,
        help="dark parts at shadow after the finalize, the retrained version deciding",
    )
    p.add_argument("--base-n", type=int, default=1500)
    p.add_argument("--base-seed", type=int, default=SEED_BASE)
    p.add_argument("--train-seed", type=int, default=0, help="train --seed")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--plant-weight", type=float, default=3.0)
    p.add_argument("--distill-weight", type=float, default=1.0, help="train --distill-weight")
    p.add_argument(
        "--base-share",
        type=float,
        default=None,
        help="train --base-share (rehearsal; default: the CLI's, 0.75; 0 turns it off)",
    )
    p.add_argument(
        "--no-keep-prior",
        dest="keep_prior",
        action="store_false",
        help="train --no-keep-prior (the plant's class mix moves the prior)",
    )
    p.add_argument("--test-n", type=int, default=2000, help="parts per test set")
    p.add_argument(
        "--test-seeds",
        type=seed_pair,
        action="append",
        default=None,
        help="DARK,NORMAL test-set seeds, repeatable (default "
        f"{SEED_TEST_DARK},{SEED_TEST_NORMAL})",
    )
    p.add_argument("--label-every", type=int, default=10)
    p.add_argument("--audit-rate", type=float, default=0.02)
    p.add_argument("--max-escape-rate", type=float, default=0.01)
    p.add_argument("--max-false-reject-rate", type=float, default=0.10)
    p.add_argument("--min-labels", type=int, default=50)
    p.add_argument("--warmup-chunk", type=int, default=200)
    p.add_argument("--warmup-max", type=int, default=6000)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--work-dir", type=Path, default=None, help="kept (default: a temp folder)")
    args = p.parse_args()
    args.test_seeds = args.test_seeds or [(SEED_TEST_DARK, SEED_TEST_NORMAL)]
    return args


def seed_pair(text: str) -> tuple[int, int]:
    dark, normal = (int(x) for x in text.split(","))
    return dark, normal


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("inspect_app").setLevel(logging.ERROR)
    asyncio.run(amain(parse_args()))


if __name__ == "__main__":
    main()
