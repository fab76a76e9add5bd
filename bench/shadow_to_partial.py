"""A scripted scenario, not a timed test: a line earns partial automation, and we check the
promise against the truth.

1. Synthetic parts with known truth (``data.synth.generate_dataset``, seeded) are posted over
   HTTP, as a line camera would, to an ``inspect-app serve`` subprocess (a temp data dir,
   SQLite, the bundled weights unless ``--weights``). The line starts at ``shadow``.
2. A scripted inspector drains the review queue through the API (``POST /reviews/claim``,
   ``POST /reviews/{task_id}/label``) with the true class, wrong with probability
   ``--label-error`` (a uniformly chosen other class).
3. The supervisor asks for ``GET /lines/{line}/recommendation`` and raises the line to
   ``partial`` at the recommended thresholds (``PUT /lines/{line}/automation``).
4. More parts flow; the inspector labels the uncertain parts and the blind audits; the live
   audit test may demote the line by itself.
5. Printed: coverage, the measured escape and false-reject rates of the model's own
   decisions against the truth, the gate's bounds at the raise, the live audit figures, and
   how many labels it all took.

The product's defaults (a 0.5% escape target, 200 labels a side) need thousands of labeled
parts, which take a long time to render and inspect on a 2-core machine. The scenario
therefore creates its line with lower targets and a higher audit rate (options below) and
says so in its printout; the statistics are the product's own.

Run: ``.venv/bin/python bench/shadow_to_partial.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from ingest_throughput import free_port, start_service, wait_ready  # bench/ helpers
from sqlmodel import Session

from data.dataset import LabeledImage, load_dataset
from data.synth import SynthConfig, generate_dataset
from inspect_app.accounts import add_camera_key, add_user, issue_token
from inspect_app.domain import CLASS_NAMES, DEFECT_CLASSES, DefectClass, Role
from inspect_app.evidence import rate_estimate
from inspect_app.ingest.base import content_type_for
from inspect_app.ingest.replay import replay_order
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from models import DEFAULT_WEIGHTS

LINE = "scenario"


@dataclass
class Tally:
    """What happened to the parts of one phase, judged against the truth."""

    posted: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    auto_passed: int = 0
    auto_passed_defective: int = 0  # true escapes
    auto_failed: int = 0
    auto_failed_ok: int = 0  # true false rejects
    labels: int = 0
    wrong_labels: int = 0
    tasks_by_reason: Counter[str] = field(default_factory=Counter)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shadow-parts", type=int, default=1200, help="parts seen at shadow")
    p.add_argument("--partial-parts", type=int, default=1200, help="parts seen after the raise")
    p.add_argument("--ok-share", type=float, default=0.8, help="share of good parts on the line")
    p.add_argument("--seed", type=int, default=7, help="data seed (the scenario is repeatable)")
    p.add_argument("--label-error", type=float, default=0.0, help="inspector's error rate")
    p.add_argument("--max-escape-rate", type=float, default=0.03, help="line target (0.005)")
    p.add_argument("--max-false-reject-rate", type=float, default=0.05, help="target (0.02)")
    p.add_argument("--min-labels", type=int, default=100, help="per side (product: 200)")
    p.add_argument("--audit-rate", type=float, default=0.1, help="at partial (product: 0.02)")
    p.add_argument("--label-every", type=int, default=25, help="drain the queue every N parts")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="model checkpoint")
    p.add_argument("--work-dir", type=Path, default=None, help="keep data here (default: temp)")
    return p.parse_args()


def prepare_line(data_dir: Path, args: argparse.Namespace) -> tuple[str, str, str]:
    """The line at shadow with the scenario's targets, a camera key, and the two users' tokens."""
    settings = Settings(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
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
        key = add_camera_key(session, LINE, actor="bench")
        inspector = issue_token(session, add_user(session, "ina", Role.INSPECTOR, "scenario-pw"))
        supervisor = issue_token(session, add_user(session, "sam", Role.SUPERVISOR, "scenario-pw"))
    engine.dispose()
    return key, inspector, supervisor


class Scenario:
    def __init__(
        self, url: str, key: str, inspector: str, supervisor: str, args: argparse.Namespace
    ) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        self.key = key
        self.inspector = {"Authorization": f"Bearer {inspector}"}
        self.supervisor = {"Authorization": f"Bearer {supervisor}"}
        self.args = args
        self.truth: dict[int, str] = {}  # inspection id -> true class, never sent to the service
        self.rng = random.Random(args.seed)

    def post(self, item: LabeledImage, tally: Tally) -> None:
        path = Path(item.path)
        response = self.http.post(
            f"/api/v1/lines/{LINE}/images",
            content=path.read_bytes(),
            headers={"X-Api-Key": self.key, "Content-Type": content_type_for(path) or ""},
            params={"capture_id": path.name},
        )
        response.raise_for_status()
        body = response.json()
        self.truth[body["inspection_id"]] = item.label
        tally.posted += 1
        tally.routes[body["route"]] += 1
        if body["decided_by"] == "model":
            defective = item.label != DefectClass.OK
            if body["decision"] == "pass":
                tally.auto_passed += 1
                tally.auto_passed_defective += defective
            else:
                tally.auto_failed += 1
                tally.auto_failed_ok += not defective

    def label_queue(self, tally: Tally) -> None:
        """The scripted inspector: claim and label until the queue is empty."""
        while True:
            claim = self.http.post(
                "/api/v1/reviews/claim", params={"line": LINE}, headers=self.inspector
            )
            if claim.status_code == 204:
                return
            claim.raise_for_status()
            task = claim.json()
            true_class = self.truth[task["inspection_id"]]
            label = true_class
            if self.rng.random() < self.args.label_error:
                label = self.rng.choice([c for c in CLASS_NAMES if c != true_class])
                tally.wrong_labels += 1
            response = self.http.post(
                f"/api/v1/reviews/{task['task_id']}/label",
                json={"label": label, "duration_ms": 1500},
                headers=self.inspector,
            )
            response.raise_for_status()
            tally.labels += 1
            tally.tasks_by_reason[task["reason"]] += 1

    def run_phase(self, items: list[LabeledImage]) -> Tally:
        tally = Tally()
        for i, item in enumerate(items, start=1):
            self.post(item, tally)
            if i % self.args.label_every == 0:
                self.label_queue(tally)
        self.label_queue(tally)
        return tally

    def get(self, path: str) -> dict:
        response = self.http.get(path, headers=self.supervisor)
        response.raise_for_status()
        return response.json()


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def rate_line(name: str, errors: int, n: int) -> str:
    est = rate_estimate(errors, n)
    return f"{name}: {errors}/{n} = {pct(est.rate)} (95% CI {pct(est.lower)} - {pct(est.upper)})"


def print_phase(title: str, tally: Tally) -> None:
    automated = tally.auto_passed + tally.auto_failed
    print(f"\n== {title}: {tally.posted} parts")
    print(f"routes: {dict(tally.routes)}; labels given: {tally.labels} "
          f"({dict(tally.tasks_by_reason)}), deliberately wrong: {tally.wrong_labels}")  # fmt: skip
    if automated:
        print(f"coverage (auto-decided by the model): {automated}/{tally.posted} = "
              f"{pct(automated / tally.posted)}")  # fmt: skip
        print("measured against the truth:")
        print("  " + rate_line("escape rate (auto-passed, truly defective)",
                               tally.auto_passed_defective, tally.auto_passed))  # fmt: skip
        print("  " + rate_line("false-reject rate (auto-failed, truly ok)",
                               tally.auto_failed_ok, tally.auto_failed))  # fmt: skip


def print_curve(rec: dict) -> None:
    print("coverage-versus-risk (pass side: threshold, share, escapes/n, bound, status):")
    for point in rec["pass_curve"]:
        if point["n"]:
            print(f"  {point['threshold']:<7g} {pct(point['share']):>8} "
                  f"{point['errors']:>4}/{point['n']:<5} {pct(point['upper_bound']):>8}  "
                  f"{point['status']}")  # fmt: skip


def main() -> None:
    args = parse_args()
    if not args.weights.is_file():
        raise SystemExit(f"no model weights at {args.weights} (make weights, or --weights)")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="shadow-to-partial-"))
    parts_dir, data_dir = work / "parts", work / "service"
    total = args.shadow_parts + args.partial_parts
    defect_share = (1.0 - args.ok_share) / len(DEFECT_CLASSES)
    print("shadow -> partial scenario")
    print(f"line {LINE!r} starts at shadow; SCENARIO SETTINGS (lowered from the product's "
          f"defaults so it runs in minutes on 2 cores): max_escape_rate {pct(args.max_escape_rate)}"
          f" (default 0.50%), max_false_reject_rate {pct(args.max_false_reject_rate)} "
          f"(default 2.00%), min_labels {args.min_labels} (default 200), audit_rate at partial "
          f"{pct(args.audit_rate)} (default 2.00%)")  # fmt: skip
    print(f"parts: {args.shadow_parts} at shadow + {args.partial_parts} after the raise, "
          f"{pct(args.ok_share)} good, data seed {args.seed}; inspector error rate "
          f"{pct(args.label_error)}; weights {args.weights}")  # fmt: skip

    started = time.monotonic()
    if not (parts_dir / "manifest.csv").is_file():
        mix = {c: defect_share for c in DEFECT_CLASSES} | {"ok": args.ok_share}
        generate_dataset(parts_dir, n=total, seed=args.seed,
                         config=SynthConfig(class_mix=mix), image_format="jpg")  # fmt: skip
    items = replay_order(load_dataset(parts_dir), shuffle=True, seed=args.seed)[:total]
    print(f"rendered {len(items)} parts in {time.monotonic() - started:.0f} s")

    shutil.rmtree(data_dir, ignore_errors=True)
    key, inspector, supervisor = prepare_line(data_dir, args)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service(data_dir, args.weights, port, torch_threads=None)
    try:
        wait_ready(url, process, data_dir / "serve.log", timeout_s=180)
        scenario = Scenario(url, key, inspector, supervisor, args)

        started = time.monotonic()
        shadow = scenario.run_phase(items[: args.shadow_parts])
        print_phase(f"shadow ({time.monotonic() - started:.0f} s)", shadow)

        body = scenario.get(f"/api/v1/lines/{LINE}/recommendation")
        rec = body["recommendation"]
        print(f"\n== recommendation from {rec['n_labeled']} blind labels of model "
              f"{body['model_version']}")  # fmt: skip
        print(rec["reason"])
        print_curve(rec)
        if rec["pass_threshold"] is None or rec["fail_threshold"] is None:
            print("\nno raise: the evidence does not support partial on both sides yet")
            return
        raise_response = scenario.http.put(
            f"/api/v1/lines/{LINE}/automation",
            json={
                "level": "partial",
                "pass_threshold": rec["pass_threshold"],
                "fail_threshold": rec["fail_threshold"],
                "audit_rate": args.audit_rate,
                "reason": "scenario: the recommended thresholds",
            },
            headers=scenario.supervisor,
        )
        print(f"\nPUT automation partial -> {raise_response.status_code}")
        if raise_response.status_code != 200:
            print(raise_response.json())
            return
        gate = rec["gate"]
        print(f"gate at the raise: coverage {pct(gate['what_if']['coverage'])}, escape bound "
              f"{pct(gate['escape']['upper_bound'])} over {gate['escape']['n']} parts, "
              f"false-reject bound {pct(gate['false_reject']['upper_bound'])} over "
              f"{gate['false_reject']['n']} parts")  # fmt: skip

        started = time.monotonic()
        partial = scenario.run_phase(items[args.shadow_parts :])
        print_phase(f"partial ({time.monotonic() - started:.0f} s)", partial)
        after = scenario.get(f"/api/v1/lines/{LINE}/recommendation")
        line = scenario.get(f"/api/v1/lines/{LINE}")
        demotions = scenario.get(f"/api/v1/lines/{LINE}/events?kind=auto_demotion")
        live = after["live"]
        if live is not None:
            for check in live["checks"]:
                print(f"live audits, {check['figure']}: {check['errors']}/{check['n']}, "
                      f"upper bound {pct(check['upper_bound'])}, target {pct(check['target'])}, "
                      f"log LR {check['log_likelihood_ratio']:.2f} (alarm at "
                      f"{check['alarm_at']:.2f})")  # fmt: skip
        print(f"line level at the end: {line['level']}; auto-demotions: {len(demotions)}")
        for event in demotions:
            print(f"  {event['reason']}")
        print(f"\nlabels it took: {shadow.labels} at shadow to earn partial, "
              f"{partial.labels} after the raise ({dict(partial.tasks_by_reason)}); "
              f"{shadow.labels + partial.labels} in all for {total} parts")  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=60)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
