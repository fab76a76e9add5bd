"""The image gate on frames it must refuse and on parts it must let through.

Prints figures only; nothing here asserts. Two sets, both run through the service's own code
(``input_stats`` for the metrics, ``Predictor.predict_with_embeddings`` for the model, the
shipped reference profile and ``ImageGate``):

- off-distribution frames (``data/off_distribution.py``), the **held-out** part by default:
  per source, how many the model alone would auto-decide at the line thresholds, how many the
  gate lets through, and how many it lets through that the model then auto-decides (the
  figure that must be 0);
- a clean labeled set from a generator seed nothing else uses (6007 by default; training
  uses 1, the tests 777/778/90210, the gate's tuning 31337, and 4242, 2718, 1618, 8080 and
  9393 measured the gate as it was tuned): the share of good parts the gate refuses (target
  <= 1%), with its 95% Clopper-Pearson interval, and per reason code.

Usage (the clean set is generated into ``var/`` on first use, ~30 s):

    .venv/bin/python bench/image_gate.py [--part held_out|tuning] [--n-per-source 50]
        [--ood-seed S] [--clean-seed 6007] [--clean-n 2000] [--checkpoint C]

The gate's defaults were tuned on the seeds the OOD_SEEDS comment names, all spent now
(``--part tuning`` and the held-out seeds there, the clean seeds above): quote a figure only
from seeds never used before, and add them to that comment once measured.
"""

from __future__ import annotations

import os

# as the models package does (see models/__init__.py), before this script imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
import timeit
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from data.dataset import load_dataset
from data.off_distribution import SOURCES, off_distribution_frames
from data.synth import generate_dataset
from inspect_app.evidence.intervals import clopper_pearson_interval
from inspect_app.imaging import input_stats
from inspect_app.monitoring.gate import GateVerdict, ImageGate
from models import DEFAULT_WEIGHTS
from models.predictor import Predictor
from models.profile import edge_layout, load_profile

REPO = Path(__file__).resolve().parents[1]
# Off-distribution seeds. The gate is tuned on the tuning part, seed 1. Held-out seeds
# are spent once each: seed 2 measured the gate as first tuned (17 of 1,000 through and
# auto-decided); the tuning part then gained four harder sources and the gradient-balance
# metric came in, measured on seed 3 (13); a last re-tune on the tuning part (margin,
# ood_level) is measured on seed 4, frames nothing was chosen on (6 through, all halves of
# phones stretched to fill the frame). The framing rules came in for those: seeds 4, 5 and 6
# chose their margin (see GateConfig.framing_margin) and seed 7 measured it (3 through: 2
# halves, 1 tilted phone). The tilt and the joint check of end and gradient balance were
# then chosen on seeds 4-7 and the tuning part, so all of those are spent; seed 31 with clean
# seed 9393 measured them once (2026-12-01, load ~11): 2 of 1,000 through (a half of a dark
# phone on a dark belt, the zoomed-in centre of a phone: each within every limit) and 1.10%
# of clean parts refused (22 of 2,000); the gate before them, on the same frames: 2 and
# 1.00%. Those are spent too. The edge layout and the margins of the gradient balance's upper
# bound and of the colours were then chosen on all of the seeds above (off-distribution 1,
# 4-7 and 31; clean 31337, 4242, 2718, 1618, 8080 and 9393), and measured once on seeds
# never used before, off-distribution 53 and clean 6007 (2026-12-02, load ~4.5): 0 of 1,000
# through (none passed the gate at all) and 0.65% of clean parts refused (13 of 2,000, 95%
# CI 0.35-1.11%: framing 7, the embedding 5, the layout 1). Those two are spent as well: a
# change measures itself on a seed not named here.
OOD_SEEDS = {"tuning": 1, "held_out": 53}


def run(
    predictor: Predictor, gate: ImageGate, images: Sequence[np.ndarray], batch: int = 32
) -> tuple[list[GateVerdict], np.ndarray]:
    """Verdicts and (N, 2) [P(ok), P(defect)] of `images`, as the service would compute them."""
    verdicts: list[GateVerdict] = []
    probs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        stats = [input_stats(im) for im in chunk]
        predictions, embeddings = predictor.predict_with_embeddings(chunk)
        layouts = np.stack([s.edge_layout for s in stats])
        verdicts += gate.check_batch([s.metrics() for s in stats], embeddings, layouts)
        probs += [(p.p_ok, p.p_defect) for p in predictions]
    return verdicts, np.array(probs)


def auto_decided(probs: np.ndarray, pass_threshold: float, fail_threshold: float) -> np.ndarray:
    return (probs[:, 0] >= pass_threshold) | (probs[:, 1] >= fail_threshold)


def off_distribution(
    predictor: Predictor, gate: ImageGate, part: str, n: int, seed: int, args: argparse.Namespace
) -> None:
    frames = off_distribution_frames(part, n, seed)
    started = time.perf_counter()
    verdicts, probs = run(predictor, gate, [f.image for f in frames])
    elapsed = time.perf_counter() - started
    auto = auto_decided(probs, args.pass_threshold, args.fail_threshold)
    passed = np.array([v.usable for v in verdicts])
    sources = np.array([f.source for f in frames])
    print(
        f"\n{part} off-distribution frames: {len(frames)} ({n} per source, seed {seed}), "
        f"{elapsed:.0f} s; auto-decided = P(ok) >= {args.pass_threshold} or "
        f"P(defect) >= {args.fail_threshold}"
    )
    print(f"{'source':22s} {'n':>4s} {'model alone':>12s} {'gate passes':>12s} "
          f"{'passes+auto':>12s}  reasons (first code)")  # fmt: skip
    for source in SOURCES[part]:
        rows = sources == source
        codes = Counter(str(v.code) for v, r in zip(verdicts, rows, strict=True) if r and v.code)
        print(
            f"{source:22s} {int(rows.sum()):4d} {int(auto[rows].sum()):12d} "
            f"{int(passed[rows].sum()):12d} {int((passed & auto)[rows].sum()):12d}  "
            + ", ".join(f"{c} {k}" for c, k in codes.most_common())
        )
    print(
        f"{'all':22s} {len(frames):4d} {int(auto.sum()):12d} {int(passed.sum()):12d} "
        f"{int((passed & auto).sum()):12d}   <- the last figure must be 0"
    )
    every = Counter(str(c) for v in verdicts for c in v.codes)
    print("every reason code (a frame may have several):", dict(every.most_common()))


def clean(predictor: Predictor, gate: ImageGate, root: Path, args: argparse.Namespace) -> None:
    items = load_dataset(root)
    images = [cv2.imread(str(it.path), cv2.IMREAD_COLOR) for it in items]
    verdicts, probs = run(predictor, gate, images)
    refused = [v for v in verdicts if not v.usable]
    lo, hi = clopper_pearson_interval(len(refused), len(verdicts))
    print(
        f"\nclean parts ({root.name}, generator seed {args.clean_seed}): {len(refused)} of "
        f"{len(verdicts)} refused = {len(refused) / len(verdicts):.2%} "
        f"(95% CI {lo:.2%}-{hi:.2%}); target <= 1%"
    )
    first = Counter(str(v.code) for v in refused)
    every = Counter(str(c) for v in refused for c in v.codes)
    print("  by first reason:", dict(first.most_common()), "| every reason:", dict(every))
    by_class: dict[str, list[bool]] = defaultdict(list)
    for it, v in zip(items, verdicts, strict=True):
        by_class[it.label].append(not v.usable)
    print("  refused by true class:", {c: f"{sum(r)}/{len(r)}" for c, r in by_class.items()})
    for v in refused[:5]:
        print("  e.g.", "; ".join(v.reasons))
    auto = auto_decided(probs, args.pass_threshold, args.fail_threshold)
    passed = np.array([v.usable for v in verdicts])
    print(
        f"  auto-decided at the thresholds: {int(auto.sum())} without the gate, "
        f"{int((auto & passed).sum())} with it"
    )
    distances = np.array([v.ood_distance for v in verdicts])
    layouts = np.array([v.layout_distance for v in verdicts], dtype=float)
    print(
        f"  OOD distance: median {np.median(distances):.1f}, 99.5th percentile "
        f"{np.quantile(distances, 0.995):.1f} (gate threshold {gate.ood_threshold:.1f}, "
        f"the reference's {gate.config.ood_level:.1%}); edge layout distance: median "
        f"{np.median(layouts):.1f}, 99.5th percentile {np.quantile(layouts, 0.995):.1f} "
        f"(threshold {gate.layout_threshold:.1f}, the reference's {gate.config.layout_level:.1%}"
        f"); joint check threshold {gate.joint_threshold:.2f} (the reference's "
        f"{gate.config.joint_level:.1%})"
    )


def costs(gate: ImageGate, image: np.ndarray) -> None:
    stats = input_stats(image)
    metrics, layout = stats.metrics(), stats.edge_layout
    embedding = gate.profile.embedding.mean
    for name, fn, n in (
        ("input_stats (256x256, with its edge layout)", lambda: input_stats(image), 2000),
        ("of which edge_layout", lambda: edge_layout(image), 2000),
        ("gate.check, one frame", lambda: gate.check(metrics, embedding, layout), 2000),
        ("of which without the layout", lambda: gate.check(metrics, embedding), 2000),
    ):
        t = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"  {name}: {t * 1e6:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--part", choices=sorted(SOURCES), default="held_out")
    parser.add_argument("--n-per-source", type=int, default=50)
    parser.add_argument("--ood-seed", type=int, default=None, help="default: the part's")
    parser.add_argument("--clean-seed", type=int, default=6007)
    parser.add_argument("--clean-n", type=int, default=2000)
    parser.add_argument("--pass-threshold", type=float, default=0.95)
    parser.add_argument("--fail-threshold", type=float, default=0.95)
    args = parser.parse_args()

    predictor = Predictor.from_checkpoint(args.checkpoint)
    profile = load_profile(args.checkpoint, version=predictor.version)
    if profile is None:
        raise SystemExit(f"{args.checkpoint} has no reference profile: run `inspect-app profile`")
    gate = ImageGate(profile)
    print(f"model {predictor.version}; profile: {profile.source}")
    print(f"gate config: {gate.config}")

    seed = args.ood_seed if args.ood_seed is not None else OOD_SEEDS[args.part]
    off_distribution(predictor, gate, args.part, args.n_per_source, seed, args)

    root = REPO / "var" / f"gate_clean_{args.clean_seed}_{args.clean_n}"
    if not (root / "manifest.csv").exists():
        generate_dataset(root, n=args.clean_n, seed=args.clean_seed)
    clean(predictor, gate, root, args)

    print("\nper-image cost on this machine:")
    costs(gate, cv2.imread(str(load_dataset(root)[0].path), cv2.IMREAD_COLOR))


if __name__ == "__main__":
    main()
